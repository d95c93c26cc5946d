// The one sampling loop (guided-diffusion's p_sample_loop): x_T → x_0 by repeated scheduler steps. The sampler
// knows no model: the network comes in as `predict(x, t, step)`, which returns what the scheduler's step takes
// as model output (for Karlo's stages: the guided ε, with the predicted variance where the scheduler learns
// it). Each pipeline stage exports its predict step (priorPredict, decoderPredict, superResPredict).
//
// One step: modelOutput = predict(x_t, t); noise = the recorded draw for this step (t > 0 only) or none;
// x_prev = scheduler.step(modelOutput, t, x_t, {prevTimestep: the next timestep (t − 1 after the last), noise,
// generator when no noise was given}). Random draws happen only inside scheduler.step, so the generator's draw
// order is the reference's.
import * as tf from '@tensorflow/tfjs-core';
import type { TorchGenerator } from '../random/generator.js';
import type { UnCLIPScheduler } from './unclip_scheduler.js';

/**
 * The network as the sampler sees it: latents x_t at timestep t (the loop's step index `step`) → the
 * scheduler's model output. Runs inside the step's tf.tidy: intermediate tensors are freed by the loop.
 */
export type Predict<T extends tf.Tensor = tf.Tensor> = (x: T, t: number, step: number) => tf.Tensor;

export interface DenoiseStepArgs {
  step: number;
  timestep: number;
  /** The next timestep; undefined after the last (the scheduler then steps to t − 1). */
  prevTimestep?: number;
  /** Variance noise for this step (recorded draws); when absent the scheduler draws from `generator`. */
  noise?: tf.Tensor;
  generator?: TorchGenerator;
  /** Called with the model output and the step's input before the scheduler step (tensors owned by the step). */
  onModelOutput?: (info: { step: number; timestep: number; modelOutput: tf.Tensor; sampleIn: tf.Tensor }) => void;
  /** Called with the scheduler's outputs of the step (owned by the step). */
  onSchedulerOutput?: (info: { step: number; timestep: number; prevSample: tf.Tensor; predOriginalSample: tf.Tensor }) => void;
}

/**
 * One denoising step, without a tidy of its own (call it inside tf.tidy): returns the model output and the
 * scheduler's prev_sample.
 */
export function denoiseStep<T extends tf.Tensor>(scheduler: UnCLIPScheduler, predict: Predict<T>, x: T, a: DenoiseStepArgs): { modelOutput: tf.Tensor; prevSample: T } {
  const modelOutput = predict(x, a.timestep, a.step);
  a.onModelOutput?.({ step: a.step, timestep: a.timestep, modelOutput, sampleIn: x });
  const out = scheduler.step(modelOutput, a.timestep, x, {
    prevTimestep: a.prevTimestep,
    noise: a.noise,
    generator: a.noise ? undefined : a.generator,
  });
  a.onSchedulerOutput?.({ step: a.step, timestep: a.timestep, prevSample: out.prevSample, predOriginalSample: out.predOriginalSample });
  return { modelOutput, prevSample: out.prevSample as T };
}

export interface DenoiseOptions<T extends tf.Tensor = tf.Tensor> {
  /** torch-compatible generator for the variance noise of steps without recorded noise. */
  generator?: TorchGenerator;
  /**
   * Recorded variance noise (parity): asked for step i only where the reference draws some (t > 0); undefined
   * = draw from the generator. Tensors it creates are freed with the step.
   */
  noise?: (step: number, shape: number[]) => tf.Tensor | undefined;
  /** Awaited before step i runs (e.g. swap the network before the last step). */
  beforeStep?: (step: number, timestep: number) => void | Promise<void>;
  onModelOutput?: DenoiseStepArgs['onModelOutput'];
  onSchedulerOutput?: DenoiseStepArgs['onSchedulerOutput'];
  /** After every step with the new latents (owned by the loop: clone to keep). */
  onStep?: (info: { step: number; numSteps: number; timestep: number; latents: T }) => void;
}

/**
 * Runs every timestep of `scheduler` (set with setTimesteps beforehand) from `latents` (x_T, already scaled by
 * init_noise_sigma). Takes ownership of `latents` (disposed as the loop moves on, also on failure) and returns
 * the final x_0 (caller owns it). Yields to the event loop after each step so progress and timers can run.
 */
export async function denoise<T extends tf.Tensor>(scheduler: UnCLIPScheduler, latents: T, predict: Predict<T>, opts: DenoiseOptions<T> = {}): Promise<T> {
  const timesteps = [...scheduler.timesteps];
  let x = latents;
  try {
    for (let i = 0; i < timesteps.length; i++) {
      const t = timesteps[i];
      await opts.beforeStep?.(i, t);
      const xi = x;
      const next = tf.tidy(() => denoiseStep(scheduler, predict, xi, {
        step: i,
        timestep: t,
        prevTimestep: i + 1 < timesteps.length ? timesteps[i + 1] : undefined,
        noise: t > 0 ? opts.noise?.(i, xi.shape) : undefined,
        generator: opts.generator,
        onModelOutput: opts.onModelOutput,
        onSchedulerOutput: opts.onSchedulerOutput,
      }).prevSample);
      x.dispose();
      x = next;
      opts.onStep?.({ step: i, numSteps: timesteps.length, timestep: t, latents: x });
      await new Promise((r) => setImmediate(r));
    }
    return x;
  } catch (e) {
    x.dispose();
    throw e;
  }
}
