// The gradient of a 2x2, stride-2, unpadded average pool (diffusers' Downsample2D without conv, which Karlo's
// ResnetDownsampleBlock2D resnets use): every input pixel lies in exactly one window, so dx = dy · ¼ spread over its
// 2x2 window, one broadcast multiply ([n, h, 2, w, 2, c] view of dy). tfjs-backend-cpu's general loop took ~18% of a
// nano decoder training step. Exact: the cpu kernel computes the same one product dy · (1/4) per input pixel.
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { BIN_OP } from '../addon.js';
import { MIN_ELEMENTWISE, type Args, type KernelContext } from './context.js';

export function avgPoolGradKernel(ctx: KernelContext): KernelConfig {
  const { addon, alloc, count, cpu, f32, out } = ctx;
  return ctx.config('AvgPoolGrad', (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { dy, input } = inputs;
    const { filterSize, strides, pad } = attrs as { filterSize: number | [number, number]; strides: number | [number, number]; pad: unknown };
    const pair = (v: number | [number, number]) => (Array.isArray(v) ? v : [v, v]);
    const [fh, fw] = pair(filterSize), [sh, sw] = pair(strides);
    const [n, H, W, c] = input.shape;
    if (dy.dtype !== 'float32' || fh !== 2 || fw !== 2 || sh !== 2 || sw !== 2 || H % 2 || W % 2 ||
      (pad !== 'valid' && pad !== 0) || dy.shape.join() !== [n, H / 2, W / 2, c].join() || n * H * W * c < MIN_ELEMENTWISE) {
      return cpu('AvgPoolGrad', args as unknown as Args);
    }
    const h = H / 2, w = W / 2;
    const y = alloc(n * H * W * c);
    const quarter = new Float32Array([0.25]);
    addon.binary(BIN_OP.Multiply, [n, h, 2, w, 2, c], f32(backend, dy), [h * w * c, w * c, 0, c, 0, 1], quarter, [0, 0, 0, 0, 0, 0], y);
    count('AvgPoolGrad', true);
    return out(backend, [n, H, W, c], y);
  });
}
