// Transpose as one strided copy.
import { util, type KernelConfig } from '@tensorflow/tfjs-core';
import { MIN_ELEMENTWISE, stridedCopy, type Args, type KernelContext } from './context.js';

export function transposeKernel(ctx: KernelContext): KernelConfig {
  return ctx.config('Transpose', (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { x } = inputs;
    const { perm } = attrs as { perm: number[] };
    if (x.dtype !== 'float32' || util.sizeFromShape(x.shape) < MIN_ELEMENTWISE) return ctx.cpu('Transpose', args as unknown as Args);
    const inStrides = [...util.computeStrides(x.shape), 1];
    const r = stridedCopy(ctx, backend, x, perm.map((p) => x.shape[p]), perm.map((p) => inStrides[p]));
    ctx.count('Transpose', true);
    return r;
  });
}
