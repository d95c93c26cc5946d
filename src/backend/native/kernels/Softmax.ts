// Softmax over the last axis.
import { util, type KernelConfig } from '@tensorflow/tfjs-core';
import { MIN_ELEMENTWISE, type Args, type KernelContext } from './context.js';

export function softmaxKernel(ctx: KernelContext): KernelConfig {
  const { addon, alloc, count, cpu, f32, out } = ctx;
  return ctx.config('Softmax', (args) => {
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
  });
}
