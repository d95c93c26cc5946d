// The prior stage of UnCLIPPipeline (diffusers 0.25.1): CLIP text outputs → CLIP image embeddings.
// latents ~ N(0, I) [B, D] (explicit, or drawn first from the generator) × init_noise_sigma; per timestep:
// prior(cat([latents]·2), t, text_embeds, last_hidden_state, mask), guided = uncond + s·(text − uncond),
// scheduler step to the next timestep (t − 1 after the last), variance noise from the generator (t > 0 only);
// finally post_process_latents (·clip_std + clip_mean).
import * as tf from '@tensorflow/tfjs-core';
import type { PriorTransformer } from '../models/prior_transformer.js';
import type { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { randnTensor } from '../random/generator.js';
import { denoise, type Predict } from '../samplers/denoise.js';
import type { StageOptions, TextOutputs } from './types.js';

export const PRIOR_DEFAULTS = { steps: 25, guidanceScale: 4.0 } as const;

export interface PriorStageOptions extends StageOptions {
  /**
   * Whether `text` holds the unconditional rows first (2B rows for B images). Default: inferred from the batch
   * sizes when `latents` are given, else guidanceScale > 1. (UnCLIPPipeline turns guidance on for the prior
   * whenever prior OR decoder guidance > 1: pass it explicitly then.)
   */
  classifierFreeGuidance?: boolean;
  /** Called with the latents before post_process_latents (cap.prior_latents_final); owned by the stage. */
  onFinalLatents?: (latents: tf.Tensor2D) => void;
}

/**
 * The prior's guided predict step at timestep t: prior(cat([x, x]), t, text) split into unconditional and text
 * halves, uncond + s·(text − uncond); without CFG the raw prediction. Call inside tf.tidy.
 */
export function priorPredict(prior: PriorTransformer, text: TextOutputs, guidance: number, cfg: boolean): Predict<tf.Tensor2D> {
  return (x, t) => {
    const input = cfg ? tf.concat([x, x], 0) : x;
    const pred = prior.forward(input, t, text.promptEmbeds, text.textEncHiddenStates, text.textMask);
    if (!cfg) return pred;
    const [uncond, cond] = tf.split(pred, 2, 0);
    return tf.add(uncond, tf.mul(guidance, tf.sub(cond, uncond)));
  };
}

/** Runs the prior sampling loop; returns image embeddings [B, clip_embed_dim] (caller owns them). */
export async function runPrior(prior: PriorTransformer, scheduler: UnCLIPScheduler, text: TextOutputs, opts: PriorStageOptions = {}): Promise<tf.Tensor2D> {
  const steps = opts.steps ?? PRIOR_DEFAULTS.steps;
  const guidance = opts.guidanceScale ?? PRIOR_DEFAULTS.guidanceScale;
  if (!Number.isFinite(guidance)) throw new Error(`runPrior: guidanceScale must be a number, got ${guidance}`);
  const rows = text.promptEmbeds.shape[0];
  if (text.textEncHiddenStates.shape[0] !== rows || text.textMask.shape[0] !== rows) {
    throw new Error(`runPrior: text outputs disagree on the batch: promptEmbeds [${text.promptEmbeds.shape}], textEncHiddenStates [${text.textEncHiddenStates.shape}], textMask [${text.textMask.shape}]`);
  }
  const cfg = opts.classifierFreeGuidance ?? (opts.latents ? opts.latents.shape[0] * 2 === rows : guidance > 1);
  if (cfg && rows % 2 !== 0) throw new Error(`runPrior: classifier-free guidance needs the unconditional rows then the prompt rows, got ${rows} text rows`);
  const batch = cfg ? rows / 2 : rows;
  const dim = prior.config.embedding_dim;
  if (opts.latents && (opts.latents.rank !== 2 || opts.latents.shape[0] !== batch || opts.latents.shape[1] !== dim)) {
    throw new Error(`runPrior: latents have shape [${opts.latents.shape}], [${batch}, ${dim}] expected`);
  }
  if (!opts.latents && !opts.generator) throw new Error('runPrior: pass latents or a generator (torch-compatible TorchGenerator)');

  scheduler.setTimesteps(steps);
  // prepare_latents: drawn before any step noise (the pipeline's draw order).
  const initial = tf.tidy(() => tf.mul(opts.latents ?? randnTensor([batch, dim], opts.generator!), scheduler.initNoiseSigma)) as tf.Tensor2D;
  const latents = await denoise(scheduler, initial, priorPredict(prior, text, guidance, cfg), {
    generator: opts.generator,
    noise: opts.noiseForStep,
    onStep: (s) => opts.onStep?.({ stage: 'prior', ...s }),
  });
  try {
    opts.onFinalLatents?.(latents);
    return prior.postProcessLatents(latents);
  } finally {
    latents.dispose();
  }
}
