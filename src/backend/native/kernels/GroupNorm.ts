// The fused GroupNorm (+ SiLU) kernel, reached through groupNorm() in src/ops/group_norm.ts (which owns its
// gradient). No cpu fallback: the op only dispatches here when this backend registered it.
import { util, type KernelConfig } from '@tensorflow/tfjs-core';
import { GROUP_NORM_GRAD_KERNEL, GROUP_NORM_KERNEL } from '../../../ops/group_norm.js';
import type { Args, KernelContext } from './context.js';

function checkAffine(c: number, weight: Args['inputs'][string], bias: Args['inputs'][string], x: Args['inputs'][string], what: string): void {
  for (const [name, t] of [['weight', weight], ['bias', bias]] as const) {
    if (t.dtype !== 'float32' || util.sizeFromShape(t.shape) !== c) {
      throw new Error(`${what}: ${name} must be float32 with ${c} elements, got ${t.dtype} [${t.shape}]`);
    }
  }
  if (x.dtype !== 'float32') throw new Error(`${what}: x must be float32, got ${x.dtype}`);
}

export function groupNormKernel(ctx: KernelContext): KernelConfig {
  const { addon, alloc, count, f32, out } = ctx;
  return ctx.config(GROUP_NORM_KERNEL, (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { x, weight, bias } = inputs;
    const { groups, eps, silu } = attrs as { groups: number; eps: number; silu: boolean };
    const c = x.shape[x.shape.length - 1];
    checkAffine(c, weight, bias, x, 'groupNorm');
    const size = util.sizeFromShape(x.shape);
    const y = alloc(size);
    addon.groupNorm(f32(backend, x), f32(backend, weight), f32(backend, bias), y, x.shape[0], size / (x.shape[0] * c), c,
      groups, eps, silu);
    count(GROUP_NORM_KERNEL, true);
    return out(backend, x.shape, y);
  });
}

/** Its gradient [dx, dweight, dbias] for upstream dy, in three passes (native/src/elementwise.cc groupNormGrad). */
export function groupNormGradKernel(ctx: KernelContext): KernelConfig {
  const { addon, alloc, count, f32, out } = ctx;
  return ctx.config(GROUP_NORM_GRAD_KERNEL, (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { dy, x, weight, bias } = inputs;
    const { groups, eps, silu } = attrs as { groups: number; eps: number; silu: boolean };
    const c = x.shape[x.shape.length - 1];
    checkAffine(c, weight, bias, x, 'groupNorm gradient');
    if (dy.dtype !== 'float32' || dy.shape.join() !== x.shape.join()) throw new Error(`groupNorm gradient: dy must be float32 [${x.shape}], got ${dy.dtype} [${dy.shape}]`);
    const size = util.sizeFromShape(x.shape);
    const dx = alloc(size), dw = alloc(c), db = alloc(c);
    addon.groupNormGrad(f32(backend, x), f32(backend, weight), f32(backend, bias), f32(backend, dy), dx, dw, db, x.shape[0],
      size / (x.shape[0] * c), c, groups, eps, silu);
    count(GROUP_NORM_GRAD_KERNEL, true);
    return [out(backend, x.shape, dx), out(backend, weight.shape, dw), out(backend, bias.shape, db)];
  });
}

