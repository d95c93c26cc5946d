// The unary elementwise kernels (addon.ts UN_OP: Exp, Sigmoid, Tanh, ...).
import { util, type KernelConfig } from '@tensorflow/tfjs-core';
import { UN_OP } from '../addon.js';
import { MIN_ELEMENTWISE, type Args, type KernelContext } from './context.js';

export function unaryKernels(ctx: KernelContext): KernelConfig[] {
  const { addon, alloc, count, cpu, f32, out } = ctx;
  return (Object.keys(UN_OP) as (keyof typeof UN_OP)[]).map((name) => ctx.config(name, (args) => {
    const { inputs, backend } = args as unknown as Args;
    const { x } = inputs;
    const size = util.sizeFromShape(x.shape);
    if (x.dtype !== 'float32' || size < MIN_ELEMENTWISE) return cpu(name, args as unknown as Args);
    const y = alloc(size);
    addon.unary(UN_OP[name], f32(backend, x), y);
    count(name, true);
    return out(backend, x.shape, y);
  }));
}
