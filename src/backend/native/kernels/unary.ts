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

/**
 * Pow by a scalar exponent of exactly 2 (tf.norm's square, e.g. in gradient clipping) as Square: the float32 x·x,
 * the same correctly rounded value the cpu kernel stores from Math.pow(x, 2). Any other exponent runs on cpu.
 */
export function powKernel(ctx: KernelContext): KernelConfig {
  const { addon, alloc, count, cpu, f32, out } = ctx;
  return ctx.config('Pow', (args) => {
    const { inputs, backend } = args as unknown as Args;
    const { a, b } = inputs;
    const size = util.sizeFromShape(a.shape);
    if (a.dtype !== 'float32' || size < MIN_ELEMENTWISE || util.sizeFromShape(b.shape) !== 1 || b.shape.length > a.shape.length ||
      (backend.readSync(b.dataId) as ArrayLike<number>)[0] !== 2) return cpu('Pow', args as unknown as Args);
    const y = alloc(size);
    addon.unary(UN_OP.Square, f32(backend, a), y);
    count('Pow', true);
    return out(backend, a.shape, y);
  });
}

