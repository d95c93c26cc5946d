// The kernels the `native` backend runs in the addon instead of tfjs-backend-cpu's JS. Each one handles the
// float32 cases the addon supports and hands anything else (other dtypes, NCHW, empty tensors, an attribute
// the library rejects) to the cpu kernel of the same name, so results never depend on what is supported.
// Gradients: tfjs registers gradient functions per kernel NAME, for every backend, so each kernel here keeps the
// gradient tfjs-core defines for it (built from ops that run on this backend again); the fused GroupNorm op has its
// own analytic gradient (./ops.ts). test/grads_native.test.ts checks every one against the cpu backend.
import {
  backend_util, broadcast_util, getKernel, util,
  type KernelConfig, type KernelFunc, type NamedAttrMap, type TensorInfo,
} from '@tensorflow/tfjs-core';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { BufferPool } from './buffer_pool.js';
import { ACT, BIN_OP, OP_COPY, RED_OP, UN_OP, type NativeAddon } from './addon.js';
import { GROUP_NORM_KERNEL } from '../../ops/group_norm.js';

type Backend = MathBackendCPU;
type Args = { inputs: Record<string, TensorInfo>; backend: Backend; attrs?: NamedAttrMap };
type Activation = 'linear' | 'relu' | 'prelu' | 'elu' | 'relu6' | 'leakyrelu' | 'sigmoid';

/** Below this many output elements the JS kernel is as fast as a call into the addon. */
const MIN_ELEMENTWISE = 4096;

export interface NativeKernelOptions {
  /** For MatMul/BatchMatMul/_FusedMatMul: 'auto' (per shape), 'dnnl' (oneDNN matmul) or 'openblas' (cblas_sgemm). */
  gemm: 'auto' | 'dnnl' | 'openblas';
  /** Where outputs the addon overwrites entirely come from (uninitialised, recycled). */
  pool: BufferPool;
  /** Where to count native calls and cpu fallbacks per kernel (for tests and profiling); undefined: don't count. */
  stats?: () => Map<string, { native: number; fallback: number }> | undefined;
}

export function nativeKernelConfigs(addon: NativeAddon, backendName: string, cpuKernels: Map<string, KernelFunc>,
  opts: NativeKernelOptions): KernelConfig[] {
  const alloc = (n: number) => opts.pool.alloc(n);
  // OpenBLAS beat oneDNN matmul only on single large GEMMs (2048^3: 303 vs 275 GFLOP/s); oneDNN won on every Karlo
  // shape (the prior's [162,2048]x[2048,n]: 280-290 vs 220-235; batched attention: up to 1.7x).
  const useBlas = (batch: number, m: number, n: number, k: number) =>
    opts.gemm === 'openblas' || (opts.gemm === 'auto' && batch === 1 && Math.min(m, n, k) >= 1024);

  const count = (name: string, native: boolean) => {
    const stats = opts.stats?.();
    if (!stats) return;
    const s = stats.get(name) ?? { native: 0, fallback: 0 };
    if (native) s.native++;
    else s.fallback++;
    stats.set(name, s);
  };
  const cpu = (name: string, args: Args): TensorInfo | TensorInfo[] => {
    count(name, false);
    const f = cpuKernels.get(name);
    if (!f) throw new Error(`native backend: no cpu kernel ${name} to fall back to`);
    return f(args as unknown as Parameters<KernelFunc>[0]);
  };
  /** Runs another kernel of this backend (native or cpu) from inside a kernel. */
  const run = (name: string, backend: Backend, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap = {}): TensorInfo =>
    getKernel(name, backendName).kernelFunc({ inputs, backend, attrs }) as TensorInfo;
  const f32 = (backend: Backend, t: TensorInfo): Float32Array => {
    const v = backend.data.get(t.dataId).values ?? backend.readSync(t.dataId);
    // A float32 tensor can hold another typed array: tfjs-cpu's Cast from bool/int32 shares the source's values
    // (e.g. the masks in the Maximum/Max gradients).
    return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
  };
  const allF32 = (...ts: (TensorInfo | undefined)[]) => ts.every((t) => !t || t.dtype === 'float32');
  const out = (backend: Backend, shape: number[], values: Float32Array) => backend.makeTensorInfo(shape, 'float32', values);

  // Conv filters whose repacking into oneDNN's blocked layout costs more than about 1% of the conv (few output pixels
  // per weight: 35-70% at the decoder's 8x8-16x16 levels, 3-6% at its 64x64 level with batch 2, under 1% from 16384
  // pixels on) are packed once and kept in the addon (up to KARLO_NATIVE_WEIGHT_CACHE_MB, the fewest pixels first),
  // keyed by the identity of the filter's array: tfjs never writes into a tensor's values (code that writes into a
  // dataSync() array in place would be served the old packing), and the id is released when the array is collected.
  const PACK_BELOW_PIXELS = 16384;
  const ids = new WeakMap<Float32Array, number>();
  let nextId = 1;
  const released = new FinalizationRegistry<number>((id) => addon.releaseWeights(id));
  const weightsId = (w: Float32Array, pixels: number): number => {
    if (pixels >= PACK_BELOW_PIXELS) return 0;
    let id = ids.get(w);
    if (id === undefined) {
      id = nextId++;
      ids.set(w, id);
      released.register(w, id);
    }
    return id;
  };

  // ---------- GEMM ----------

  /** act(op(a)·op(b) + bias) with tfjs's batch broadcasting, or null when the addon should not take it. */
  function matmul(backend: Backend, a: TensorInfo, b: TensorInfo, transA: boolean, transB: boolean,
    bias: Float32Array | null, act: number, alpha: number): TensorInfo | null {
    const ra = a.shape.length;
    const rb = b.shape.length;
    const k = transA ? a.shape[ra - 2] : a.shape[ra - 1];
    const kb = transB ? b.shape[rb - 1] : b.shape[rb - 2];
    const m = transA ? a.shape[ra - 1] : a.shape[ra - 2];
    const n = transB ? b.shape[rb - 2] : b.shape[rb - 1];
    util.assert(k === kb, () => `Error in matMul: inner shapes (${k}) and (${kb}) of Tensors with shapes ${a.shape} and ` +
      `${b.shape} and transposeA=${transA} and transposeB=${transB} must match.`);
    const outerA = a.shape.slice(0, -2);
    const outerB = b.shape.slice(0, -2);
    const outer = broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
    const batch = util.sizeFromShape(outer);
    const batchA = util.sizeFromShape(outerA);
    const batchB = util.sizeFromShape(outerB);
    if (batch * m * n * k === 0) return null;
    const av = f32(backend, a);
    const bv = f32(backend, b);
    const res = alloc(batch * m * n);
    // oneDNN's batched matmul (one primitive over all heads) beats a loop of sgemm calls on every batched shape
    // measured on an idle machine (the prior's 64 heads of 81x81x64: 106 vs 51 GFLOP/s).
    const blas = useBlas(batch, m, n, k);
    if ((batchA === batch || batchA === 1) && (batchB === batch || batchB === 1)) {
      addon.matmul(av, bv, res, bias, batchA, batchB, m, n, k, transA, transB, act, alpha, blas);
    } else {
      // Broadcasting both ways (e.g. [2,1] against [1,3]): one call per output matrix.
      const R = outer.length;
      const stridesOf = (dims: number[]) => {
        const s = new Array<number>(R).fill(0);
        let acc = 1;
        for (let i = dims.length - 1; i >= 0; i--) {
          if (dims[i] !== 1) s[R - dims.length + i] = acc;
          acc *= dims[i];
        }
        return s;
      };
      const sa = stridesOf(outerA);
      const sb = stridesOf(outerB);
      const idx = new Array<number>(R).fill(0);
      for (let i = 0; i < batch; i++) {
        let rem = i;
        for (let d = R - 1; d >= 0; d--) {
          idx[d] = rem % outer[d];
          rem = Math.floor(rem / outer[d]);
        }
        let ia = 0;
        let ib = 0;
        for (let d = 0; d < R; d++) {
          ia += idx[d] * sa[d];
          ib += idx[d] * sb[d];
        }
        addon.matmul(av.subarray(ia * m * k, (ia + 1) * m * k), bv.subarray(ib * k * n, (ib + 1) * k * n),
          res.subarray(i * m * n, (i + 1) * m * n), bias, 1, 1, m, n, k, transA, transB, act, alpha, blas);
      }
    }
    return out(backend, [...outer, m, n], res);
  }

  /** Bias (any broadcastable shape) and activation through this backend's kernels, for what the addon does not fuse. */
  function biasAndActivation(backend: Backend, y: TensorInfo, bias: TensorInfo | undefined, activation: Activation,
    prelu: TensorInfo | undefined, alpha: number): TensorInfo {
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
  const channelBias = (bias: TensorInfo | undefined, c: number) =>
    !!bias && bias.dtype === 'float32' && bias.shape.length >= 1 && bias.shape[bias.shape.length - 1] === c &&
    util.sizeFromShape(bias.shape) === c;
  const fusable = (activation: Activation) => activation !== 'prelu' && activation in ACT;

  const batchMatMul: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { a, b } = inputs;
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    if (!allF32(a, b)) return cpu('BatchMatMul', args as unknown as Args);
    const r = matmul(backend, a, b, transposeA, transposeB, null, ACT.linear, 0);
    if (!r) return cpu('BatchMatMul', args as unknown as Args);
    count('BatchMatMul', true);
    return r;
  };

  const fusedMatMul: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { a, b } = inputs;
    const bias = inputs.bias as TensorInfo | undefined;
    const prelu = inputs.preluActivationWeights as TensorInfo | undefined;
    const { transposeA, transposeB, activation, leakyreluAlpha } =
      attrs as { transposeA: boolean; transposeB: boolean; activation: Activation; leakyreluAlpha?: number };
    if (!allF32(a, b)) return cpu('_FusedMatMul', args as unknown as Args);
    const n = transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
    const nativeBias = channelBias(bias, n);
    const fuseAct = fusable(activation) && (nativeBias || !bias);
    const r = matmul(backend, a, b, transposeA, transposeB, nativeBias ? f32(backend, bias!) : null,
      fuseAct ? ACT[activation as keyof typeof ACT] : ACT.linear, leakyreluAlpha ?? 0.2);
    if (!r) return cpu('_FusedMatMul', args as unknown as Args);
    count('_FusedMatMul', true);
    if (fuseAct) return r;
    return biasAndActivation(backend, r, nativeBias ? undefined : bias, activation, prelu, leakyreluAlpha ?? 0.2);
  };

  // ---------- convolution ----------

  /** [n,h,w,c, kh,kw,o, oh,ow, sh,sw, dh,dw, pt,pl,pb,pr] for oneDNN, or null when it cannot express this conv. */
  function convShape(ci: backend_util.Conv2DInfo): number[] | null {
    if (ci.dataFormat !== 'channelsLast') return null;
    if (ci.batchSize * ci.outHeight * ci.outWidth * ci.outChannels * ci.inChannels === 0) return null;
    const { top, left } = ci.padInfo;
    // oneDNN wants out = floor((in + pl + pr - extent) / stride) + 1 exactly; tfjs's 'ceil' rounding may need more.
    const far = (inn: number, k: number, d: number, s: number, o: number, p0: number, p1: number): number | null => {
      const ext = (k - 1) * d + 1;
      if (p0 < 0 || p1 < 0) return null;
      if (Math.floor((inn + p0 + p1 - ext) / s) + 1 === o) return p1;
      const p = (o - 1) * s + ext - inn - p0;
      return p >= 0 ? p : null;
    };
    const bottom = far(ci.inHeight, ci.filterHeight, ci.dilationHeight, ci.strideHeight, ci.outHeight, top, ci.padInfo.bottom);
    const right = far(ci.inWidth, ci.filterWidth, ci.dilationWidth, ci.strideWidth, ci.outWidth, left, ci.padInfo.right);
    if (bottom === null || right === null) return null;
    return [ci.batchSize, ci.inHeight, ci.inWidth, ci.inChannels, ci.filterHeight, ci.filterWidth, ci.outChannels,
      ci.outHeight, ci.outWidth, ci.strideHeight, ci.strideWidth, ci.dilationHeight, ci.dilationWidth, top, left, bottom, right];
  }

  type ConvAttrs = {
    strides: number | [number, number]; pad: 'valid' | 'same' | number | backend_util.ExplicitPadding;
    dataFormat: 'NHWC' | 'NCHW'; dilations?: number | [number, number]; dimRoundingMode?: 'floor' | 'round' | 'ceil';
    activation?: Activation; leakyreluAlpha?: number;
  };

  /** Runs a conv in the addon; returns null (caller falls back) when oneDNN refuses the problem. */
  function tryNative(name: string, f: () => void): boolean {
    try {
      f();
      return true;
    } catch (e) {
      if (process.env.KARLO_NATIVE_DEBUG) console.error(`native ${name}: falling back to cpu: ${(e as Error).message}`);
      return false;
    }
  }

  function convForward(name: string, args: Args): TensorInfo | null {
    const { inputs, backend, attrs } = args;
    const { x, filter } = inputs;
    const bias = inputs.bias as TensorInfo | undefined;
    const prelu = inputs.preluActivationWeights as TensorInfo | undefined;
    const a = attrs as unknown as ConvAttrs;
    if (!allF32(x, filter)) return null;
    const ci = backend_util.computeConv2DInfo(x.shape as [number, number, number, number],
      filter.shape as [number, number, number, number], a.strides, a.dilations ?? 1, a.pad, a.dimRoundingMode, false,
      backend_util.convertConv2DDataFormat(a.dataFormat));
    const shape = convShape(ci);
    if (!shape) return null;
    const activation = a.activation ?? 'linear';
    const nativeBias = channelBias(bias, ci.outChannels);
    const fuseAct = fusable(activation) && (nativeBias || !bias);
    const alpha = a.leakyreluAlpha ?? 0.2;
    const y = alloc(util.sizeFromShape(ci.outShape));
    const w = f32(backend, filter);
    const ok = tryNative(name, () => addon.conv2d(f32(backend, x), w, nativeBias ? f32(backend, bias!) : null, y,
      shape, fuseAct ? ACT[activation as keyof typeof ACT] : ACT.linear, alpha,
      weightsId(w, ci.batchSize * ci.outHeight * ci.outWidth)));
    if (!ok) return null;
    count(name, true);
    const r = out(backend, ci.outShape, y);
    if (fuseAct) return r;
    return biasAndActivation(backend, r, nativeBias ? undefined : bias, activation, prelu, alpha);
  }

  const conv2D: KernelFunc = (args) => convForward('Conv2D', args as unknown as Args) ?? cpu('Conv2D', args as unknown as Args);
  const fusedConv2D: KernelFunc = (args) =>
    convForward('FusedConv2D', args as unknown as Args) ?? cpu('FusedConv2D', args as unknown as Args);

  const conv2DBackpropInput: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { dy, filter } = inputs;
    const a = attrs as unknown as ConvAttrs & { inputShape: [number, number, number, number] };
    if (allF32(dy, filter)) {
      const ci = backend_util.computeConv2DInfo(a.inputShape, filter.shape as [number, number, number, number],
        a.strides, 1, a.pad, a.dimRoundingMode, false, backend_util.convertConv2DDataFormat(a.dataFormat));
      const shape = convShape(ci);
      if (shape) {
        const dx = alloc(util.sizeFromShape(a.inputShape));
        if (tryNative('Conv2DBackpropInput', () => addon.conv2dBackpropInput(f32(backend, dy), f32(backend, filter), dx, shape))) {
          count('Conv2DBackpropInput', true);
          return out(backend, a.inputShape, dx);
        }
      }
    }
    return cpu('Conv2DBackpropInput', args as unknown as Args);
  };

  const conv2DBackpropFilter: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { x, dy } = inputs;
    const a = attrs as unknown as ConvAttrs & { filterShape: [number, number, number, number] };
    if (allF32(x, dy)) {
      const ci = backend_util.computeConv2DInfo(x.shape as [number, number, number, number], a.filterShape,
        a.strides, 1, a.pad, a.dimRoundingMode, false, backend_util.convertConv2DDataFormat(a.dataFormat));
      const shape = convShape(ci);
      if (shape) {
        const dw = alloc(util.sizeFromShape(a.filterShape));
        if (tryNative('Conv2DBackpropFilter', () => addon.conv2dBackpropFilter(f32(backend, x), f32(backend, dy), dw, shape))) {
          count('Conv2DBackpropFilter', true);
          return out(backend, a.filterShape, dw);
        }
      }
    }
    return cpu('Conv2DBackpropFilter', args as unknown as Args);
  };

  // ---------- elementwise, reductions, softmax ----------

  /** Element strides of `shape` broadcast against `outShape` (0 on broadcast dims), right-aligned. */
  const broadcastStrides = (shape: number[], outShape: number[]) => {
    const R = outShape.length;
    const s = new Array<number>(R).fill(0);
    let acc = 1;
    for (let i = shape.length - 1; i >= 0; i--) {
      if (shape[i] !== 1) s[R - shape.length + i] = acc;
      acc *= shape[i];
    }
    return s;
  };

  const binary = (name: keyof typeof BIN_OP): KernelConfig => ({
    kernelName: name,
    backendName,
    kernelFunc: (args) => {
      const { inputs, backend } = args as unknown as Args;
      const { a, b } = inputs;
      if (!allF32(a, b)) return cpu(name, args as unknown as Args);
      const outShape = backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
      const size = util.sizeFromShape(outShape);
      if (size < MIN_ELEMENTWISE) return cpu(name, args as unknown as Args);
      const y = alloc(size);
      addon.binary(BIN_OP[name], outShape, f32(backend, a), broadcastStrides(a.shape, outShape), f32(backend, b),
        broadcastStrides(b.shape, outShape), y);
      count(name, true);
      return out(backend, outShape, y);
    },
  });

  const unary = (name: keyof typeof UN_OP): KernelConfig => ({
    kernelName: name,
    backendName,
    kernelFunc: (args) => {
      const { inputs, backend } = args as unknown as Args;
      const { x } = inputs;
      const size = util.sizeFromShape(x.shape);
      if (x.dtype !== 'float32' || size < MIN_ELEMENTWISE) return cpu(name, args as unknown as Args);
      const y = alloc(size);
      addon.unary(UN_OP[name], f32(backend, x), y);
      count(name, true);
      return out(backend, x.shape, y);
    },
  });

  const reduction = (name: keyof typeof RED_OP): KernelConfig => ({
    kernelName: name,
    backendName,
    kernelFunc: (args) => {
      const { inputs, backend, attrs } = args as unknown as Args;
      const { x } = inputs;
      const a = attrs as { axis?: number | number[]; reductionIndices?: number | number[]; keepDims: boolean };
      const axis = name === 'Max' ? a.reductionIndices! : a.axis!;
      const keepDims = a.keepDims;
      const size = util.sizeFromShape(x.shape);
      if (x.dtype !== 'float32' || size < MIN_ELEMENTWISE) return cpu(name, args as unknown as Args);
      const axes = util.parseAxisParam(axis, x.shape);
      const [outShape] = backend_util.computeOutAndReduceShapes(x.shape, axes);
      const flags = x.shape.map((_, i) => (axes.includes(i) ? 1 : 0));
      const y = alloc(util.sizeFromShape(outShape));
      addon.reduce(RED_OP[name], x.shape, flags, f32(backend, x), y);
      count(name, true);
      return out(backend, keepDims ? backend_util.expandShapeToKeepDim(outShape, axes) : outShape, y);
    },
  });

  const softmax: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { logits } = inputs;
    const { dim } = attrs as { dim: number };
    const rank = logits.shape.length;
    const size = util.sizeFromShape(logits.shape);
    if (logits.dtype !== 'float32' || size < MIN_ELEMENTWISE || rank === 0 || (dim !== -1 && dim !== rank - 1)) {
      return cpu('Softmax', args as unknown as Args);
    }
    const cols = logits.shape[rank - 1];
    const y = alloc(size);
    addon.softmax(f32(backend, logits), y, size / cols, cols);
    count('Softmax', true);
    return out(backend, logits.shape, y);
  };

  /** Contiguous copy of x read over `view` (dims) with element `strides`, as a tensor of `shape` (default: view). */
  const stridedCopy = (backend: Backend, x: TensorInfo, view: number[], strides: number[], shape = view): TensorInfo => {
    const y = alloc(util.sizeFromShape(view));
    const xv = f32(backend, x);
    addon.binary(OP_COPY, view, xv, strides, xv, strides.map(() => 0), y);
    return out(backend, shape, y);
  };

  const transpose: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { x } = inputs;
    const { perm } = attrs as { perm: number[] };
    if (x.dtype !== 'float32' || util.sizeFromShape(x.shape) < MIN_ELEMENTWISE) return cpu('Transpose', args as unknown as Args);
    const inStrides = [...util.computeStrides(x.shape), 1];
    const r = stridedCopy(backend, x, perm.map((p) => x.shape[p]), perm.map((p) => inStrides[p]));
    count('Transpose', true);
    return r;
  };

  // SplitV is the gradient of every concat (the UNets' skip connections concatenate on channels): tfjs-cpu slices
  // a non-contiguous region element by element through TensorBuffer.get, 14 s of a 22 s super-res training step.
  // Each piece is one strided copy starting at its offset along the axis.
  const splitV: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { x } = inputs;
    const { numOrSizeSplits, axis } = attrs as { numOrSizeSplits: number | number[]; axis: number };
    if (x.dtype !== 'float32' || util.sizeFromShape(x.shape) < MIN_ELEMENTWISE) return cpu('SplitV', args as unknown as Args);
    const ax = util.parseAxisParam(axis, x.shape)[0];
    const sizes = backend_util.prepareSplitSize(x, numOrSizeSplits, ax);
    if (sizes.some((s) => s <= 0)) return cpu('SplitV', args as unknown as Args);
    const strides = [...util.computeStrides(x.shape), 1];
    const xv = f32(backend, x);
    let begin = 0;
    const outs = sizes.map((s) => {
      const view = [...x.shape];
      view[ax] = s;
      const y = alloc(util.sizeFromShape(view));
      const src = xv.subarray(begin * strides[ax]);
      addon.binary(OP_COPY, view, src, strides, src, strides.map(() => 0), y);
      begin += s;
      return out(backend, view, y);
    });
    count('SplitV', true);
    return outs;
  };

  // Nearest upsampling by exactly 2 (what F.interpolate(scale_factor=2) is): source row floor(r/2) with or without
  // half-pixel centers, as tfjs computes it; the output is a broadcast view [n, h, 2, w, 2, c] of the input.
  const resizeNearest: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { images } = inputs;
    const { alignCorners, size } = attrs as { alignCorners: boolean; halfPixelCenters: boolean; size: [number, number] };
    const [n, h, w, c] = images.shape;
    if (images.dtype !== 'float32' || alignCorners || size[0] !== 2 * h || size[1] !== 2 * w ||
      n * size[0] * size[1] * c < MIN_ELEMENTWISE) {
      return cpu('ResizeNearestNeighbor', args as unknown as Args);
    }
    const r = stridedCopy(backend, images, [n, h, 2, w, 2, c], [h * w * c, w * c, 0, c, 0, 1], [n, 2 * h, 2 * w, c]);
    count('ResizeNearestNeighbor', true);
    return r;
  };

  // Fused GroupNorm (+ SiLU), reached through groupNorm() in ./ops.ts.
  const groupNorm: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { x, weight, bias } = inputs;
    const { groups, eps, silu } = attrs as { groups: number; eps: number; silu: boolean };
    const c = x.shape[x.shape.length - 1];
    for (const [name, t] of [['weight', weight], ['bias', bias]] as const) {
      if (t.dtype !== 'float32' || util.sizeFromShape(t.shape) !== c) {
        throw new Error(`groupNorm: ${name} must be float32 with ${c} elements, got ${t.dtype} [${t.shape}]`);
      }
    }
    if (x.dtype !== 'float32') throw new Error(`groupNorm: x must be float32, got ${x.dtype}`);
    const size = util.sizeFromShape(x.shape);
    const y = alloc(size);
    addon.groupNorm(f32(backend, x), f32(backend, weight), f32(backend, bias), y, x.shape[0], size / (x.shape[0] * c), c,
      groups, eps, silu);
    count(GROUP_NORM_KERNEL, true);
    return out(backend, x.shape, y);
  };

  const k = (kernelName: string, kernelFunc: KernelFunc): KernelConfig => ({ kernelName, backendName, kernelFunc });
  return [
    k('BatchMatMul', batchMatMul),
    k('_FusedMatMul', fusedMatMul),
    k('Conv2D', conv2D),
    k('FusedConv2D', fusedConv2D),
    k('Conv2DBackpropInput', conv2DBackpropInput),
    k('Conv2DBackpropFilter', conv2DBackpropFilter),
    ...(Object.keys(BIN_OP) as (keyof typeof BIN_OP)[]).map(binary),
    ...(Object.keys(UN_OP) as (keyof typeof UN_OP)[]).map(unary),
    ...(Object.keys(RED_OP) as (keyof typeof RED_OP)[]).map(reduction),
    k('Softmax', softmax),
    k(GROUP_NORM_KERNEL, groupNorm),
    k('Transpose', transpose),
    k('ResizeNearestNeighbor', resizeNearest),
    k('SplitV', splitV),
  ];
}
