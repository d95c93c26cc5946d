// Parity of the whole pipeline against a diffusers UnCLIPPipeline run (the fixtures README, section j): a
// pipeline folder (model_index.json + components) with run*.json / run*.safetensors recorded from PyTorch.
// Every recorded tensor is compared: CLIP outputs, text_proj outputs, each scheduler step (model output after
// CFG, sample in, prev sample), the stage results and the final image; with a seed only, also every random draw
// in order (which proves the generator and diffusers' draw order).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { SafetensorsFile, type TensorData } from '../io/safetensors.js';
import { readJson } from '../io/weights.js';
import { TorchGenerator } from '../random/generator.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { UnCLIPPipeline, type GenerateOptions } from '../pipeline/unclip_pipeline.js';
import { componentDir } from '../io/model_folder.js';
import type { StageName } from '../pipeline/types.js';
import { decoderPredict, padDecoderMask } from '../pipeline/decoder_stage.js';
import { superResPredict } from '../pipeline/super_res_stage.js';
import { denoiseStep, type Predict } from '../samplers/denoise.js';
import { illConditionedElements, type IllConditioned, type RecordedStep } from './ill_conditioned.js';
import { namesClass, recordedDraws, recordedSteps, stageOfScheduler } from './fixture.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';

/** What run*.json records (UnCLIPPipeline call arguments). */
interface RunJson {
  prompt: string | string[];
  num_images_per_prompt?: number;
  prior_num_inference_steps?: number;
  decoder_num_inference_steps?: number;
  super_res_num_inference_steps?: number;
  prior_guidance_scale?: number;
  decoder_guidance_scale?: number;
  prior_latents?: unknown;
  decoder_latents?: unknown;
  super_res_latents?: unknown;
  generator?: string;
  randn_draw_order?: string[];
  scheduler_steps?: string[];
}

export interface PipelineParityOptions extends ParityOptions {
  /**
   * 'recorded': the variance noise of every step comes from the recorded randn.* draws (isolates the math from the
   * generator); 'generator': everything not given explicitly is drawn from the recorded seed. Default: recorded
   * when the run has explicit latents, else generator.
   */
  noise?: 'recorded' | 'generator';
  /**
   * 'stages' (default): each stage starts from the recorded outputs of the one before (text outputs, image
   * embeddings, image_small), as the fixtures README advises: guidance 8 and the t = 999 step (1/sqrt(ᾱ) ≈ 1e4)
   * amplify float32 rounding across stages. 'none': free-running end to end.
   */
  forcing?: 'stages' | 'none';
  /**
   * Runs the recorded call with the options built here (default: UnCLIPPipeline.load(modelDir).generate(prompt)).
   * The image-variation and interpolation kinds pass their own pipelines; everything else is shared.
   */
  call?: (opts: GenerateOptions) => Promise<{ images: Float32Array; shape: number[] }>;
  /** The model folder whose schedulers/UNets re-check ill-conditioned steps (default: the run file's folder). */
  modelDir?: string;
  /** Reference tensors the caller compares itself (skipped here instead of reported as not produced). */
  comparedElsewhere?: (name: string) => boolean;
}

/** run*.json files of a folder that have their .safetensors next to them. */
export function pipelineRuns(dir: string): string[] {
  if (!fs.existsSync(path.join(dir, 'model_index.json'))) return [];
  return fs.readdirSync(dir)
    .filter((n) => /^run.*\.json$/.test(n) && fs.existsSync(path.join(dir, n.replace(/\.json$/, '.safetensors'))))
    .sort()
    .map((n) => path.join(dir, n));
}

function seedOf(gen: string | undefined, file: string): bigint {
  const m = /manual_seed\((\d+)\)/.exec(gen ?? '');
  if (!m) throw new Error(`${file}: "generator" must record torch.Generator().manual_seed(N), got ${JSON.stringify(gen)}`);
  return BigInt(m[1]);
}

/** A generator that records every randn draw (shape and values), to check diffusers' draw order. */
class RecordingGenerator extends TorchGenerator {
  readonly draws: { shape: number[]; data: Float32Array }[] = [];
  override randn(shape: number[]): Float32Array {
    const d = super.randn(shape);
    this.draws.push({ shape: [...shape], data: d.slice() });
    return d;
  }
}

/**
 * Tolerances (fixtures README): text and prior stages abs ≤ 1e-4·max(1, max|ref|); the final image (in [0, 1])
 * abs ≤ 1e-3; decoder and super-res latents and images (in [-1, 1], image = x·0.5 + 0.5) the same bound in
 * their units: abs ≤ 2e-3; their model outputs (ε after CFG; guidance 8 amplifies float32 rounding)
 * 1e-3·max(1, max|ref|); masks exact; random draws ≤ 1e-6.
 */
function tolerance(name: string, atol: number): number {
  if (/^randn\./.test(name)) return 1e-6;
  if (name === 'cap.text_mask') return 0;
  if (/prior|prompt_embeds|text_enc_hid_states|image_embeddings/.test(name)) return atol;
  if (name === 'output.images_np_NHWC' || /model_output|additive_clip|decoder_encoder_hidden/.test(name)) return Math.max(1e-3, atol);
  return Math.max(2e-3, atol);
}

/** One recorded call being checked: the reference, what our run produced so far, and the recorded schedule. */
interface RunCheck {
  runFile: string;
  /** A component folder of the model folder (link files followed). */
  comp: (name: string) => string;
  run: RunJson;
  ref: SafetensorsFile;
  names: Set<string>;
  refData: (name: string) => TensorData;
  atol: number;
  log: (line: string) => void;
  /** Our tensors by reference name, as plain arrays (taken while the pipeline runs). */
  ours: Map<string, { data: ArrayLike<number>; shape: number[] }>;
  take: (name: string, t: tf.Tensor) => void;
  /** Tensors made from the reference (freed at the end). */
  inputs: tf.Tensor[];
  steps: RecordedStep[];
  draws: string[];
  /** Reference names of each stage's steps, in order (step.<iii>.<scheduler>.t<T>), to name our step tensors. */
  stepNames: Record<StageName, string[]>;
}

function openRunCheck(runFile: string, opts: PipelineParityOptions): RunCheck {
  const dir = opts.modelDir ?? path.dirname(runFile);
  const run = readJson<RunJson>(runFile);
  const steps = recordedSteps(run.scheduler_steps, runFile);
  const draws = recordedDraws(run.randn_draw_order, runFile);
  const ref = SafetensorsFile.open(runFile.replace(/\.json$/, '.safetensors'));
  const names = new Set(ref.names());
  const ours = new Map<string, { data: ArrayLike<number>; shape: number[] }>();
  const stepNames: Record<StageName, string[]> = { prior: [], decoder: [], super_res: [] };
  for (const s of steps) stepNames[s.stage].push(`step.${s.index}.${s.scheduler}.t${s.t}`);
  return {
    runFile, run, ref, names, ours, steps, draws, stepNames,
    comp: (name) => componentDir(dir, name) ?? path.join(dir, name),
    refData: (n) => ref.read(n),
    atol: opts.atol ?? 1e-4,
    log: opts.log ?? (() => {}),
    take: (name, t) => { if (names.has(name)) ours.set(name, { data: t.dataSync().slice(), shape: [...t.shape] }); },
    inputs: [],
  };
}

/** A recorded tensor as a float32 tf.Tensor, freed with the check. */
function refTensor(c: RunCheck, name: string): tf.Tensor {
  const r = c.refData(name);
  const t = tf.tensor(r.data as Float32Array, r.shape, 'float32');
  c.inputs.push(t);
  return t;
}

/** Each stage's step noise from the recorded draws: the scheduler's draws in order, to the steps with t > 0. */
function recordedNoise(c: RunCheck): Record<StageName, (step: number, shape: number[]) => tf.Tensor> {
  const stepDraws = c.draws.filter((d) => d.endsWith('.scheduling_unclip'));
  const noiseName = new Map<string, string>(); // `${stage}.${stepInStage}` → randn name
  let k = 0;
  const perStage: Record<string, number> = {};
  for (const s of c.steps) {
    const i = perStage[s.stage] = (perStage[s.stage] ?? -1) + 1;
    if (s.t > 0) noiseName.set(`${s.stage}.${i}`, stepDraws[k++]);
  }
  const noiseFor = (stage: StageName) => (step: number, shape: number[]) => {
    const n = noiseName.get(`${stage}.${step}`);
    if (!n) throw new Error(`${c.runFile}: no recorded noise for ${stage} step ${step}`);
    const r = c.refData(n);
    if (r.shape.join(',') !== shape.join(',')) throw new Error(`${c.runFile}: ${n} has shape [${r.shape}], the ${stage} step asks for [${shape}]`);
    return tf.tensor(r.data as Float32Array, r.shape, 'float32');
  };
  return { prior: noiseFor('prior'), decoder: noiseFor('decoder'), super_res: noiseFor('super_res') };
}

/**
 * The GenerateOptions of the recorded call, with callbacks that take every tensor the reference holds (steps,
 * captures, the prior's guided output) and, with forcing 'stages', start each stage from the recorded outputs of
 * the one before. dispose() frees the step bookkeeping after the call.
 */
function recordedCallOptions(c: RunCheck, generator: RecordingGenerator, mode: 'recorded' | 'generator', forcing: 'stages' | 'none'):
  { genOpts: GenerateOptions; dispose(): void } {
  const { names, take, ours, stepNames } = c;
  const latent = (n: string) => (names.has(n) ? refTensor(c, n) : undefined);
  const initial: Partial<Record<StageName, tf.Tensor>> = {
    prior: latent('input.prior_latents'), decoder: latent('input.decoder_latents'), super_res: latent('input.super_res_latents'),
  };
  // The sample going into each step: the initial latents (explicit, or the stage's pipeline draw), then the
  // previous step's result.
  const prevLatents: Partial<Record<StageName, tf.Tensor>> = {};
  const latentDraw: Partial<Record<StageName, number>> = {};
  c.draws.forEach((d, i) => {
    // initial latents: every site but the scheduler's (pipeline_unclip, or the community pipelines' own file)
    if (d.endsWith('.scheduling_unclip')) return;
    // the stages this run has (the variation pipeline has no prior), in order
    const stage = (['prior', 'decoder', 'super_res'] as StageName[]).find((s) => c.steps.some((x) => x.stage === s) && latentDraw[s] === undefined && !initial[s]);
    if (stage) latentDraw[stage] = i;
  });
  const sampleIn0 = (stage: StageName): ArrayLike<number> | undefined => {
    if (initial[stage]) return initial[stage]!.dataSync();
    const j = latentDraw[stage];
    return j === undefined ? undefined : generator.draws[j]?.data;
  };

  const run = c.run;
  let priorCalls = 0;
  const genOpts: GenerateOptions = {
    numImagesPerPrompt: run.num_images_per_prompt ?? 1,
    priorSteps: run.prior_num_inference_steps ?? 25,
    decoderSteps: run.decoder_num_inference_steps ?? 25,
    superResSteps: run.super_res_num_inference_steps ?? 7,
    priorGuidance: run.prior_guidance_scale ?? 4,
    decoderGuidance: run.decoder_guidance_scale ?? 8,
    generator,
    priorLatents: initial.prior,
    decoderLatents: initial.decoder,
    superResLatents: initial.super_res,
    noiseForStep: mode === 'recorded' ? recordedNoise(c) : undefined,
    onStep: (info) => {
      const base = stepNames[info.stage][info.step];
      if (base === undefined) return;
      const sampleIn = prevLatents[info.stage];
      if (sampleIn) take(`${base}.sample_in`, sampleIn);
      else if (info.step === 0 && names.has(`${base}.sample_in`)) {
        const d = sampleIn0(info.stage);
        if (d) ours.set(`${base}.sample_in`, { data: Float32Array.from(d), shape: [...info.latents.shape] });
      }
      take(`${base}.prev_sample`, info.latents);
      tf.dispose(prevLatents[info.stage]);
      prevLatents[info.stage] = tf.keep(tf.clone(info.latents));
    },
    onIntermediate: (name, t) => {
      take(`cap.${name}`, t);
      // Stage by stage: the next stage starts from the recorded tensor, not ours.
      if (forcing !== 'stages' || !names.has(`cap.${name}`)) return undefined;
      const r = c.refData(`cap.${name}`);
      const f = tf.tensor(r.data as Float32Array, r.shape, t.dtype);
      c.inputs.push(f);
      return f;
    },
    stageOptions: {
      prior: { onFinalLatents: (t) => take('cap.prior_latents_final', t) },
      decoder: {
        onConditioning: (x) => {
          take('cap.decoder_encoder_hidden_states', x.encoderHiddenStates);
          take('cap.additive_clip_time_embeddings', x.additiveClipTimeEmbeddings);
        },
        onModelOutput: (i) => take(`${stepNames.decoder[i.step]}.model_output_after_cfg`, i.modelOutput),
      },
      super_res: {
        onUpscaled: (t) => take('cap.image_upscaled', t),
        onModelOutput: (i) => take(`${stepNames.super_res[i.step]}.model_output_after_cfg`, i.output),
      },
    },
    outputHooks: {
      // The prior stage reports no model output: guide the prior's raw prediction here, as diffusers does
      // (uncond + s·(text − uncond), float32), and name it by the step it belongs to.
      prior: (p, t) => {
        if (p !== 'predicted_image_embedding') return;
        const step = priorCalls++;
        const d = t.dataSync();
        const [rows, dim] = t.shape;
        const name = `${stepNames.prior[step]}.model_output_after_cfg`;
        if (!(genOpts.priorGuidance! > 1 || genOpts.decoderGuidance! > 1)) { take(name, t); return; }
        const s = Math.fround(genOpts.priorGuidance!);
        const g = new Float32Array((rows / 2) * dim);
        for (let i = 0; i < g.length; i++) {
          const u = d[i], x = d[g.length + i];
          g[i] = Math.fround(u + Math.fround(s * Math.fround(x - u)));
        }
        if (names.has(name)) ours.set(name, { data: g, shape: [rows / 2, dim] });
      },
    },
  };
  return { genOpts, dispose: () => tf.dispose(Object.values(prevLatents)) };
}

/** The generator's draws, in order, against the recorded ones (seed-only runs: latents and step noise). */
function compareDraws(c: RunCheck, generator: RecordingGenerator): Comparison[] {
  const out: Comparison[] = [];
  for (let i = 0; i < Math.max(c.draws.length, generator.draws.length); i++) {
    const name = c.draws[i] ?? `randn.${String(i).padStart(3, '0')}.(not in the reference)`;
    const g = generator.draws[i];
    if (!g || !c.names.has(name)) {
      out.push(missing(name));
      continue;
    }
    const r = c.refData(name);
    const cmp = compareArrays(name, g.data, r.data as Float32Array, { atol: tolerance(name, c.atol), scaleByMax: false });
    if (g.shape.join(',') !== r.shape.join(',')) cmp.ok = false;
    out.push(cmp);
  }
  return out;
}

const missing = (name: string): Comparison => ({ name, maxAbs: Infinity, maxRel: Infinity, maxRef: NaN, allowed: 0, argmax: -1, ok: false });

/** The stage, step in stage and part (sample_in, prev_sample, ...) of a step.* reference name. */
function stepOfName(c: RunCheck, name: string): { stage: StageName; step: number; part: string } | undefined {
  const m = /^step\.(\d+)\.(\w+)\.t\d+\.(\w+)$/.exec(name);
  if (!m) return undefined;
  const stage = stageOfScheduler(m[2]);
  return { stage, step: c.stepNames[stage].findIndex((b) => b.startsWith(`step.${m[1]}.`)), part: m[3] };
}

/** Logs how far our free-running value of `name` is from the record (the comparison itself was made otherwise). */
function logFreeRunning(c: RunCheck, name: string, free: { data: ArrayLike<number> }, what: string): void {
  const cmp = compareArrays(name, free.data, c.refData(name).data as ArrayLike<number>, { atol: 1, scaleByMax: false });
  c.log(`  ${name}: free-running max abs err ${cmp.maxAbs.toExponential(2)} (informational); ${what}`);
}

/**
 * After an ill-conditioned step, the free-running latents carry its difference into every later step (the UNet
 * spreads it to neighbouring pixels), so a stage's later steps are checked from the recorded tensors (fixtures
 * README: "compare stage by stage using the recorded step.* tensors"): x = recorded sample_in, the model output
 * from `predict` (the stage's model on recorded conditioning), one scheduler step with the recorded noise;
 * `finish` turns the last step's result into the stage's output tensor. The free-running values are logged.
 */
function forceStage(c: RunCheck, f: IllConditioned, stage: StageName, scheduler: string, predict: Predict<tf.Tensor4D>,
  finish: (prev: tf.Tensor) => [string, tf.Tensor]): void {
  const { steps, draws } = c;
  const stSteps = steps.filter((x) => x.stage === stage);
  // this stage's step-noise draws: the scheduling draws in order, counted per stage
  const before = steps.slice(0, steps.indexOf(stSteps[0])).filter((x) => x.t > 0 && x.stage !== stage).length;
  const stNoise = draws.filter((d) => d.endsWith('.scheduling_unclip')).slice(before, before + stSteps.filter((x) => x.t > 0).length);
  const sch = UnCLIPScheduler.fromDir(c.comp(scheduler));
  let k = 0;
  stSteps.forEach((st, i) => {
    const base = `step.${st.index}.${st.scheduler}.t${st.t}`;
    const noiseName = st.t > 0 ? stNoise[k++] : undefined;
    if (i <= f.fromStep) return;
    tf.tidy(() => {
      const xr = c.refData(`${base}.sample_in`);
      const x = tf.tensor4d(xr.data as Float32Array, xr.shape as [number, number, number, number]);
      const last = i === stSteps.length - 1;
      const nr = noiseName ? c.refData(noiseName) : undefined;
      const { modelOutput: eps, prevSample: prev } = denoiseStep(sch, predict, x, {
        step: i, timestep: st.t, prevTimestep: last ? undefined : stSteps[i + 1].t,
        noise: nr ? tf.tensor(nr.data as Float32Array, nr.shape, 'float32') : undefined,
      });
      const results: [string, tf.Tensor][] = [[`${base}.model_output_after_cfg`, eps], [`${base}.prev_sample`, prev]];
      if (last) results.push(finish(prev));
      for (const [name, t] of results) {
        const free = c.ours.get(name);
        if (free && c.names.has(name)) logFreeRunning(c, name, free, 'checked from the recorded inputs');
        c.take(name, t);
      }
    });
  });
}

/**
 * Re-checks the decoder and super-res stages after their ill-conditioned steps from the recorded tensors (when
 * the recorded conditioning is there); returns which stages were so checked.
 */
function forceIllConditionedStages(c: RunCheck, flagged: Record<StageName, IllConditioned>, genOpts: GenerateOptions): Record<StageName, boolean> {
  const forced: Record<StageName, boolean> = { prior: false, decoder: false, super_res: false };
  const { names } = c;
  if (flagged.decoder.set.size > 0 && ['cap.decoder_encoder_hidden_states', 'cap.additive_clip_time_embeddings', 'cap.text_mask'].every((n) => names.has(n))) {
    const decoder = loadComponent(c.comp('decoder'), 'UNet2DConditionModel');
    const ehs = refTensor(c, 'cap.decoder_encoder_hidden_states') as tf.Tensor3D;
    const emb = refTensor(c, 'cap.additive_clip_time_embeddings') as tf.Tensor2D;
    const tm = refTensor(c, 'cap.text_mask') as tf.Tensor2D;
    const mask = padDecoderMask(tm, ehs.shape[1] - tm.shape[1]);
    const cfg = genOpts.priorGuidance! > 1 || genOpts.decoderGuidance! > 1;
    try {
      forceStage(c, flagged.decoder, 'decoder', 'decoder_scheduler', decoderPredict(decoder, { encoderHiddenStates: ehs, additiveClipTimeEmbeddings: emb, attentionMask: mask }, genOpts.decoderGuidance!, cfg),
        (prev) => ['cap.image_small', tf.clipByValue(prev, -1, 1)]);
    } finally {
      mask.dispose();
      decoder.dispose();
    }
    forced.decoder = true;
  }
  if (flagged.super_res.set.size > 0 && names.has('cap.image_upscaled')) {
    const first = loadComponent(c.comp('super_res_first'), 'UNet2DModel');
    const last = loadComponent(c.comp('super_res_last'), 'UNet2DModel');
    const up = refTensor(c, 'cap.image_upscaled');
    const lastStep = c.steps.filter((x) => x.stage === 'super_res').length - 1;
    try {
      forceStage(c, flagged.super_res, 'super_res', 'super_res_scheduler', superResPredict((step) => (step === lastStep ? last : first), up as tf.Tensor4D),
        (prev) => ['output.images_np_NHWC', tf.transpose(tf.clipByValue(tf.add(tf.mul(prev, 0.5), 0.5), 0, 1), [0, 2, 3, 1])]);
    } finally {
      first.dispose();
      last.dispose();
    }
    forced.super_res = true;
  }
  return forced;
}

/**
 * Indices of `name` (reference layout) excluded as ill-conditioned, or undefined: the flagged elements in the
 * flagged step's prev_sample and in every later tensor of that stage (in the model output: the same element of
 * each channel group), in image_small (decoder) and the final image (super-res).
 */
function excludedElements(c: RunCheck, flagged: Record<StageName, IllConditioned>, forced: Record<StageName, boolean>,
  name: string, shape: number[]): Set<number> | undefined {
  const map = (f: IllConditioned, layout: 'NCHW' | 'NHWC') => {
    const C = f.channels!;
    const [N, CH, H, W] = layout === 'NCHW' ? shape : [shape[0], shape[3], shape[1], shape[2]];
    const out = new Set<number>();
    for (const k of f.set) {
      const HW = H * W;
      const b = Math.floor(k / (C * HW)), ch = Math.floor(k / HW) % C, hw = k % HW;
      if (b >= N) continue;
      for (let g = ch; g < CH; g += C) out.add(layout === 'NCHW' ? (b * CH + g) * HW + hw : hw * CH + b * HW * CH + g);
    }
    return out;
  };
  const st = stepOfName(c, name);
  if (st) {
    const f = flagged[st.stage];
    if (f.set.size === 0 || st.step < f.fromStep || (st.step === f.fromStep && st.part !== 'prev_sample')) return undefined;
    // steps after the flagged one were re-checked from the recorded inputs: only their sample_in (= our
    // free-running latents) still holds the flagged elements
    if (forced[st.stage] && st.step > f.fromStep && st.part !== 'sample_in') return undefined;
    return map(f, 'NCHW');
  }
  if (name === 'cap.image_small' && flagged.decoder.set.size && !forced.decoder) return map(flagged.decoder, 'NCHW');
  if (name === 'output.images_np_NHWC' && flagged.super_res.set.size && !forced.super_res) return map(flagged.super_res, 'NHWC');
  return undefined;
}

/** One reference tensor against ours, with its tolerance; ill-conditioned elements reported beside the comparison. */
function compareOne(c: RunCheck, name: string, skip: Set<number> | undefined): Comparison {
  const r = c.refData(name);
  const o = c.ours.get(name);
  if (!o) return missing(`${name} (not produced)`);
  if (o.shape.join(',') !== r.shape.join(',')) return missing(`${name} (shape [${o.shape}] vs [${r.shape}])`);
  const tol = tolerance(name, c.atol);
  // Latents and images are compared in absolute terms (image units); model outputs and conditioning
  // relative to their largest value (the project rule for module outputs).
  const absolute = name === 'output.images_np_NHWC' || /sample_in|prev_sample|image_small|image_upscaled/.test(name);
  const cmpOpts = { atol: tol, scaleByMax: !absolute && tol > 0 };
  if (!skip || skip.size === 0) return compareArrays(name, o.data, r.data as ArrayLike<number>, cmpOpts);
  const keep = (_: unknown, i: number) => !skip.has(i);
  const cmp = compareArrays(name, Array.from(o.data).filter(keep), Array.from(r.data as ArrayLike<number>).filter(keep), cmpOpts);
  let worst = 0;
  for (const i of skip) worst = Math.max(worst, Math.abs(o.data[i] - (r.data as ArrayLike<number>)[i]));
  return { ...cmp, name: `${name} (${skip.size} ill-conditioned element${skip.size > 1 ? 's' : ''} excluded, error there ${worst.toExponential(2)})` };
}

/** Every reference tensor (inputs and draws aside) in execution order: what our run produced, then what it did not. */
function compareRecorded(c: RunCheck, flagged: Record<StageName, IllConditioned>, forced: Record<StageName, boolean>,
  comparedElsewhere?: (name: string) => boolean): Comparison[] {
  const { names, ours } = c;
  const out: Comparison[] = [];
  const inOrder = [...[...ours.keys()].filter((n) => names.has(n)), ...[...names].filter((n) => !ours.has(n)).sort()];
  for (const name of inOrder) {
    if (name.startsWith('input.') || name.startsWith('randn.') || comparedElsewhere?.(name)) continue;
    const st = stepOfName(c, name);
    if (st && forced[st.stage] && st.step > flagged[st.stage].fromStep && st.part === 'sample_in') {
      // our free-running latents after the ill-conditioned step; the step itself was checked from the record
      const o = ours.get(name);
      if (o) logFreeRunning(c, name, o, 'the step was checked from the recorded inputs');
      continue;
    }
    out.push(compareOne(c, name, excludedElements(c, flagged, forced, name, c.ref.info(name).shape)));
  }
  return out;
}

/** Runs one recorded pipeline call through UnCLIPPipeline and compares every recorded tensor. */
export async function runPipelineParity(runFile: string, opts: PipelineParityOptions = {}): Promise<Comparison[]> {
  const c = openRunCheck(runFile, opts);
  try {
    const explicit = ['input.prior_latents', 'input.decoder_latents', 'input.super_res_latents'].some((n) => c.names.has(n));
    const mode = opts.noise ?? (explicit ? 'recorded' : 'generator');
    const forcing = opts.forcing ?? 'stages';
    const generator = new RecordingGenerator(seedOf(c.run.generator, runFile));
    const { genOpts, dispose } = recordedCallOptions(c, generator, mode, forcing);
    const prompts = Array.isArray(c.run.prompt) ? c.run.prompt : [c.run.prompt];
    const call = opts.call ?? (async (o: GenerateOptions) => {
      const pipe = await UnCLIPPipeline.load(opts.modelDir ?? path.dirname(runFile));
      try {
        return await pipe.generate(prompts, o);
      } finally {
        pipe.dispose();
      }
    });
    c.log(`${path.basename(runFile)}: steps ${genOpts.priorSteps}/${genOpts.decoderSteps}/${genOpts.superResSteps}, noise ${mode}`);
    let result;
    try {
      result = await call(genOpts);
    } finally {
      dispose();
    }
    c.ours.set('output.images_np_NHWC', { data: result.images, shape: result.shape });

    const out = mode === 'generator' ? compareDraws(c, generator) : [];
    const flagged = illConditionedElements(c.steps, c.names, c.refData, (name) => UnCLIPScheduler.fromDir(c.comp(name)));
    const forced = forcing === 'stages' ? forceIllConditionedStages(c, flagged, genOpts) : { prior: false, decoder: false, super_res: false };
    out.push(...compareRecorded(c, flagged, forced, opts.comparedElsewhere));
    return out;
  } finally {
    tf.dispose(c.inputs);
    c.ref.close();
  }
}

export const pipelineParity: ParityKind = {
  name: 'pipeline',
  // text→image folders only (image-variation folders have their own kind)
  detect: (dir) => pipelineRuns(dir).length > 0 && namesClass(dir, 'UnCLIPPipeline', { file: 'model_index.json' }),
  async run(dir, opts) {
    const out: Comparison[] = [];
    for (const f of pipelineRuns(dir)) {
      const prefix = path.basename(f, '.json');
      for (const c of await runPipelineParity(f, opts)) out.push({ ...c, name: `${prefix}: ${c.name}` });
    }
    return out;
  },
};
