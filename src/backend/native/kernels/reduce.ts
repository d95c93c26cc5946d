// The reductions (addon.ts RED_OP: Sum, Max, Mean, ...) over any set of axes.
import { backend_util, util, type KernelConfig } from '@tensorflow/tfjs-core';
import { RED_OP } from '../addon.js';
import { MIN_ELEMENTWISE, type Args, type KernelContext } from './context.js';

export function reduceKernels(ctx: KernelContext): KernelConfig[] {
  const { addon, alloc, count, cpu, f32, out } = ctx;
  return (Object.keys(RED_OP) as (keyof typeof RED_OP)[]).map((name) => ctx.config(name, (args) => {
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
  }));
}
