// The decoder stage of UnCLIPPipeline (diffusers 0.25.1): CLIP image embeddings + CLIP text outputs → the 64x64
// image (image_small, NCHW in [-1, 1]).
// text_proj (with CFG: the learned null image embedding for the unconditional rows) gives the decoder's
// encoder_hidden_states and the additive time embedding (class_labels); mask = F.pad(text_mask, (4, 0), True);
// latents ~ N(0, I) [B, 3, S, S] (explicit, or drawn from the generator after the prior's draws) × init_noise_sigma;
// per timestep: decoder(cat([latents]·2)) → 6 channels; guided ε = uncond + s·(text − uncond) on the first 3,
// the predicted variance taken from the TEXT half; learned_range scheduler step to the next timestep (t − 1 after
// the last), variance noise from the generator (t > 0 only); finally clamp(−1, 1).
import * as tf from '@tensorflow/tfjs-core';
import type { UnCLIPTextProjModel } from '../models/text_proj.js';
import type { UNet2DConditionModel } from '../models/unet2d_condition.js';
import type { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { randnTensor } from '../random/generator.js';
import { denoise, type Predict } from '../samplers/denoise.js';
import type { StageOptions, TextOutputs } from './types.js';

export const DECODER_DEFAULTS = { steps: 25, guidanceScale: 8.0 } as const;

export interface DecoderConditioning {
  /** text_proj output [rows, extra + 77, cross_attention_dim] (cap.decoder_encoder_hidden_states). */
  encoderHiddenStates: tf.Tensor3D;
  /** text_proj output [rows, time_embed_dim] (cap.additive_clip_time_embeddings). */
  additiveClipTimeEmbeddings: tf.Tensor2D;
  /** F.pad(text_mask, (extra, 0), True) as int32 0/1 [rows, extra + 77]. */
  attentionMask: tf.Tensor2D;
}

export interface DecoderStageOptions extends StageOptions {
  /**
   * Whether `text` holds the unconditional rows first (2B rows for B image embeddings). Default: inferred from
   * the batch sizes (text rows = 2 × image rows). UnCLIPPipeline runs the decoder with guidance whenever the prior
   * OR the decoder guidance scale is > 1.
   */
  classifierFreeGuidance?: boolean;
  /** Called once with text_proj's outputs and the padded mask (owned by the stage: copy to keep). */
  onConditioning?: (c: DecoderConditioning) => void;
  /**
   * Called every step with the scheduler's model input: guided ε ++ the text half's predicted variance
   * [B, 6, S, S] (the fixture's model_output_after_cfg); owned by the stage.
   */
  onModelOutput?: (info: { step: number; timestep: number; modelOutput: tf.Tensor4D; sampleIn: tf.Tensor4D }) => void;
}

/**
 * text_proj's outputs and the decoder mask for the whole loop (caller owns the tensors). With CFG the text rows
 * are [unconditional; prompts] and the image rows get the learned null embedding prepended.
 */
export function decoderConditioning(textProj: UnCLIPTextProjModel, imageEmbeddings: tf.Tensor2D, text: TextOutputs, cfg: boolean): DecoderConditioning {
  return tf.tidy(() => {
    const tp = textProj.forward({
      imageEmbeddings,
      promptEmbeds: text.promptEmbeds,
      textEncoderHiddenStates: text.textEncHiddenStates,
      doClassifierFreeGuidance: cfg,
    });
    const mask = padDecoderMask(text.textMask, textProj.config.clip_extra_context_tokens);
    return { encoderHiddenStates: tp.textEncoderHiddenStates, additiveClipTimeEmbeddings: tp.additiveClipTimeEmbeddings, attentionMask: mask };
  });
}

/** The decoder's attention mask: the extra context tokens are never masked, F.pad(text_mask, (extra, 0), value=True), as int32 0/1. */
export function padDecoderMask(textMask: tf.Tensor2D, extra: number): tf.Tensor2D {
  return tf.tidy(() => tf.concat([tf.ones([textMask.shape[0], extra], 'int32'), tf.cast(textMask, 'int32')], 1) as tf.Tensor2D);
}

/**
 * One decoder evaluation as the pipeline does it at timestep t: with CFG the UNet runs on cat([x, x]) and the
 * result is guided ε (first in_channels channels: uncond + s·(text − uncond)) ++ the text half's predicted
 * variance; without CFG the raw output. x: NCHW latents [B, C, H, W]; returns [B, 2C, H, W].
 */
export function guidedModelOutput(decoder: UNet2DConditionModel, x: tf.Tensor4D, t: number, cond: DecoderConditioning, guidance: number, cfg: boolean): tf.Tensor4D {
  return tf.tidy(() => {
    const inCh = decoder.config.in_channels;
    const outCh = decoder.config.out_channels;
    const input = cfg ? tf.concat([x, x], 0) as tf.Tensor4D : x;
    const out = decoder.forward(input, t, cond.encoderHiddenStates, {
      classLabels: cond.additiveClipTimeEmbeddings,
      attentionMask: cond.attentionMask,
    });
    if (!cfg) return out;
    const [uncond, textHalf] = tf.split(out, 2, 0);
    const [epsUncond] = tf.split(uncond, [inCh, outCh - inCh], 1);
    const [epsText, predictedVariance] = tf.split(textHalf, [inCh, outCh - inCh], 1);
    const guided = tf.add(epsUncond, tf.mul(guidance, tf.sub(epsText, epsUncond)));
    return tf.concat([guided, predictedVariance], 1) as tf.Tensor4D;
  });
}

/** The decoder's guided predict step for the sampler: guidedModelOutput at each timestep. */
export function decoderPredict(decoder: UNet2DConditionModel, cond: DecoderConditioning, guidance: number, cfg: boolean): Predict<tf.Tensor4D> {
  return (x, t) => guidedModelOutput(decoder, x, t, cond, guidance, cfg);
}

/** Runs the decoder sampling loop; returns image_small NCHW [B, 3, S, S] clamped to [-1, 1] (caller owns it). */
export async function runDecoder(
  textProj: UnCLIPTextProjModel,
  decoder: UNet2DConditionModel,
  scheduler: UnCLIPScheduler,
  imageEmbeddings: tf.Tensor2D,
  text: TextOutputs,
  opts: DecoderStageOptions = {},
): Promise<tf.Tensor4D> {
  const steps = opts.steps ?? DECODER_DEFAULTS.steps;
  const guidance = opts.guidanceScale ?? DECODER_DEFAULTS.guidanceScale;
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`runDecoder: steps must be a positive integer, got ${steps}`);
  if (!Number.isFinite(guidance)) throw new Error(`runDecoder: guidanceScale must be a number, got ${guidance}`);
  if (imageEmbeddings.rank !== 2) throw new Error(`runDecoder: imageEmbeddings have shape [${imageEmbeddings.shape}], [B, D] expected`);
  const rows = text.promptEmbeds.shape[0];
  if (text.textEncHiddenStates.shape[0] !== rows || text.textMask.shape[0] !== rows) {
    throw new Error(`runDecoder: text outputs disagree on the batch: promptEmbeds [${text.promptEmbeds.shape}], textEncHiddenStates [${text.textEncHiddenStates.shape}], textMask [${text.textMask.shape}]`);
  }
  const batch = imageEmbeddings.shape[0];
  const cfg = opts.classifierFreeGuidance ?? rows === 2 * batch;
  if (rows !== (cfg ? 2 * batch : batch)) {
    throw new Error(`runDecoder: ${batch} image embeddings need ${cfg ? 2 * batch : batch} text rows${cfg ? ' (unconditional rows first, then the prompts)' : ''}, got ${rows}`);
  }
  const inCh = decoder.config.in_channels;
  const outCh = decoder.config.out_channels;
  if (outCh !== 2 * inCh) throw new Error(`runDecoder: the decoder must predict ε and the variance (out_channels = 2 × in_channels), its config has in ${inCh} / out ${outCh}`);
  // Explicit latents may have any height/width the UNet accepts (diffusers insists on sample_size).
  const size = decoder.config.sample_size;
  if (!opts.latents && !(typeof size === 'number' && size > 0)) throw new Error('runDecoder: the decoder config has no sample_size; pass latents');
  const shape = opts.latents ? opts.latents.shape : [batch, inCh, size!, size!];
  if (shape.length !== 4 || shape[0] !== batch || shape[1] !== inCh) {
    throw new Error(`runDecoder: latents have shape [${shape}], [${batch}, ${inCh}, H, W] expected`);
  }
  if (!opts.latents && !opts.generator) throw new Error('runDecoder: pass latents or a generator (torch-compatible TorchGenerator)');

  const cond = decoderConditioning(textProj, imageEmbeddings, text, cfg);
  try {
    opts.onConditioning?.(cond);
    scheduler.setTimesteps(steps);
    // prepare_latents: drawn before any step noise (the pipeline's draw order).
    const initial = tf.tidy(() => tf.mul(opts.latents ?? randnTensor(shape, opts.generator!), scheduler.initNoiseSigma)) as tf.Tensor4D;
    const onModelOutput = opts.onModelOutput;
    const final = await denoise(scheduler, initial, decoderPredict(decoder, cond, guidance, cfg), {
      generator: opts.generator,
      noise: opts.noiseForStep,
      onModelOutput: onModelOutput && ((m) => onModelOutput({ step: m.step, timestep: m.timestep, modelOutput: m.modelOutput as tf.Tensor4D, sampleIn: m.sampleIn as tf.Tensor4D })),
      onStep: (s) => opts.onStep?.({ stage: 'decoder', ...s }),
    });
    try {
      return tf.tidy(() => tf.clipByValue(final, -1, 1));
    } finally {
      final.dispose();
    }
  } finally {
    tf.dispose([cond.encoderHiddenStates, cond.additiveClipTimeEmbeddings, cond.attentionMask]);
  }
}
