// Loading the N-API addon built from native/ (oneDNN + OpenBLAS), and its typed surface.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Fused activations the addon applies in the same pass (ids match native/src/kernels.h). */
export const ACT = { linear: 0, relu: 1, relu6: 2, leakyrelu: 3, sigmoid: 4, elu: 5 } as const;
export const BIN_OP = { Add: 0, Sub: 1, Multiply: 2, RealDiv: 3, SquaredDifference: 4, Maximum: 5, Minimum: 6 } as const;
/** binary() op id of a strided copy (out = a; b unused): transposes and nearest upsampling. */
export const OP_COPY = 7;
export const UN_OP = {
  Sigmoid: 0, Exp: 1, Rsqrt: 2, Sqrt: 3, Tanh: 4, Erf: 5, Neg: 6, Relu: 7, Square: 8, Abs: 10, Log: 11,
} as const;
export const RED_OP = { Sum: 0, Mean: 1, Max: 2, Min: 3 } as const;

export interface NativeAddon {
  /** out[batch,m,n] = act(op(a)·op(b) + bias); batchA/batchB equal or 1 (broadcast). useBlas: OpenBLAS sgemm instead of oneDNN. */
  matmul(a: Float32Array, b: Float32Array, out: Float32Array, bias: Float32Array | null, batchA: number, batchB: number,
    m: number, n: number, k: number, transA: boolean, transB: boolean, act: number, alpha: number, useBlas: boolean): void;
  /**
   * NHWC x, HWIO w; shape = [n,h,w,c, kh,kw,o, oh,ow, sh,sw, dh,dw, pt,pl,pb,pr]. weightsId > 0 promises that `w` does
   * not change while that id lives (releaseWeights): its packed form is then cached.
   */
  conv2d(x: Float32Array, w: Float32Array, bias: Float32Array | null, y: Float32Array, shape: number[], act: number,
    alpha: number, weightsId: number): void;
  releaseWeights(id: number): void;
  /**
   * Sets the forward conv algorithm (CONV_ALGO ids) and auto's Winograd scratch budget in bytes when given; returns
   * the algorithm in effect.
   */
  convAlgo(algo?: number, winogradBudgetBytes?: number): number;
  /** Forward convs run so far with each algorithm, and oneDNN's name for the last one's implementation. */
  convRuns(): { direct: number; winograd: number; lastImpl: string };
  /** Sets the packed-weights cache budget in bytes (when given); returns the bytes it holds. */
  weightCache(budgetBytes?: number): number;
  conv2dBackpropInput(dy: Float32Array, w: Float32Array, dx: Float32Array, shape: number[]): void;
  conv2dBackpropFilter(x: Float32Array, dy: Float32Array, dw: Float32Array, shape: number[]): void;
  binary(op: number, outShape: number[], a: Float32Array, stridesA: number[], b: Float32Array, stridesB: number[], out: Float32Array): void;
  unary(op: number, x: Float32Array, y: Float32Array): void;
  reduce(op: number, shape: number[], reduced: number[], x: Float32Array, out: Float32Array): void;
  softmax(x: Float32Array, y: Float32Array, rows: number, cols: number): void;
  /** GroupNorm over channels-last x [n, s, c] (g groups), per-channel gamma/beta, then SiLU if asked. */
  groupNorm(x: Float32Array, gamma: Float32Array | null, beta: Float32Array | null, y: Float32Array, n: number, s: number,
    c: number, groups: number, eps: number, silu: boolean): void;
  groupNormGrad(x: Float32Array, gamma: Float32Array, beta: Float32Array, dy: Float32Array, dx: Float32Array, dgamma: Float32Array,
    dbeta: Float32Array, n: number, s: number, c: number, groups: number, eps: number, silu: boolean): void;
  /** Row r of src (inner floats) to dst[dstOffset + r·dstInner], rows in parallel (a concat's input). */
  copyRows(src: Float32Array, rows: number, inner: number, dst: Float32Array, dstOffset: number, dstInner: number): void;
  setThreads(n: number): void;
  getThreads(): number;
  describe(): string;
  clearCache(): void;
  /**
   * The float32 FMA peak: `iterations` rounds of independent vector FMA chains on `threads` threads (< 1: all the
   * addon's); flops = 2 · lanes · chains · iterations · threads. width names the vectors (e.g. AVX-512 FMA).
   */
  fmaPeak(iterations: number, threads: number): { seconds: number; flops: number; threads: number; width: string };
}

const HOW_TO_FIX = 'install g++ make python3 libdnnl-dev libopenblas-dev (apt-get), then run `npm run build:native`';

function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if (JSON.parse(readFileSync(pkg, 'utf8')).name === 'karlo-tfjs') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the karlo-tfjs package root');
    dir = up;
  }
}

let cached: NativeAddon | undefined;
let failure: string | undefined;

/** The loaded addon, or throws an Error whose message is one line: why it is unavailable and how to fix it. */
export function loadAddon(): NativeAddon {
  if (cached) return cached;
  if (failure) throw new Error(failure);
  const file = process.env.KARLO_NATIVE_ADDON || path.join(packageRoot(), 'native', 'build', 'Release', 'karlo_native.node');
  if (!existsSync(file)) {
    failure = `the addon ${file} is not built; ${HOW_TO_FIX}`;
    throw new Error(failure);
  }
  try {
    // OpenMP's default wait policy spins between parallel regions. Our kernels alternate with single-threaded JS
    // work, and on a busy machine the spinning threads starve it (a [2,81,2048] LayerNorm measured 27 ms with
    // spinning vs 3 ms passive under load). libgomp reads this when the library loads, so set it before that;
    // a user's own OMP_WAIT_POLICY wins.
    process.env.OMP_WAIT_POLICY ??= 'passive';
    const addon = createRequire(import.meta.url)(file) as NativeAddon;
    addon.setThreads(threadCount());
    addon.weightCache(weightCacheMB() * 2 ** 20);
    if (typeof addon.convAlgo === 'function') addon.convAlgo(CONV_ALGO[convAlgo()], winogradMB() * 2 ** 20);
    cached = addon;
    return addon;
  } catch (e) {
    failure = `the addon ${file} failed to load (${(e as Error).message.split('\n')[0]}); ${HOW_TO_FIX}`;
    throw new Error(failure);
  }
}

/** Forward conv algorithm ids of the addon's convAlgo (native/src/kernels.h ConvAlgo). */
export const CONV_ALGO = { direct: 0, winograd: 1, auto: 2 } as const;
export type ConvAlgoName = keyof typeof CONV_ALGO;

/**
 * KARLO_NATIVE_CONV_ALGO=direct|winograd|auto: the algorithm of float32 forward convolutions (gradients always run
 * direct). direct: oneDNN's direct kernels. winograd: oneDNN's Winograd F(4x4,3x3) for every 3x3 stride-1 undilated
 * conv it accepts (activations reordered to its blocked layout and back). auto: Winograd where it measured faster
 * (native/src/gemm_conv.cc winogradPays: >= 64 input and output channels, >= 16384 output pixels per call, scratch
 * within KARLO_NATIVE_WINOGRAD_MB). Default: auto (README, Native backend: every parity fixture passes with winograd
 * on every conv; Karlo's heavy 3x3 shapes run 2.2-2.8x direct's effective GFLOP/s, max |winograd - direct| <= 3.3e-6
 * of max |direct|).
 */
export const DEFAULT_CONV_ALGO: ConvAlgoName = 'auto';
export function convAlgo(env: NodeJS.ProcessEnv = process.env): ConvAlgoName {
  const v = (env.KARLO_NATIVE_CONV_ALGO ?? '').toLowerCase();
  if (v === '') return DEFAULT_CONV_ALGO;
  if (v in CONV_ALGO) return v as ConvAlgoName;
  throw new Error(`KARLO_NATIVE_CONV_ALGO=${env.KARLO_NATIVE_CONV_ALGO}: expected direct, winograd or auto`);
}

/**
 * KARLO_NATIVE_WINOGRAD_MB (default 512): under KARLO_NATIVE_CONV_ALGO=auto, a conv whose Winograd scratch (its
 * blocked input and output and oneDNN's scratchpad, one buffer each shared by all Winograd convs and kept between
 * calls) would pass this runs direct. Super-res at 256x256 needs 540-1090 MB there, at 128x128 230-510 MB.
 */
export function winogradMB(): number {
  return envMB('KARLO_NATIVE_WINOGRAD_MB', 512);
}

/** KARLO_NATIVE_WEIGHT_CACHE_MB (default 1024): packed conv filters kept between calls (0 disables). */
export function weightCacheMB(): number {
  return envMB('KARLO_NATIVE_WEIGHT_CACHE_MB', 1024);
}

/**
 * KARLO_NATIVE_POOL_MB (default 256): freed kernel outputs kept for reuse by the next output of the same size (0
 * disables). Measured at real size: 256 MB gives the decoder step -9% (6.72 vs 7.16 s) for +70 MB peak RSS; 1024 MB
 * gives -12% but +270 MB on the decoder and +650 MB on the super-res step, whose speed it does not change.
 */
export function poolBudgetMB(): number {
  return envMB('KARLO_NATIVE_POOL_MB', 256);
}

function envMB(name: string, dflt: number): number {
  const env = process.env[name];
  if (env === undefined || env === '') return dflt;
  const n = Number(env);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${env}: expected a number of MB >= 0`);
  return n;
}

/** KARLO_NATIVE_THREADS, else every core Node sees. */
export function threadCount(): number {
  const env = process.env.KARLO_NATIVE_THREADS;
  if (env) {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1) throw new Error(`KARLO_NATIVE_THREADS=${env}: expected a positive integer`);
    return n;
  }
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}
