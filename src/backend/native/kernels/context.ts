// What every native kernel file shares: the addon, the cpu fallback by kernel name, call counting, output buffers
// from the pool, float32 views of inputs, and the helpers more than one family uses (bias + activation through
// this backend's kernels, broadcast strides, a strided copy). One context per registered backend (index.ts).
import {
  getKernel, util,
  type KernelConfig, type KernelFunc, type NamedAttrMap, type TensorInfo,
} from '@tensorflow/tfjs-core';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { BufferPool } from '../buffer_pool.js';
import { ACT, OP_COPY, type NativeAddon } from '../addon.js';

export type Backend = MathBackendCPU;
export type Args = { inputs: Record<string, TensorInfo>; backend: Backend; attrs?: NamedAttrMap };
export type Activation = 'linear' | 'relu' | 'prelu' | 'elu' | 'relu6' | 'leakyrelu' | 'sigmoid';

/** Below this many output elements the JS kernel is as fast as a call into the addon. */
export const MIN_ELEMENTWISE = 4096;

export interface NativeKernelOptions {
  /** For MatMul/BatchMatMul/_FusedMatMul: 'auto' (per shape), 'dnnl' (oneDNN matmul) or 'openblas' (cblas_sgemm). */
  gemm: 'auto' | 'dnnl' | 'openblas';
  /** Where outputs the addon overwrites entirely come from (uninitialised, recycled). */
  pool: BufferPool;
  /** Where to count native calls and cpu fallbacks per kernel (for tests and profiling); undefined: don't count. */
  stats?: () => Map<string, { native: number; fallback: number }> | undefined;
}

export interface KernelContext {
  addon: NativeAddon;
  backendName: string;
  opts: NativeKernelOptions;
  /** An output buffer of n floats (uninitialised: the addon overwrites all of it). */
  alloc(n: number): Float32Array;
  /** Counts a native call (true) or a cpu fallback (false) of `name`. */
  count(name: string, native: boolean): void;
  /** The cpu kernel of the same name (counted as a fallback). */
  cpu(name: string, args: Args): TensorInfo | TensorInfo[];
  /** Runs another kernel of this backend (native or cpu) from inside a kernel. */
  run(name: string, backend: Backend, inputs: Record<string, TensorInfo>, attrs?: NamedAttrMap): TensorInfo;
  f32(backend: Backend, t: TensorInfo): Float32Array;
  allF32(...ts: (TensorInfo | undefined)[]): boolean;
  out(backend: Backend, shape: number[], values: Float32Array): TensorInfo;
  /** A KernelConfig of this backend. */
  config(kernelName: string, kernelFunc: KernelFunc): KernelConfig;
}

export function kernelContext(addon: NativeAddon, backendName: string, cpuKernels: Map<string, KernelFunc>,
  opts: NativeKernelOptions): KernelContext {
  const count = (name: string, native: boolean) => {
    const stats = opts.stats?.();
    if (!stats) return;
    const s = stats.get(name) ?? { native: 0, fallback: 0 };
    if (native) s.native++;
    else s.fallback++;
    stats.set(name, s);
  };
  return {
    addon,
    backendName,
    opts,
    alloc: (n) => opts.pool.alloc(n),
    count,
    cpu: (name, args) => {
      count(name, false);
      const f = cpuKernels.get(name);
      if (!f) throw new Error(`native backend: no cpu kernel ${name} to fall back to`);
      return f(args as unknown as Parameters<KernelFunc>[0]);
    },
    run: (name, backend, inputs, attrs = {}) =>
      getKernel(name, backendName).kernelFunc({ inputs, backend, attrs }) as TensorInfo,
    f32: (backend, t) => {
      const v = backend.data.get(t.dataId).values ?? backend.readSync(t.dataId);
      // A float32 tensor can hold another typed array: tfjs-cpu's Cast from bool/int32 shares the source's values
      // (e.g. the masks in the Maximum/Max gradients).
      return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
    },
    allF32: (...ts) => ts.every((t) => !t || t.dtype === 'float32'),
    out: (backend, shape, values) => backend.makeTensorInfo(shape, 'float32', values),
    config: (kernelName, kernelFunc) => ({ kernelName, backendName, kernelFunc }),
  };
}

/** Bias (any broadcastable shape) and activation through this backend's kernels, for what the addon does not fuse. */
export function biasAndActivation(ctx: KernelContext, backend: Backend, y: TensorInfo, bias: TensorInfo | undefined,
  activation: Activation, prelu: TensorInfo | undefined, alpha: number): TensorInfo {
  const { run } = ctx;
  let cur = y;
  const step = (next: TensorInfo) => {
    backend.disposeIntermediateTensorInfo(cur);
    cur = next;
  };
  if (bias) step(run('Add', backend, { a: cur, b: bias }));
  switch (activation) {
    case 'linear': break;
    case 'relu': step(run('Relu', backend, { x: cur })); break;
    case 'relu6': step(run('Relu6', backend, { x: cur })); break;
    case 'elu': step(run('Elu', backend, { x: cur })); break;
    case 'sigmoid': step(run('Sigmoid', backend, { x: cur })); break;
    case 'leakyrelu': step(run('LeakyRelu', backend, { x: cur }, { alpha })); break;
    case 'prelu': step(run('Prelu', backend, { x: cur, alpha: prelu! })); break;
    default: throw new Error(`Activation ${activation as string} has not been implemented for the native backend`);
  }
  return cur;
}

/** Bias the addon can add in the epilogue: one value per output channel (shape [c] or [1,…,1,c]). */
export const channelBias = (bias: TensorInfo | undefined, c: number) =>
  !!bias && bias.dtype === 'float32' && bias.shape.length >= 1 && bias.shape[bias.shape.length - 1] === c &&
  util.sizeFromShape(bias.shape) === c;

/** Whether the addon fuses this activation into a GEMM / conv epilogue. */
export const fusable = (activation: Activation) => activation !== 'prelu' && activation in ACT;

/** Element strides of `shape` broadcast against `outShape` (0 on broadcast dims), right-aligned. */
export function broadcastStrides(shape: number[], outShape: number[]): number[] {
  const R = outShape.length;
  const s = new Array<number>(R).fill(0);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1) s[R - shape.length + i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Contiguous copy of x read over `view` (dims) with element `strides`, as a tensor of `shape` (default: view). */
export function stridedCopy(ctx: KernelContext, backend: Backend, x: TensorInfo, view: number[], strides: number[], shape = view): TensorInfo {
  const y = ctx.alloc(util.sizeFromShape(view));
  const xv = ctx.f32(backend, x);
  ctx.addon.binary(OP_COPY, view, xv, strides, xv, strides.map(() => 0), y);
  return ctx.out(backend, shape, y);
}
