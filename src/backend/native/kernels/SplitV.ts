// SplitV is the gradient of every concat (the UNets' skip connections concatenate on channels): tfjs-cpu slices
// a non-contiguous region element by element through TensorBuffer.get, 14 s of a 22 s super-res training step.
// Each piece is one strided copy starting at its offset along the axis.
import { backend_util, util, type KernelConfig } from '@tensorflow/tfjs-core';
import { OP_COPY } from '../addon.js';
import { MIN_ELEMENTWISE, type Args, type KernelContext } from './context.js';

export function splitVKernel(ctx: KernelContext): KernelConfig {
  const { addon, alloc, count, cpu, f32, out } = ctx;
  return ctx.config('SplitV', (args) => {
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
  });
}
