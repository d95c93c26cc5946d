// Conv2D, FusedConv2D and the two convolution gradients (Conv2DBackpropInput / Filter) in oneDNN, NHWC only; a
// problem oneDNN refuses falls back to the cpu kernel. Small-output convs keep their packed filter in the addon.
import { backend_util, util, type KernelConfig, type KernelFunc, type TensorInfo } from '@tensorflow/tfjs-core';
import { ACT } from '../addon.js';
import { biasAndActivation, channelBias, fusable, type Activation, type Args, type KernelContext } from './context.js';

type ConvAttrs = {
  strides: number | [number, number]; pad: 'valid' | 'same' | number | backend_util.ExplicitPadding;
  dataFormat: 'NHWC' | 'NCHW'; dilations?: number | [number, number]; dimRoundingMode?: 'floor' | 'round' | 'ceil';
  activation?: Activation; leakyreluAlpha?: number;
};

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

/** Runs a conv in the addon; false (caller falls back) when oneDNN refuses the problem. */
function tryNative(name: string, f: () => void): boolean {
  try {
    f();
    return true;
  } catch (e) {
    if (process.env.KARLO_NATIVE_DEBUG) console.error(`native ${name}: falling back to cpu: ${(e as Error).message}`);
    return false;
  }
}

export function conv2DKernels(ctx: KernelContext): KernelConfig[] {
  const { addon, alloc, allF32, count, cpu, f32, out } = ctx;

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
    return biasAndActivation(ctx, backend, r, nativeBias ? undefined : bias, activation, prelu, alpha);
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

  return [
    ctx.config('Conv2D', conv2D),
    ctx.config('FusedConv2D', fusedConv2D),
    ctx.config('Conv2DBackpropInput', conv2DBackpropInput),
    ctx.config('Conv2DBackpropFilter', conv2DBackpropFilter),
  ];
}
