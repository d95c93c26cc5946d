// Memory-bound kernels (broadcast binary ops, unary maps, reductions, softmax) on both cores: in tfjs's JS
// these run at 30-120 M elements/s, which at the super-res's 21M-element activations costs as much as the convs.
#include <cstring>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels.h"

namespace karlo {

// Below this many elements (~0.2 ms of work on one core) a second thread is not worth an OpenMP barrier, which
// under CPU contention can cost a scheduler time slice.
static const int64_t kParallelMin = 1 << 18;

namespace {

struct Dims {
  std::vector<int64_t> shape, sa, sb;
};

// Drops size-1 dims and merges neighbours that are contiguous (or both broadcast) in every operand.
Dims collapse(int rank, const int64_t* shape, const int64_t* sa, const int64_t* sb) {
  Dims d;
  for (int i = 0; i < rank; i++) {
    if (shape[i] == 1) continue;
    if (!d.shape.empty()) {
      size_t j = d.shape.size() - 1;
      if (d.sa[j] == sa[i] * shape[i] && d.sb[j] == sb[i] * shape[i]) {
        d.shape[j] *= shape[i];
        d.sa[j] = sa[i];
        d.sb[j] = sb[i];
        continue;
      }
    }
    d.shape.push_back(shape[i]);
    d.sa.push_back(sa[i]);
    d.sb.push_back(sb[i]);
  }
  if (d.shape.empty()) {
    d.shape.push_back(1);
    d.sa.push_back(0);
    d.sb.push_back(0);
  }
  return d;
}

template <class F>
inline void innerLoop(F f, const float* a, int64_t sa, const float* b, int64_t sb, float* o, int64_t n) {
  if (sa == 1 && sb == 1) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) o[i] = f(a[i], b[i]);
  } else if (sa == 1 && sb == 0) {
    const float bv = b[0];
#pragma omp simd
    for (int64_t i = 0; i < n; i++) o[i] = f(a[i], bv);
  } else if (sa == 0 && sb == 1) {
    const float av = a[0];
#pragma omp simd
    for (int64_t i = 0; i < n; i++) o[i] = f(av, b[i]);
  } else {
    for (int64_t i = 0; i < n; i++) o[i] = f(a[i * sa], b[i * sb]);
  }
}

template <class F>
void binaryImpl(F f, const Dims& d, const float* a, const float* b, float* out) {
  const int r = static_cast<int>(d.shape.size());
  const int64_t inner = d.shape[r - 1];
  int64_t rows = 1;
  for (int i = 0; i < r - 1; i++) rows *= d.shape[i];
  const int64_t total = rows * inner;
  const int nt = total < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int64_t r0 = rows * t / T, r1 = rows * (t + 1) / T;
    if (r0 < r1) {
      // Odometer over the outer dims, started once per thread.
      std::vector<int64_t> idx(r > 1 ? r - 1 : 1, 0);
      int64_t rem = r0, offA = 0, offB = 0;
      for (int i = r - 2; i >= 0; i--) {
        idx[i] = rem % d.shape[i];
        rem /= d.shape[i];
        offA += idx[i] * d.sa[i];
        offB += idx[i] * d.sb[i];
      }
      for (int64_t row = r0; row < r1; row++) {
        innerLoop(f, a + offA, d.sa[r - 1], b + offB, d.sb[r - 1], out + row * inner, inner);
        for (int i = r - 2; i >= 0; i--) {
          if (++idx[i] < d.shape[i]) {
            offA += d.sa[i];
            offB += d.sb[i];
            break;
          }
          offA -= (d.shape[i] - 1) * d.sa[i];
          offB -= (d.shape[i] - 1) * d.sb[i];
          idx[i] = 0;
        }
      }
    }
  }
}

}  // namespace

void binary(int op, int rank, const int64_t* shape, const float* a, const int64_t* sa, const float* b,
            const int64_t* sb, float* out) {
  Dims d = collapse(rank, shape, sa, sb);
  switch (op) {
    case OP_ADD: binaryImpl([](float x, float y) { return x + y; }, d, a, b, out); break;
    case OP_SUB: binaryImpl([](float x, float y) { return x - y; }, d, a, b, out); break;
    case OP_MUL: binaryImpl([](float x, float y) { return x * y; }, d, a, b, out); break;
    case OP_DIV: binaryImpl([](float x, float y) { return x / y; }, d, a, b, out); break;
    case OP_SQDIFF: binaryImpl([](float x, float y) { return (x - y) * (x - y); }, d, a, b, out); break;
    case OP_MAX: binaryImpl([](float x, float y) { return (x != x || y != y) ? NAN : (x > y ? x : y); }, d, a, b, out); break;
    case OP_MIN: binaryImpl([](float x, float y) { return (x != x || y != y) ? NAN : (x < y ? x : y); }, d, a, b, out); break;
    case OP_COPY: binaryImpl([](float x, float) { return x; }, d, a, b, out); break;
    default: break;
  }
}

template <class F>
static void unaryImpl(F f, const float* x, float* y, int64_t n) {
  const int nt = n < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; i++) y[i] = f(x[i]);
}

void unary(int op, const float* x, float* y, int64_t n) {
  switch (op) {
    case UN_SIGMOID: unaryImpl([](float v) { return 1.f / (1.f + std::exp(-v)); }, x, y, n); break;
    case UN_EXP: unaryImpl([](float v) { return std::exp(v); }, x, y, n); break;
    case UN_RSQRT: unaryImpl([](float v) { return 1.f / std::sqrt(v); }, x, y, n); break;
    case UN_SQRT: unaryImpl([](float v) { return std::sqrt(v); }, x, y, n); break;
    case UN_TANH: unaryImpl([](float v) { return std::tanh(v); }, x, y, n); break;
    case UN_ERF: unaryImpl([](float v) { return std::erf(v); }, x, y, n); break;
    case UN_NEG: unaryImpl([](float v) { return -v; }, x, y, n); break;
    case UN_RELU: unaryImpl([](float v) { return v < 0.f ? 0.f : v; }, x, y, n); break;
    case UN_SQUARE: unaryImpl([](float v) { return v * v; }, x, y, n); break;
    case UN_SILU: unaryImpl([](float v) { return v / (1.f + std::exp(-v)); }, x, y, n); break;
    case UN_ABS: unaryImpl([](float v) { return std::fabs(v); }, x, y, n); break;
    case UN_LOG: unaryImpl([](float v) { return std::log(v); }, x, y, n); break;
    default: break;
  }
}

namespace {

struct RedDims {
  std::vector<int64_t> shape, stride;  // input dims (collapsed) and their element strides
  std::vector<bool> red;
  std::vector<int64_t> accStride;  // stride in the output for kept dims, 0 for reduced
};

template <bool IsMax, bool IsMin>
void walk(const RedDims& d, size_t k, const float* x, double* acc) {
  const int64_t n = d.shape[k];
  if (k + 1 == d.shape.size()) {
    if (d.red[k]) {
      if (IsMax || IsMin) {
        double m = acc[0];
        for (int64_t i = 0; i < n; i++) {
          const double v = x[i];
          if (v != v) m = v;
          else if (IsMax ? v > m : v < m) m = v;
        }
        acc[0] = m;
      } else {
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += x[i];
        acc[0] += s;
      }
    } else {
      for (int64_t i = 0; i < n; i++) {
        const double v = x[i];
        if (IsMax || IsMin) {
          if (v != v) acc[i] = v;
          else if (IsMax ? v > acc[i] : v < acc[i]) acc[i] = v;
        } else {
          acc[i] += v;
        }
      }
    }
    return;
  }
  for (int64_t i = 0; i < n; i++) walk<IsMax, IsMin>(d, k + 1, x + i * d.stride[k], acc + i * d.accStride[k]);
}

// One element into its accumulator, as walk() does for a last dim of size 1 (a full reduction of a 1-D tensor
// used to build a RedDims, four vectors, per element: 3 ms for 65536 values).
template <bool IsMax, bool IsMin>
inline void step1(float xv, double* a) {
  const double v = xv;
  if (IsMax || IsMin) {
    if (v != v) a[0] = v;
    else if (IsMax ? v > a[0] : v < a[0]) a[0] = v;
  } else {
    a[0] += v;
  }
}

template <bool IsMax, bool IsMin>
void reduceImpl(const RedDims& d, const float* x, double* acc, int64_t outSize) {
  const double init = IsMax ? -std::numeric_limits<double>::infinity()
                            : (IsMin ? std::numeric_limits<double>::infinity() : 0.0);
  std::fill(acc, acc + outSize, init);
  int64_t total = 1;
  for (int64_t s : d.shape) total *= s;
  const int T = total < kParallelMin ? 1 : omp_get_max_threads();
  const int64_t n0 = d.shape[0];
  if (!d.red[0] || T == 1 || n0 < T) {
    // Outer dim kept (threads write disjoint outputs) or too small to split: split it directly.
    const bool split = !d.red[0] && T > 1 && n0 >= T;
    if (d.shape.size() == 1) {
      // One dim: element i goes to acc[i] (kept) or acc[0] (reduced), in order.
      for (int64_t i = 0; i < n0; i++) step1<IsMax, IsMin>(x[i], acc + i * d.accStride[0]);
      return;
    }
#pragma omp parallel for num_threads(split ? T : 1) schedule(static)
    for (int64_t i = 0; i < n0; i++) walk<IsMax, IsMin>(d, 1, x + i * d.stride[0], acc + i * d.accStride[0]);
    return;
  }
  // Outer dim reduced: each thread accumulates a private copy, then they are combined.
  std::vector<std::vector<double>> part(T, std::vector<double>(outSize, init));
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    const int64_t i0 = n0 * t / T, i1 = n0 * (t + 1) / T;
    double* pa = part[t].data();
    if (d.shape.size() == 1) {
      for (int64_t i = i0; i < i1; i++) step1<IsMax, IsMin>(x[i], pa);
    } else {
      for (int64_t i = i0; i < i1; i++) walk<IsMax, IsMin>(d, 1, x + i * d.stride[0], pa);
    }
  }
  for (int t = 0; t < T; t++) {
    for (int64_t j = 0; j < outSize; j++) {
      const double v = part[t][j];
      if (IsMax || IsMin) {
        if (v != v || acc[j] != acc[j]) acc[j] = NAN;
        else if (IsMax ? v > acc[j] : v < acc[j]) acc[j] = v;
      } else {
        acc[j] += v;
      }
    }
  }
}

}  // namespace

void reduce(int op, int rank, const int64_t* shape, const bool* reduced, const float* x, float* out) {
  // Collapse: drop size-1 dims, merge neighbours of the same kind (the input is contiguous).
  RedDims d;
  std::vector<int64_t> sh;
  std::vector<bool> rd;
  int64_t count = 1, outSize = 1;
  for (int i = 0; i < rank; i++) {
    if (reduced[i]) count *= shape[i];
    else outSize *= shape[i];
    if (shape[i] == 1) continue;
    if (!sh.empty() && rd.back() == reduced[i]) {
      sh.back() *= shape[i];
    } else {
      sh.push_back(shape[i]);
      rd.push_back(reduced[i]);
    }
  }
  if (sh.empty()) {
    sh.push_back(1);
    rd.push_back(true);
  }
  const size_t r = sh.size();
  d.shape = sh;
  d.red = rd;
  d.stride.assign(r, 1);
  d.accStride.assign(r, 0);
  for (int i = static_cast<int>(r) - 2; i >= 0; i--) d.stride[i] = d.stride[i + 1] * sh[i + 1];
  int64_t as = 1;
  for (int i = static_cast<int>(r) - 1; i >= 0; i--) {
    if (!rd[i]) {
      d.accStride[i] = as;
      as *= sh[i];
    }
  }
  std::vector<double> acc(outSize);
  switch (op) {
    case RED_MAX: reduceImpl<true, false>(d, x, acc.data(), outSize); break;
    case RED_MIN: reduceImpl<false, true>(d, x, acc.data(), outSize); break;
    default: reduceImpl<false, false>(d, x, acc.data(), outSize); break;
  }
  const double scale = op == RED_MEAN ? 1.0 / static_cast<double>(count) : 1.0;
  for (int64_t j = 0; j < outSize; j++) out[j] = static_cast<float>(acc[j] * scale);
}

void copyRows(const float* src, int64_t rows, int64_t inner, float* dst, int64_t dstOffset, int64_t dstInner) {
  const int nt = rows * inner < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < rows; r++) std::memcpy(dst + r * dstInner + dstOffset, src + r * inner, sizeof(float) * inner);
}

void softmaxLastAxis(const float* x, float* y, int64_t rows, int64_t cols) {
  const int nt = rows * cols < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m = -INFINITY;
    for (int64_t j = 0; j < cols; j++) m = xr[j] > m ? xr[j] : m;
    double s = 0;
    for (int64_t j = 0; j < cols; j++) {
      yr[j] = std::exp(xr[j] - m);
      s += yr[j];
    }
    const float inv = static_cast<float>(1.0 / s);
    for (int64_t j = 0; j < cols; j++) yr[j] *= inv;
  }
}

}  // namespace karlo

namespace karlo {

// Per (n, group) mean and 1/sqrt(var + eps) of channels-last x [n, s, c] in double: sums and sums of squares over
// spatial rows with per-thread partials (T threads), combined in thread order. groupNorm and its gradient share it.
void groupStats(const float* x, int64_t n, int64_t s, int64_t c, int64_t g, float eps, int T, std::vector<double>& mean,
                std::vector<double>& rstd) {
  const int64_t cg = c / g;
  std::vector<double> part(static_cast<size_t>(T) * n * g * 2, 0.0);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    double* acc = part.data() + static_cast<size_t>(t) * n * g * 2;
    for (int64_t b = 0; b < n; b++) {
      const int64_t r0 = s * t / T, r1 = s * (t + 1) / T;
      double* ab = acc + b * g * 2;
      for (int64_t r = r0; r < r1; r++) {
        const float* row = x + (b * s + r) * c;
        for (int64_t k = 0; k < g; k++) {
          double sum = 0, sq = 0;
          const float* p = row + k * cg;
          for (int64_t j = 0; j < cg; j++) {
            sum += p[j];
            sq += static_cast<double>(p[j]) * p[j];
          }
          ab[2 * k] += sum;
          ab[2 * k + 1] += sq;
        }
      }
    }
  }
  const double cnt = static_cast<double>(s * cg);
  mean.assign(n * g, 0.0);
  rstd.assign(n * g, 0.0);
  for (int64_t b = 0; b < n; b++) {
    for (int64_t k = 0; k < g; k++) {
      double sum = 0, sq = 0;
      for (int t = 0; t < T; t++) {
        sum += part[(static_cast<size_t>(t) * n * g + b * g + k) * 2];
        sq += part[(static_cast<size_t>(t) * n * g + b * g + k) * 2 + 1];
      }
      const double m = sum / cnt;
      const double var = std::max(0.0, sq / cnt - m * m);
      mean[b * g + k] = m;
      rstd[b * g + k] = 1.0 / std::sqrt(var + eps);
    }
  }
}

void groupNorm(const float* x, const float* gamma, const float* beta, float* y, int64_t n, int64_t s, int64_t c,
               int64_t g, float eps, bool silu) {
  const int64_t cg = c / g;
  const int T = n * s * c < kParallelMin ? 1 : omp_get_max_threads();
  std::vector<double> mean, rstd;
  groupStats(x, n, s, c, g, eps, T, mean, rstd);
  // Per (n, channel) scale and shift: y = x * a + b.
  std::vector<float> scale(n * c), shift(n * c);
  for (int64_t b = 0; b < n; b++) {
    for (int64_t k = 0; k < g; k++) {
      for (int64_t j = 0; j < cg; j++) {
        const int64_t ch = k * cg + j;
        const double a = rstd[b * g + k] * (gamma ? gamma[ch] : 1.0);
        scale[b * c + ch] = static_cast<float>(a);
        shift[b * c + ch] = static_cast<float>((beta ? beta[ch] : 0.0) - mean[b * g + k] * a);
      }
    }
  }
  // Pass 2: normalise, affine, optional SiLU.
  const int64_t rows = n * s;
#pragma omp parallel for num_threads(T) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const int64_t b = r / s;
    const float* xr = x + r * c;
    float* yr = y + r * c;
    const float* a = scale.data() + b * c;
    const float* sh = shift.data() + b * c;
    if (silu) {
      for (int64_t j = 0; j < c; j++) {
        const float v = xr[j] * a[j] + sh[j];
        yr[j] = v / (1.f + std::exp(-v));
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < c; j++) yr[j] = xr[j] * a[j] + sh[j];
    }
  }
}


// The gradient of groupNorm (+ SiLU): with x̂ = (x − mean)·rstd, z = x̂·γ + β and dz = dy (or dy·σ(z)(1 + z(1 − σ(z)))
// after SiLU): dβ = Σ dz, dγ = Σ dz·x̂ over (n, spatial); dx = rstd·(dz·γ − mean_g(dz·γ) − x̂·mean_g(dz·γ·x̂)) with
// the means over each (n, group). Three passes instead of ~20 tfjs kernels; sums in double.
void groupNormGrad(const float* x, const float* gamma, const float* beta, const float* dy, float* dx, float* dgamma,
                   float* dbeta, int64_t n, int64_t s, int64_t c, int64_t g, float eps, bool silu) {
  const int64_t cg = c / g;
  const int T = n * s * c < kParallelMin ? 1 : omp_get_max_threads();
  const double cnt = static_cast<double>(s * cg);
  std::vector<double> mean, rstd;
  groupStats(x, n, s, c, g, eps, T, mean, rstd);  // the forward's statistics
  // Pass 2: dz (kept in dx) and per-(n, channel) Σ dz, Σ dz·x̂, per-thread partials over spatial rows.
  std::vector<double> sums(static_cast<size_t>(T) * n * c * 2, 0.0);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    for (int64_t b = 0; b < n; b++) {
      const int64_t r0 = s * t / T, r1 = s * (t + 1) / T;
      double* acc = sums.data() + (static_cast<size_t>(t) * n + b) * c * 2;
      for (int64_t r = r0; r < r1; r++) {
        const int64_t off = (b * s + r) * c;
        for (int64_t j = 0; j < c; j++) {
          const int64_t k = j / cg;
          const double xh = (x[off + j] - mean[b * g + k]) * rstd[b * g + k];
          double d = dy[off + j];
          if (silu) {
            const double z = xh * (gamma ? gamma[j] : 1.0) + (beta ? beta[j] : 0.0);
            const double sg = 1.0 / (1.0 + std::exp(-z));
            d *= sg * (1.0 + z * (1.0 - sg));
          }
          dx[off + j] = static_cast<float>(d);
          acc[2 * j] += d;
          acc[2 * j + 1] += d * xh;
        }
      }
    }
  }
  std::vector<double> sdz(n * c, 0.0), sdzx(n * c, 0.0);
  for (int t = 0; t < T; t++) {
    for (int64_t i = 0; i < n * c; i++) {
      sdz[i] += sums[(static_cast<size_t>(t) * n * c + i) * 2];
      sdzx[i] += sums[(static_cast<size_t>(t) * n * c + i) * 2 + 1];
    }
  }
  for (int64_t j = 0; j < c; j++) {
    double db = 0, dg = 0;
    for (int64_t b = 0; b < n; b++) {
      db += sdz[b * c + j];
      dg += sdzx[b * c + j];
    }
    if (dbeta) dbeta[j] = static_cast<float>(db);
    if (dgamma) dgamma[j] = static_cast<float>(dg);
  }
  // Per (n, group): m1 = mean(dz·γ), m2 = mean(dz·γ·x̂).
  std::vector<double> m1(n * g, 0.0), m2(n * g, 0.0);
  for (int64_t b = 0; b < n; b++) {
    for (int64_t j = 0; j < c; j++) {
      const double gj = gamma ? gamma[j] : 1.0;
      m1[b * g + j / cg] += gj * sdz[b * c + j];
      m2[b * g + j / cg] += gj * sdzx[b * c + j];
    }
  }
  for (int64_t i = 0; i < n * g; i++) {
    m1[i] /= cnt;
    m2[i] /= cnt;
  }
  // Pass 3: dx from dz.
  const int64_t rows = n * s;
#pragma omp parallel for num_threads(T) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const int64_t b = r / s;
    const int64_t off = r * c;
    for (int64_t j = 0; j < c; j++) {
      const int64_t k = b * g + j / cg;
      const double xh = (x[off + j] - mean[k]) * rstd[k];
      dx[off + j] = static_cast<float>(rstd[k] * (dx[off + j] * (gamma ? gamma[j] : 1.0) - m1[k] - xh * m2[k]));
    }
  }
}

}  // namespace karlo
