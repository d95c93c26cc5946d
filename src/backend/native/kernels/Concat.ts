// Concat (the UNets' skip connections concatenate on channels, the last axis here): tfjs-cpu copies element by
// element in JS; here each input's rows go to their place in the output row by row (memcpy, rows in parallel).
import { backend_util, util, type KernelConfig } from '@tensorflow/tfjs-core';
import { MIN_ELEMENTWISE, type Args, type KernelContext } from './context.js';

export function concatKernel(ctx: KernelContext): KernelConfig {
  const { addon, alloc, count, cpu, f32, out } = ctx;
  return ctx.config('Concat', (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const xs = Object.values(inputs);
    const { axis } = attrs as { axis: number };
    if (!xs.length || xs.some((x) => x.dtype !== 'float32')) return cpu('Concat', args as unknown as Args);
    const ax = util.parseAxisParam(axis, xs[0].shape)[0];
    const outShape = backend_util.computeOutShape(xs.map((x) => x.shape), ax);
    const size = util.sizeFromShape(outShape);
    if (size < MIN_ELEMENTWISE) return cpu('Concat', args as unknown as Args);
    // [rows, inner] views: rows = the product of the dims before the axis.
    const rows = util.sizeFromShape(outShape.slice(0, ax));
    const outInner = size / rows;
    const y = alloc(size);
    let off = 0;
    for (const x of xs) {
      const inner = util.sizeFromShape(x.shape.slice(ax));
      if (inner) addon.copyRows(f32(backend, x), rows, inner, y, off, outInner);
      off += inner;
    }
    count('Concat', true);
    return out(backend, outShape, y);
  });
}
