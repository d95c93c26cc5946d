// The training losses of Karlo's components, exactly as the reference fixtures define them (fixtures README,
// section k): mean over all elements, float32, no VLB / learned-variance term by default.
//   decoder    ε-prediction MSE on the first 3 of its 6 output channels (3..5 = learned variance, trained only when
//              vlbWeight > 0: + vlbWeight · the variational-bound term of vlb.ts, Improved DDPM's hybrid loss)
//   super-res  ε-prediction MSE on all output channels; input = cat([x_t, upscaled low-res], channels)
//   prior      sample-prediction MSE against x0 = (image_embeds − clip_mean) / clip_std (no gradient through those)
//   CLIP text  MSE of text_embeds against a target
//   text_proj  trained by the decoder loss back-propagated through it (textProjDecoderLoss)
// Each loss is a function of the model(s) and batch tensors returning a scalar, to be called inside
// tf.variableGrads / valueAndGrads. Batches are NCHW (PyTorch layout) like the models' public forward().
import * as tf from '@tensorflow/tfjs-core';
import type { CLIPTextModelWithProjection } from '../models/clip_text.js';
import type { PriorTransformer } from '../models/prior_transformer.js';
import type { UnCLIPTextProjModel } from '../models/text_proj.js';
import type { UNet2DConditionModel } from '../models/unet2d_condition.js';
import type { UNet2DModel } from '../models/unet2d.js';
import type { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { bicubicResize } from '../layers/interpolate.js';
import { learnedRangeVlb } from './vlb.js';

export type Timesteps = number[] | tf.Tensor1D;

/** mean((a − b)²) over every element (torch F.mse_loss, reduction 'mean'). */
export function mse(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  if (a.shape.join(',') !== b.shape.join(',')) throw new Error(`mse: shapes differ: [${a.shape}] vs [${b.shape}]`);
  return tf.tidy(() => tf.mean(tf.squaredDifference(a, b)) as tf.Scalar);
}

/**
 * Min-SNR-γ loss weights for ε-prediction (Hang et al. 2023, as diffusers' training scripts' --snr_gamma):
 * snr = (√ᾱ_t / √(1 − ᾱ_t))², weight = min(snr, γ) / snr, in float32 like torch's tensors. Down-weights the
 * low-noise timesteps, whose fine detail otherwise dominates the gradient.
 */
export function minSnrWeights(scheduler: UnCLIPScheduler, timesteps: readonly number[], gamma: number): Float32Array {
  const f = Math.fround;
  return Float32Array.from(timesteps, (t) => {
    const ac = scheduler.alphasCumprod[t];
    const snr = f(f(f(Math.sqrt(ac)) / f(Math.sqrt(f(1 - ac)))) ** 2);
    return f(Math.min(snr, f(gamma)) / snr);
  });
}

/** mean_b(w_b · mean((a_b − b_b)²)): per-sample MSE over every non-batch axis, weighted, then the batch mean. */
export function weightedMse(a: tf.Tensor, b: tf.Tensor, w: Float32Array): tf.Scalar {
  if (a.shape.join(',') !== b.shape.join(',')) throw new Error(`weighted mse: shapes differ: [${a.shape}] vs [${b.shape}]`);
  if (w.length !== a.shape[0]) throw new Error(`weighted mse: ${w.length} weights for a batch of ${a.shape[0]}`);
  return tf.tidy(() => {
    const per = tf.mean(tf.squaredDifference(a, b), a.shape.slice(1).map((_, i) => i + 1));
    return tf.mean(tf.mul(per, tf.tensor1d(w))) as tf.Scalar;
  });
}

/** The ε-MSE, Min-SNR-γ weighted when snrGamma is given (needs the timesteps as numbers). */
function epsilonMse(eps: tf.Tensor, noise: tf.Tensor, scheduler: UnCLIPScheduler | undefined, timesteps: Timesteps, snrGamma: number | undefined, what: string): tf.Scalar {
  if (!snrGamma) return mse(eps, noise);
  if (!scheduler || !Array.isArray(timesteps)) throw new Error(`${what}: snrGamma needs the scheduler and the timesteps as an array of numbers`);
  return weightedMse(eps, noise, minSnrWeights(scheduler, timesteps, snrGamma));
}

function timestepTensor(t: Timesteps, batch: number, what: string): tf.Tensor1D {
  const n = Array.isArray(t) ? t.length : t.shape[0];
  if (n !== batch) throw new Error(`${what}: ${n} timesteps for a batch of ${batch}`);
  return Array.isArray(t) ? tf.tensor1d(t, 'int32') : t;
}

/** A value with no gradient path to any variable: a copy of its data (what `.detach()` is for a loss). */
export function detached(t: tf.Tensor): tf.Tensor {
  return tf.tensor(t.dataSync() as Float32Array, t.shape, t.dtype);
}

// ---------- decoder (UNet2DConditionModel) ----------

export interface DecoderNoisyBatch {
  /** x_t [B, 3, H, W]. */
  noisySample: tf.Tensor4D;
  /** The noise that made x_t (the ε target) [B, 3, H, W]. */
  noise: tf.Tensor4D;
  timesteps: Timesteps;
  /** text_proj's encoder_hidden_states [B, extra + 77, cross_dim]. */
  encoderHiddenStates: tf.Tensor3D;
  /** text_proj's additive time embedding [B, time_embed_dim]. */
  classLabels?: tf.Tensor2D | null;
  /** F.pad(text_attention_mask, (extra, 0), True) [B, extra + 77]. */
  attentionMask?: tf.Tensor2D | null;
}

/** The decoder's whole output on x_t with the batch's conditioning, [B, 2C, H, W] for a learned-range decoder. */
function decoderOutput(decoder: UNet2DConditionModel, b: DecoderNoisyBatch): tf.Tensor4D {
  return decoder.forward(b.noisySample, timestepTensor(b.timesteps, b.noisySample.shape[0], 'decoder loss'),
    b.encoderHiddenStates, { classLabels: b.classLabels ?? null, attentionMask: b.attentionMask ?? null }) as tf.Tensor4D;
}

/** Decoder ε-MSE given x_t: mean((decoder(x_t, t, ...)[:, :3] − noise)²). */
export function decoderEpsilonLoss(decoder: UNet2DConditionModel, b: DecoderNoisyBatch, weighting?: { scheduler: UnCLIPScheduler; snrGamma?: number }): tf.Scalar {
  return tf.tidy(() => {
    const out = decoderOutput(decoder, b);
    const c = b.noise.shape[1];
    if (out.shape[1] < c) throw new Error(`decoder loss: the decoder outputs ${out.shape[1]} channels, the noise has ${c}`);
    const eps = out.shape[1] === c ? out : tf.slice(out, [0, 0, 0, 0], [-1, c, -1, -1]);
    return epsilonMse(eps, b.noise, weighting?.scheduler, b.timesteps, weighting?.snrGamma, 'decoder loss');
  });
}

export interface DecoderBatch extends Omit<DecoderNoisyBatch, 'noisySample'> {
  /** Clean images in [-1, 1] [B, 3, H, W]. */
  x0: tf.Tensor4D;
  /** Weight of the learned-range variance term (vlb.ts); 0 or absent: the ε-MSE alone (the fixtures' loss). */
  vlbWeight?: number;
  /** Min-SNR-γ weighting of the ε-MSE (minSnrWeights); absent or 0: unweighted. The VLB term stays unweighted. */
  snrGamma?: number;
}

/**
 * Decoder loss from clean images: x_t = scheduler.addNoise(x0, noise, t), then decoderEpsilonLoss; with vlbWeight,
 * plus vlbWeight · learnedRangeVlb on the variance channels (needs the decoder's 2C outputs).
 */
export function decoderLoss(decoder: UNet2DConditionModel, scheduler: UnCLIPScheduler, b: DecoderBatch): tf.Scalar {
  return tf.tidy(() => {
    const xt = scheduler.addNoise(b.x0, b.noise, b.timesteps) as tf.Tensor4D;
    if (!b.vlbWeight) return decoderEpsilonLoss(decoder, { ...b, noisySample: xt }, { scheduler, snrGamma: b.snrGamma });
    if (!Array.isArray(b.timesteps)) throw new Error('decoder loss: vlbWeight needs the timesteps as an array of numbers (its coefficients are per timestep)');
    const ts = b.timesteps;
    const out = decoderOutput(decoder, { ...b, noisySample: xt });
    const c = b.noise.shape[1];
    if (out.shape[1] !== 2 * c) throw new Error(`decoder loss: vlbWeight needs the learned-range decoder's ${2 * c} output channels, it has ${out.shape[1]}`);
    const eps = tf.slice(out, [0, 0, 0, 0], [-1, c, -1, -1]) as tf.Tensor4D;
    const v = tf.slice(out, [0, c, 0, 0], [-1, c, -1, -1]) as tf.Tensor4D;
    const vlb = learnedRangeVlb(scheduler, { x0: b.x0, xt, eps, v, timesteps: ts });
    return tf.add(epsilonMse(eps, b.noise, scheduler, ts, b.snrGamma, 'decoder loss'), tf.mul(vlb, b.vlbWeight)) as tf.Scalar;
  });
}

// ---------- text_proj (through the decoder loss) ----------

export interface TextProjDecoderBatch extends Omit<DecoderNoisyBatch, 'encoderHiddenStates' | 'classLabels'> {
  /** Prior image embeddings of the conditional rows [B, clip_dim]. */
  imageEmbeddings: tf.Tensor2D;
  /** CLIP text_embeds [B', clip_dim] (B' = 2B with classifier-free guidance, unconditional rows first). */
  promptEmbeds: tf.Tensor2D;
  /** CLIP last_hidden_state [B', 77, clip_dim]. */
  textEncoderHiddenStates: tf.Tensor3D;
  doClassifierFreeGuidance: boolean;
}

/** The decoder loss with text_proj in front of it: gradients reach text_proj (and the decoder, when asked for). */
export function textProjDecoderLoss(textProj: UnCLIPTextProjModel, decoder: UNet2DConditionModel, b: TextProjDecoderBatch): tf.Scalar {
  return tf.tidy(() => {
    const tp = textProj.forward({
      imageEmbeddings: b.imageEmbeddings,
      promptEmbeds: b.promptEmbeds,
      textEncoderHiddenStates: b.textEncoderHiddenStates,
      doClassifierFreeGuidance: b.doClassifierFreeGuidance,
    });
    return decoderEpsilonLoss(decoder, { ...b, encoderHiddenStates: tp.textEncoderHiddenStates, classLabels: tp.additiveClipTimeEmbeddings });
  });
}

// ---------- super-res (UNet2DModel) ----------

export interface SuperResNoisyBatch {
  /** cat([x_t, upscaled], 1) [B, 6, H, W]. */
  sample: tf.Tensor4D;
  noise: tf.Tensor4D;
  timesteps: Timesteps;
}

/** Super-res ε-MSE given its 6-channel input: mean((sr(sample, t) − noise)²) over all output channels. */
export function superResEpsilonLoss(sr: UNet2DModel, b: SuperResNoisyBatch, weighting?: { scheduler: UnCLIPScheduler; snrGamma?: number }): tf.Scalar {
  return tf.tidy(() => {
    const out = sr.forward(b.sample, timestepTensor(b.timesteps, b.sample.shape[0], 'super-res loss'));
    return epsilonMse(out, b.noise, weighting?.scheduler, b.timesteps, weighting?.snrGamma, 'super-res loss');
  });
}

export interface SuperResBatch {
  /** Clean high-resolution images in [-1, 1] [B, 3, H, W]. */
  x0: tf.Tensor4D;
  noise: tf.Tensor4D;
  timesteps: Timesteps;
  /** The low-resolution condition already upscaled to [B, 3, H, W]; or `lowres`, upscaled here. */
  upscaled?: tf.Tensor4D;
  /** Low-resolution images [B, 3, h, w]: upscaled as the pipeline does (bicubic, antialias, align_corners False). */
  lowres?: tf.Tensor4D;
  /** Min-SNR-γ weighting of the ε-MSE (minSnrWeights); absent or 0: unweighted. */
  snrGamma?: number;
}

/** Super-res loss from clean images: x_t = addNoise(x0, noise, t); sample = cat([x_t, upscaled], 1). */
export function superResLoss(sr: UNet2DModel, scheduler: UnCLIPScheduler, b: SuperResBatch): tf.Scalar {
  return tf.tidy(() => {
    const [, , H, W] = b.x0.shape;
    const up = b.upscaled ?? (b.lowres ? bicubicResize(b.lowres, [H, W], { antialias: true }) : null);
    if (!up) throw new Error('super-res loss: give upscaled or lowres');
    const xt = scheduler.addNoise(b.x0, b.noise, b.timesteps);
    return superResEpsilonLoss(sr, { sample: tf.concat([xt, up], 1) as tf.Tensor4D, noise: b.noise, timesteps: b.timesteps }, { scheduler, snrGamma: b.snrGamma });
  });
}

// ---------- prior (PriorTransformer, sample prediction) ----------

export interface PriorNoisyBatch {
  /** x_t [B, embedding_dim]. */
  noisy: tf.Tensor2D;
  /** The target x0 (normalised image embeddings) [B, embedding_dim]. */
  x0: tf.Tensor2D;
  timesteps: Timesteps;
  /** CLIP text_embeds [B, D]. */
  projEmbedding: tf.Tensor2D;
  /** CLIP last_hidden_state [B, 77, D]. */
  encoderHiddenStates: tf.Tensor3D;
  /** Tokenizer mask [B, 77] (1 = token). */
  attentionMask: tf.Tensor2D | null;
}

/** Prior sample-prediction MSE given x_t: mean((prior(x_t, t, ...) − x0)²). */
export function priorSampleLoss(prior: PriorTransformer, b: PriorNoisyBatch): tf.Scalar {
  return tf.tidy(() => {
    const pred = prior.forward(b.noisy, timestepTensor(b.timesteps, b.noisy.shape[0], 'prior loss'), b.projEmbedding,
      b.encoderHiddenStates, b.attentionMask);
    return mse(pred, b.x0);
  });
}

/** x0 = (image_embeds − clip_mean) / clip_std, with no gradient path to clip_mean / clip_std (constants). */
export function priorTarget(prior: PriorTransformer, imageEmbeds: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const mean = detached(prior.clip_mean.value);
    const std = detached(prior.clip_std.value);
    return tf.div(tf.sub(imageEmbeds, mean), std) as tf.Tensor2D;
  });
}

export interface PriorBatch extends Omit<PriorNoisyBatch, 'noisy' | 'x0'> {
  /** Raw CLIP image embeddings [B, clip_dim]. */
  imageEmbeds: tf.Tensor2D;
  noise: tf.Tensor2D;
}

/** Prior loss from CLIP image embeddings: x0 = priorTarget(image_embeds), x_t = addNoise(x0, noise, t). */
export function priorLoss(prior: PriorTransformer, scheduler: UnCLIPScheduler, b: PriorBatch): tf.Scalar {
  return tf.tidy(() => {
    const x0 = priorTarget(prior, b.imageEmbeds);
    const noisy = scheduler.addNoise(x0, b.noise, b.timesteps) as tf.Tensor2D;
    return priorSampleLoss(prior, { ...b, noisy, x0 });
  });
}

// ---------- CLIP text ----------

export interface ClipTextBatch {
  /** Token ids [B, 77] (the attention mask is not passed, as in the pipeline). */
  inputIds: tf.Tensor2D;
  /** Target text_embeds [B, projection_dim]. */
  target: tf.Tensor2D;
}

/** CLIP text-embedding MSE: mean((model(input_ids).text_embeds − target)²). */
export function clipTextLoss(model: CLIPTextModelWithProjection, b: ClipTextBatch): tf.Scalar {
  return tf.tidy(() => mse(model.forward(b.inputIds).textEmbeds, b.target));
}

// ---------- gradients by parameter name ----------

export interface ValueAndGrads {
  value: tf.Scalar;
  /** d value / d variable by name; a variable the value does not depend on has no entry (torch: grad None). */
  grads: Map<string, tf.Tensor>;
}

/**
 * tf.variableGrads with names: the loss and its gradient for each named variable (model parameters by state-dict
 * key, or input tensors wrapped in tf.variable). The caller owns (and disposes) value and grads.
 */
export function valueAndGrads(loss: () => tf.Scalar, vars: Map<string, tf.Variable>): ValueAndGrads {
  const byId = new Map<string, string>();
  for (const [k, v] of vars) byId.set(v.name, k);
  // tf.variableGrads silently drops variables marked non-trainable (models load frozen by default): the list given
  // here is what gets gradients, so mark them trainable for the call and restore the flags after.
  const list = [...vars.values()];
  const flags = list.map((v) => v.trainable);
  for (const v of list) v.trainable = true;
  let res: { value: tf.Scalar; grads: tf.NamedTensorMap };
  try {
    res = tf.variableGrads(loss, list);
  } finally {
    list.forEach((v, i) => { v.trainable = flags[i]; });
  }
  const { value, grads } = res;
  const out = new Map<string, tf.Tensor>();
  for (const [id, g] of Object.entries(grads)) {
    const k = byId.get(id);
    if (k === undefined) {
      g.dispose();
      continue;
    }
    out.set(k, g);
  }
  return { value, grads: out };
}
