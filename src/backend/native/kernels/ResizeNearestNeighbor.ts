// Nearest upsampling by exactly 2 (what F.interpolate(scale_factor=2) is): source row floor(r/2) with or without
// half-pixel centers, as tfjs computes it; the output is a broadcast view [n, h, 2, w, 2, c] of the input.
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { MIN_ELEMENTWISE, stridedCopy, type Args, type KernelContext } from './context.js';

export function resizeNearestNeighborKernel(ctx: KernelContext): KernelConfig {
  return ctx.config('ResizeNearestNeighbor', (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { images } = inputs;
    const { alignCorners, size } = attrs as { alignCorners: boolean; halfPixelCenters: boolean; size: [number, number] };
    const [n, h, w, c] = images.shape;
    if (images.dtype !== 'float32' || alignCorners || size[0] !== 2 * h || size[1] !== 2 * w ||
      n * size[0] * size[1] * c < MIN_ELEMENTWISE) {
      return ctx.cpu('ResizeNearestNeighbor', args as unknown as Args);
    }
    const r = stridedCopy(ctx, backend, images, [n, h, 2, w, 2, c], [h * w * c, w * c, 0, c, 0, 1], [n, 2 * h, 2 * w, c]);
    ctx.count('ResizeNearestNeighbor', true);
    return r;
  });
}
