// Matmul and convolution through oneDNN (and OpenBLAS sgemm as the alternative GEMM).
// oneDNN primitive creation costs far more than a small call, so primitives are cached by problem key.
#include <cblas.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include <sys/mman.h>

#include "dnnl.hpp"
#include "kernels.h"

extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_config(void);

namespace karlo {
using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

engine& eng() {
  static engine e(engine::kind::cpu, 0);
  return e;
}
stream& strm() {
  static stream s(eng());
  return s;
}

// Scratch for reordered weights, reused across calls (grows only).
struct Scratch {
  float* p = nullptr;
  size_t bytes = 0;
  float* get(size_t need) {
    if (need > bytes) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, (need + 63) / 64 * 64));
      if (!p) throw std::runtime_error("out of memory allocating " + std::to_string(need) + " bytes of scratch");
      bytes = need;
    }
    return p;
  }
  void release() {
    std::free(p);
    p = nullptr;
    bytes = 0;
  }
};
Scratch g_wscratch;
// Scratch mapped straight from the OS (grows only, unmapped on release): the Winograd buffers reach hundreds of MB,
// and from the heap (the addon turns glibc's mmap threshold off) each growth would leave its predecessor behind as a
// hole that only a tensor of that size could reuse.
struct MappedScratch {
  float* p = nullptr;
  size_t bytes = 0;
  float* get(size_t need) {
    if (need > bytes) {
      release();
      const size_t len = (need + 4095) / 4096 * 4096;
      void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) throw std::runtime_error("out of memory mapping " + std::to_string(need) + " bytes of scratch");
      p = static_cast<float*>(m);
      bytes = len;
    }
    return p;
  }
  void release() {
    if (p) munmap(p, bytes);
    p = nullptr;
    bytes = 0;
  }
};
// Around a Winograd conv: the activations in its blocked layout, and oneDNN's scratchpad (the transformed tiles:
// 170-770 MB per super-res conv at 128x128-256x256), one of each shared by every Winograd primitive.
MappedScratch g_srcScratch, g_dstScratch, g_padScratch;

// Reordered (packed) conv weights, by the caller's id for the weights array (immutable while the id lives) and the
// layout the primitive wants, within a byte budget; the caller releases an id when its array is collected.
// What a cached packing saves is one pass over the weights per call, which matters in proportion to the weights per
// output pixel: each entry carries its conv's output pixels, and when the budget is full an entry is admitted only
// by evicting entries of strictly more pixels. A UNet visits its filters in the same order every step, so the
// cache settles after one step on the filters with the fewest pixels that fit, and never thrashes (plain LRU would
// turn a working set just over the budget into a miss on every call).
struct PackedWeights {
  uint64_t id;
  memory::desc md;
  float* data;
  size_t bytes;
  int64_t pixels;
};
std::list<PackedWeights> g_packed;
size_t g_packedBytes = 0;
size_t g_packedBudget = size_t(1) << 30;

void dropPacked(std::list<PackedWeights>::iterator it) {
  g_packedBytes -= it->bytes;
  std::free(it->data);
  g_packed.erase(it);
}

// Makes room for `bytes` by evicting entries of more than `pixels` output pixels, most pixels first; false (and
// nothing evicted) when that cannot free enough.
bool makeRoom(size_t bytes, int64_t pixels) {
  if (bytes > g_packedBudget) return false;
  size_t freeable = g_packedBudget - g_packedBytes;
  for (const auto& e : g_packed)
    if (e.pixels > pixels) freeable += e.bytes;
  if (freeable < bytes) return false;
  while (g_packedBytes + bytes > g_packedBudget) {
    auto worst = g_packed.begin();
    for (auto it = g_packed.begin(); it != g_packed.end(); ++it)
      if (it->pixels > worst->pixels) worst = it;
    dropPacked(worst);
  }
  return true;
}

// Returns packed weights for (id, md), reordering from `user` on a miss; nullptr when they do not fit the budget.
float* packedWeights(uint64_t id, const memory::desc& md, int64_t pixels, reorder& r, memory& user) {
  for (auto& e : g_packed)
    if (e.id == id && e.md == md) return e.data;
  const size_t bytes = md.get_size();
  if (!makeRoom(bytes, pixels)) return nullptr;
  float* data = static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  if (!data) return nullptr;
  memory packed(md, eng(), data);
  r.execute(strm(), user, packed);
  g_packed.push_back(PackedWeights{id, md, data, bytes, pixels});
  g_packedBytes += bytes;
  return data;
}

// Problems below this many flops (well under a millisecond) run on one thread: on two cores a second thread
// saves little there, and when other processes compete for the cores every OpenMP barrier can wait a whole
// scheduler time slice (measured: a 54 MFLOP batched attention matmul went from 0.3 ms to 8-15 ms).
const double kSingleThreadFlops = double(1 << 27);
int g_threads = 1;

// Runs the enclosed primitive creation and execution on one thread when the problem is small.
struct ThreadScope {
  bool single;
  explicit ThreadScope(double flops) : single(flops < kSingleThreadFlops && g_threads > 1) {
    if (single) omp_set_num_threads(1);
  }
  ~ThreadScope() {
    if (single) omp_set_num_threads(g_threads);
  }
  int threads() const { return single ? 1 : g_threads; }
};

post_ops actPostOps(int act, float alpha) {
  post_ops po;
  switch (act) {
    case ACT_LINEAR: break;
    case ACT_RELU: po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f); break;
    case ACT_RELU6: po.append_eltwise(1.f, algorithm::eltwise_clip, 0.f, 6.f); break;
    case ACT_LEAKYRELU: po.append_eltwise(1.f, algorithm::eltwise_relu, alpha, 0.f); break;
    case ACT_SIGMOID: po.append_eltwise(1.f, algorithm::eltwise_logistic, 0.f, 0.f); break;
    case ACT_ELU: po.append_eltwise(1.f, algorithm::eltwise_elu, 1.f, 0.f); break;
    default: throw std::runtime_error("unsupported fused activation id " + std::to_string(act));
  }
  return po;
}

// ---------- matmul ----------
struct MatmulEntry {
  matmul::primitive_desc pd;
  matmul prim;
};
std::unordered_map<std::string, std::unique_ptr<MatmulEntry>> g_matmul;

// ---------- conv ----------
struct ConvFwdEntry {
  convolution_forward::primitive_desc pd;
  convolution_forward prim;
  memory::desc userW;
  bool reorderW;
  reorder wReorder;
  bool winograd;
  std::string impl;  // oneDNN's implementation name, e.g. "jit_wino_4x3:avx512_core"
  // Winograd wants blocked activations (nChw16c): x is reordered from NHWC before, y back to NHWC after.
  memory::desc userSrc, userDst;
  bool reorderSrc, reorderDst;
  reorder srcReorder, dstReorder;
};
struct ConvBwdDataEntry {
  convolution_backward_data::primitive_desc pd;
  convolution_backward_data prim;
  memory::desc userW;
  bool reorderW;
  reorder wReorder;
};
struct ConvBwdWeightsEntry {
  convolution_backward_weights::primitive_desc pd;
  convolution_backward_weights prim;
  memory::desc userW;
  bool reorderW;
  reorder wReorder;  // from the primitive's diff_weights layout back to HWIO
};
std::unordered_map<std::string, std::unique_ptr<ConvFwdEntry>> g_convFwd;
std::unordered_map<std::string, std::unique_ptr<ConvBwdDataEntry>> g_convBwdData;
std::unordered_map<std::string, std::unique_ptr<ConvBwdWeightsEntry>> g_convBwdWeights;
const size_t kMaxEntries = 512;

template <class M>
void bound(M& m) {
  if (m.size() >= kMaxEntries) m.clear();
}

std::string convKey(const ConvShape& s) {
  std::ostringstream k;
  k << s.n << ',' << s.h << ',' << s.w << ',' << s.c << ',' << s.kh << ',' << s.kw << ',' << s.o << ',' << s.oh
    << ',' << s.ow << ',' << s.sh << ',' << s.sw << ',' << s.dh << ',' << s.dw << ',' << s.pt << ',' << s.pl << ','
    << s.pb << ',' << s.pr;
  return k.str();
}

double convFlops(const ConvShape& s) { return 2.0 * s.n * s.oh * s.ow * s.o * s.c * s.kh * s.kw; }

struct ConvDescs {
  memory::desc src, wAny, wUser, dst, bias;
  memory::dims strides, dil, padL, padR;
};
ConvDescs convDescs(const ConvShape& s, bool withBias) {
  ConvDescs d;
  d.src = memory::desc({s.n, s.c, s.h, s.w}, dt::f32, tag::nhwc);
  d.dst = memory::desc({s.n, s.o, s.oh, s.ow}, dt::f32, tag::nhwc);
  d.wAny = memory::desc({s.o, s.c, s.kh, s.kw}, dt::f32, tag::any);
  d.wUser = memory::desc({s.o, s.c, s.kh, s.kw}, dt::f32, tag::hwio);
  d.bias = withBias ? memory::desc({s.o}, dt::f32, tag::x) : memory::desc();
  d.strides = {s.sh, s.sw};
  d.dil = {s.dh - 1, s.dw - 1};
  d.padL = {s.pt, s.pl};
  d.padR = {s.pb, s.pr};
  return d;
}

convolution_forward::primitive_desc convFwdPd(const ConvDescs& d, prop_kind pk, const primitive_attr& attr,
                                              algorithm alg = algorithm::convolution_direct) {
  auto desc = convolution_forward::desc(pk, alg, d.src, d.wAny, d.bias, d.dst, d.strides, d.dil, d.padL, d.padR);
  return convolution_forward::primitive_desc(desc, attr, eng());
}

// The algorithm of forward (inference) convolutions: CONV_DIRECT everywhere, or Winograd F(4x4,3x3) for 3x3 stride-1
// undilated convs (CONV_WINOGRAD: every such conv oneDNN accepts; CONV_AUTO: those where it measured faster here,
// winogradPays). A conv oneDNN refuses Winograd for runs direct. Gradients always run direct.
int g_convAlgo = CONV_DIRECT;
uint64_t g_convRuns[2] = {0, 0};  // forward executions: direct, winograd
std::string g_lastConvImpl;

bool winogradShape(const ConvShape& s) {
  return s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1;
}

// CONV_AUTO's rule, from `bench kernels` and a probe of Karlo's 3x3 shapes here (oneDNN 2.6, Zen 5): Winograd
// F(4x4,3x3), with the activation reorders and the filter transform, is 1.2-1.5x direct at 64-128 channels and
// 1.7-2.9x at Karlo's 320-1280, and slower (0.2-0.9x) with 3-16 input or output channels. Its filter transform is
// 4x the size of the filter (6x6 tiles for 3x3) and costs about as much as a direct conv over ~8192 output pixels:
// from 16384 output pixels per call on it is amortised on every call (the backend caches no filter there,
// PACK_BELOW_PIXELS in Conv2D.ts); below, Winograd pays only with the transform cached, where it would take four
// times the cache room of a direct packing, so auto leaves those convs (all of the decoder's at batch 2, the
// super-res UNets' 64x64 and 32x32 levels) direct; `winograd` runs them too. Auto also bounds the scratch
// (g_winogradBudget).
const int64_t kWinogradAutoPixels = 16384;
bool winogradPays(const ConvShape& s) { return s.c >= 64 && s.o >= 64 && s.n * s.oh * s.ow >= kWinogradAutoPixels; }

// auto's memory bound: a Winograd conv whose blocked activations and scratchpad (shared by all of them, kept between
// calls) would pass this many bytes runs direct (KARLO_NATIVE_WINOGRAD_MB).
size_t g_winogradBudget = size_t(512) << 20;

bool tryWinograd(const ConvShape& s) {
  if (g_convAlgo == CONV_DIRECT || !winogradShape(s)) return false;
  return g_convAlgo == CONV_WINOGRAD || winogradPays(s);
}

bool debugOn() {
  static const bool on = [] {
    const char* v = std::getenv("KARLO_NATIVE_DEBUG");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

}  // namespace

void matmulDnnl(const MatmulArgs& p) {
  const int64_t batch = std::max(p.batchA, p.batchB);
  ThreadScope ts(2.0 * batch * p.m * p.n * p.k);
  std::ostringstream k;
  k << ts.threads() << ':' << p.batchA << ',' << p.batchB << ',' << p.m << ',' << p.n << ',' << p.k << ',' << p.transA << p.transB << ','
    << (p.bias != nullptr) << ',' << p.act << ',' << p.alpha;
  const std::string key = k.str();
  auto it = g_matmul.find(key);
  if (it == g_matmul.end()) {
    bound(g_matmul);
    // Transposes are expressed as strides: no copies.
    memory::dims aStr = p.transA ? memory::dims{p.m * p.k, 1, p.m} : memory::dims{p.m * p.k, p.k, 1};
    memory::dims bStr = p.transB ? memory::dims{p.k * p.n, 1, p.k} : memory::dims{p.k * p.n, p.n, 1};
    memory::desc aMd({p.batchA, p.m, p.k}, dt::f32, aStr);
    memory::desc bMd({p.batchB, p.k, p.n}, dt::f32, bStr);
    memory::desc cMd({batch, p.m, p.n}, dt::f32, tag::abc);
    memory::desc biasMd = p.bias ? memory::desc({1, 1, p.n}, dt::f32, tag::abc) : memory::desc();
    primitive_attr attr;
    attr.set_post_ops(actPostOps(p.act, p.alpha));
    auto desc = matmul::desc(aMd, bMd, biasMd, cMd);
    auto pd = matmul::primitive_desc(desc, attr, eng());
    auto e = std::unique_ptr<MatmulEntry>(new MatmulEntry{pd, matmul(pd)});
    it = g_matmul.emplace(key, std::move(e)).first;
  }
  MatmulEntry& e = *it->second;
  memory aM(e.pd.src_desc(), eng(), const_cast<float*>(p.a));
  memory bM(e.pd.weights_desc(), eng(), const_cast<float*>(p.b));
  memory cM(e.pd.dst_desc(), eng(), p.out);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, aM}, {DNNL_ARG_WEIGHTS, bM}, {DNNL_ARG_DST, cM}};
  if (p.bias) args.emplace(DNNL_ARG_BIAS, memory(e.pd.bias_desc(), eng(), const_cast<float*>(p.bias)));
  e.prim.execute(strm(), args);
  strm().wait();
}

static inline float applyAct(float v, int act, float alpha) {
  switch (act) {
    case ACT_RELU: return v > 0.f ? v : 0.f;
    case ACT_RELU6: return v < 0.f ? 0.f : (v > 6.f ? 6.f : v);
    case ACT_LEAKYRELU: return v >= 0.f ? v : alpha * v;
    case ACT_SIGMOID: return 1.f / (1.f + std::exp(-v));
    case ACT_ELU: return v >= 0.f ? v : std::expm1(v);
    default: return v;
  }
}

void matmulBlas(const MatmulArgs& p) {
  const int64_t batch = std::max(p.batchA, p.batchB);
  for (int64_t i = 0; i < batch; i++) {
    const float* a = p.a + (p.batchA == 1 ? 0 : i) * p.m * p.k;
    const float* b = p.b + (p.batchB == 1 ? 0 : i) * p.k * p.n;
    float* c = p.out + i * p.m * p.n;
    cblas_sgemm(CblasRowMajor, p.transA ? CblasTrans : CblasNoTrans, p.transB ? CblasTrans : CblasNoTrans, p.m, p.n,
                p.k, 1.f, a, p.transA ? p.m : p.k, b, p.transB ? p.k : p.n, 0.f, c, p.n);
  }
  if (p.bias || p.act != ACT_LINEAR) {
    const int64_t rows = batch * p.m;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      float* c = p.out + r * p.n;
      for (int64_t j = 0; j < p.n; j++) c[j] = applyAct(c[j] + (p.bias ? p.bias[j] : 0.f), p.act, p.alpha);
    }
  }
}

namespace {

// The forward entry (primitive, reorders) of a problem, created on first use. wino asks for Winograd; the entry
// says whether it got it (oneDNN may refuse: then it is the direct one).
ConvFwdEntry& convFwdEntry(const ConvShape& s, bool withBias, int act, float alpha, int threads, bool wino) {
  std::ostringstream k;
  k << threads << ':' << convKey(s) << ',' << withBias << ',' << act << ',' << alpha << ',' << wino;
  if (wino && g_convAlgo == CONV_AUTO) k << ',' << g_winogradBudget;
  const std::string key = k.str();
  auto it = g_convFwd.find(key);
  if (it == g_convFwd.end()) {
    bound(g_convFwd);
    ConvDescs d = convDescs(s, withBias);
    primitive_attr attr;
    attr.set_post_ops(actPostOps(act, alpha));
    convolution_forward::primitive_desc pd;
    bool isWino = false;
    if (wino) {
      try {
        // oneDNN's Winograd takes only blocked activations: let it choose their layout.
        ConvDescs blocked = d;
        blocked.src = memory::desc(d.src.dims(), dt::f32, tag::any);
        blocked.dst = memory::desc(d.dst.dims(), dt::f32, tag::any);
        primitive_attr winoAttr;  // (a copy of attr would share its handle)
        winoAttr.set_post_ops(actPostOps(act, alpha));
        winoAttr.set_scratchpad_mode(scratchpad_mode::user);
        pd = convFwdPd(blocked, prop_kind::forward_inference, winoAttr, algorithm::convolution_winograd);
        isWino = true;
        const size_t scratch =
            pd.scratchpad_desc().get_size() + pd.src_desc().get_size() + pd.dst_desc().get_size();
        if (g_convAlgo == CONV_AUTO && scratch > g_winogradBudget) {
          if (debugOn())
            std::fprintf(stderr, "native conv2d: auto: winograd for [%s] would need %.1f MB of scratch (over %.1f): direct\n",
                         convKey(s).c_str(), scratch / 1048576.0, g_winogradBudget / 1048576.0);
          isWino = false;
        }
      } catch (const dnnl::error& err) {
        if (debugOn())
          std::fprintf(stderr, "native conv2d: oneDNN rejects winograd for [%s] (%s): running direct\n",
                       convKey(s).c_str(), err.what());
      }
    }
    if (!isWino) pd = convFwdPd(d, prop_kind::forward_inference, attr);
    if (isWino && debugOn())
      std::fprintf(stderr, "native conv2d: winograd for [%s]: %s, scratchpad %.1f MB, filter transform %.1f MB\n",
                   convKey(s).c_str(), pd.impl_info_str(), pd.scratchpad_desc().get_size() / 1048576.0,
                   pd.weights_desc().get_size() / 1048576.0);
    bool re = pd.weights_desc() != d.wUser;
    bool reSrc = pd.src_desc() != d.src, reDst = pd.dst_desc() != d.dst;
    auto e = std::unique_ptr<ConvFwdEntry>(new ConvFwdEntry{
        pd, convolution_forward(pd), d.wUser, re,
        re ? reorder(reorder::primitive_desc(eng(), d.wUser, eng(), pd.weights_desc())) : reorder(), isWino,
        pd.impl_info_str(), d.src, d.dst, reSrc, reDst,
        reSrc ? reorder(reorder::primitive_desc(eng(), d.src, eng(), pd.src_desc())) : reorder(),
        reDst ? reorder(reorder::primitive_desc(eng(), pd.dst_desc(), eng(), d.dst)) : reorder()});
    it = g_convFwd.emplace(key, std::move(e)).first;
  }
  return *it->second;
}

}  // namespace

void conv2dForward(const ConvShape& s, const float* x, const float* w, const float* bias, float* y, int act,
                   float alpha, uint64_t weightsId) {
  ThreadScope ts(convFlops(s));
  const int64_t pixels = s.n * s.oh * s.ow;
  ConvFwdEntry* const e = &convFwdEntry(s, bias != nullptr, act, alpha, ts.threads(), tryWinograd(s));
  g_convRuns[e->winograd ? 1 : 0]++;
  g_lastConvImpl = e->impl;
  memory wUser(e->userW, eng(), const_cast<float*>(w));
  memory wM = wUser;
  if (e->reorderW) {
    float* packed =
        weightsId ? packedWeights(weightsId, e->pd.weights_desc(), pixels, e->wReorder, wUser) : nullptr;
    if (packed) {
      wM = memory(e->pd.weights_desc(), eng(), packed);
    } else {
      wM = memory(e->pd.weights_desc(), eng(), g_wscratch.get(e->pd.weights_desc().get_size()));
      e->wReorder.execute(strm(), wUser, wM);
    }
  }
  memory xM(e->userSrc, eng(), const_cast<float*>(x)), yM(e->userDst, eng(), y);
  if (e->reorderSrc) {
    memory blocked(e->pd.src_desc(), eng(), g_srcScratch.get(e->pd.src_desc().get_size()));
    e->srcReorder.execute(strm(), xM, blocked);
    xM = blocked;
  }
  memory yUser = yM;
  if (e->reorderDst) yM = memory(e->pd.dst_desc(), eng(), g_dstScratch.get(e->pd.dst_desc().get_size()));
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, xM}, {DNNL_ARG_WEIGHTS, wM}, {DNNL_ARG_DST, yM}};
  if (bias) args.emplace(DNNL_ARG_BIAS, memory(e->pd.bias_desc(), eng(), const_cast<float*>(bias)));
  if (e->winograd) {
    const memory::desc pad = e->pd.scratchpad_desc();
    if (pad.get_size()) args.emplace(DNNL_ARG_SCRATCHPAD, memory(pad, eng(), g_padScratch.get(pad.get_size())));
  }
  e->prim.execute(strm(), args);
  if (e->reorderDst) e->dstReorder.execute(strm(), yM, yUser);
  strm().wait();
}

void conv2dBackwardData(const ConvShape& s, const float* dy, const float* w, float* dx) {
  ThreadScope ts(convFlops(s));
  const std::string key = std::to_string(ts.threads()) + ':' + convKey(s);
  auto it = g_convBwdData.find(key);
  if (it == g_convBwdData.end()) {
    bound(g_convBwdData);
    ConvDescs d = convDescs(s, false);
    auto hint = convFwdPd(d, prop_kind::forward_training, primitive_attr());
    auto desc = convolution_backward_data::desc(algorithm::convolution_direct, d.src, d.wAny, d.dst, d.strides,
                                                d.dil, d.padL, d.padR);
    auto pd = convolution_backward_data::primitive_desc(desc, eng(), hint);
    bool re = pd.weights_desc() != d.wUser;
    auto e = std::unique_ptr<ConvBwdDataEntry>(new ConvBwdDataEntry{
        pd, convolution_backward_data(pd), d.wUser, re,
        re ? reorder(reorder::primitive_desc(eng(), d.wUser, eng(), pd.weights_desc())) : reorder()});
    it = g_convBwdData.emplace(key, std::move(e)).first;
  }
  ConvBwdDataEntry& e = *it->second;
  memory wUser(e.userW, eng(), const_cast<float*>(w));
  memory wM = wUser;
  if (e.reorderW) {
    wM = memory(e.pd.weights_desc(), eng(), g_wscratch.get(e.pd.weights_desc().get_size()));
    e.wReorder.execute(strm(), wUser, wM);
  }
  e.prim.execute(strm(), {{DNNL_ARG_DIFF_DST, memory(e.pd.diff_dst_desc(), eng(), const_cast<float*>(dy))},
                          {DNNL_ARG_WEIGHTS, wM},
                          {DNNL_ARG_DIFF_SRC, memory(e.pd.diff_src_desc(), eng(), dx)}});
  strm().wait();
}

void conv2dBackwardFilter(const ConvShape& s, const float* x, const float* dy, float* dw) {
  ThreadScope ts(convFlops(s));
  const std::string key = std::to_string(ts.threads()) + ':' + convKey(s);
  auto it = g_convBwdWeights.find(key);
  if (it == g_convBwdWeights.end()) {
    bound(g_convBwdWeights);
    ConvDescs d = convDescs(s, false);
    auto hint = convFwdPd(d, prop_kind::forward_training, primitive_attr());
    auto desc = convolution_backward_weights::desc(algorithm::convolution_direct, d.src, d.wAny, d.dst, d.strides,
                                                   d.dil, d.padL, d.padR);
    auto pd = convolution_backward_weights::primitive_desc(desc, eng(), hint);
    bool re = pd.diff_weights_desc() != d.wUser;
    auto e = std::unique_ptr<ConvBwdWeightsEntry>(new ConvBwdWeightsEntry{
        pd, convolution_backward_weights(pd), d.wUser, re,
        re ? reorder(reorder::primitive_desc(eng(), pd.diff_weights_desc(), eng(), d.wUser)) : reorder()});
    it = g_convBwdWeights.emplace(key, std::move(e)).first;
  }
  ConvBwdWeightsEntry& e = *it->second;
  memory wUser(e.userW, eng(), dw);
  memory wM = wUser;
  if (e.reorderW) wM = memory(e.pd.diff_weights_desc(), eng(), g_wscratch.get(e.pd.diff_weights_desc().get_size()));
  e.prim.execute(strm(), {{DNNL_ARG_SRC, memory(e.pd.src_desc(), eng(), const_cast<float*>(x))},
                          {DNNL_ARG_DIFF_DST, memory(e.pd.diff_dst_desc(), eng(), const_cast<float*>(dy))},
                          {DNNL_ARG_DIFF_WEIGHTS, wM}});
  if (e.reorderW) e.wReorder.execute(strm(), wM, wUser);
  strm().wait();
}

void setConvAlgo(int algo) {
  if (algo != CONV_DIRECT && algo != CONV_WINOGRAD && algo != CONV_AUTO)
    throw std::runtime_error("conv algorithm must be 0 (direct), 1 (winograd) or 2 (auto), got " + std::to_string(algo));
  g_convAlgo = algo;
}
int getConvAlgo() { return g_convAlgo; }
void setWinogradBudget(size_t bytes) { g_winogradBudget = bytes; }
ConvRuns convRuns() { return ConvRuns{g_convRuns[0], g_convRuns[1], g_lastConvImpl}; }

void releaseWeights(uint64_t id) {
  for (auto it = g_packed.begin(); it != g_packed.end();) {
    auto next = std::next(it);
    if (it->id == id) dropPacked(it);
    it = next;
  }
}

void setWeightCacheBudget(size_t bytes) {
  g_packedBudget = bytes;
  while (!g_packed.empty() && g_packedBytes > g_packedBudget) {
    auto worst = g_packed.begin();
    for (auto it = g_packed.begin(); it != g_packed.end(); ++it)
      if (it->pixels > worst->pixels) worst = it;
    dropPacked(worst);
  }
}

size_t weightCacheBytes() { return g_packedBytes; }

void setThreads(int n) {
  if (n < 1) n = 1;
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int getThreads() { return omp_get_max_threads(); }

std::string describe() {
  const dnnl_version_t* v = dnnl_version();
  std::ostringstream o;
  o << "oneDNN " << v->major << '.' << v->minor << '.' << v->patch << ", " << openblas_get_config() << ", "
    << omp_get_max_threads() << " threads";
  return o.str();
}

void clearCache() {
  g_matmul.clear();
  g_convFwd.clear();
  g_convBwdData.clear();
  g_convBwdWeights.clear();
  g_wscratch.release();
  g_srcScratch.release();
  g_dstScratch.release();
  g_padScratch.release();
  while (!g_packed.empty()) dropPacked(g_packed.begin());
}

}  // namespace karlo
