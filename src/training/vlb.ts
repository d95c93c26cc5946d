// The variational-bound term that trains a learned-range variance (Nichol & Dhariwal 2021, "Improved DDPM",
// L_hybrid = L_simple + λ·L_vlb): the decoder's output channels C..2C interpolate, per element, between the
// posterior variance β̃_t and β_t in log space, as UnCLIPScheduler's `learned_range` reads them at sampling:
//   log σ² = frac·log β_t + (1 − frac)·log β̃_t,  frac = (v + 1) / 2
// The term for one sample at timestep t (bits per dimension, mean over C·H·W):
//   t > 0  KL(q(x_{t−1} | x_t, x0) ‖ N(μ_θ, σ²))
//   t = 0  −log p(x0 | x_1) under a Gaussian discretised to 256 bins over [−1, 1]
// μ_θ is the posterior mean of the predicted x0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t with ε̂ stopped (no gradient): the
// variance is learned by this term only, the mean by the ε-MSE only. As in Improved DDPM, log β̃_0 (= −∞) is
// clipped to log β̃_1 and x0 is not clipped. Per-timestep weight: Improved DDPM's λ = 0.001 over T = 1000 steps
// is a weight of 1 on this per-timestep mean (its L_vlb sums the T terms).
import * as tf from '@tensorflow/tfjs-core';
import type { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';

/** x with no gradient flowing back through it (torch `.detach()`), without reading values back to JS. */
export const stopGradient = tf.customGrad(((x: tf.Tensor) => ({ value: tf.clone(x), gradFunc: () => tf.zerosLike(x) })) as never) as (x: tf.Tensor) => tf.Tensor;

/** The per-timestep constants of the 1000-step chain (float64, rounded once to float32 like torch's tensors). */
export function vlbCoefficients(scheduler: UnCLIPScheduler, t: number) {
  const ac = scheduler.alphasCumprod;
  const at = ac[t];
  const prev = t > 0 ? ac[t - 1] : 1;
  const beta = 1 - at / prev;
  const postVar = ((1 - prev) / (1 - at)) * beta;
  // β̃_0 = 0: clipped to β̃_1 (only the t = 0 likelihood uses it).
  const postVarClipped = t > 0 ? postVar : ((1 - ac[0]) / (1 - ac[1])) * (1 - ac[1] / ac[0]);
  return {
    sqrtRecipAt: 1 / Math.sqrt(at),
    sqrtRecipm1At: Math.sqrt(1 / at - 1),
    meanX0: (Math.sqrt(prev) * beta) / (1 - at),
    meanXt: (Math.sqrt(at / prev) * (1 - prev)) / (1 - at),
    minLog: Math.log(postVarClipped),
    maxLog: Math.log(beta),
  };
}

/** 0.5·(1 + tanh(√(2/π)·(x + 0.044715x³))): the standard normal CDF approximation Improved DDPM uses. */
function approxStdNormalCdf(x: tf.Tensor): tf.Tensor {
  return tf.mul(0.5, tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3)))))));
}

export interface VlbBatch {
  /** Clean images in [−1, 1], [B, C, H, W]. */
  x0: tf.Tensor4D;
  /** The noisy input x_t the model saw, [B, C, H, W]. */
  xt: tf.Tensor4D;
  /** The model's ε prediction (its first C output channels); stopped here. */
  eps: tf.Tensor4D;
  /** The model's variance channels (its last C output channels), v ∈ [−1, 1] nominally. */
  v: tf.Tensor4D;
  timesteps: number[];
}

/** Mean over the batch of the per-sample VLB term (bits per dimension). */
export function learnedRangeVlb(scheduler: UnCLIPScheduler, b: VlbBatch): tf.Scalar {
  return tf.tidy(() => {
    const B = b.x0.shape[0];
    if (b.timesteps.length !== B) throw new Error(`vlb: ${b.timesteps.length} timesteps for a batch of ${B}`);
    const k = b.timesteps.map((t) => vlbCoefficients(scheduler, t));
    const col = (f: (c: ReturnType<typeof vlbCoefficients>) => number) => tf.tensor4d(k.map(f), [B, 1, 1, 1], 'float32');
    const eps = stopGradient(b.eps);
    const x0Pred = tf.sub(tf.mul(col((c) => c.sqrtRecipAt), b.xt), tf.mul(col((c) => c.sqrtRecipm1At), eps));
    const meanX0 = col((c) => c.meanX0);
    const meanXt = tf.mul(col((c) => c.meanXt), b.xt);
    const muP = tf.add(tf.mul(meanX0, x0Pred), meanXt);
    const muQ = tf.add(tf.mul(meanX0, b.x0), meanXt);
    const minLog = col((c) => c.minLog);
    const frac = tf.div(tf.add(b.v, 1), 2);
    const logVarP = tf.add(tf.mul(frac, col((c) => c.maxLog)), tf.mul(tf.sub(1, frac), minLog));
    // KL of two diagonal Gaussians (q: μ_q, log β̃_t; p: μ_θ, log σ²).
    const kl = tf.mul(0.5, tf.add(tf.add(tf.sub(tf.sub(logVarP, minLog), 1), tf.exp(tf.sub(minLog, logVarP))),
      tf.mul(tf.squaredDifference(muQ, muP), tf.exp(tf.neg(logVarP)))));
    // Discretised Gaussian log-likelihood of x0 (bins of width 2/255; the edge bins reach ±∞).
    const invStd = tf.exp(tf.mul(-0.5, logVarP));
    const centred = tf.sub(b.x0, muP);
    const cdfPlus = approxStdNormalCdf(tf.mul(invStd, tf.add(centred, 1 / 255)));
    const cdfMin = approxStdNormalCdf(tf.mul(invStd, tf.sub(centred, 1 / 255)));
    const logCdfPlus = tf.log(tf.maximum(cdfPlus, 1e-12));
    const logOneMinusCdfMin = tf.log(tf.maximum(tf.sub(1, cdfMin), 1e-12));
    const logDelta = tf.log(tf.maximum(tf.sub(cdfPlus, cdfMin), 1e-12));
    const logProb = tf.where(tf.less(b.x0, -0.999), logCdfPlus, tf.where(tf.greater(b.x0, 0.999), logOneMinusCdfMin, logDelta));
    const isZero = tf.tensor4d(b.timesteps.map((t) => (t === 0 ? 1 : 0)), [B, 1, 1, 1], 'bool');
    const perElement = tf.where(tf.broadcastTo(isZero, kl.shape), tf.neg(logProb), kl);
    return tf.div(tf.mean(perElement), Math.LN2) as tf.Scalar;
  });
}
