// The unCLIP text→image pipeline, equal to diffusers 0.25.1 UnCLIPPipeline.__call__:
//   CLIP text → prior (CLIP image embedding) → text_proj + decoder (64×64) → super-res (256×256).
// Stages are the separate functions of this folder; this file loads components stage by stage (peak memory ≈ the
// largest stage, not the sum), shares one torch-compatible generator across stages in diffusers' draw order,
// reports per-step progress, previews and timings, and leaves tf.memory() as it found it, also on errors.
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { trimBackendMemory } from '../backend/memory.js';
import { currentBackend, initBackend } from '../backend/index.js';
import { checkModelFolder } from './check_folder.js';
import { resolveModelDir } from '../io/hub.js';
import { UNCLIP_COMPONENTS, openModelFolder, type ComponentName, type ModelFolder } from '../io/model_folder.js';
import { Module, type OutputHook } from '../layers/module.js';
import { readJson } from '../io/weights.js';
import { TorchGenerator } from '../random/generator.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import type { CLIPTextModelWithProjection } from '../models/clip_text.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { MemoryEstimateError, defaultMemoryBound, estimateGenerateMemory, memoryRefusal } from './memory_estimate.js';
import { encodePrompt } from './encode_prompt.js';
import { runPrior, type PriorStageOptions } from './prior_stage.js';
import { runDecoder, type DecoderStageOptions } from './decoder_stage.js';
import { runSuperRes, type SuperResStageOptions } from './super_res_stage.js';
import type { StageName, StageOptions, StepCallback, TextOutputs } from './types.js';
import { StagePrefetch, envPrefetchBytes, stageBudget, type PrefetchTarget } from './stage_prefetch.js';

/** Karlo's own sampling presets (karlo t2i `fast` / `default`); guidance 4 / 8 in both. */
export const KARLO_PRESETS = {
  fast: { priorSteps: 25, decoderSteps: 25, superResSteps: 7, priorGuidance: 4, decoderGuidance: 8 },
  default: { priorSteps: 25, decoderSteps: 50, superResSteps: 7, priorGuidance: 4, decoderGuidance: 8 },
} as const;
export type PresetName = keyof typeof KARLO_PRESETS;

/** UnCLIPPipeline.__call__ defaults. */
export const UNCLIP_DEFAULTS = { priorSteps: 25, decoderSteps: 25, superResSteps: 7, priorGuidance: 4, decoderGuidance: 8 } as const;

export type PipelineStage = 'text' | StageName;
export const PIPELINE_STAGES: PipelineStage[] = ['text', 'prior', 'decoder', 'super_res'];

export interface StageTiming {
  /** Seconds spent loading this stage's components (0 when already loaded). */
  loadSeconds: number;
  /** Seconds spent running the stage (model forwards, scheduler steps). */
  runSeconds: number;
  /** Denoising steps (1 for the text encoder). */
  steps: number;
  secondsPerStep: number;
  /** loadSeconds + runSeconds */
  totalSeconds: number;
}

export interface PipelineTimings {
  stages: Record<PipelineStage, StageTiming>;
  totalSeconds: number;
  /** Peak resident set size of the process so far (MB). */
  peakRssMB: number;
  backend: string;
}

/** A decoded intermediate image batch: NHWC float in [0, 1] (latents·0.5 + 0.5, clamped). */
export interface Preview {
  stage: 'decoder' | 'super_res';
  /** Step index, or -1 for the decoder's final clamped image_small. */
  step: number;
  timestep: number;
  images: Float32Array;
  shape: [number, number, number, number];
}

export interface StageEvent {
  stage: PipelineStage;
  phase: 'load' | 'run' | 'done';
  /** Steps the stage will run (phase 'run'). */
  numSteps?: number;
  timing?: StageTiming;
}

export interface GenerateOptions {
  numImagesPerPrompt?: number;
  /** Refuse a call whose estimated peak memory (memory_estimate.ts) is above this; default: physical memory. */
  maxMemoryBytes?: number;
  /** Karlo preset; explicit step/guidance options override it. Without one: UnCLIPPipeline's defaults. */
  preset?: PresetName;
  priorSteps?: number;
  decoderSteps?: number;
  superResSteps?: number;
  priorGuidance?: number;
  decoderGuidance?: number;
  /** Seeds one torch-compatible generator shared by every stage (torch.Generator().manual_seed(seed)). */
  seed?: number | bigint;
  /** Or the generator itself (its state advances). Overrides seed. */
  generator?: TorchGenerator;
  /** Explicit initial latents (not disposed): prior [B·n, D], decoder [B·n, 3, H, W], super-res [B·n, 3, H', W']. */
  priorLatents?: tf.Tensor;
  decoderLatents?: tf.Tensor;
  superResLatents?: tf.Tensor;
  /** Recorded variance noise per stage and step (parity); undefined → drawn from the generator. */
  noiseForStep?: Partial<Record<StageName, StageOptions['noiseForStep']>>;
  /**
   * After every scheduler step. Runs inside the pipeline's memory scope (like tf.tidy): tensors it creates are
   * freed when the stage ends unless tf.keep()-ed; the latents are the pipeline's (clone to keep).
   */
  onStep?: StepCallback;
  /** Decoded previews of the decoder's (64×64) and super-res latents after each step, and of image_small. */
  onPreview?: (p: Preview) => void;
  /** Stage progress: loading, running (with the step count), done (with its timing). */
  onStage?: (e: StageEvent) => void;
  /**
   * Intermediate tensors by diffusers' names (prompt_embeds, text_enc_hid_states, text_mask, image_embeddings,
   * image_small): valid during the call only (copy with dataSync or tf.keep(t.clone())). Returning a tensor of
   * the same shape replaces the intermediate for the following stages (e.g. edited or interpolated image
   * embeddings, or stage-by-stage parity with recorded inputs); the pipeline copies it, the caller keeps its own.
   */
  onIntermediate?: (name: string, t: tf.Tensor) => tf.Tensor | void;
  /** Per-module output hooks (setOutputHook) by component name, installed for this call only. */
  outputHooks?: Partial<Record<ComponentName, OutputHook>>;
  /**
   * Extra options passed to each stage function as they are (research hooks such as the decoder's
   * onConditioning / onModelOutput, the super-res onUpscaled, the prior's onFinalLatents).
   */
  stageOptions?: {
    prior?: Partial<PriorStageOptions>;
    decoder?: Partial<DecoderStageOptions>;
    super_res?: Partial<SuperResStageOptions>;
  };
}

export interface GenerateResult {
  /** NHWC float32 in [0, 1], like output_type="np". */
  images: Float32Array;
  shape: [number, number, number, number];
  /** The seed of the generator when one was made from a seed (also a random one, so runs can be repeated). */
  seed?: bigint;
  timings: PipelineTimings;
  settings: Required<Pick<GenerateOptions, 'numImagesPerPrompt' | 'priorSteps' | 'decoderSteps' | 'superResSteps' | 'priorGuidance' | 'decoderGuidance'>>;
}

export interface LoadOptions {
  /** Keep every component loaded after its stage (faster repeated calls; peak memory = the sum). */
  keepLoaded?: boolean;
  /**
   * The tfjs backend (auto | tensorflow | native | wasm | cpu). Given, it is initialised; not given, load
   * initialises the best available one (as `auto`, or $KARLO_BACKEND) unless the program already chose one.
   */
  backend?: string;
  /** Where load's notes go (the backend line, the wasm/cpu slowdown warning). Default: stderr. */
  log?: (line: string) => void;
  /** Check the whole folder (configs, weight headers, names and shapes, tokenizer) before returning. Default true. */
  check?: boolean;
  /**
   * Called with each component right after it is loaded (before its stage runs), e.g. to attach LoRA adapters
   * (`karlo generate --lora`). Runs once per load: with keepLoaded, once per pipeline.
   */
  onComponentLoaded?: (name: string, component: unknown) => void;
  /**
   * Hidden loading: bytes of the next stage's weights read and converted in a worker thread while a stage computes
   * (stage_prefetch.ts). Default ($KARLO_PREFETCH_MB unset): what keeps the process under 8 GB (or the call's
   * estimated peak when larger, at most half the machine) given its resident memory and the stage's activations;
   * 0: no prefetching. Outputs are bit-identical either way.
   */
  prefetchBytes?: number;
}

/**
 * The backend part of load: an explicit choice is initialised; otherwise, when nothing chose a backend yet (no
 * initBackend call and no tf.setBackend), the best available is, so a plain load + generate never lands silently
 * on the pure-JS cpu backend. wasm and cpu print one warning with the expected slowdown and the fix.
 */
export async function ensureBackend(opts: Pick<LoadOptions, 'backend' | 'log'>): Promise<void> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const engine = tf.engine() as unknown as { backendName?: string | null };
  if (opts.backend === undefined && (currentBackend() || engine.backendName)) return;
  const choice = await initBackend(opts.backend);
  log(choice.message);
  if (choice.warning) log(choice.warning);
}

type Disposable = { dispose(): void };
type Loaded = Record<string, unknown>;

function now(): number {
  return performance.now() / 1000;
}

function peakRssMB(): number {
  return process.resourceUsage().maxRSS / 1024;
}

export function checkSteps(name: string, v: number): number {
  // UnCLIPScheduler.set_timesteps divides by (N - 1): one step is a ZeroDivisionError in diffusers.
  if (!Number.isInteger(v) || v < 2 || v > 1000) throw new RangeError(`${name} must be an integer in [2, 1000] (UnCLIPScheduler respaces 1000 training steps by (T-1)/(steps-1)), got ${v}`);
  return v;
}

export function checkGuidance(name: string, v: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new RangeError(`${name} must be a finite number, got ${v}`);
  return v;
}

export function checkShape(name: string, t: tf.Tensor | undefined, expected: number[]): void {
  if (t === undefined) return;
  if (!(t instanceof tf.Tensor)) throw new TypeError(`${name} must be a tf.Tensor`);
  if (t.isDisposed) throw new Error(`${name} is disposed`);
  if (t.shape.join(',') !== expected.join(',')) throw new RangeError(`${name} has shape [${t.shape}], expected [${expected}]`);
}

function num(cfg: Record<string, unknown>, key: string, dflt: number, file: string): number {
  const v = cfg[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new Error(`${file}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/** Images in [-1, 1] NCHW → NHWC float in [0, 1] (x·0.5 + 0.5, clamped), as plain data. */
function toUnitNHWC(x: tf.Tensor): { data: Float32Array; shape: [number, number, number, number] } {
  const t = tf.tidy(() => tf.transpose(tf.clipByValue(tf.add(tf.mul(x, 0.5), 0.5), 0, 1), [0, 2, 3, 1]));
  try {
    return { data: t.dataSync() as Float32Array, shape: t.shape as [number, number, number, number] };
  } finally {
    t.dispose();
  }
}

/** Runs an async stage inside a tfjs scope: everything it creates is freed at the end except its result. */
async function scoped<T extends tf.TensorContainer>(fn: () => Promise<T> | T): Promise<T> {
  const engine = tf.engine();
  engine.startScope('karlo.stage');
  let result: T | undefined;
  try {
    result = await fn();
    return result;
  } finally {
    engine.endScope(result);
  }
}

/** The components the decoder and super-res stages load (every unCLIP pipeline folder has them). */
export type DecodeComponent = 'text_proj' | 'decoder' | 'decoder_scheduler' | 'super_res_first' | 'super_res_last' | 'super_res_scheduler';

/** The per-call hooks the stage runner serves (a subset of GenerateOptions; `S` names the call's stages). */
export interface RunHooks<S extends string = PipelineStage> {
  onStep?: StepCallback;
  onPreview?: (p: Preview) => void;
  onStage?: (e: { stage: S; phase: 'load' | 'run' | 'done'; numSteps?: number; timing?: StageTiming }) => void;
  onIntermediate?: (name: string, t: tf.Tensor) => tf.Tensor | void;
  outputHooks?: Partial<Record<string, OutputHook>>;
}

type LoadLater = <M>(key: string, loader: () => Promise<M> | M) => Promise<M>;

/**
 * One pipeline call's stage machinery, shared by text→image, image variation and interpolation: each stage loads
 * its components (or takes the kept ones), installs research hooks, runs inside a memory scope, is timed, then
 * removes the hooks and releases the components (unless keepLoaded). Intermediates go through `capture`.
 */
export class PipelineRun<S extends string = PipelineStage> {
  readonly stages = {} as Record<S, StageTiming>;
  readonly started = now();
  constructor(private readonly owner: StagedPipeline<string>, readonly hooks: RunHooks<S>) {}

  /**
   * Reports an intermediate; a tensor returned by onIntermediate replaces it (a copy is taken; the caller keeps
   * its own). The replaced tensor is freed.
   */
  capture<T extends tf.Tensor>(name: string, t: T): T {
    const r = this.hooks.onIntermediate?.(name, t);
    if (!r) return t;
    if (!(r instanceof tf.Tensor) || r.shape.join(',') !== t.shape.join(',')) {
      throw new Error(`onIntermediate("${name}") returned ${r instanceof tf.Tensor ? `shape [${r.shape}]` : 'a non-tensor'}; a replacement must have shape [${t.shape}]`);
    }
    const copy = tf.keep(tf.clone(r)) as T;
    t.dispose();
    return copy;
  }

  /** The per-step callback of a denoising stage: onStep, and decoded previews for the decoder and super-res. */
  stepHook(stage: StageName): StepCallback | undefined {
    const wantPreview = this.hooks.onPreview && stage !== 'prior';
    if (!this.hooks.onStep && !wantPreview) return undefined;
    return (info) => {
      this.hooks.onStep?.(info);
      if (wantPreview) {
        const { data, shape } = toUnitNHWC(info.latents);
        this.hooks.onPreview!({ stage: stage as 'decoder' | 'super_res', step: info.step, timestep: info.timestep, images: data, shape });
      }
    };
  }

  /**
   * Runs one stage. `later` loads a component in the middle of the stage (super_res_last at the last step): it is
   * hooked, released and its seconds counted as loading like the others. `onRun` is called once the stage's
   * components are loaded, before it runs (the pipeline starts reading the next stage's weights there).
   */
  async stage<T extends Loaded, R extends tf.TensorContainer>(
    stage: S, numSteps: number,
    loaders: { [K in keyof T]: () => Promise<T[K]> | T[K] },
    fn: (parts: T, later: LoadLater) => Promise<R> | R,
    onRun?: () => void,
  ): Promise<R> {
    const onStage = this.hooks.onStage ?? (() => {});
    onStage({ stage, phase: 'load' });
    const { parts, seconds } = await this.owner.acquire(loaders);
    const laterParts: Loaded = {};
    let laterSeconds = 0;
    const hooked: Module[] = [];
    const hook = (name: string, part: unknown) => {
      const h = this.hooks.outputHooks?.[name];
      if (h && part instanceof Module) { part.setOutputHook(h); hooked.push(part); }
    };
    const later: LoadLater = async (key, loader) => {
      const got = await this.owner.acquire<Loaded>({ [key]: loader });
      laterParts[key] = got.parts[key];
      laterSeconds += got.seconds;
      hook(key, got.parts[key]);
      return got.parts[key] as Awaited<ReturnType<typeof loader>>;
    };
    try {
      for (const [name, part] of Object.entries(parts)) hook(name, part);
      onStage({ stage, phase: 'run', numSteps });
      // e.g. start reading the next stage's weights while this one computes (hidden loading)
      onRun?.();
      const t0 = now();
      const result = await scoped(() => fn(parts, later));
      const loadSeconds = seconds + laterSeconds, runSeconds = now() - t0 - laterSeconds;
      this.stages[stage] = { loadSeconds, runSeconds, steps: numSteps, secondsPerStep: runSeconds / numSteps, totalSeconds: loadSeconds + runSeconds };
      onStage({ stage, phase: 'done', timing: this.stages[stage] });
      return result;
    } finally {
      for (const m of hooked) m.setOutputHook(null);
      this.owner.release(parts);
      this.owner.release(laterParts);
      // The next stage's activations have other sizes: hand the recycled ones to the garbage collector.
      trimBackendMemory();
    }
  }

  timings(): PipelineTimings {
    return { stages: this.stages as unknown as PipelineTimings['stages'], totalSeconds: now() - this.started, peakRssMB: peakRssMB(), backend: tf.getBackend() };
  }
}

/** Shapes read from the decoder / super-res configs (validated up front). */
export interface DecodeDims { decoderChannels: number; decoderSize: number; superResChannels: number; superResSize: number }

/**
 * What every unCLIP pipeline class shares: a model folder, the component cache (stage-wise loading or
 * keepLoaded), the stage runner, and the decoder → super-res half of the pipeline.
 */
export abstract class StagedPipeline<C extends string> {
  readonly keepLoaded: boolean;
  private readonly cache = new Map<string, unknown>();
  private readonly onComponentLoaded?: LoadOptions['onComponentLoaded'];
  /** The weights the next stage loads, read ahead (hidden loading); loaders take them through prefetch.load. */
  readonly prefetch = new StagePrefetch();
  private readonly prefetchBytes?: number;

  protected constructor(readonly folder: ModelFolder<C>, opts: LoadOptions) {
    this.keepLoaded = opts.keepLoaded ?? false;
    this.onComponentLoaded = opts.onComponentLoaded;
    this.prefetchBytes = opts.prefetchBytes ?? envPrefetchBytes();
    if (this.prefetchBytes !== undefined && !(this.prefetchBytes >= 0)) throw new RangeError(`prefetchBytes must be a number ≥ 0, got ${opts.prefetchBytes}`);
  }

  /**
   * Starts reading `targets` (the next stage's components, in load order) in a worker within the budget:
   * prefetchBytes when set, else `stageDefault`. Components kept loaded are skipped.
   */
  prefetchNext(targets: (PrefetchTarget & { key: string })[], stageDefault: number): void {
    const budget = this.prefetchBytes ?? stageDefault;
    if (!(budget > 0)) return;
    this.prefetch.start(targets.filter((t) => !this.cache.has(t.key)), budget);
  }

  /** Frees every component kept loaded (keepLoaded), and what was prefetched and not loaded. */
  dispose(): void {
    this.prefetch.dispose();
    for (const v of this.cache.values()) {
      if (v && typeof (v as Disposable).dispose === 'function') (v as Disposable).dispose();
    }
    this.cache.clear();
  }

  /** Loads (or takes from the cache) the named components; returns them and the seconds spent loading. */
  async acquire<T extends Loaded>(loaders: { [K in keyof T]: () => Promise<T[K]> | T[K] }): Promise<{ parts: T; seconds: number }> {
    let seconds = 0;
    const parts = {} as T;
    try {
      for (const key of Object.keys(loaders) as (keyof T & string)[]) {
        if (this.cache.has(key)) { parts[key] = this.cache.get(key) as T[keyof T & string]; continue; }
        const t0 = now();
        parts[key] = await loaders[key]();
        this.onComponentLoaded?.(key, parts[key]);
        seconds += now() - t0;
        if (this.keepLoaded) this.cache.set(key, parts[key]);
      }
    } catch (e) {
      this.release(parts);
      throw e;
    }
    return { parts, seconds };
  }

  /** Disposes stage components unless they are kept. */
  release(parts: Loaded): void {
    if (this.keepLoaded) return;
    for (const v of Object.values(parts)) {
      if (v && typeof (v as Disposable).dispose === 'function') (v as Disposable).dispose();
    }
  }
}

/** decoder / super-res shapes from a folder's configs. */
export function decodeDims(dirs: Record<'decoder' | 'super_res_first', string>): DecodeDims {
  const cfg = (c: 'decoder' | 'super_res_first') => {
    const file = path.join(dirs[c], 'config.json');
    return { c: readJson<Record<string, unknown>>(file), file };
  };
  const d = cfg('decoder'), s = cfg('super_res_first');
  const srIn = num(s.c, 'in_channels', 3, s.file);
  if (srIn % 2 !== 0) throw new Error(`${s.file}: in_channels ${srIn} must be even (noisy latents ++ upscaled image)`);
  return {
    decoderChannels: num(d.c, 'in_channels', 4, d.file),
    decoderSize: num(d.c, 'sample_size', 64, d.file),
    superResChannels: srIn / 2,
    superResSize: num(s.c, 'sample_size', 64, s.file),
  };
}

/** What the decoder → super-res half of every unCLIP pipeline takes. */
export interface DecodeRequest {
  /** CFG text rows ([uncond ; cond]) or the conditional rows only; not disposed here. */
  text: TextOutputs;
  /** CLIP image embeddings [batch, D]; not disposed here. */
  imageEmbeddings: tf.Tensor2D;
  classifierFreeGuidance: boolean;
  decoderSteps: number;
  superResSteps: number;
  decoderGuidance: number;
  generator: TorchGenerator;
  decoderLatents?: tf.Tensor;
  superResLatents?: tf.Tensor;
  noiseForStep?: Partial<Record<StageName, StageOptions['noiseForStep']>>;
  stageOptions?: GenerateOptions['stageOptions'];
  /** Called when the decoder is done (image_small captured): free the conditioning before super-res. */
  afterDecoder?: () => void;
  /** The default prefetch budget while the decoder / super-res stage runs (StagedPipeline.prefetchNext); none: 0. */
  prefetchBudget?: (stage: 'decoder' | 'super_res') => number;
}

/**
 * text_proj + decoder (with the decoder's CFG), then super-res, as UnCLIPPipeline / UnCLIPImageVariationPipeline /
 * the community interpolation pipelines do after their conditioning: returns NHWC float images in [0, 1] like
 * output_type="np". image_small is captured (and may be replaced) through the run.
 */
export async function decodeAndUpscale<S extends string>(
  pipe: StagedPipeline<string>, dirs: Record<DecodeComponent, string>, run: PipelineRun<S | 'decoder' | 'super_res'>, req: DecodeRequest,
): Promise<{ images: Float32Array; shape: [number, number, number, number] }> {
  let imageSmall: tf.Tensor4D | undefined;
  let image: tf.Tensor4D | undefined;
  const superResTargets = [
    { key: 'super_res_first', dir: dirs.super_res_first, kind: 'UNet2DModel' as const },
    { key: 'super_res_last', dir: dirs.super_res_last, kind: 'UNet2DModel' as const },
  ];
  try {
    imageSmall = await run.stage('decoder', req.decoderSteps, {
      text_proj: () => pipe.prefetch.load(dirs.text_proj, 'UnCLIPTextProjModel'),
      decoder: () => pipe.prefetch.load(dirs.decoder, 'UNet2DConditionModel'),
      decoder_scheduler: () => UnCLIPScheduler.fromDir(dirs.decoder_scheduler),
    }, (p) => runDecoder(p.text_proj, p.decoder, p.decoder_scheduler, req.imageEmbeddings, req.text, {
      ...req.stageOptions?.decoder,
      classifierFreeGuidance: req.classifierFreeGuidance,
      steps: req.decoderSteps, guidanceScale: req.decoderGuidance, latents: req.decoderLatents, generator: req.generator,
      onStep: run.stepHook('decoder'), noiseForStep: req.noiseForStep?.decoder,
    }), () => pipe.prefetchNext(superResTargets, req.prefetchBudget?.('decoder') ?? 0));
    imageSmall = run.capture('image_small', imageSmall);
    if (run.hooks.onPreview) {
      const { data, shape } = toUnitNHWC(imageSmall);
      run.hooks.onPreview({ stage: 'decoder', step: -1, timestep: -1, images: data, shape });
    }
    req.afterDecoder?.();

    // super_res_last is loaded at the last step, after super_res_first is released (unless keepLoaded), so
    // only one 2.8 GB UNet is held at a time.
    image = await run.stage('super_res', req.superResSteps, {
      super_res_first: () => pipe.prefetch.load(dirs.super_res_first, 'UNet2DModel'),
      super_res_scheduler: () => UnCLIPScheduler.fromDir(dirs.super_res_scheduler),
    }, (p, later) => runSuperRes(p.super_res_first, () => later('super_res_last', () => pipe.prefetch.load(dirs.super_res_last, 'UNet2DModel')), p.super_res_scheduler, imageSmall!, {
      ...req.stageOptions?.super_res,
      releaseFirst: () => {
        pipe.release({ super_res_first: p.super_res_first });
        req.stageOptions?.super_res?.releaseFirst?.();
      },
      steps: req.superResSteps, latents: req.superResLatents, generator: req.generator,
      onStep: run.stepHook('super_res'), noiseForStep: req.noiseForStep?.super_res,
    }), () => pipe.prefetchNext(superResTargets.slice(1), req.prefetchBudget?.('super_res') ?? 0));

    // runSuperRes returns NCHW in [0, 1] (x·0.5 + 0.5, clamped): NHWC like output_type="np".
    const nhwc = tf.tidy(() => tf.transpose(image!, [0, 2, 3, 1]));
    let images: Float32Array;
    try {
      images = nhwc.dataSync() as Float32Array;
    } finally {
      nhwc.dispose();
    }
    return { images, shape: [image.shape[0], image.shape[2], image.shape[3], image.shape[1]] };
  } finally {
    tf.dispose([imageSmall, image].filter((t): t is tf.Tensor4D => t !== undefined));
  }
}

/**
 * Makes a result JSON-serialisable: JSON.stringify(result) gives the seed as a decimal string (a bigint would
 * throw) and the images as a plain number array. The object itself keeps its fields and types.
 */
export function serializable<T extends { images: Float32Array; seed?: bigint }>(r: T): T {
  Object.defineProperty(r, 'toJSON', {
    enumerable: false,
    value: () => ({ ...r, seed: r.seed === undefined ? undefined : r.seed.toString(), images: Array.from(r.images) }),
  });
  return r;
}

/** The generator of a call: the given one, or a new one from the seed (a random seed when none; reported). */
export function callGenerator(opts: { seed?: number | bigint; generator?: TorchGenerator }): { generator: TorchGenerator; seed?: bigint } {
  if (opts.generator) return { generator: opts.generator };
  // diffusers without a generator draws from torch's global RNG; we make the seed explicit and report it.
  const seed = opts.seed !== undefined ? BigInt(opts.seed) : BigInt(Math.floor(Math.random() * 2 ** 32));
  return { generator: new TorchGenerator(seed), seed };
}

export class UnCLIPPipeline extends StagedPipeline<ComponentName> {
  /** Shapes read from the component configs (validated up front). */
  readonly dims: { embeddingDim: number } & DecodeDims;

  private constructor(folder: ModelFolder, opts: LoadOptions) {
    super(folder, opts);
    const file = path.join(folder.dirs.prior, 'config.json');
    this.dims = { embeddingDim: num(readJson<Record<string, unknown>>(file), 'embedding_dim', 768, file), ...decodeDims(folder.dirs) };
  }

  /**
   * Opens a diffusers-layout Karlo folder (checks model_index.json and every component; throws a
   * ModelFolderError naming what is wrong). Weights are read when their stage starts.
   */
  static async load(dir: string, opts: LoadOptions = {}): Promise<UnCLIPPipeline> {
    const folder = openModelFolder(resolveModelDir(dir));
    if (opts.check !== false) checkModelFolder(folder, UNCLIP_COMPONENTS);
    const pipe = new UnCLIPPipeline(folder, opts);
    await ensureBackend(opts);
    return pipe;
  }

  /** The settings a call will use: preset, then explicit options, validated. */
  static resolveSettings(opts: GenerateOptions): GenerateResult['settings'] {
    if (opts.preset !== undefined && !Object.prototype.hasOwnProperty.call(KARLO_PRESETS, opts.preset)) {
      throw new RangeError(`preset must be one of ${Object.keys(KARLO_PRESETS).join(', ')}, got ${JSON.stringify(opts.preset)}`);
    }
    const base = opts.preset ? KARLO_PRESETS[opts.preset] : UNCLIP_DEFAULTS;
    const n = opts.numImagesPerPrompt ?? 1;
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`numImagesPerPrompt must be a positive integer, got ${n}`);
    return {
      numImagesPerPrompt: n,
      priorSteps: checkSteps('priorSteps', opts.priorSteps ?? base.priorSteps),
      decoderSteps: checkSteps('decoderSteps', opts.decoderSteps ?? base.decoderSteps),
      superResSteps: checkSteps('superResSteps', opts.superResSteps ?? base.superResSteps),
      priorGuidance: checkGuidance('priorGuidance', opts.priorGuidance ?? base.priorGuidance),
      decoderGuidance: checkGuidance('decoderGuidance', opts.decoderGuidance ?? base.decoderGuidance),
    };
  }

  /**
   * Text → images, as UnCLIPPipeline(prompt, num_images_per_prompt, prior/decoder/super_res_num_inference_steps,
   * generator, *_latents, prior/decoder_guidance_scale, output_type="np"). Returns NHWC float images in [0, 1]
   * (prompt-major: prompt 0's images first) and per-stage timings.
   */
  async generate(prompts: string[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    if (!Array.isArray(prompts) || prompts.length === 0 || prompts.some((p) => typeof p !== 'string')) {
      throw new TypeError('prompts must be a non-empty array of strings');
    }
    return this.generateFromText(prompts.length, (p, c) => encodePrompt(p.tokenizer, p.text_encoder, prompts, {
      numImagesPerPrompt: c.settings.numImagesPerPrompt, doClassifierFreeGuidance: c.classifierFreeGuidance,
    }), opts);
  }

  /**
   * The text→image pipeline with a custom text stage (the interpolation pipelines): `encode` turns the loaded
   * tokenizer and text encoder into the TextOutputs of `prompts` conditional rows (× numImagesPerPrompt; with
   * CFG the unconditional rows first), inside the text stage's memory scope. `capture` reports intermediates
   * (and returns a replacement when a hook gives one: a kept tensor the caller frees).
   */
  async generateFromText(
    prompts: number,
    encode: (parts: { tokenizer: CLIPTokenizer; text_encoder: CLIPTextModelWithProjection }, ctx: {
      settings: GenerateResult['settings']; classifierFreeGuidance: boolean; capture: <T extends tf.Tensor>(name: string, t: T) => T;
    }) => TextOutputs,
    opts: GenerateOptions = {},
  ): Promise<GenerateResult> {
    const settings = UnCLIPPipeline.resolveSettings(opts);
    const batch = prompts * settings.numImagesPerPrompt;
    // Memory the call needs, from the configs and settings, before anything is allocated (issue 18 item 7).
    const estimate = estimateGenerateMemory(this.folder.root, { prompts, numImagesPerPrompt: settings.numImagesPerPrompt,
      priorGuidance: settings.priorGuidance, decoderGuidance: settings.decoderGuidance });
    const refusal = memoryRefusal(estimate, opts.maxMemoryBytes ?? defaultMemoryBound(), 'the maxMemoryBytes option');
    if (refusal) throw new MemoryEstimateError(refusal);
    // Hidden loading's default budget while a stage runs (stage_prefetch.ts stageBudget).
    const budgetWhile = (name: string) => {
      const i = estimate.stages.findIndex((s) => s.stage === name);
      return i < 0 ? 0 : stageBudget(estimate.stages, i, { peakBytes: estimate.bytes, rssBytes: process.memoryUsage.rss(), totalMem: os.totalmem() });
    };
    const d = this.dims;
    checkShape('priorLatents', opts.priorLatents, [batch, d.embeddingDim]);
    checkShape('decoderLatents', opts.decoderLatents, [batch, d.decoderChannels, d.decoderSize, d.decoderSize]);
    checkShape('superResLatents', opts.superResLatents, [batch, d.superResChannels, d.superResSize, d.superResSize]);

    const { generator, seed } = callGenerator(opts);
    // diffusers: CFG for the whole call when either scale is > 1.
    const doCfg = settings.priorGuidance > 1 || settings.decoderGuidance > 1;
    const dirs = this.folder.dirs;
    const run = new PipelineRun<PipelineStage>(this, opts);

    let text: TextOutputs | undefined;
    let imageEmbeddings: tf.Tensor2D | undefined;
    try {
      // The text encoder and the prior from the start: the text stage is too short to hide the 4 GB prior, and
      // the text encoder itself then loads with two readers (the worker's and this thread).
      this.prefetchNext([
        { key: 'text_encoder', dir: dirs.text_encoder, kind: 'CLIPTextModelWithProjection' }, { key: 'prior', dir: dirs.prior, kind: 'PriorTransformer' },
      ], budgetWhile('text encoder'));
      text = await run.stage('text', 1, {
        tokenizer: () => CLIPTokenizer.fromDir(dirs.tokenizer),
        text_encoder: () => this.prefetch.load(dirs.text_encoder, 'CLIPTextModelWithProjection'),
      }, (p) => encode(p, { settings, classifierFreeGuidance: doCfg, capture: (name, t) => run.capture(name, t) }) as TextOutputs & tf.TensorContainer);
      if (text.promptEmbeds.shape[0] !== (doCfg ? 2 : 1) * batch) {
        throw new Error(`the text stage returned ${text.promptEmbeds.shape[0]} rows, expected ${(doCfg ? 2 : 1) * batch}`);
      }
      text.promptEmbeds = run.capture('prompt_embeds', text.promptEmbeds);
      text.textEncHiddenStates = run.capture('text_enc_hid_states', text.textEncHiddenStates);
      text.textMask = run.capture('text_mask', text.textMask);

      imageEmbeddings = await run.stage('prior', settings.priorSteps, {
        prior: () => this.prefetch.load(dirs.prior, 'PriorTransformer'),
        prior_scheduler: () => UnCLIPScheduler.fromDir(dirs.prior_scheduler),
      }, (p) => runPrior(p.prior, p.prior_scheduler, text!, {
        ...opts.stageOptions?.prior,
        classifierFreeGuidance: doCfg,
        steps: settings.priorSteps, guidanceScale: settings.priorGuidance, latents: opts.priorLatents, generator,
        onStep: run.stepHook('prior'), noiseForStep: opts.noiseForStep?.prior,
      }), () => this.prefetchNext([
        { key: 'text_proj', dir: dirs.text_proj, kind: 'UnCLIPTextProjModel' }, { key: 'decoder', dir: dirs.decoder, kind: 'UNet2DConditionModel' },
      ], budgetWhile('prior')));
      imageEmbeddings = run.capture('image_embeddings', imageEmbeddings);

      const { images, shape } = await decodeAndUpscale(this, dirs, run, {
        text, imageEmbeddings, classifierFreeGuidance: doCfg,
        decoderSteps: settings.decoderSteps, superResSteps: settings.superResSteps, decoderGuidance: settings.decoderGuidance,
        generator, decoderLatents: opts.decoderLatents, superResLatents: opts.superResLatents,
        noiseForStep: opts.noiseForStep, stageOptions: opts.stageOptions,
        prefetchBudget: (stage) => budgetWhile(stage === 'decoder' ? 'decoder' : 'super-res'),
        afterDecoder: () => {
          tf.dispose([text!.promptEmbeds, text!.textEncHiddenStates, text!.textMask, imageEmbeddings!]);
          text = undefined;
          imageEmbeddings = undefined;
        },
      });
      return serializable({ images, shape, seed, settings, timings: run.timings() });
    } finally {
      // what was read ahead for a stage that did not run (an error, an interrupted call)
      this.prefetch.dispose();
      const left: tf.Tensor[] = [];
      if (text) left.push(text.promptEmbeds, text.textEncHiddenStates, text.textMask);
      if (imageEmbeddings) left.push(imageEmbeddings);
      tf.dispose(left);
    }
  }
}
