// Bicubic resizing equal to PyTorch's F.interpolate(mode="bicubic", align_corners=False, antialias=…), as two
// matmuls with precomputed [out, in] weight matrices (separable, so differentiable w.r.t. the image with plain
// matmul gradients). Weights are computed with PyTorch 1.13's float32 rounding steps (UpSampleKernel.cpp).
import * as tf from '@tensorflow/tfjs-core';

const f = Math.fround;

// Keys' cubic convolution kernel in float32, as torch's cubic_convolution1/2.
function cubic1(x: number, a: number): number {
  return f(f(f(f(f(f(a + 2) * x) - f(a + 3)) * x) * x) + 1);
}
function cubic2(x: number, a: number): number {
  return f(f(f(f(f(f(a * x) - f(5 * a)) * x) + f(8 * a)) * x) - f(4 * a));
}

/** torch's aa_filter for bicubic: Keys cubic with a = −0.5 (PIL's), support 2. */
function aaCubic(x: number): number {
  x = Math.abs(x);
  if (x < 1) return cubic1(x, -0.5);
  if (x < 2) return cubic2(x, -0.5);
  return 0;
}

/**
 * Antialiased (PIL-style) bicubic weights [outSize, inSize], row-major: for output i, centre = scale·(i + 0.5),
 * taps j in [xmin, xmin + xsize) with weight K((j − centre + 0.5)/max(scale, 1)), out-of-range taps dropped and
 * the rest renormalised to sum 1 (torch's _compute_indices_weights_aa).
 */
export function bicubicWeightsAA(inSize: number, outSize: number): Float32Array {
  const scale = f(inSize / outSize);
  const support = scale >= 1 ? f(2 * scale) : 2;
  const invscale = scale >= 1 ? f(1 / scale) : 1;
  const w = new Float32Array(outSize * inSize);
  for (let i = 0; i < outSize; i++) {
    const center = f(scale * (i + 0.5));
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const taps = new Float32Array(xsize);
    let total = 0;
    for (let j = 0; j < xsize; j++) {
      const arg = f((f(j + xmin - center) + 0.5) * invscale);
      taps[j] = aaCubic(arg);
      total = f(total + taps[j]);
    }
    for (let j = 0; j < xsize; j++) w[i * inSize + xmin + j] = total !== 0 ? f(taps[j] / total) : taps[j];
  }
  return w;
}

/**
 * Plain bicubic weights [outSize, inSize] (antialias=False): source x = scale·(i + 0.5) − 0.5, 4 taps at
 * floor(x) − 1 … floor(x) + 2 with Keys a = −0.75 (OpenCV's), indices clamped to the border (clamped taps add up
 * on the edge pixel).
 */
export function bicubicWeightsPlain(inSize: number, outSize: number): Float32Array {
  const a = -0.75;
  const scale = f(inSize / outSize);
  const w = new Float32Array(outSize * inSize);
  for (let i = 0; i < outSize; i++) {
    const real = f(scale * (i + 0.5) - 0.5);
    const idx = Math.floor(real);
    const t = f(real - idx);
    const coeffs = [cubic2(f(t + 1), a), cubic1(t, a), cubic1(f(1 - t), a), cubic2(f(f(1 - t) + 1), a)];
    for (let k = 0; k < 4; k++) {
      const j = Math.max(Math.min(idx - 1 + k, inSize - 1), 0);
      w[i * inSize + j] = f(w[i * inSize + j] + coeffs[k]);
    }
  }
  return w;
}

export function bicubicWeights(inSize: number, outSize: number, antialias: boolean): Float32Array {
  return antialias ? bicubicWeightsAA(inSize, outSize) : bicubicWeightsPlain(inSize, outSize);
}

/**
 * F.interpolate(x, size=[H, W], mode="bicubic", align_corners=False, antialias) on an NCHW tensor. The width pass
 * runs first, then the height pass, as in torch. antialias=true is what UnCLIPPipeline (and Karlo's TVF.resize)
 * use for the 64 → 256 upscale.
 */
export function bicubicResize(x: tf.Tensor4D, size: [number, number], opts: { antialias: boolean }): tf.Tensor4D {
  if (x.rank !== 4) throw new Error(`bicubicResize: x must be NCHW (rank 4), got shape [${x.shape}]`);
  const [outH, outW] = size;
  for (const [name, v] of [['height', outH], ['width', outW]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`bicubicResize: output ${name} must be a positive integer, got ${v}`);
  }
  if (typeof opts?.antialias !== 'boolean') throw new Error('bicubicResize: opts.antialias must be given (true or false)');
  const [n, c, h, w] = x.shape;
  return tf.tidy(() => {
    let y: tf.Tensor = tf.cast(x, 'float32');
    if (outW !== w) {
      const ww = tf.tensor2d(bicubicWeights(w, outW, opts.antialias), [outW, w]);
      y = tf.reshape(tf.matMul(tf.reshape(y, [n * c * h, w]), ww, false, true), [n, c, h, outW]);
    }
    if (outH !== h) {
      const wh = tf.tensor3d(bicubicWeights(h, outH, opts.antialias), [1, outH, h]);
      y = tf.reshape(tf.matMul(wh, tf.reshape(y, [n * c, h, outW])), [n, c, outH, outW]);
    }
    return y as tf.Tensor4D;
  });
}
