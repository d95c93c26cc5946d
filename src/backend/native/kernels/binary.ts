// The binary elementwise kernels (addon.ts BIN_OP: Add, Sub, Mul, ...) with broadcasting by strides.
import { backend_util, util, type KernelConfig } from '@tensorflow/tfjs-core';
import { BIN_OP } from '../addon.js';
import { MIN_ELEMENTWISE, broadcastStrides, type Args, type KernelContext } from './context.js';

export function binaryKernels(ctx: KernelContext): KernelConfig[] {
  const { addon, alloc, allF32, count, cpu, f32, out } = ctx;
  return (Object.keys(BIN_OP) as (keyof typeof BIN_OP)[]).map((name) => ctx.config(name, (args) => {
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
  }));
}
