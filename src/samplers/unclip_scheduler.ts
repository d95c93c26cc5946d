// UnCLIPScheduler: DDPM with respacing as in diffusers 0.25.1 (scheduling_unclip.py), used by all three unCLIP
// stages. Variance types fixed_small_log (prior, super-res) and learned_range (decoder); prediction types sample
// (prior) and epsilon (decoder, super-res); x₀ clamped to ±clip_sample_range.
//
// The reference does its per-step scalar arithmetic on 0-d float32 tensors; we do the same in JS with
// Math.fround after every operation, so the coefficients are the reference's float32 values.
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { readJson } from '../io/weights.js';
import { randnTensor, type TorchGenerator } from '../random/generator.js';
import { squaredcosCapV2Betas, cumprodCpu, unclipTimesteps } from './betas.js';
import { brief } from '../io/files.js';

export type UnCLIPVarianceType = 'fixed_small_log' | 'learned_range';
export type UnCLIPPredictionType = 'epsilon' | 'sample';

/** scheduler_config.json of an UnCLIPScheduler (diffusers field names; defaults as diffusers). */
export interface UnCLIPSchedulerConfig {
  num_train_timesteps: number;
  variance_type: UnCLIPVarianceType;
  clip_sample: boolean;
  clip_sample_range: number;
  prediction_type: UnCLIPPredictionType;
  beta_schedule: 'squaredcos_cap_v2';
}

export const UNCLIP_SCHEDULER_DEFAULTS: UnCLIPSchedulerConfig = {
  num_train_timesteps: 1000,
  variance_type: 'fixed_small_log',
  clip_sample: true,
  clip_sample_range: 1.0,
  prediction_type: 'epsilon',
  beta_schedule: 'squaredcos_cap_v2',
};

export interface UnCLIPStepOptions {
  /** The timestep the step goes to (default t − 1); the pipeline passes the next entry of `timesteps`. */
  prevTimestep?: number;
  /** Explicit variance noise, shaped like the sample (ignored at t = 0, where none is drawn). */
  noise?: tf.Tensor;
  /** Generator the variance noise is drawn from (torch.randn order) when `noise` is not given. */
  generator?: TorchGenerator;
}

export interface UnCLIPStepOutput {
  prevSample: tf.Tensor;
  predOriginalSample: tf.Tensor;
}

const f = Math.fround;

export class UnCLIPScheduler {
  readonly config: UnCLIPSchedulerConfig;
  readonly betas: Float32Array;
  readonly alphas: Float32Array;
  readonly alphasCumprod: Float32Array;
  readonly initNoiseSigma = 1;
  timesteps: number[];
  numInferenceSteps: number | null = null;

  constructor(config: Partial<UnCLIPSchedulerConfig> = {}, source = 'UnCLIPScheduler config') {
    this.config = validateConfig(config, source);
    const T = this.config.num_train_timesteps;
    this.betas = squaredcosCapV2Betas(T);
    this.alphas = this.betas.map((b) => 1 - b);
    this.alphasCumprod = cumprodCpu(this.alphas);
    this.timesteps = Array.from({ length: T }, (_, i) => T - 1 - i);
  }

  static fromConfig(cfg: Partial<UnCLIPSchedulerConfig> & Record<string, unknown>, source?: string): UnCLIPScheduler {
    return new UnCLIPScheduler(cfg, source);
  }

  /** Reads `scheduler_config.json` of a scheduler folder (or the file itself). */
  static fromDir(dir: string): UnCLIPScheduler {
    const file = dir.endsWith('.json') ? dir : path.join(dir, 'scheduler_config.json');
    return UnCLIPScheduler.fromConfig(readJson(file), file);
  }

  setTimesteps(numInferenceSteps: number): void {
    this.timesteps = unclipTimesteps(this.config.num_train_timesteps, numInferenceSteps);
    this.numInferenceSteps = numInferenceSteps;
  }

  /** The float32 scalars of one step t → prev (exactly the reference's 0-d tensor arithmetic). */
  coefficients(t: number, prevTimestep?: number) {
    const T = this.config.num_train_timesteps;
    if (!Number.isInteger(t) || t < 0 || t >= T) throw new Error(`step: timestep ${t} is not an integer in [0, ${T})`);
    const prev = prevTimestep ?? t - 1;
    if (!Number.isInteger(prev) || prev >= t) throw new Error(`step: prevTimestep ${prev} must be an integer below timestep ${t}`);
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = prev >= 0 ? this.alphasCumprod[prev] : 1;
    const betaProdT = f(1 - alphaProdT);
    const betaProdPrev = f(1 - alphaProdPrev);
    let beta: number, alpha: number;
    if (prev === t - 1) {
      beta = this.betas[t];
      alpha = this.alphas[t];
    } else {
      beta = f(1 - f(alphaProdT / alphaProdPrev));
      alpha = f(1 - beta);
    }
    const predOriginalCoeff = f(f(f(Math.sqrt(alphaProdPrev)) * beta) / betaProdT);
    const currentSampleCoeff = f(f(f(Math.sqrt(alpha)) * betaProdPrev) / betaProdT);
    // variance of q(x_{prev} | x_t, x_0)
    const variance = f(f(betaProdPrev / betaProdT) * beta);
    return { prev, alphaProdT, alphaProdPrev, betaProdT, betaProdPrev, beta, alpha, predOriginalCoeff, currentSampleCoeff, variance };
  }

  /**
   * The forward (noising) process, diffusers `add_noise`: x_t = sqrt(ᾱ[t])·x0 + sqrt(1 − ᾱ[t])·noise, one timestep
   * per sample (or one for all). The coefficients are float32 like the reference's (ᾱ and 1 − ᾱ in float32, then a
   * correctly rounded square root); differentiable in x0 and noise. Returns a new tensor; inputs are not disposed.
   */
  addNoise(x0: tf.Tensor, noise: tf.Tensor, timesteps: number | number[] | tf.Tensor): tf.Tensor {
    if (x0.shape.join(',') !== noise.shape.join(',')) throw new Error(`addNoise: noise [${noise.shape}] must be shaped like x0 [${x0.shape}]`);
    const ts = typeof timesteps === 'number' ? [timesteps] : Array.isArray(timesteps) ? timesteps : Array.from(timesteps.dataSync());
    const T = this.config.num_train_timesteps;
    for (const t of ts) if (!Number.isInteger(t) || t < 0 || t >= T) throw new Error(`addNoise: timestep ${t} is not an integer in [0, ${T})`);
    const b = x0.rank === 0 ? 1 : x0.shape[0];
    if (ts.length !== 1 && ts.length !== b) throw new Error(`addNoise: ${ts.length} timesteps for a batch of ${b} (give one per sample, or one)`);
    const shape = [ts.length, ...new Array<number>(Math.max(0, x0.rank - 1)).fill(1)];
    const a = Float32Array.from(ts, (t) => f(Math.sqrt(this.alphasCumprod[t])));
    const s = Float32Array.from(ts, (t) => f(Math.sqrt(f(1 - this.alphasCumprod[t]))));
    return tf.tidy(() => tf.add(tf.mul(tf.tensor(a, shape), x0), tf.mul(tf.tensor(s, shape), noise)));
  }

  /**
   * One reverse step t → prevTimestep. modelOutput: the model's prediction (for learned_range, 2·C channels on
   * axis 1: prediction ++ variance interpolation value in [-1, 1]); sample: x_t. Returns new tensors (the caller
   * owns them); inputs are not disposed.
   */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, opts: UnCLIPStepOptions = {}): UnCLIPStepOutput {
    const c = this.coefficients(t, opts.prevTimestep);
    const cfg = this.config;
    const channels = sample.shape[1];
    const split = cfg.variance_type === 'learned_range' && modelOutput.shape[1] === 2 * (channels ?? NaN);
    const predShape = split ? [modelOutput.shape[0], channels!, ...modelOutput.shape.slice(2)] : modelOutput.shape;
    if (predShape.join(',') !== sample.shape.join(',')) {
      throw new Error(`step: model output [${modelOutput.shape}] does not fit sample [${sample.shape}]` +
        (cfg.variance_type === 'learned_range' ? ' (learned_range expects 2x the sample channels on axis 1)' : ''));
    }
    if (cfg.variance_type === 'learned_range' && !split) {
      throw new Error(`step: variance_type learned_range needs a model output with ${2 * (channels ?? 0)} channels on axis 1, got [${modelOutput.shape}]`);
    }
    // The noise is drawn before any tensor work so a generator advances exactly as torch's does (only when t > 0).
    let noise: tf.Tensor | null = null;
    let ownNoise = false;
    if (t > 0) {
      if (opts.noise) {
        if (opts.noise.shape.join(',') !== sample.shape.join(',')) throw new Error(`step: noise [${opts.noise.shape}] must be shaped like the sample [${sample.shape}]`);
        noise = opts.noise;
      } else if (opts.generator) {
        noise = randnTensor(sample.shape, opts.generator);
        ownNoise = true;
      } else {
        throw new Error(`step: timestep ${t} > 0 needs variance noise: pass opts.noise or opts.generator`);
      }
    }
    try {
      return tf.tidy(() => {
        let pred = modelOutput;
        let predictedVariance: tf.Tensor | null = null;
        if (split) {
          [pred, predictedVariance] = tf.split(modelOutput, 2, 1);
        }
        let x0 = cfg.prediction_type === 'epsilon'
          ? tf.div(tf.sub(sample, tf.mul(f(Math.sqrt(c.betaProdT)), pred)), f(Math.sqrt(c.alphaProdT)))
          : pred;
        if (cfg.clip_sample) x0 = tf.clipByValue(x0, -cfg.clip_sample_range, cfg.clip_sample_range);
        let prevSample = tf.add(tf.mul(c.predOriginalCoeff, x0), tf.mul(c.currentSampleCoeff, sample));
        if (noise) {
          let sigma: tf.Tensor | number;
          if (cfg.variance_type === 'fixed_small_log') {
            sigma = f(Math.exp(f(0.5 * f(Math.log(Math.max(c.variance, f(1e-20)))))));
          } else {
            const minLog = f(Math.log(c.variance));
            const maxLog = f(Math.log(c.beta));
            const frac = tf.div(tf.add(predictedVariance!, 1), 2);
            const logVar = tf.add(tf.mul(frac, maxLog), tf.mul(tf.sub(1, frac), minLog));
            sigma = tf.exp(tf.mul(0.5, logVar));
          }
          prevSample = tf.add(prevSample, tf.mul(sigma, noise));
        }
        // x0 may alias modelOutput (prediction_type sample, no clipping): hand out a copy the caller owns.
        const predOriginalSample = x0 === modelOutput ? tf.clone(x0) : x0;
        return { prevSample, predOriginalSample };
      });
    } finally {
      if (ownNoise) noise!.dispose();
    }
  }
}

function validateConfig(raw: Partial<UnCLIPSchedulerConfig> & Record<string, unknown>, source: string): UnCLIPSchedulerConfig {
  const cfg: UnCLIPSchedulerConfig = { ...UNCLIP_SCHEDULER_DEFAULTS };
  for (const k of Object.keys(UNCLIP_SCHEDULER_DEFAULTS) as (keyof UnCLIPSchedulerConfig)[]) {
    if (raw[k] !== undefined && raw[k] !== null) (cfg as unknown as Record<string, unknown>)[k] = raw[k];
  }
  const bad = (field: string, v: unknown, want: string) =>
    new Error(`${source}: ${field} = ${brief(v)} is not supported by UnCLIPScheduler (${want})`);
  if (cfg.beta_schedule !== 'squaredcos_cap_v2') throw bad('beta_schedule', cfg.beta_schedule, "only 'squaredcos_cap_v2'");
  if (cfg.variance_type !== 'fixed_small_log' && cfg.variance_type !== 'learned_range') throw bad('variance_type', cfg.variance_type, "'fixed_small_log' or 'learned_range'");
  if (cfg.prediction_type !== 'epsilon' && cfg.prediction_type !== 'sample') throw bad('prediction_type', cfg.prediction_type, "'epsilon' or 'sample'");
  // (bounded: the schedule tables hold one float64 per training step)
  if (!Number.isInteger(cfg.num_train_timesteps) || cfg.num_train_timesteps < 2 || cfg.num_train_timesteps > 1_000_000) throw bad('num_train_timesteps', cfg.num_train_timesteps, 'an integer in [2, 1000000]');
  if (typeof cfg.clip_sample !== 'boolean') throw bad('clip_sample', cfg.clip_sample, 'true or false');
  if (typeof cfg.clip_sample_range !== 'number' || !(cfg.clip_sample_range > 0)) throw bad('clip_sample_range', cfg.clip_sample_range, 'a positive number');
  return cfg;
}
