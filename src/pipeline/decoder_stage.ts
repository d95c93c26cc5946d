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
    const extra = textProj.config.clip_extra_context_tokens;
    const rows = text.textMask.shape[0];
    // The extra context tokens are never masked: F.pad(text_mask, (extra, 0), value=True).
    const mask = tf.concat([tf.ones([rows, extra], 'int32'), tf.cast(text.textMask, 'int32')], 1) as tf.Tensor2D;
    return { encoderHiddenStates: tp.textEncoderHiddenStates, additiveClipTimeEmbeddings: tp.additiveClipTimeEmbeddings, attentionMask: mask };
  });
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
  let latents: tf.Tensor4D | null = null;
  try {
    opts.onConditioning?.(cond);
    scheduler.setTimesteps(steps);
    const timesteps = scheduler.timesteps;
    // prepare_latents: drawn before any step noise (the pipeline's draw order).
    latents = tf.tidy(() => tf.mul(opts.latents ?? randnTensor(shape, opts.generator!), scheduler.initNoiseSigma)) as tf.Tensor4D;
    for (let i = 0; i < timesteps.length; i++) {
      const t = timesteps[i];
      const x: tf.Tensor4D = latents;
      const next = tf.tidy(() => {
        const modelOutput = guidedModelOutput(decoder, x, t, cond, guidance, cfg);
        opts.onModelOutput?.({ step: i, timestep: t, modelOutput, sampleIn: x });
        // Recorded noise (parity) is asked for only where the reference draws some (t > 0).
        const noise = t > 0 ? opts.noiseForStep?.(i, x.shape) : undefined;
        return scheduler.step(modelOutput, t, x, {
          prevTimestep: i + 1 < timesteps.length ? timesteps[i + 1] : undefined,
          noise,
          generator: noise ? undefined : opts.generator,
        }).prevSample as tf.Tensor4D;
      });
      latents.dispose();
      latents = next;
      opts.onStep?.({ stage: 'decoder', step: i, numSteps: timesteps.length, timestep: t, latents });
      // Let progress output and timers run between steps.
      await new Promise((r) => setImmediate(r));
    }
    const final: tf.Tensor4D = latents;
    return tf.tidy(() => tf.clipByValue(final, -1, 1));
  } finally {
    latents?.dispose();
    tf.dispose([cond.encoderHiddenStates, cond.additiveClipTimeEmbeddings, cond.attentionMask]);
  }
}
