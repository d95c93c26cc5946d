// Interpolation between two prompts or two images through the CLIP embedding space.
//
// Text → text: diffusers' community `unclip_text_interpolation` (v0.25.1), fixtures README section n:
//   tokenize [start, end]; text encoder WITH the padding mask; mask = elementwise max of the two masks;
//   t = torch.linspace(0, 1, steps); slerp text_embeds and last_hidden_state for each t; then UnCLIPPipeline's
//   prompt encoding with those as text_model_output (the unconditional "" rows encoded without a mask, first),
//   prior, text_proj, decoder and super-res with batch = steps, latents from the generator.
// Image → image: both images' CLIP image embeddings (as the variation pipeline computes them), slerped, then the
//   variation pipeline's decoder and super-res with ONE noise shared by every frame: the generator draws each
//   latent and each step's noise for one image and repeats it over the frames, so frames differ only by their
//   embedding, and the end frames are exactly `vary` of each input with the same seed.
//
// Two slerps (--slerp):
//   'diffusers' — the community pipelines' function, reproduced to float32: one Frobenius norm over the WHOLE
//     tensor, then an ELEMENTWISE angle ω_i = acos(â_i·b̂_i) and res_i = sin((1−t)ω_i)/sin ω_i·a_i + sin(tω_i)/sin ω_i·b_i
//     with a, b not normalised. Since every |â_i·b̂_i| ≪ 1, ω_i ≈ π/2 and this is ≈ sin((1−t)π/2)·a + sin(tπ/2)·b:
//     at t = 0.5 about 0.71·(a + b). It is not a great-circle interpolation and does not keep the norm.
//   'proper' (default) — slerp of directions with the norm interpolated linearly: for each vector (text_embeds and
//     image embeddings as a whole; last_hidden_state token by token), Ω = acos(â·b̂),
//     dir(t) = sin((1−t)Ω)/sin Ω·â + sin(tΩ)/sin Ω·b̂, res = ((1−t)|a| + t|b|)·dir(t). It keeps the norm
//     (exactly when |a| = |b|) and walks the great circle. Computed in float64, stored as float32; t = 0 and t = 1
//     return a and b exactly.
import * as tf from '@tensorflow/tfjs-core';
import { TorchGenerator } from '../random/generator.js';
import type { RgbImage } from '../io/image.js';
import { encodePrompt } from './encode_prompt.js';
import { callGenerator, PipelineRun, type GenerateOptions, type GenerateResult, UnCLIPPipeline } from './unclip_pipeline.js';
import { toRgbImages, UnCLIPImageVariationPipeline, type ImageInput, type VariationStage, type VaryOptions, type VaryResult } from './variation_pipeline.js';

export type SlerpMode = 'proper' | 'diffusers';
export const SLERP_MODES: SlerpMode[] = ['proper', 'diffusers'];

const f32 = Math.fround;

/** torch.linspace(0, 1, steps) in float32 (torch fills the first half from the start, the rest from the end). */
export function torchLinspace(steps: number): Float32Array {
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`steps must be a positive integer, got ${steps}`);
  const out = new Float32Array(steps);
  if (steps === 1) return out;
  const step = f32(1 / (steps - 1));
  const half = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < half ? f32(0 + f32(step * i)) : f32(1 - f32(step * (steps - 1 - i)));
  return out;
}

function checkPair(low: ArrayLike<number>, high: ArrayLike<number>): void {
  if (low.length !== high.length || low.length === 0) throw new Error(`slerp: the two tensors have ${low.length} and ${high.length} elements`);
}

/**
 * The community pipelines' slerp, elementwise, in float32 as torch computes it (see the file comment). `v` is the
 * float32 interpolation value.
 */
export function slerpDiffusers(v: number, low: ArrayLike<number>, high: ArrayLike<number>): Float32Array {
  checkPair(low, high);
  const norm = (x: ArrayLike<number>) => {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i] * x[i];
    return f32(Math.sqrt(s));
  };
  const nl = norm(low), nh = norm(high);
  const t = f32(v), omt = f32(1 - t);
  const out = new Float32Array(low.length);
  for (let i = 0; i < low.length; i++) {
    const omega = f32(Math.acos(f32(f32(low[i] / nl) * f32(high[i] / nh))));
    const so = f32(Math.sin(omega));
    const a = f32(f32(Math.sin(f32(omt * omega))) / so);
    const b = f32(f32(Math.sin(f32(t * omega))) / so);
    out[i] = f32(f32(a * low[i]) + f32(b * high[i]));
  }
  return out;
}

/**
 * Proper slerp of each row of `rowSize` elements (directions on the great circle, norm interpolated linearly), in
 * float64; t = 0 / 1 give low / high exactly; parallel or zero rows fall back to linear interpolation.
 */
export function slerpProper(v: number, low: ArrayLike<number>, high: ArrayLike<number>, rowSize = low.length): Float32Array {
  checkPair(low, high);
  if (!Number.isInteger(rowSize) || rowSize <= 0 || low.length % rowSize !== 0) throw new Error(`slerp: row size ${rowSize} does not divide ${low.length}`);
  const out = new Float32Array(low.length);
  if (v === 0 || v === 1) {
    out.set(Array.from(v === 0 ? low : high));
    return out;
  }
  for (let r = 0; r < low.length; r += rowSize) {
    let na = 0, nb = 0, dot = 0;
    for (let i = r; i < r + rowSize; i++) { na += low[i] * low[i]; nb += high[i] * high[i]; dot += low[i] * high[i]; }
    na = Math.sqrt(na); nb = Math.sqrt(nb);
    const cos = na > 0 && nb > 0 ? Math.min(1, Math.max(-1, dot / (na * nb))) : 1;
    const omega = Math.acos(cos);
    const so = Math.sin(omega);
    if (so < 1e-6) {
      for (let i = r; i < r + rowSize; i++) out[i] = (1 - v) * low[i] + v * high[i];
      continue;
    }
    const wa = Math.sin((1 - v) * omega) / so / na, wb = Math.sin(v * omega) / so / nb;
    const scale = (1 - v) * na + v * nb;
    for (let i = r; i < r + rowSize; i++) out[i] = scale * (wa * low[i] + wb * high[i]);
  }
  return out;
}

export function slerp(mode: SlerpMode, v: number, low: ArrayLike<number>, high: ArrayLike<number>, rowSize?: number): Float32Array {
  if (mode === 'diffusers') return slerpDiffusers(v, low, high);
  if (mode === 'proper') return slerpProper(v, low, high, rowSize);
  throw new RangeError(`slerp must be "proper" or "diffusers", got ${JSON.stringify(mode)}`);
}

function checkSteps(steps: number): number {
  if (!Number.isInteger(steps) || steps < 2 || steps > 1000) throw new RangeError(`steps (frames) must be an integer in [2, 1000], got ${steps}`);
  return steps;
}

function checkMode(mode: SlerpMode | undefined): SlerpMode {
  const m = mode ?? 'proper';
  if (!SLERP_MODES.includes(m)) throw new RangeError(`slerp must be "proper" or "diffusers", got ${JSON.stringify(mode)}`);
  return m;
}

export interface TextInterpolationOptions extends Omit<GenerateOptions, 'numImagesPerPrompt'> {
  /** Frames, including both ends (the community pipeline's `steps`). */
  steps: number;
  slerp?: SlerpMode;
}

export interface InterpolationResult {
  /** The interpolation value of each frame (torch.linspace(0, 1, steps) in float32). */
  t: number[];
  slerp: SlerpMode;
}

/**
 * Text → text interpolation as diffusers' community UnCLIPTextInterpolationPipeline(start_prompt, end_prompt, steps,
 * prior/decoder/super_res_num_inference_steps, generator, prior/decoder_guidance_scale) with --slerp diffusers;
 * frames in order t = 0 … 1. Intermediates reported through onIntermediate besides the pipeline's:
 * text_encoder.text_embeds / text_encoder.last_hidden_state (masked call), interp.attention_mask,
 * interp.text_embeds, interp.last_hidden_state (returning a tensor replaces them, e.g. to edit the path).
 */
export async function interpolateText(pipe: UnCLIPPipeline, from: string, to: string, opts: TextInterpolationOptions): Promise<GenerateResult & InterpolationResult> {
  if (typeof from !== 'string' || typeof to !== 'string') throw new TypeError('interpolateText: from and to must be strings');
  const steps = checkSteps(opts.steps);
  const mode = checkMode(opts.slerp);
  const vals = torchLinspace(steps);
  const res = await pipe.generateFromText(steps, (p, c) => {
    const kept: tf.Tensor[] = [];
    const cap = <T extends tf.Tensor>(name: string, t: T): T => {
      const r = c.capture(name, t);
      if (r !== t) kept.push(r);
      return r;
    };
    try {
      const L = p.tokenizer.modelMaxLength;
      const enc = p.tokenizer.encode([from, to], { maxLength: L, padding: 'max_length', truncation: true });
      const ids = tf.tensor2d(enc.inputIds, [2, L], 'int32');
      const mask = tf.tensor2d(enc.attentionMask, [2, L], 'int32');
      // The community pipeline calls the text encoder WITH the padding mask (UnCLIPPipeline does not).
      const out = p.text_encoder.forward(ids, mask);
      const te = cap('text_encoder.text_embeds', out.textEmbeds).dataSync();
      const lhs = cap('text_encoder.last_hidden_state', out.lastHiddenState).dataSync();
      const D = out.textEmbeds.shape[1], H = out.lastHiddenState.shape[2];
      const m = enc.attentionMask[0].map((x, i) => Math.max(x, enc.attentionMask[1][i]));
      const interpMask = cap('interp.attention_mask', tf.tensor2d(Array.from({ length: steps }, () => m), [steps, L], 'int32'));
      const embeds = new Float32Array(steps * D), hidden = new Float32Array(steps * L * H);
      vals.forEach((v, k) => {
        embeds.set(slerp(mode, v, te.subarray(0, D), te.subarray(D, 2 * D), D), k * D);
        hidden.set(slerp(mode, v, lhs.subarray(0, L * H), lhs.subarray(L * H, 2 * L * H), H), k * L * H);
      });
      const textEmbeds = cap('interp.text_embeds', tf.tensor2d(embeds, [steps, D]));
      const lastHiddenState = cap('interp.last_hidden_state', tf.tensor3d(hidden, [steps, L, H]));
      return encodePrompt(p.tokenizer, p.text_encoder, [], {
        numImagesPerPrompt: 1, doClassifierFreeGuidance: c.classifierFreeGuidance,
        textModelOutput: { textEmbeds, lastHiddenState, attentionMask: interpMask },
      });
    } finally {
      tf.dispose(kept);
    }
  }, { ...opts, numImagesPerPrompt: 1 });
  return { ...res, t: Array.from(vals), slerp: mode };
}

/** A generator whose every draw is one row repeated over the batch: one noise shared by all frames. */
export class SharedRowsGenerator extends TorchGenerator {
  override randn(shape: number[]): Float32Array {
    if (shape.length < 2 || shape[0] <= 1) return super.randn(shape);
    const row = super.randn([1, ...shape.slice(1)]);
    const out = new Float32Array(row.length * shape[0]);
    for (let i = 0; i < shape[0]; i++) out.set(row, i * row.length);
    return out;
  }
}

export interface ImageInterpolationOptions extends Omit<VaryOptions, 'numImagesPerPrompt' | 'imageEmbeddings' | 'generator'> {
  steps: number;
  slerp?: SlerpMode;
}

/**
 * Image → image interpolation: slerp between the two images' CLIP image embeddings, decoded by the variation
 * pipeline with one noise (latents and every step's noise, from `seed`) shared by all frames. Intermediates:
 * image_encoder_image_embeds [2, D] and interp.image_embeds [steps, D] besides the variation pipeline's.
 */
export async function interpolateImages(pipe: UnCLIPImageVariationPipeline, from: ImageInput | RgbImage, to: ImageInput | RgbImage, opts: ImageInterpolationOptions): Promise<VaryResult & InterpolationResult> {
  const steps = checkSteps(opts.steps);
  const mode = checkMode(opts.slerp);
  const settings = UnCLIPImageVariationPipeline.resolveSettings({ ...opts, numImagesPerPrompt: 1 });
  const images = await toRgbImages([from, to]);
  const vals = torchLinspace(steps);
  const { seed } = callGenerator({ seed: opts.seed });
  const generator = new SharedRowsGenerator(seed!);
  const run = new PipelineRun<VariationStage>(pipe, opts);
  const { images: out, shape } = await pipe.decodeFromEmbeddings(run, steps, settings, generator, opts, async () => {
    const pair = await pipe.encodeImages(run, images, settings.preprocess);
    let path: tf.Tensor2D;
    try {
      const d = pair.dataSync();
      const D = pair.shape[1];
      const data = new Float32Array(steps * D);
      vals.forEach((v, k) => data.set(slerp(mode, v, d.subarray(0, D), d.subarray(D, 2 * D)), k * D));
      path = tf.tensor2d(data, [steps, D]);
    } finally {
      pair.dispose();
    }
    return run.capture('interp.image_embeds', path);
  }, settings.decoderGuidance > 1);
  return { images: out, shape, seed, settings, timings: run.timings() as unknown as VaryResult['timings'], t: Array.from(vals), slerp: mode };
}
