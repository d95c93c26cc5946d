// Native kernels behind the `native` tfjs backend. Every pointer is a caller-owned float32 buffer
// (a tfjs tensor's backing store); nothing here keeps references past a call.
#pragma once
#include <cstdint>
#include <string>

namespace karlo {

// Activations tfjs fuses into _FusedMatMul / FusedConv2D (prelu stays in JS).
enum Act { ACT_LINEAR = 0, ACT_RELU = 1, ACT_RELU6 = 2, ACT_LEAKYRELU = 3, ACT_SIGMOID = 4, ACT_ELU = 5 };

struct MatmulArgs {
  const float *a, *b, *bias;  // bias: [n] or nullptr
  float *out;                 // [batch, m, n]
  int64_t batchA, batchB, m, n, k;  // batchA/batchB equal, or one of them 1 (broadcast)
  bool transA, transB;
  int act;
  float alpha;  // leakyrelu slope
};

struct ConvShape {
  int64_t n, h, w, c;    // input NHWC
  int64_t kh, kw, o;     // filter HWIO = [kh, kw, c, o]
  int64_t oh, ow;        // output NHWC = [n, oh, ow, o]
  int64_t sh, sw, dh, dw;  // strides, dilations (tfjs convention: 1 = none)
  int64_t pt, pl, pb, pr;  // paddings
};

// Each throws std::runtime_error with a readable message when oneDNN rejects the problem.
void matmulDnnl(const MatmulArgs& p);
void matmulBlas(const MatmulArgs& p);
// weightsId != 0: the caller guarantees `w` is immutable while that id lives, so its packed form may be cached.
void conv2dForward(const ConvShape& s, const float* x, const float* w, const float* bias, float* y, int act, float alpha,
                   uint64_t weightsId);
// Forward conv algorithm (gradients always run direct): direct; Winograd for every 3x3 stride-1 conv oneDNN accepts;
// auto: Winograd where it measured faster. A conv oneDNN refuses Winograd for runs direct.
enum ConvAlgo { CONV_DIRECT = 0, CONV_WINOGRAD = 1, CONV_AUTO = 2 };
void setConvAlgo(int algo);
int getConvAlgo();
// auto runs direct where Winograd's scratch (blocked activations + oneDNN's scratchpad) would pass this many bytes.
void setWinogradBudget(size_t bytes);
// Forward convs executed so far with each algorithm, and the oneDNN implementation of the last one.
struct ConvRuns {
  uint64_t direct, winograd;
  std::string lastImpl;
};
ConvRuns convRuns();
void releaseWeights(uint64_t id);
void setWeightCacheBudget(size_t bytes);
size_t weightCacheBytes();
void conv2dBackwardData(const ConvShape& s, const float* dy, const float* w, float* dx);
void conv2dBackwardFilter(const ConvShape& s, const float* x, const float* dy, float* dw);
void setThreads(int n);
int getThreads();
std::string describe();
void clearCache();

// Elementwise and reductions (OpenMP over both cores).
// Binary op with broadcasting given by element strides (0 on broadcast dims) over an output of `rank` dims.
// OP_COPY: out = a (b ignored): with a's strides a transpose, broadcast or nearest upsample as one strided copy.
enum BinOp { OP_ADD = 0, OP_SUB = 1, OP_MUL = 2, OP_DIV = 3, OP_SQDIFF = 4, OP_MAX = 5, OP_MIN = 6, OP_COPY = 7 };
void binary(int op, int rank, const int64_t* shape, const float* a, const int64_t* sa, const float* b,
            const int64_t* sb, float* out);
enum UnOp { UN_SIGMOID = 0, UN_EXP = 1, UN_RSQRT = 2, UN_SQRT = 3, UN_TANH = 4, UN_ERF = 5, UN_NEG = 6,
            UN_RELU = 7, UN_SQUARE = 8, UN_SILU = 9, UN_ABS = 10, UN_LOG = 11 };
void unary(int op, const float* x, float* y, int64_t len);
// Reduce x (shape, rank) over the axes flagged in `reduced`; out has the kept dims in order.
enum RedOp { RED_SUM = 0, RED_MEAN = 1, RED_MAX = 2, RED_MIN = 3 };
void reduce(int op, int rank, const int64_t* shape, const bool* reduced, const float* x, float* out);
// GroupNorm over channels-last x [n, s, c] with g groups, per-channel gamma/beta (nullable), then SiLU if asked.
void groupNorm(const float* x, const float* gamma, const float* beta, float* y, int64_t n, int64_t s, int64_t c,
               int64_t g, float eps, bool silu);
void groupNormGrad(const float* x, const float* gamma, const float* beta, const float* dy, float* dx, float* dgamma,
                   float* dbeta, int64_t n, int64_t s, int64_t c, int64_t g, float eps, bool silu);
// Softmax over the last axis of [rows, cols].
void softmaxLastAxis(const float* x, float* y, int64_t rows, int64_t cols);
void copyRows(const float* src, int64_t rows, int64_t inner, float* dst, int64_t dstOffset, int64_t dstInner);

// The float32 FMA peak (peak.cc): `iterations` rounds of independent vector FMA chains on `threads` threads (< 1:
// getThreads()); flops = 2 · lanes · chains · iterations · threads.
struct PeakResult {
  double seconds, flops;
  int threads;
  const char* width;
};
PeakResult fmaPeak(int64_t iterations, int threads);

}  // namespace karlo
