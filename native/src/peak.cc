// The machine's float32 peak, measured: every thread runs independent chains of fused multiply-adds on the widest
// vectors this build targets (AVX-512: 16 floats; AVX2+FMA: 8; else scalar), enough chains to hide the FMA
// latency on every FMA pipe. Nothing is loaded or stored inside the loop, so the rate is the FMA units' own.
#include <omp.h>

#include <chrono>

#include "kernels.h"

#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif

namespace karlo {

namespace {

// 12 chains of 4-cycle FMAs keep 3 FMA pipes busy; Zen 4/5 and recent Intel cores have 2 (512-bit) or 2-4 (256-bit).
constexpr int CHAINS = 12;

#if defined(__AVX512F__)
using Vec = __m512;
constexpr int LANES = 16;
inline Vec vset(float x) { return _mm512_set1_ps(x); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float vsum(Vec a) { return _mm512_reduce_add_ps(a); }
constexpr const char* WIDTH = "AVX-512 FMA (16 floats)";
#elif defined(__FMA__)
using Vec = __m256;
constexpr int LANES = 8;
inline Vec vset(float x) { return _mm256_set1_ps(x); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(Vec a) {
  alignas(32) float t[8];
  _mm256_store_ps(t, a);
  float s = 0;
  for (float x : t) s += x;
  return s;
}
constexpr const char* WIDTH = "AVX2 FMA (8 floats)";
#else
using Vec = float;
constexpr int LANES = 1;
inline Vec vset(float x) { return x; }
inline Vec vfma(Vec a, Vec b, Vec c) { return a * b + c; }
inline float vsum(Vec a) { return a; }
constexpr const char* WIDTH = "scalar";
#endif

float chains(int64_t iterations, float seed) {
  Vec acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = vset(seed + 0.001f * i);
  // |mul| < 1 and a small add: the values stay normal and finite for any iteration count.
  const Vec mul = vset(0.999999f), add = vset(1e-7f);
  for (int64_t it = 0; it < iterations; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; i++) acc[i] = vfma(acc[i], mul, add);
  }
  float s = 0;
  for (int i = 0; i < CHAINS; i++) s += vsum(acc[i]);
  return s;
}

}  // namespace

PeakResult fmaPeak(int64_t iterations, int threads) {
  if (threads < 1) threads = getThreads();
  volatile float sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
  {
    float s = chains(iterations, 0.5f + 0.01f * omp_get_thread_num());
#pragma omp atomic
    sink = sink + s;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (void)sink;
  PeakResult r;
  r.seconds = seconds;
  r.flops = 2.0 * LANES * CHAINS * static_cast<double>(iterations) * threads;
  r.threads = threads;
  r.width = WIDTH;
  return r;
}

}  // namespace karlo
