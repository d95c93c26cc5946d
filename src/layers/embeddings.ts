// Timestep embeddings of the diffusion UNets (diffusers `get_timestep_embedding`, `Timesteps`,
// `TimestepEmbedding`).
import * as tf from '@tensorflow/tfjs-core';
import { Module } from './module.js';
import { Linear, silu } from './basic.js';

export interface TimestepEmbeddingOptions {
  /** Put the cosines first ([cos, sin]); Karlo and diffusers' UNets use true. */
  flipSinToCos?: boolean;
  /** diffusers `downscale_freq_shift`: the exponent is divided by (half − shift). */
  freqShift?: number;
  /** Multiplier on the arguments (diffusers `scale`, default 1). */
  scale?: number;
  maxPeriod?: number;
}

const f32 = Math.fround;

/**
 * The frequencies exp(−ln(maxPeriod)·i / (half − shift)), i < half, computed in float32 step by step as torch
 * does (each intermediate rounded), so the arguments of sin/cos equal PyTorch's bit for bit even at t = 999.
 */
export function timestepFrequencies(half: number, freqShift = 0, maxPeriod = 10000): Float32Array {
  const c = f32(-Math.log(maxPeriod));
  const denom = half - freqShift;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) out[i] = f32(Math.exp(f32(f32(c * i) / denom)));
  return out;
}

/**
 * Sinusoidal timestep embedding [N, dim] of timesteps [N] (diffusers `get_timestep_embedding`):
 * [sin(t·f), cos(t·f)], swapped to [cos, sin] with flipSinToCos, zero-padded by one column when dim is odd.
 */
export function timestepEmbedding(timesteps: tf.Tensor1D, dim: number, opts: TimestepEmbeddingOptions = {}): tf.Tensor2D {
  if (timesteps.rank !== 1) throw new Error(`timestepEmbedding: timesteps must be 1-D, got shape [${timesteps.shape}]`);
  if (!Number.isInteger(dim) || dim < 2) throw new Error(`timestepEmbedding: dim must be an integer ≥ 2, got ${dim}`);
  const half = Math.floor(dim / 2);
  const freqs = timestepFrequencies(half, opts.freqShift ?? 1, opts.maxPeriod ?? 10000);
  return tf.tidy(() => {
    let args = tf.mul(tf.reshape(tf.cast(timesteps, 'float32'), [-1, 1]), tf.tensor2d(freqs, [1, half]));
    if ((opts.scale ?? 1) !== 1) args = tf.mul(args, opts.scale!);
    const sin = tf.sin(args);
    const cos = tf.cos(args);
    let emb = opts.flipSinToCos ? tf.concat([cos, sin], 1) : tf.concat([sin, cos], 1);
    if (dim % 2 === 1) emb = tf.pad(emb, [[0, 0], [0, 1]]);
    return emb as tf.Tensor2D;
  });
}

/**
 * Timesteps given as a number, a 0-d/1-d tensor or an array, broadcast to the batch (diffusers:
 * `timesteps * ones(batch)`). Returns a float32 [batch] tensor.
 */
export function broadcastTimesteps(timestep: number | number[] | tf.Tensor, batch: number, who = 'timestep'): tf.Tensor1D {
  return tf.tidy(() => {
    let t: tf.Tensor;
    if (typeof timestep === 'number') t = tf.tensor1d([timestep], 'float32');
    else if (Array.isArray(timestep)) t = tf.tensor1d(timestep, 'float32');
    else t = tf.cast(timestep.rank === 0 ? tf.reshape(timestep, [1]) : timestep, 'float32');
    if (t.rank !== 1) throw new Error(`${who}: expected a number or a 0-d/1-d tensor, got shape [${t.shape}]`);
    if (t.shape[0] === batch) return t as tf.Tensor1D;
    if (t.shape[0] === 1) return tf.tile(t, [batch]) as tf.Tensor1D;
    throw new Error(`${who}: ${t.shape[0]} timesteps for a batch of ${batch}`);
  });
}

/** diffusers `TimestepEmbedding`: linear_1 → SiLU → linear_2 (the act is fixed to SiLU, as in every Karlo net). */
export class TimestepEmbedding extends Module {
  readonly linear_1: Linear;
  readonly linear_2: Linear;
  constructor(readonly inChannels: number, readonly timeEmbedDim: number, outDim?: number) {
    super();
    this.linear_1 = this.module('linear_1', new Linear(inChannels, timeEmbedDim));
    this.linear_2 = this.module('linear_2', new Linear(timeEmbedDim, outDim ?? timeEmbedDim));
  }

  forward(sample: tf.Tensor2D): tf.Tensor2D {
    return this.emit(tf.tidy(() => this.linear_2.forward(silu(this.linear_1.forward(sample))) as tf.Tensor2D));
  }
}
