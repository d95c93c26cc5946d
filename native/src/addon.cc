// N-API surface of the native kernels. Arguments are Float32Arrays (read in place, outputs written in
// place) and plain numbers; any failure becomes a JS Error with the library's message.
#include <malloc.h>
#include <node_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"

namespace {

struct JsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#define NAPI_OK(call)                                                   \
  do {                                                                  \
    if ((call) != napi_ok) throw JsError("N-API call failed: " #call); \
  } while (0)

struct Args {
  napi_env env;
  std::vector<napi_value> v;
  Args(napi_env e, napi_callback_info info, size_t n) : env(e), v(n) {
    size_t argc = n;
    NAPI_OK(napi_get_cb_info(e, info, &argc, v.data(), nullptr, nullptr));
    if (argc < n) throw JsError("expected " + std::to_string(n) + " arguments, got " + std::to_string(argc));
  }
  bool isNull(size_t i) const {
    napi_valuetype t;
    NAPI_OK(napi_typeof(env, v[i], &t));
    return t == napi_null || t == napi_undefined;
  }
  float* f32(size_t i, size_t* len = nullptr) const {
    if (isNull(i)) return nullptr;
    bool is = false;
    NAPI_OK(napi_is_typedarray(env, v[i], &is));
    if (!is) throw JsError("argument " + std::to_string(i) + " must be a Float32Array");
    napi_typedarray_type type;
    size_t length;
    void* data;
    NAPI_OK(napi_get_typedarray_info(env, v[i], &type, &length, &data, nullptr, nullptr));
    if (type != napi_float32_array) throw JsError("argument " + std::to_string(i) + " must be a Float32Array");
    if (len) *len = length;
    return static_cast<float*>(data);
  }
  double num(size_t i) const {
    double d;
    NAPI_OK(napi_get_value_double(env, v[i], &d));
    return d;
  }
  int64_t i64(size_t i) const { return static_cast<int64_t>(num(i)); }
  bool flag(size_t i) const {
    bool b;
    NAPI_OK(napi_get_value_bool(env, v[i], &b));
    return b;
  }
  std::vector<int64_t> ints(size_t i) const {
    uint32_t n;
    NAPI_OK(napi_get_array_length(env, v[i], &n));
    std::vector<int64_t> out(n);
    for (uint32_t j = 0; j < n; j++) {
      napi_value e;
      NAPI_OK(napi_get_element(env, v[i], j, &e));
      double d;
      NAPI_OK(napi_get_value_double(env, e, &d));
      out[j] = static_cast<int64_t>(d);
    }
    return out;
  }
};

void need(size_t have, int64_t want, const char* what) {
  if (static_cast<int64_t>(have) < want)
    throw JsError(std::string(what) + " has " + std::to_string(have) + " elements, " + std::to_string(want) +
                  " needed");
}

template <class F>
napi_value guard(napi_env env, F f) {
  try {
    return f();
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
    return nullptr;
  }
}

napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// matmul(a, b, out, bias|null, batchA, batchB, m, n, k, transA, transB, act, alpha, useBlas)
napi_value Matmul(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 14);
    karlo::MatmulArgs p;
    size_t la, lb, lo, lbias = 0;
    p.a = A.f32(0, &la);
    p.b = A.f32(1, &lb);
    p.out = A.f32(2, &lo);
    p.bias = A.f32(3, &lbias);
    p.batchA = A.i64(4);
    p.batchB = A.i64(5);
    p.m = A.i64(6);
    p.n = A.i64(7);
    p.k = A.i64(8);
    p.transA = A.flag(9);
    p.transB = A.flag(10);
    p.act = static_cast<int>(A.i64(11));
    p.alpha = static_cast<float>(A.num(12));
    const bool blas = A.flag(13);
    if (p.batchA != p.batchB && p.batchA != 1 && p.batchB != 1) throw JsError("matmul: batch dims must match or be 1");
    need(la, p.batchA * p.m * p.k, "matmul a");
    need(lb, p.batchB * p.k * p.n, "matmul b");
    need(lo, std::max(p.batchA, p.batchB) * p.m * p.n, "matmul out");
    if (p.bias) need(lbias, p.n, "matmul bias");
    if (blas) karlo::matmulBlas(p);
    else karlo::matmulDnnl(p);
    return undef(env);
  });
}

karlo::ConvShape convShape(const Args& A, size_t i) {
  std::vector<int64_t> v = A.ints(i);
  if (v.size() != 17) throw JsError("conv shape must have 17 numbers");
  return karlo::ConvShape{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8],
                          v[9], v[10], v[11], v[12], v[13], v[14], v[15], v[16]};
}

// conv2d(x, w, bias|null, y, shape17, act, alpha, weightsId)
napi_value Conv2d(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 8);
    karlo::ConvShape s = convShape(A, 4);
    size_t lx, lw, ly, lb = 0;
    const float* x = A.f32(0, &lx);
    const float* w = A.f32(1, &lw);
    const float* b = A.f32(2, &lb);
    float* y = A.f32(3, &ly);
    need(lx, s.n * s.h * s.w * s.c, "conv2d x");
    need(lw, s.kh * s.kw * s.c * s.o, "conv2d filter");
    need(ly, s.n * s.oh * s.ow * s.o, "conv2d out");
    if (b) need(lb, s.o, "conv2d bias");
    karlo::conv2dForward(s, x, w, b, y, static_cast<int>(A.i64(5)), static_cast<float>(A.num(6)),
                         static_cast<uint64_t>(A.num(7)));
    return undef(env);
  });
}

// conv2dBackpropInput(dy, w, dx, shape17)
napi_value Conv2dBackpropInput(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 4);
    karlo::ConvShape s = convShape(A, 3);
    size_t ldy, lw, ldx;
    const float* dy = A.f32(0, &ldy);
    const float* w = A.f32(1, &lw);
    float* dx = A.f32(2, &ldx);
    need(ldy, s.n * s.oh * s.ow * s.o, "conv2d dy");
    need(lw, s.kh * s.kw * s.c * s.o, "conv2d filter");
    need(ldx, s.n * s.h * s.w * s.c, "conv2d dx");
    karlo::conv2dBackwardData(s, dy, w, dx);
    return undef(env);
  });
}

// conv2dBackpropFilter(x, dy, dw, shape17)
napi_value Conv2dBackpropFilter(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 4);
    karlo::ConvShape s = convShape(A, 3);
    size_t lx, ldy, ldw;
    const float* x = A.f32(0, &lx);
    const float* dy = A.f32(1, &ldy);
    float* dw = A.f32(2, &ldw);
    need(lx, s.n * s.h * s.w * s.c, "conv2d x");
    need(ldy, s.n * s.oh * s.ow * s.o, "conv2d dy");
    need(ldw, s.kh * s.kw * s.c * s.o, "conv2d dw");
    karlo::conv2dBackwardFilter(s, x, dy, dw);
    return undef(env);
  });
}

int64_t prod(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t x : v) p *= x;
  return p;
}

// binary(op, outShape, a, stridesA, b, stridesB, out)
napi_value Binary(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 7);
    const int op = static_cast<int>(A.i64(0));
    std::vector<int64_t> shape = A.ints(1), sa = A.ints(3), sb = A.ints(5);
    if (sa.size() != shape.size() || sb.size() != shape.size()) throw JsError("binary: stride ranks differ");
    size_t la, lb, lo;
    const float* a = A.f32(2, &la);
    const float* b = A.f32(4, &lb);
    float* o = A.f32(6, &lo);
    int64_t maxA = 0, maxB = 0;
    for (size_t i = 0; i < shape.size(); i++) {
      maxA += (shape[i] - 1) * sa[i];
      maxB += (shape[i] - 1) * sb[i];
    }
    need(la, maxA + 1, "binary a");
    need(lb, maxB + 1, "binary b");
    need(lo, prod(shape), "binary out");
    karlo::binary(op, static_cast<int>(shape.size()), shape.data(), a, sa.data(), b, sb.data(), o);
    return undef(env);
  });
}

// unary(op, x, y)
napi_value Unary(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 3);
    size_t lx, ly;
    const float* x = A.f32(1, &lx);
    float* y = A.f32(2, &ly);
    need(ly, static_cast<int64_t>(lx), "unary out");
    karlo::unary(static_cast<int>(A.i64(0)), x, y, static_cast<int64_t>(lx));
    return undef(env);
  });
}

// reduce(op, shape, reducedFlags(0/1 numbers), x, out)
napi_value Reduce(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 5);
    std::vector<int64_t> shape = A.ints(1), flags = A.ints(2);
    if (flags.size() != shape.size()) throw JsError("reduce: flags rank differs");
    std::unique_ptr<bool[]> red(new bool[shape.size() + 1]);
    int64_t outSize = 1;
    for (size_t i = 0; i < shape.size(); i++) {
      red[i] = flags[i] != 0;
      if (!red[i]) outSize *= shape[i];
    }
    size_t lx, lo;
    const float* x = A.f32(3, &lx);
    float* o = A.f32(4, &lo);
    need(lx, prod(shape), "reduce x");
    need(lo, outSize, "reduce out");
    if (prod(shape) == 0) throw JsError("reduce: empty input");
    karlo::reduce(static_cast<int>(A.i64(0)), static_cast<int>(shape.size()), shape.data(), red.get(), x, o);
    return undef(env);
  });
}

// softmax(x, y, rows, cols)
napi_value Softmax(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 4);
    size_t lx, ly;
    const float* x = A.f32(0, &lx);
    float* y = A.f32(1, &ly);
    const int64_t rows = A.i64(2), cols = A.i64(3);
    need(lx, rows * cols, "softmax x");
    need(ly, rows * cols, "softmax out");
    karlo::softmaxLastAxis(x, y, rows, cols);
    return undef(env);
  });
}

// copyRows(src, rows, inner, dst, dstOffset, dstInner): row r of src (inner floats) to dst[dstOffset + r·dstInner]
// (one input of a concat along an inner axis).
napi_value CopyRows(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 6);
    size_t ls, ld;
    const float* src = A.f32(0, &ls);
    const int64_t rows = A.i64(1), inner = A.i64(2);
    float* dst = A.f32(3, &ld);
    const int64_t off = A.i64(4), dstInner = A.i64(5);
    if (inner < 0 || off < 0 || off + inner > dstInner) throw JsError("copyRows: the row does not fit the destination row");
    need(ls, rows * inner, "copyRows src");
    need(ld, rows * dstInner, "copyRows dst");
    karlo::copyRows(src, rows, inner, dst, off, dstInner);
    return undef(env);
  });
}

// groupNorm(x, gamma|null, beta|null, y, n, s, c, groups, eps, silu)
napi_value GroupNorm(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 10);
    size_t lx, ly, lg = 0, lb = 0;
    const float* x = A.f32(0, &lx);
    const float* gamma = A.f32(1, &lg);
    const float* beta = A.f32(2, &lb);
    float* y = A.f32(3, &ly);
    const int64_t n = A.i64(4), s = A.i64(5), c = A.i64(6), g = A.i64(7);
    if (g < 1 || c % g != 0) throw JsError("groupNorm: channels must divide into groups");
    need(lx, n * s * c, "groupNorm x");
    need(ly, n * s * c, "groupNorm out");
    if (gamma) need(lg, c, "groupNorm gamma");
    if (beta) need(lb, c, "groupNorm beta");
    karlo::groupNorm(x, gamma, beta, y, n, s, c, g, static_cast<float>(A.num(8)), A.flag(9));
    return undef(env);
  });
}

// groupNormGrad(x, gamma, beta, dy, dx, dgamma, dbeta, n, s, c, groups, eps, silu)
napi_value GroupNormGrad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 13);
    size_t lx, lgm, lbt, ldy, ldx, ldg, ldb;
    const float* x = A.f32(0, &lx);
    const float* gamma = A.f32(1, &lgm);
    const float* beta = A.f32(2, &lbt);
    const float* dy = A.f32(3, &ldy);
    float* dx = A.f32(4, &ldx);
    float* dgamma = A.f32(5, &ldg);
    float* dbeta = A.f32(6, &ldb);
    const int64_t n = A.i64(7), s = A.i64(8), c = A.i64(9), g = A.i64(10);
    if (g < 1 || c % g != 0) throw JsError("groupNormGrad: channels must divide into groups");
    for (auto [len, what] : {std::pair{lx, "x"}, std::pair{ldy, "dy"}, std::pair{ldx, "dx"}}) need(len, n * s * c, what);
    for (auto [len, what] : {std::pair{lgm, "gamma"}, std::pair{lbt, "beta"}, std::pair{ldg, "dgamma"}, std::pair{ldb, "dbeta"}}) need(len, c, what);
    karlo::groupNormGrad(x, gamma, beta, dy, dx, dgamma, dbeta, n, s, c, g, static_cast<float>(A.num(11)), A.flag(12));
    return undef(env);
  });
}

napi_value ReleaseWeights(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 1);
    karlo::releaseWeights(static_cast<uint64_t>(A.num(0)));
    return undef(env);
  });
}

// weightCache(budgetBytes?) → bytes held
napi_value WeightCache(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc = 1;
    napi_value v;
    NAPI_OK(napi_get_cb_info(env, info, &argc, &v, nullptr, nullptr));
    if (argc >= 1) {
      napi_valuetype t;
      NAPI_OK(napi_typeof(env, v, &t));
      if (t == napi_number) {
        double d;
        NAPI_OK(napi_get_value_double(env, v, &d));
        karlo::setWeightCacheBudget(static_cast<size_t>(d < 0 ? 0 : d));
      }
    }
    napi_value r;
    NAPI_OK(napi_create_double(env, static_cast<double>(karlo::weightCacheBytes()), &r));
    return r;
  });
}

// convAlgo(algo?, winogradBudgetBytes?) → the forward conv algorithm (0 direct, 1 winograd, 2 auto), after setting
// it (and auto's Winograd scratch budget) when given
napi_value ConvAlgo(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc = 2;
    napi_value v[2];
    NAPI_OK(napi_get_cb_info(env, info, &argc, v, nullptr, nullptr));
    for (size_t i = 0; i < argc && i < 2; i++) {
      napi_valuetype t;
      NAPI_OK(napi_typeof(env, v[i], &t));
      if (t == napi_number) {
        double d;
        NAPI_OK(napi_get_value_double(env, v[i], &d));
        if (i == 0) karlo::setConvAlgo(static_cast<int>(d));
        else karlo::setWinogradBudget(static_cast<size_t>(d < 0 ? 0 : d));
      }
    }
    napi_value r;
    NAPI_OK(napi_create_int32(env, karlo::getConvAlgo(), &r));
    return r;
  });
}

// convRuns() → { direct, winograd, lastImpl }: forward convs run with each algorithm so far, the last one's oneDNN impl
napi_value ConvRuns(napi_env env, napi_callback_info) {
  return guard(env, [&] {
    const karlo::ConvRuns c = karlo::convRuns();
    napi_value r, v;
    NAPI_OK(napi_create_object(env, &r));
    NAPI_OK(napi_create_double(env, static_cast<double>(c.direct), &v));
    NAPI_OK(napi_set_named_property(env, r, "direct", v));
    NAPI_OK(napi_create_double(env, static_cast<double>(c.winograd), &v));
    NAPI_OK(napi_set_named_property(env, r, "winograd", v));
    NAPI_OK(napi_create_string_utf8(env, c.lastImpl.c_str(), c.lastImpl.size(), &v));
    NAPI_OK(napi_set_named_property(env, r, "lastImpl", v));
    return r;
  });
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 1);
    karlo::setThreads(static_cast<int>(A.i64(0)));
    return undef(env);
  });
}

napi_value GetThreads(napi_env env, napi_callback_info) {
  napi_value r;
  napi_create_int32(env, karlo::getThreads(), &r);
  return r;
}

napi_value Describe(napi_env env, napi_callback_info) {
  return guard(env, [&] {
    std::string s = karlo::describe();
    napi_value r;
    NAPI_OK(napi_create_string_utf8(env, s.c_str(), s.size(), &r));
    return r;
  });
}

// fmaPeak(iterations, threads) → { seconds, flops, threads, width }
napi_value FmaPeak(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args A(env, info, 2);
    const karlo::PeakResult p = karlo::fmaPeak(A.i64(0), static_cast<int>(A.i64(1)));
    napi_value r, v;
    NAPI_OK(napi_create_object(env, &r));
    NAPI_OK(napi_create_double(env, p.seconds, &v));
    NAPI_OK(napi_set_named_property(env, r, "seconds", v));
    NAPI_OK(napi_create_double(env, p.flops, &v));
    NAPI_OK(napi_set_named_property(env, r, "flops", v));
    NAPI_OK(napi_create_int32(env, p.threads, &v));
    NAPI_OK(napi_set_named_property(env, r, "threads", v));
    NAPI_OK(napi_create_string_utf8(env, p.width, NAPI_AUTO_LENGTH, &v));
    NAPI_OK(napi_set_named_property(env, r, "width", v));
    return r;
  });
}

napi_value ClearCache(napi_env env, napi_callback_info) {
  karlo::clearCache();
  return undef(env);
}

napi_value Init(napi_env env, napi_value exports) {
  // Tensors of tens of MB are malloc'ed per op. glibc serves those by mmap and returns them to the OS on free, so
  // every op pays page faults plus the kernel's zeroing on its output (measured: +70% on a 16x1024x1024 attention
  // matmul, +30-100% on 21M-element elementwise ops). Serve them from the heap and keep freed memory for reuse.
  // KARLO_NATIVE_MALLOC=default leaves glibc's policy alone.
  static bool tuned = false;
  const char* m = std::getenv("KARLO_NATIVE_MALLOC");
  if (!tuned && !(m && std::string(m) == "default")) {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    tuned = true;
  }
  const struct {
    const char* name;
    napi_callback cb;
  } fns[] = {{"matmul", Matmul},
             {"conv2d", Conv2d},
             {"conv2dBackpropInput", Conv2dBackpropInput},
             {"conv2dBackpropFilter", Conv2dBackpropFilter},
             {"binary", Binary},
             {"unary", Unary},
             {"reduce", Reduce},
             {"softmax", Softmax},
             {"groupNorm", GroupNorm},
             {"copyRows", CopyRows},
             {"groupNormGrad", GroupNormGrad},
             {"releaseWeights", ReleaseWeights},
             {"weightCache", WeightCache},
             {"convAlgo", ConvAlgo},
             {"convRuns", ConvRuns},
             {"setThreads", SetThreads},
             {"getThreads", GetThreads},
             {"describe", Describe},
             {"clearCache", ClearCache},
             {"fmaPeak", FmaPeak}};
  for (const auto& f : fns) {
    napi_value fn;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.cb, nullptr, &fn);
    napi_set_named_property(env, exports, f.name, fn);
  }
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
