// The super-resolution stage of UnCLIPPipeline (diffusers 0.25.1), 64 → 256 in Karlo:
// latents ~ N(0, I) [B, 3, H, W] (explicit, or drawn from the generator first) × init_noise_sigma; the decoder's
// image (in [-1, 1]) upscaled with F.interpolate(bicubic, align_corners=False, antialias=True); per timestep:
// unet(cat([latents, upscaled], 1), t) with super_res_first on every step but the last and super_res_last on
// the last, no classifier-free guidance, scheduler step to the next timestep (t − 1 after the last), variance
// noise from the generator (t > 0 only); finally clamp(x·0.5 + 0.5, 0, 1).
// super_res_last may be given as a loader: it is then called once, just before the last step, after
// opts.releaseFirst, so the two 2.8 GB UNets of the real model are never held at once.
import * as tf from '@tensorflow/tfjs-core';
import type { UNet2DModel } from '../models/unet2d.js';
import type { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { randnTensor } from '../random/generator.js';
import { denoise, type Predict } from '../samplers/denoise.js';
import { bicubicResize } from '../layers/interpolate.js';
import type { StageOptions } from './types.js';

export const SUPER_RES_DEFAULTS = { steps: 7 } as const;

export interface SuperResStageOptions extends StageOptions {
  /** Output size [H, W]; default super_res_first's config sample_size (256 for Karlo). */
  size?: [number, number];
  /** Called once with the upscaled image (cap.image_upscaled, NCHW in [-1, 1]); owned by the stage. */
  onUpscaled?: (image: tf.Tensor4D) => void;
  /** Called with each step's model output (cap step.*.model_output_after_cfg); owned by the stage. */
  onModelOutput?: (info: { step: number; timestep: number; output: tf.Tensor4D; sampleIn: tf.Tensor4D }) => void;
  /**
   * Called once when super_res_first is no longer needed (before the last step, i.e. before a super_res_last
   * loader runs), so the caller can free it. Not called when the stage fails before that point.
   */
  releaseFirst?: () => void;
}

/** super_res_last, or a function that loads it (called once, at the last step, after releaseFirst). */
export type SuperResLastSource = UNet2DModel | (() => UNet2DModel | Promise<UNet2DModel>);

function checkPair(srFirst: UNet2DModel, srLast: UNet2DModel): void {
  if (srFirst.config.in_channels !== srLast.config.in_channels) {
    throw new Error(`runSuperRes: super_res_first/last in_channels (${srFirst.config.in_channels}, ${srLast.config.in_channels}) must be equal`);
  }
}

function sampleSize(model: UNet2DModel): [number, number] {
  const s = model.config.sample_size;
  if (typeof s === 'number') return [s, s];
  if (Array.isArray(s) && s.length === 2) return [s[0], s[1]];
  throw new Error('runSuperRes: super_res_first config has no sample_size: pass opts.size');
}

/**
 * The super-res predict step: unet(cat([x, upscaled], 1), t), no guidance; `unetAt(step)` picks the network
 * of the step (super_res_first, then super_res_last on the last).
 */
export function superResPredict(unetAt: (step: number) => UNet2DModel, upscaled: tf.Tensor4D): Predict<tf.Tensor4D> {
  return (x, t, step) => unetAt(step).forward(tf.concat([x, upscaled], 1) as tf.Tensor4D, t);
}

/**
 * Runs the super-res sampling loop on imageSmall (NCHW in [-1, 1], the decoder's clamped output). Returns the
 * images NCHW in [0, 1] (caller owns them). imageSmall and explicit latents are not disposed. srLast may be a
 * loader (see SuperResLastSource); a model it returns is the caller's to dispose.
 */
export async function runSuperRes(
  srFirst: UNet2DModel,
  srLastSource: SuperResLastSource,
  scheduler: UnCLIPScheduler,
  imageSmall: tf.Tensor4D,
  opts: SuperResStageOptions = {},
): Promise<tf.Tensor4D> {
  const steps = opts.steps ?? SUPER_RES_DEFAULTS.steps;
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`runSuperRes: steps must be a positive integer, got ${steps}`);
  if (opts.guidanceScale !== undefined) throw new Error('runSuperRes: guidanceScale is not used (the super-res stage has no classifier-free guidance)');
  if (imageSmall.rank !== 4) throw new Error(`runSuperRes: imageSmall must be NCHW, got shape [${imageSmall.shape}]`);
  const channels = srFirst.config.in_channels / 2;
  if (!Number.isInteger(channels)) throw new Error(`runSuperRes: super_res_first in_channels ${srFirst.config.in_channels} must be even (latents ++ image)`);
  let srLast = typeof srLastSource === 'function' ? undefined : srLastSource;
  if (srLast) checkPair(srFirst, srLast);
  if (imageSmall.shape[1] !== channels) throw new Error(`runSuperRes: imageSmall has ${imageSmall.shape[1]} channels, ${channels} expected (shape [${imageSmall.shape}])`);
  const batch = imageSmall.shape[0];
  const [height, width] = opts.size ?? sampleSize(srFirst);
  const latentShape = [batch, channels, height, width];
  if (opts.latents && opts.latents.shape.join(',') !== latentShape.join(',')) {
    throw new Error(`runSuperRes: latents have shape [${opts.latents.shape}], [${latentShape}] expected`);
  }
  if (!opts.latents && !opts.generator) throw new Error('runSuperRes: pass latents or a generator (torch-compatible TorchGenerator)');

  scheduler.setTimesteps(steps);
  const numSteps = scheduler.timesteps.length;
  // prepare_latents draws before anything else of this stage (the pipeline's draw order), then the upscale.
  const initial = tf.tidy(() => tf.mul(opts.latents ?? randnTensor(latentShape, opts.generator!), scheduler.initNoiseSigma)) as tf.Tensor4D;
  let upscaled: tf.Tensor4D;
  try {
    upscaled = bicubicResize(imageSmall, [height, width], { antialias: true });
  } catch (e) {
    initial.dispose();
    throw e;
  }
  try {
    opts.onUpscaled?.(upscaled);
    const onModelOutput = opts.onModelOutput;
    const final = await denoise(scheduler, initial, superResPredict((step) => (step === numSteps - 1 ? srLast! : srFirst), upscaled), {
      generator: opts.generator,
      noise: opts.noiseForStep,
      // super_res_last from the last step on: super_res_first is released first, then a loader runs.
      beforeStep: async (step) => {
        if (step !== numSteps - 1) return;
        opts.releaseFirst?.();
        if (!srLast) {
          srLast = await (srLastSource as () => UNet2DModel | Promise<UNet2DModel>)();
          checkPair(srFirst, srLast);
        }
      },
      onModelOutput: onModelOutput && ((m) => onModelOutput({ step: m.step, timestep: m.timestep, output: m.modelOutput as tf.Tensor4D, sampleIn: m.sampleIn as tf.Tensor4D })),
      onStep: (s) => opts.onStep?.({ stage: 'super_res', ...s }),
    });
    try {
      return tf.tidy(() => tf.clipByValue(tf.add(tf.mul(final, 0.5), 0.5), 0, 1) as tf.Tensor4D);
    } finally {
      final.dispose();
    }
  } finally {
    upscaled.dispose();
  }
}
