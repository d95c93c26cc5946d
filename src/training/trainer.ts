// The training loop behind `karlo train`: one component of a Karlo folder (prior, decoder, super_res, or the CLIP
// text encoder) fine-tuned on a folder of captioned images, fully or with LoRA adapters.
//
// Per optimizer step: K micro-batches (gradient accumulation; the gradient is their mean), global-norm clipping,
// AdamW at the step's learning rate (constant or cosine with warm-up), the loss recorded for the CSV/PNG curve,
// a checkpoint every --save-every steps and at the end. All randomness (timesteps, noise, the data order) comes
// from one torch-compatible generator plus the step count, both saved in checkpoints, so a resumed run continues
// bit for bit. tf.memory() stays flat from step to step (the test checks numTensors).
//
// What each component learns from (losses.ts; the fixtures README's definitions):
//   decoder      ε-MSE on the first 3 output channels; x0 = the image at the decoder's sample_size; conditioning
//                = the frozen text_proj of (image embedding, caption's CLIP text outputs), as the pipeline does
//   super_res    ε-MSE; x0 = the image at the super-res sample_size, the low-res input = x0 resized (bicubic,
//   super_res_last antialiased) to the decoder's sample_size and upscaled back as the pipeline does
//   prior        sample-prediction MSE to the normalised image embedding, conditioned on the caption
//   text_encoder text_embeds MSE to the image embedding
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { registerGradients } from '../backend/gradients.js';
import { openModelFolder, type ComponentName, type ModelFolder } from '../io/model_folder.js';
import { readConfig } from '../io/weights.js';
import type { Module } from '../layers/module.js';
import type { CLIPTextModelWithProjection } from '../models/clip_text.js';
import type { PriorTransformer } from '../models/prior_transformer.js';
import type { UnCLIPTextProjModel } from '../models/text_proj.js';
import type { UNet2DConditionModel } from '../models/unet2d_condition.js';
import type { UNet2DModel } from '../models/unet2d.js';
import { loadComponent as loadModel } from '../loading/load_component.js';
import { bicubicResize } from '../layers/interpolate.js';
import { TorchGenerator } from '../random/generator.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { decoderConditioning } from '../pipeline/decoder_stage.js';
import { AdamW } from './adamw.js';
import { clipTextLoss, decoderLoss, priorLoss, superResLoss, valueAndGrads } from './losses.js';
import { lrSchedule, type LrScheduleKind } from './lr_schedule.js';
import { selectTrainable } from './trainable.js';
import { applyLora, type Lora } from './lora.js';
import { ClipPair, clipContrastiveLoss, clipImageDir, clipImageSize, clipNormalise, loadClipPair } from './clip_contrastive.js';
import { loadSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { describeSkipped, loadImageFolder, scanDataFolder, type DataItem } from './data.js';
import { prepareConditioning, type Conditioning } from './cond_cache.js';
import { TRAINING_WEIGHTS_FILE, loadCheckpoint, resolveCheckpoint, saveCheckpoint, type CheckpointWeights, type LoadedCheckpoint, type RunIdentity } from './checkpoint.js';
import { WeightEma } from './ema.js';
import { writeLossFiles, type LossPoint } from './plot.js';

export type TrainComponent = 'prior' | 'decoder' | 'super_res' | 'super_res_last' | 'text_encoder' | 'clip';
export const TRAIN_COMPONENTS: TrainComponent[] = ['prior', 'decoder', 'super_res', 'super_res_last', 'text_encoder', 'clip'];

/** The model-folder component each --component trains. */
export const COMPONENT_DIR: Record<TrainComponent, ComponentName> = {
  prior: 'prior', decoder: 'decoder', super_res: 'super_res_first', super_res_last: 'super_res_last', text_encoder: 'text_encoder',
  // clip: both CLIP towers (text_encoder/ and image_encoder/), contrastively (clip_contrastive.ts)
  clip: 'text_encoder',
};

export interface TrainOptions {
  model: string;
  component: TrainComponent;
  data: string;
  /** Total optimizer steps of the run (a resumed run continues up to this). */
  steps: number;
  batch: number;
  lr: number;
  out: string;
  loraRank?: number;
  loraAlpha?: number;
  train?: string[];
  freeze?: string[];
  gradAccum?: number;
  /** Checkpoint every N optimizer steps (0 / undefined: only at the end). */
  saveEvery?: number;
  resume?: string;
  seed?: number;
  lrScheduler?: LrScheduleKind;
  warmupSteps?: number;
  /**
   * Classifier-free guidance dropout (decoder, prior): each sample is trained unconditionally with this
   * probability (the "" caption; for the decoder also text_proj's learned null image embedding), as the pipeline's
   * unconditional rows are. Default 0.
   */
  condDrop?: number;
  /**
   * Decoder only: train text_proj together with the decoder (its gradient comes through the decoder loss; the
   * checkpoint gets a text_proj/ folder beside decoder/). Default false: text_proj frozen.
   */
  textProj?: boolean;
  /** Decoder only: weight of the learned-range variance term (vlb.ts; Improved DDPM's hybrid loss is 1). Default 0. */
  vlbWeight?: number;
  /**
   * Decoder and super-res (ε-prediction): Min-SNR-γ weighting of the ε-MSE (losses.ts minSnrWeights; diffusers'
   * --snr_gamma, 5 recommended). Default: unweighted.
   */
  snrGamma?: number;
  /**
   * Super-res only: train on random crops of this size (x0 and its upscaled low-res copy cropped alike; the
   * UNet2DModel has no attention, so a crop sees what the full image would). Default: the whole image.
   */
  crop?: number;
  /**
   * Keep an exponential moving average of the trained weights (ema.ts; diffusers' --use_ema with this decay, e.g.
   * 0.999): checkpoints' component folders get the averages, training_weights.safetensors the trained weights
   * that --resume continues from. Full fine-tuning only. Default: none.
   */
  emaDecay?: number;
  /** Global gradient-norm clip (torch clip_grad_norm_); 0 = off. Default 1. */
  maxGradNorm?: number;
  weightDecay?: number;
  adamBetas?: [number, number];
  adamEps?: number;
  /** Where the conditioning cache goes (default `<data>/.karlo_cache`). */
  cacheDir?: string;
  /** Called once before the first step (also when a resumed run has nothing left to do). */
  onStart?: (info: { startStep: number; totalSteps: number }) => void;
  /** Called after every optimizer step. */
  onStep?: (p: StepReport) => void;
  /** Log lines (data summary, skipped files, cache, checkpoints). */
  log?: (line: string) => void;
  /** Polled after every step: true → save a checkpoint and return (Ctrl-C). */
  shouldStop?: () => boolean;
  /** Rewrite loss.csv / loss.png at most this often (seconds; default 30) besides every checkpoint. */
  plotEverySeconds?: number;
}

export interface StepReport {
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  /** Optimizer steps per second over this run (since start or resume). */
  stepsPerSecond: number;
  elapsedSeconds: number;
  epoch: number;
}

export interface TrainResult {
  stepsDone: number;
  interrupted: boolean;
  checkpoints: string[];
  lastCheckpoint: string | null;
  lossCsv: string;
  lossPng: string;
  losses: LossPoint[];
  trainableParameters: number;
  totalParameters: number;
}

/** LoRA adapters attached to a component (glue over lora.ts). */
interface LoraHandle {
  variables(): Map<string, tf.Variable>;
  numParameters(): number;
  save(file: string): void;
  load(file: string): void;
  dispose(): void;
}

/** LoRA adapters (lora.ts) on the component's attention projections, initialised from the run's seed. */
function attachLora(module: Module, component: TrainComponent, rank: number, alpha: number, seed: number): LoraHandle {
  let lora: Lora;
  try {
    lora = applyLora(module, { rank, alpha, seed });
  } catch (e) {
    throw new TrainArgumentError(`--lora-rank ${rank} on ${component}: ${(e as Error).message}`);
  }
  return {
    variables: () => lora.variables(),
    numParameters: () => lora.namedParameters().reduce((n, [, p]) => n + p.torchShape.reduce((a, b) => a * b, 1), 0),
    save: (file) => lora.save(file, { karlo_component: component }),
    load: (file) => {
      // Into the fresh (trainable) adapters, key by key: the run continues with exactly the saved values.
      const saved = loadSafetensors(file);
      const names = new Set(lora.namedParameters().map(([k]) => k));
      for (const k of saved.keys()) if (!names.has(k)) throw new Error(`${file}: unexpected LoRA tensor "${k}" for this run`);
      for (const [k, p] of lora.namedParameters()) {
        const t = saved.get(k);
        if (!t) throw new Error(`${file}: missing LoRA tensor "${k}"`);
        if (t.shape.join(',') !== p.torchShape.join(',')) throw new Error(`${file}: "${k}" has shape [${t.shape}], [${p.torchShape}] expected`);
        p.setFromTorch(t.data as Float32Array, true);
      }
    },
    dispose: () => lora.remove(),
  };
}

/** An argument the user got wrong (the CLI prints it as one line, exit 2). */
export class TrainArgumentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TrainArgumentError';
  }
}

function sampleSize(dir: string, what: string): number {
  const v = readConfig(dir).sample_size;
  const s = Array.isArray(v) ? v[0] : v;
  if (!Number.isInteger(s) || (s as number) < 1) throw new Error(`${path.join(dir, 'config.json')}: sample_size ${JSON.stringify(v)} is not a positive integer (${what})`);
  if (Array.isArray(v) && v[0] !== v[1]) throw new Error(`${path.join(dir, 'config.json')}: non-square sample_size ${JSON.stringify(v)} is not supported for training`);
  return s as number;
}

/**
 * clip_grad_norm_ as clip_grad.ts computes it (norm of the per-tensor float32 norms; coef = max / (total + 1e-6),
 * at most 1, every gradient multiplied), but replacing the gradients one at a time: full fine-tuning of a 900M UNet
 * never holds two copies of its gradients. Returns the total norm before clipping.
 */
export function clipGradNormInPlace(grads: Map<string, tf.Tensor>, maxNorm: number): number {
  if (grads.size === 0) return 0;
  const totalNorm = tf.tidy(() => tf.norm(tf.stack([...grads.values()].map((g) => tf.norm(g)))).dataSync()[0]);
  const coef = Math.min(Math.fround(maxNorm / Math.fround(totalNorm + 1e-6)), 1);
  for (const [name, g] of grads) {
    grads.set(name, tf.mul(g, Math.fround(coef)));
    g.dispose();
  }
  return totalNorm;
}

/** Deterministic data order: epoch e is a permutation drawn from a generator seeded by (seed, e). */
export function epochOrder(seed: number, epoch: number, n: number): number[] {
  const g = new TorchGenerator(BigInt.asUintN(64, (BigInt(seed) << 20n) ^ BigInt(epoch) ^ 0x5eed0000000000n));
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = g.nextU32() % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** The data indices of samples [from, from + count) of the endless epoch sequence. */
export function sampleIndices(seed: number, n: number, from: number, count: number, memo = new Map<number, number[]>()): number[] {
  const out: number[] = [];
  for (let s = from; s < from + count; s++) {
    const e = Math.floor(s / n);
    let order = memo.get(e);
    if (!order) {
      memo.clear();
      order = epochOrder(seed, e, n);
      memo.set(e, order);
    }
    out.push(order[s % n]);
  }
  return out;
}

function checkOptions(o: TrainOptions): void {
  const posInt = (name: string, v: unknown, min = 1) => {
    if (!Number.isInteger(v) || (v as number) < min) throw new TrainArgumentError(`--${name} must be an integer ≥ ${min}, got ${String(v)}`);
  };
  if (!TRAIN_COMPONENTS.includes(o.component)) throw new TrainArgumentError(`--component must be one of ${TRAIN_COMPONENTS.join(', ')}, got ${JSON.stringify(o.component)}`);
  posInt('steps', o.steps);
  posInt('batch', o.batch);
  if (!(typeof o.lr === 'number' && Number.isFinite(o.lr) && o.lr > 0)) throw new TrainArgumentError(`--lr must be a positive number, got ${String(o.lr)}`);
  if (o.gradAccum !== undefined) posInt('grad-accum', o.gradAccum);
  if (o.saveEvery !== undefined && o.saveEvery !== 0) posInt('save-every', o.saveEvery);
  if (o.loraRank !== undefined) posInt('lora-rank', o.loraRank);
  if (o.loraAlpha !== undefined && !(Number.isFinite(o.loraAlpha) && o.loraAlpha > 0)) throw new TrainArgumentError(`--lora-alpha must be a positive number, got ${String(o.loraAlpha)}`);
  if (o.loraAlpha !== undefined && o.loraRank === undefined) throw new TrainArgumentError('--lora-alpha needs --lora-rank');
  if (o.seed !== undefined) posInt('seed', o.seed, 0);
  if (o.warmupSteps !== undefined) posInt('warmup-steps', o.warmupSteps, 0);
  if (o.condDrop !== undefined && !(o.condDrop >= 0 && o.condDrop < 1)) throw new TrainArgumentError(`--cond-drop must be in [0, 1), got ${String(o.condDrop)}`);
  if (o.condDrop && o.component !== 'decoder' && o.component !== 'prior') throw new TrainArgumentError(`--cond-drop applies to the decoder and the prior (conditioned on captions), not ${o.component}`);
  if (o.textProj && o.component !== 'decoder') throw new TrainArgumentError(`--text-proj trains text_proj with the decoder; it does not apply to ${o.component}`);
  if (o.textProj && o.loraRank !== undefined) throw new TrainArgumentError('--text-proj trains text_proj fully; it cannot be combined with --lora-rank');
  if (o.vlbWeight !== undefined && !(Number.isFinite(o.vlbWeight) && o.vlbWeight >= 0)) throw new TrainArgumentError(`--vlb-weight must be ≥ 0, got ${String(o.vlbWeight)}`);
  if (o.vlbWeight && o.component !== 'decoder') throw new TrainArgumentError(`--vlb-weight trains the decoder's learned-range variance; it does not apply to ${o.component}`);
  if (o.emaDecay !== undefined && !(Number.isFinite(o.emaDecay) && o.emaDecay > 0 && o.emaDecay < 1)) throw new TrainArgumentError(`--ema-decay must be in (0, 1), got ${String(o.emaDecay)}`);
  if (o.emaDecay && o.loraRank) throw new TrainArgumentError('--ema-decay averages fully trained weights; it does not apply with --lora-rank');
  if (o.emaDecay && o.component === 'clip') throw new TrainArgumentError('--ema-decay does not apply to --component clip (two towers)');
  if (o.snrGamma !== undefined && !(Number.isFinite(o.snrGamma) && o.snrGamma > 0)) throw new TrainArgumentError(`--snr-gamma must be > 0, got ${String(o.snrGamma)}`);
  if (o.snrGamma && !['decoder', 'super_res', 'super_res_last'].includes(o.component)) throw new TrainArgumentError(`--snr-gamma weights an ε-prediction loss (decoder, super_res, super_res_last); ${o.component} does not have one`);
  if (o.crop !== undefined) posInt('crop', o.crop);
  if (o.crop !== undefined && o.component !== 'super_res' && o.component !== 'super_res_last') throw new TrainArgumentError(`--crop applies to super_res and super_res_last, not ${o.component}`);
  if (o.maxGradNorm !== undefined && !(Number.isFinite(o.maxGradNorm) && o.maxGradNorm >= 0)) throw new TrainArgumentError(`--max-grad-norm must be ≥ 0, got ${String(o.maxGradNorm)}`);
  if (o.weightDecay !== undefined && !(Number.isFinite(o.weightDecay) && o.weightDecay >= 0)) throw new TrainArgumentError(`--weight-decay must be ≥ 0, got ${String(o.weightDecay)}`);
}

/** What a component needs per training sample and how its loss is computed. */
interface ComponentSetup {
  module: Module;
  /** Frozen helpers to free at the end (text_proj). */
  extra: Module[];
  needsText: boolean;
  needsImageEmbeds: boolean;
  /** Pixel resolution of x0 (0: no pixels). */
  resolution: number;
  /** Builds the loss for a batch: called inside the gradient recording (tensors made here are freed). */
  loss: (b: BatchData) => tf.Scalar;
  /** Shape of one sample's noise. */
  noiseShape: number[];
  /** Super-res --crop: the crop size, cut from images at `resolution` (0: no cropping). */
  crop: number;
  /** Variables trained beside the module's (text_proj.* with --text-proj), by name. */
  extraVars: Map<string, tf.Variable>;
  scheduler: UnCLIPScheduler;
}

interface BatchData {
  indices: number[];
  /** Super-res --crop: the top-left corner [y, x] of each sample's crop. */
  crops: [number, number][];
  timesteps: number[];
  noise: tf.Tensor;
  /** Rows trained unconditionally (classifier-free guidance dropout): "" caption, learned null image embedding. */
  drop: boolean[];
}

/** The text outputs of the batch rows: each item's caption, or the empty caption for dropped rows. */
function textRows(c: Conditioning, b: BatchData) {
  return b.indices.map((i, r) => (b.drop[r] ? c.uncondText! : c.text![i]));
}

function loadComponent(component: TrainComponent, dir: string, imageDir?: string): Module {
  switch (component) {
    case 'clip': return loadClipPair(dir, imageDir!);
    case 'decoder': return loadModel(dir, 'UNet2DConditionModel', { trainable: true });
    case 'super_res': case 'super_res_last': return loadModel(dir, 'UNet2DModel');
    case 'prior': return loadModel(dir, 'PriorTransformer', { trainable: true });
    case 'text_encoder': return loadModel(dir, 'CLIPTextModelWithProjection');
  }
}

function stack(rows: Float32Array[], shape: number[]): tf.Tensor {
  const n = rows.length;
  const per = rows[0].length;
  const data = new Float32Array(n * per);
  rows.forEach((r, i) => data.set(r, i * per));
  return tf.tensor(data, [n, ...shape], 'float32');
}

function stackInt(rows: Int32Array[], shape: number[]): tf.Tensor {
  const per = rows[0].length;
  const data = new Int32Array(rows.length * per);
  rows.forEach((r, i) => data.set(r, i * per));
  return tf.tensor(data, [rows.length, ...shape], 'int32');
}

/** Per-component choices of a run that shape its loss (beyond the module and data). */
interface SetupOptions {
  /** text_proj/ to load: trainable (and returned in extraVars) when textProj is set. */
  textProjDir: string;
  textProj: boolean;
  vlbWeight: number;
  snrGamma?: number;
  crop: number;
}

function makeSetup(
  component: TrainComponent, module: Module, folder: ModelFolder, pixels: () => Float32Array[], cond: () => Conditioning, so: SetupOptions,
): ComponentSetup {
  const dirs = folder.dirs;
  const none = { crop: 0, extraVars: new Map<string, tf.Variable>() };
  switch (component) {
    case 'decoder': {
      const decoder = module as UNet2DConditionModel;
      const textProj: UnCLIPTextProjModel = loadModel(so.textProjDir, 'UnCLIPTextProjModel', { trainable: so.textProj });
      const size = sampleSize(dirs.decoder, 'decoder');
      const ch = decoder.config.in_channels;
      const scheduler = UnCLIPScheduler.fromDir(dirs.decoder_scheduler);
      const extraVars = new Map<string, tf.Variable>(so.textProj ? textProj.namedParameters().map(([k, p]) => [`text_proj.${k}`, p.value]) : []);
      return {
        ...none, extraVars,
        module, extra: [textProj], needsText: true, needsImageEmbeds: true, resolution: size, noiseShape: [ch, size, size], scheduler,
        loss: (b) => {
          const c = cond();
          const L = c.seqLen, D = c.dim;
          const rows = textRows(c, b);
          const text = {
            promptEmbeds: stack(rows.map((t) => t.textEmbeds), [D]) as tf.Tensor2D,
            textEncHiddenStates: stack(rows.map((t) => t.lastHiddenState), [L, D]) as tf.Tensor3D,
            textMask: stackInt(rows.map((t) => t.attentionMask), [L]) as tf.Tensor2D,
          };
          let image = stack(b.indices.map((i) => c.imageEmbeds![i]), [c.imageEmbeds![0].length]) as tf.Tensor2D;
          if (b.drop.some((d) => d)) {
            // The pipeline's unconditional rows: text_proj's learned null image embedding (a constant here).
            const nul = tf.reshape(textProj.learned_classifier_free_guidance_embeddings.value, [1, -1]);
            image = tf.where(tf.tensor2d(b.drop.map((d) => [d]), [b.drop.length, 1], 'bool'), tf.broadcastTo(nul, image.shape), image) as tf.Tensor2D;
          }
          const cc = decoderConditioning(textProj, image, text, false);
          const x0 = stack(b.indices.map((i) => pixels()[i]), [3, size, size]) as tf.Tensor4D;
          return decoderLoss(decoder, scheduler, {
            x0, noise: b.noise as tf.Tensor4D, timesteps: b.timesteps,
            encoderHiddenStates: cc.encoderHiddenStates, classLabels: cc.additiveClipTimeEmbeddings, attentionMask: cc.attentionMask,
            vlbWeight: so.vlbWeight, snrGamma: so.snrGamma,
          });
        },
      };
    }
    case 'super_res': case 'super_res_last': {
      const sr = module as UNet2DModel;
      const size = sampleSize(dirs[COMPONENT_DIR[component]], component);
      const low = sampleSize(dirs.decoder, 'decoder (the low-resolution input size)');
      const ch = sr.config.in_channels / 2;
      const scheduler = UnCLIPScheduler.fromDir(dirs.super_res_scheduler);
      if (so.crop > size) throw new TrainArgumentError(`--crop ${so.crop} is larger than ${component}'s sample_size ${size}`);
      const c = so.crop || size;
      return {
        ...none, crop: so.crop,
        module, extra: [], needsText: false, needsImageEmbeds: false, resolution: size, noiseShape: [ch, c, c], scheduler,
        loss: (b) => {
          const x0 = stack(b.indices.map((i) => pixels()[i]), [3, size, size]) as tf.Tensor4D;
          const lowres = tf.clipByValue(bicubicResize(x0, [low, low], { antialias: true }), -1, 1) as tf.Tensor4D;
          if (!so.crop) return superResLoss(sr, scheduler, { x0, noise: b.noise as tf.Tensor4D, timesteps: b.timesteps, lowres, snrGamma: so.snrGamma });
          // The pipeline's upscaled condition at full size, then the same window of it and of x0.
          const up = bicubicResize(lowres, [size, size], { antialias: true });
          const cut = (t: tf.Tensor4D) => tf.concat(b.crops.map(([y, x], r) => tf.slice(t, [r, 0, y, x], [1, -1, c, c])), 0) as tf.Tensor4D;
          return superResLoss(sr, scheduler, { x0: cut(x0), noise: b.noise as tf.Tensor4D, timesteps: b.timesteps, upscaled: cut(up), snrGamma: so.snrGamma });
        },
      };
    }
    case 'prior': {
      const prior = module as PriorTransformer;
      const D = prior.config.embedding_dim;
      const scheduler = UnCLIPScheduler.fromDir(dirs.prior_scheduler);
      return {
        ...none,
        module, extra: [], needsText: true, needsImageEmbeds: true, resolution: 0, noiseShape: [D], scheduler,
        loss: (b) => {
          const c = cond();
          const L = c.seqLen;
          const rows = textRows(c, b);
          return priorLoss(prior, scheduler, {
            imageEmbeds: stack(b.indices.map((i) => c.imageEmbeds![i]), [D]) as tf.Tensor2D,
            noise: b.noise as tf.Tensor2D, timesteps: b.timesteps,
            projEmbedding: stack(rows.map((t) => t.textEmbeds), [c.dim]) as tf.Tensor2D,
            encoderHiddenStates: stack(rows.map((t) => t.lastHiddenState), [L, c.dim]) as tf.Tensor3D,
            attentionMask: stackInt(rows.map((t) => t.attentionMask), [L]) as tf.Tensor2D,
          });
        },
      };
    }
    case 'clip': {
      const pair = module as ClipPair;
      const size = pair.image_encoder.config.image_size;
      return {
        ...none,
        module, extra: [], needsText: true, needsImageEmbeds: false, resolution: size, noiseShape: [], scheduler: UnCLIPScheduler.fromDir(dirs.decoder_scheduler),
        loss: (b) => {
          const c = cond();
          const x = stack(b.indices.map((i) => pixels()[i]), [3, size, size]) as tf.Tensor4D;
          const inputIds = stackInt(b.indices.map((i) => c.text![i].inputIds), [c.seqLen]) as tf.Tensor2D;
          return clipContrastiveLoss(pair.text_encoder, pair.image_encoder, { inputIds, pixelValues: clipNormalise(x) });
        },
      };
    }
    case 'text_encoder': {
      const te = module as CLIPTextModelWithProjection;
      return {
        ...none,
        module, extra: [], needsText: true, needsImageEmbeds: true, resolution: 0, noiseShape: [], scheduler: UnCLIPScheduler.fromDir(dirs.decoder_scheduler),
        loss: (b) => {
          const c = cond();
          const target = stack(b.indices.map((i) => c.imageEmbeds![i]), [c.imageEmbeds![0].length]) as tf.Tensor2D;
          if (target.shape[1] !== te.config.projection_dim) {
            throw new Error(`text_encoder: projection_dim ${te.config.projection_dim} differs from the image embeddings' width ${target.shape[1]}`);
          }
          return clipTextLoss(te, { inputIds: stackInt(b.indices.map((i) => c.text![i].inputIds), [c.seqLen]) as tf.Tensor2D, target });
        },
      };
    }
  }
}

/**
 * The run's weight average (--ema-decay), or null. A resumed EMA run continues its averages from the checkpoint's
 * component folders (loaded into the parameters) and puts the trained weights of training_weights.safetensors
 * back into the parameters; an EMA checkpoint resumed without the same --ema-decay, or the reverse, is refused.
 */
function setupEma(o: TrainOptions, ckpt: LoadedCheckpoint | null, vars: Map<string, tf.Variable>): WeightEma | null {
  const saved = ckpt?.state.ema;
  if (ckpt && (saved?.decay ?? undefined) !== o.emaDecay) {
    throw new TrainArgumentError(saved
      ? `--resume ${ckpt.dir}: the checkpoint keeps a weight average with --ema-decay ${saved.decay}; resume with the same --ema-decay`
      : `--resume ${ckpt.dir}: the checkpoint keeps no weight average; --ema-decay cannot start in the middle of a run`);
  }
  if (!o.emaDecay) return null;
  if (!saved) return new WeightEma(vars, o.emaDecay);
  const file = path.join(ckpt!.dir, TRAINING_WEIGHTS_FILE);
  if (!fs.existsSync(file)) throw new Error(`${file}: missing (the trained weights of an --ema-decay checkpoint)`);
  const shadow = new Map([...vars].map(([k, v]) => [k, (v.dataSync() as Float32Array).slice()]));
  const raw = loadSafetensors(file);
  for (const [k, v] of vars) {
    const t = raw.get(k);
    if (!t || t.shape.join(',') !== v.shape.join(',')) throw new Error(`${file}: "${k}" ${t ? `has shape [${t.shape}], the parameter [${v.shape}]` : 'is missing'}`);
    const value = tf.tensor(t.data as Float32Array, v.shape, 'float32');
    v.assign(value);
    value.dispose();
  }
  return new WeightEma(vars, o.emaDecay, { updates: saved.updates, shadow });
}

/** Runs (or resumes) a training run. Throws TrainArgumentError / DataError / ModelFolderError for user mistakes. */
export async function train(o: TrainOptions): Promise<TrainResult> {
  checkOptions(o);
  await registerGradients();
  const log = o.log ?? (() => {});
  const gradAccum = o.gradAccum ?? 1;
  const seed = o.seed ?? 0;
  const maxGradNorm = o.maxGradNorm ?? 1;
  const condDrop = o.condDrop ?? 0;
  const folder = openModelFolder(o.model);
  const compDir = COMPONENT_DIR[o.component];
  const lora = o.loraRank !== undefined ? { rank: o.loraRank, alpha: o.loraAlpha ?? o.loraRank } : null;
  const out = path.resolve(o.out);
  fs.mkdirSync(out, { recursive: true });
  const ckpt = o.resume ? loadCheckpoint(resolveCheckpoint(o.resume)) : null;
  if (ckpt) {
    const id = ckpt.state.identity;
    const diff = id.component !== o.component ? `component ${id.component} vs ${o.component}`
      : JSON.stringify(id.lora) !== JSON.stringify(lora) ? `LoRA ${JSON.stringify(id.lora)} vs ${JSON.stringify(lora)}` : null;
    if (diff) {
      tf.dispose([...ckpt.optimizerTensors.values()]);
      throw new TrainArgumentError(`--resume ${ckpt.dir}: the checkpoint was written by a different run (${diff})`);
    }
  }

  let module: Module | undefined;
  let setup: ComponentSetup | undefined;
  let optimizer: AdamW | undefined;
  let loraHandle: LoraHandle | undefined;
  try {
    // ---- data and conditioning ----
    const resolutionOf: Partial<Record<TrainComponent, number>> = {
      decoder: sampleSize(folder.dirs.decoder, 'decoder'),
      super_res: sampleSize(folder.dirs.super_res_first, 'super_res_first'),
      super_res_last: sampleSize(folder.dirs.super_res_last, 'super_res_last'),
      ...(o.component === 'clip' ? { clip: clipImageSize(folder.root) } : {}),
    };
    const res = resolutionOf[o.component] ?? 0;
    const data = res ? await loadImageFolder(o.data, res) : { ...(await scanDataFolder(o.data)), pixels: [] as Float32Array[] };
    for (const l of describeSkipped(data.skipped)) log(l);
    log(`data: ${data.items.length} image/caption pair(s) in ${data.dir}${res ? ` at ${res}x${res}` : ''}${data.skipped.length ? `, ${data.skipped.length} file(s) skipped` : ''}`);
    if (o.batch > data.items.length) log(`note: --batch ${o.batch} is more than the ${data.items.length} pair(s): samples repeat within a batch`);

    // ---- model and trainable parameters ----
    if (o.component === 'clip' && lora) throw new TrainArgumentError('--component clip trains both CLIP towers fully; --lora-rank is not supported for it');
    module = loadComponent(o.component, ckpt && !lora ? ckpt.componentDir! : folder.dirs[compDir],
      o.component === 'clip' ? (ckpt ? path.join(ckpt.dir, 'image_encoder') : clipImageDir(folder.root)) : undefined);
    let cond: Conditioning | undefined;
    // A resumed --text-proj run continues from the checkpoint's text_proj/.
    const textProjDir = ckpt && o.textProj ? path.join(ckpt.dir, 'text_proj') : folder.dirs.text_proj;
    setup = makeSetup(o.component, module, folder, () => data.pixels, () => cond!,
      { textProjDir, textProj: !!o.textProj, vlbWeight: o.vlbWeight ?? 0, snrGamma: o.snrGamma, crop: o.crop ?? 0 });
    let vars: Map<string, tf.Variable>;
    if (lora) {
      if (o.train || o.freeze) throw new TrainArgumentError('--train / --freeze select base parameters; with --lora-rank only the adapters train');
      loraHandle = attachLora(module, o.component, lora.rank, lora.alpha, seed);
      if (ckpt) loraHandle.load(ckpt.loraFile!);
      vars = loraHandle.variables();
    } else {
      const params = new Map(module.namedParameters());
      let sel;
      try {
        sel = selectTrainable([...params.keys()], { train: o.train, freeze: o.freeze });
      } catch (e) {
        throw new TrainArgumentError((e as Error).message);
      }
      if (!sel.trainable.length) throw new TrainArgumentError('--train/--freeze leave no parameter to train');
      vars = new Map(sel.trainable.map((k) => [k, params.get(k)!.value]));
      for (const [k, v] of setup.extraVars) vars.set(k, v);
    }
    if (setup.needsText || setup.needsImageEmbeds) {
      cond = await prepareConditioning(folder, o.data, data.items, {
        text: setup.needsText, imageEmbeds: setup.needsImageEmbeds, unconditional: (o.condDrop ?? 0) > 0, cacheDir: o.cacheDir,
        fallbackCacheDir: path.join(out, '.karlo_cache'), log,
      });
      log(`conditioning: ${cond.reused} cached, ${cond.computed} computed (${cond.files.map((f) => path.relative(process.cwd(), f) || f).join(', ')})${cond.imageSource ? `; image embeddings from the ${cond.imageSource === 'prior' ? "prior's output for each caption" : 'CLIP image encoder'}` : ''}`);
    }

    const totalParameters = module.numParameters() + (loraHandle?.numParameters() ?? 0);
    let trainableParameters = 0;
    for (const v of vars.values()) trainableParameters += v.size;
    log(`training ${o.component}${lora ? ` with LoRA rank ${lora.rank}, alpha ${lora.alpha}` : ''}: ${trainableParameters.toLocaleString('en-US')} of ${totalParameters.toLocaleString('en-US')} parameters (${vars.size} tensors)`);

    const identity: RunIdentity = { component: o.component, componentDir: compDir, lora, trainable: [...vars.keys()] };
    optimizer = new AdamW(vars, { lr: o.lr, weightDecay: o.weightDecay ?? 1e-2, betas: o.adamBetas ?? [0.9, 0.999], eps: o.adamEps ?? 1e-8 });
    const schedule = lrSchedule({ kind: o.lrScheduler ?? 'constant', baseLr: o.lr, warmupSteps: o.warmupSteps ?? 0, totalSteps: o.steps });

    let step = 0;
    let samplesSeen = 0;
    let gen = new TorchGenerator(seed);
    let losses: LossPoint[] = [];
    if (ckpt) {
      const s = ckpt.state;
      if (JSON.stringify(identity.trainable) !== JSON.stringify(s.identity.trainable)) {
        throw new TrainArgumentError(`--resume ${ckpt.dir}: the checkpoint trained other parameters (${s.identity.trainable.length} tensors vs ${identity.trainable.length} selected now by --train/--freeze)`);
      }
      optimizer.loadState({ step: s.optimizer.step, paramSteps: s.optimizer.paramSteps, tensors: ckpt.optimizerTensors });
      gen = TorchGenerator.fromTorchState(new Uint8Array(Buffer.from(s.rng, 'base64')));
      step = s.step;
      samplesSeen = s.samplesSeen;
      losses = s.losses.filter((p) => p.step <= step);
      log(`resumed from ${ckpt.dir} at step ${step}`);
      if (step >= o.steps) log(`note: the checkpoint is at step ${step}, --steps is ${o.steps}: nothing to do`);
    }
    tf.dispose([...(ckpt?.optimizerTensors.values() ?? [])]);
    const ema = setupEma(o, ckpt, vars);

    const checkpoints: string[] = [];
    const lossStem = path.join(out, 'loss');
    const title = `${o.component}${lora ? ` LoRA r${lora.rank}` : ''} training loss`;
    const save = (): string => {
      const weights: CheckpointWeights = lora
        ? { lora: (f) => loraHandle!.save(f) }
        : o.component === 'clip'
          ? { full: { module: (module as ClipPair).text_encoder, baseComponentDir: folder.dirs[compDir], weightsName: 'model.safetensors',
            extra: [{ module: (module as ClipPair).image_encoder, componentDir: 'image_encoder', baseComponentDir: clipImageDir(folder.root), weightsName: 'model.safetensors' }] } }
          : { full: { module: module!, baseComponentDir: folder.dirs[compDir], weightsName: o.component === 'text_encoder' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors',
            extra: o.textProj ? [{ module: setup!.extra[0], componentDir: 'text_proj', baseComponentDir: folder.dirs.text_proj, weightsName: 'diffusion_pytorch_model.safetensors' }] : [] } };
      if (ema) {
        // The trained weights, copied before the averages take their place for the component folders.
        const raw = new Map<string, TensorToWrite>([...vars].map(([k, v]) => {
          const data = (v.dataSync() as Float32Array).slice();
          return [k, { dtype: 'F32', shape: [...v.shape], data: () => data }];
        }));
        weights.files = [{ name: TRAINING_WEIGHTS_FILE, tensors: raw, format: 'karlo-training-weights' }];
      }
      const opt = optimizer!.state();
      try {
        const write = () => saveCheckpoint(out, {
          step, samplesSeen, rng: Buffer.from(gen.toTorchState()).toString('base64'),
          optimizer: { step: opt.step, paramSteps: opt.paramSteps, options: opt.options },
          identity, losses, baseModel: folder.root,
          settings: { component: o.component, condDrop, textProj: !!o.textProj, vlbWeight: o.vlbWeight ?? 0, ...(o.snrGamma ? { snrGamma: o.snrGamma } : {}), crop: o.crop ?? 0, batch: o.batch, gradAccum, lr: o.lr, lrScheduler: o.lrScheduler ?? 'constant', warmupSteps: o.warmupSteps ?? 0, maxGradNorm, seed, steps: o.steps, data: path.resolve(o.data), backend: tf.getBackend() },
          ...(ema ? { ema: ema.state() } : {}),
        }, weights, opt.tensors, folder);
        const dir = ema ? ema.withAverages(write) : write();
        checkpoints.push(dir);
        writeLossFiles(lossStem, losses, { title });
        log(`saved ${dir}`);
        return dir;
      } finally {
        tf.dispose([...opt.tensors.values()]);
      }
    };

    const n = data.items.length;
    const orderMemo = new Map<number, number[]>();
    const t0 = performance.now();
    const startStep = step;
    let lastPlot = t0;
    let interrupted = false;
    let lastSaved = -1;
    const plotEvery = (o.plotEverySeconds ?? 30) * 1000;
    o.onStart?.({ startStep, totalSteps: o.steps });
    while (step < o.steps) {
      if (o.shouldStop?.()) { interrupted = true; break; }
      const lr = schedule(step);
      let lossSum = 0;
      let acc: Map<string, tf.Tensor> | null = null;
      for (let k = 0; k < gradAccum; k++) {
        const indices = sampleIndices(seed, n, samplesSeen, o.batch, orderMemo);
        samplesSeen += o.batch;
        const timesteps = indices.map(() => gen.nextU32() % setup!.scheduler.config.num_train_timesteps);
        const noiseShape = [o.batch, ...setup.noiseShape];
        const noise = setup.noiseShape.length ? tf.tensor(gen.randn(noiseShape), noiseShape, 'float32') : tf.zeros([0]);
        // Drawn only when asked for, so runs without --cond-drop keep their random stream.
        const drop = condDrop > 0 ? Array.from(gen.rand([o.batch]), (u) => u < condDrop) : indices.map(() => false);
        const cs = setup.crop, from = setup.resolution;
        const crops = cs ? indices.map((): [number, number] => [gen.nextU32() % (from - cs + 1), gen.nextU32() % (from - cs + 1)]) : [];
        const batch: BatchData = { indices, timesteps, noise, drop, crops };
        const { value, grads } = valueAndGrads(() => setup!.loss(batch), vars);
        noise.dispose();
        lossSum += (await value.data())[0];
        value.dispose();
        if (!acc) {
          acc = grads;
        } else {
          for (const [name, g] of grads) {
            const prev = acc.get(name);
            if (prev) { acc.set(name, tf.add(prev, g)); prev.dispose(); g.dispose(); } else acc.set(name, g);
          }
        }
      }
      const grads = acc!;
      if (gradAccum > 1) {
        for (const [name, g] of grads) { grads.set(name, tf.div(g, gradAccum)); g.dispose(); }
      }
      let gradNorm = NaN;
      if (maxGradNorm > 0) gradNorm = clipGradNormInPlace(grads, maxGradNorm);
      optimizer.step(grads, lr);
      ema?.update();
      tf.dispose([...grads.values()]);
      step++;
      const loss = lossSum / gradAccum;
      losses.push({ step, loss, lr });
      const now = performance.now();
      const elapsed = (now - t0) / 1000;
      o.onStep?.({ step, totalSteps: o.steps, loss, lr, gradNorm, stepsPerSecond: (step - startStep) / Math.max(elapsed, 1e-9), elapsedSeconds: elapsed, epoch: Math.floor((samplesSeen - 1) / n) });
      if (!Number.isFinite(loss)) throw new Error(`step ${step}: the loss is ${loss}; lower --lr (now ${o.lr}) or check the data`);
      if (o.saveEvery && step % o.saveEvery === 0 && step < o.steps) { save(); lastSaved = step; lastPlot = performance.now(); }
      else if (now - lastPlot > plotEvery) { writeLossFiles(lossStem, losses, { title }); lastPlot = now; }
      // Let signals, timers and progress output run between steps.
      await new Promise((r) => setImmediate(r));
    }
    if (lastSaved !== step && (step > startStep || !ckpt)) save();
    const files = writeLossFiles(lossStem, losses, { title });
    return {
      stepsDone: step, interrupted, checkpoints, lastCheckpoint: checkpoints[checkpoints.length - 1] ?? null,
      lossCsv: files.csv, lossPng: files.png, losses, trainableParameters, totalParameters,
    };
  } finally {
    tf.dispose([...(ckpt?.optimizerTensors.values() ?? [])]);
    optimizer?.dispose();
    loraHandle?.dispose();
    for (const m of setup?.extra ?? []) m.dispose();
    module?.dispose();
  }
}
