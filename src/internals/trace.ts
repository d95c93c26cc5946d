// Traces: module outputs (and attention probabilities) and pipeline tensors of one UnCLIPPipeline run, captured at
// chosen stages and steps into one safetensors file (`karlo trace`).
//
// What can be captured ("capture keys", matched by the --capture globs; `karlo trace --list` prints them with
// their shapes):
//   <component>.<module path>       a module output: text_encoder.text_model.encoder.layers.3, prior.transformer_blocks.19,
//                                   decoder.down_blocks.1.attentions.0, super_res_first.up_blocks.2, ...
//   <component>.<attention>.probs   attention probabilities [B, heads, queries, keys] (see the attention modules)
//   cap.<name>                      the pipeline intermediates of the fixtures README (section j): cap.prompt_embeds,
//                                   cap.text_enc_hid_states, cap.text_mask, cap.prior_latents_final, cap.image_embeddings,
//                                   cap.decoder_encoder_hidden_states, cap.additive_clip_time_embeddings, cap.image_small,
//                                   cap.image_upscaled
//   step.<scheduler>.<what>         per scheduler step: model_output_after_cfg (not for the prior), sample_in,
//                                   prev_sample (the prior's sample_in from step 1 on: its first input is not reported)
// Tensor names in the file follow the parity fixtures: one-shot components (text_encoder, text_proj) write
// `block_out.<component>.<path>`; denoising components write `step.<iii>.<scheduler>.t<T>.block_out.<component>.<path>`
// where `step.<iii>.<scheduler>.t<T>` is the fixtures' step label (iii counts every scheduler step of the run,
// prior first); pipeline tensors keep the fixture names (`cap.image_small`, `step.005.decoder_scheduler.t999.
// prev_sample`). Batches are as the pipeline runs them (with guidance: unconditional rows first); UNet feature maps
// NCHW. The metadata entry "karlo.trace" (JSON) records the prompts, settings, seed, and per tensor its component,
// path, stage, step, timestep and step label.
import * as tf from '@tensorflow/tfjs-core';
import type { ComponentName } from '../io/model_folder.js';
import type { OutputHook } from '../layers/module.js';
import { saveSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { UnCLIPPipeline, type GenerateOptions, type GenerateResult, type PipelineStage } from '../pipeline/unclip_pipeline.js';
import { globMatcher } from './interventions.js';

export const TRACE_STAGES: PipelineStage[] = ['text', 'prior', 'decoder', 'super_res'];
const MODEL_COMPONENTS = ['text_encoder', 'prior', 'text_proj', 'decoder', 'super_res_first', 'super_res_last'] as const;
type ModelComponent = (typeof MODEL_COMPONENTS)[number];
const STAGE_OF: Record<ModelComponent, PipelineStage> = {
  text_encoder: 'text', prior: 'prior', text_proj: 'decoder', decoder: 'decoder', super_res_first: 'super_res', super_res_last: 'super_res',
};
const ONE_SHOT = new Set<ModelComponent>(['text_encoder', 'text_proj']);
const SCHEDULER: Record<Exclude<PipelineStage, 'text'>, string> = { prior: 'prior_scheduler', decoder: 'decoder_scheduler', super_res: 'super_res_scheduler' };
const CAP_STAGE: Record<string, PipelineStage> = {
  prompt_embeds: 'text', text_enc_hid_states: 'text', text_mask: 'text', prior_latents_final: 'prior', image_embeddings: 'prior',
  decoder_encoder_hidden_states: 'decoder', additive_clip_time_embeddings: 'decoder', image_small: 'decoder', image_upscaled: 'super_res',
};

/** What the trace records about one tensor (also written to the metadata). */
export interface TraceTensorInfo {
  /** The capture key the globs matched. */
  key: string;
  stage: PipelineStage;
  component?: string;
  path?: string;
  /** Step index within its stage, and the scheduler timestep (denoising stages only). */
  step?: number;
  timestep?: number;
  /** The fixtures' step label, step.<iii>.<scheduler>.t<T>. */
  label?: string;
}

export interface TracedTensor {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32';
  /** Absent in shape-only runs. */
  data?: Float32Array | Int32Array;
  info: TraceTensorInfo;
}

export interface TraceSelection {
  /** Globs over capture keys (comma-separated string or list). */
  capture: string | string[];
  /** Stages to capture in (default all). The run stops after the last one. */
  stages?: PipelineStage[];
  /** Step indices (within each denoising stage) to capture at; default all. One-shot tensors are always taken. */
  steps?: number[];
}

/** Thrown from the stage callback to end a run after the last stage a trace needs. */
class StopAfterStage extends Error {}

/** Bytes of the tensors (4 per element: float32 / int32). */
export function traceBytes(ts: Iterable<{ shape: number[] }>): number {
  let n = 0;
  for (const t of ts) n += 4 * t.shape.reduce((a, b) => a * b, 1);
  return n;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ['KB', 'MB', 'GB', 'TB'];
  let v = n, i = -1;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${u[i]}`;
}

/**
 * Runs the pipeline once and records what the selection asks for. shapesOnly records shapes without copying data
 * (for size estimates and --list). The run stops after the last selected stage.
 */
export async function recordRun(
  pipe: UnCLIPPipeline, prompts: string[], sel: TraceSelection, gen: GenerateOptions, shapesOnly = false,
): Promise<{ tensors: TracedTensor[]; settings: GenerateResult['settings']; seed?: bigint; completed: boolean }> {
  const match = globMatcher(sel.capture);
  const stages = new Set(sel.stages ?? TRACE_STAGES);
  for (const s of stages) if (!TRACE_STAGES.includes(s)) throw new Error(`unknown stage "${s}"; stages: ${TRACE_STAGES.join(', ')}`);
  const lastStage = Math.max(...[...stages].map((s) => TRACE_STAGES.indexOf(s)));
  const steps = sel.steps ? new Set(sel.steps) : null;
  const settings = UnCLIPPipeline.resolveSettings(gen);
  const numSteps: Record<Exclude<PipelineStage, 'text'>, number> = { prior: settings.priorSteps, decoder: settings.decoderSteps, super_res: settings.superResSteps };
  const timesteps = {} as Record<Exclude<PipelineStage, 'text'>, number[]>;
  for (const s of ['prior', 'decoder', 'super_res'] as const) {
    const sch = UnCLIPScheduler.fromDir(pipe.folder.dirs[SCHEDULER[s] as ComponentName]);
    sch.setTimesteps(numSteps[s]);
    timesteps[s] = [...sch.timesteps];
  }
  const offset = { prior: 0, decoder: numSteps.prior, super_res: numSteps.prior + numSteps.decoder };
  const label = (s: Exclude<PipelineStage, 'text'>, i: number) =>
    `step.${String(offset[s] + i).padStart(3, '0')}.${SCHEDULER[s]}.t${timesteps[s][i]}`;

  let stage: PipelineStage | null = null;
  let step = 0;
  const out: TracedTensor[] = [];
  const names = new Set<string>();
  const stepOk = (s: PipelineStage, i: number) => s === 'text' || steps === null || steps.has(i);

  const take = (name: string, t: tf.Tensor, info: TraceTensorInfo) => {
    let n = name;
    for (let k = 1; names.has(n); k++) n = `${name}.call${k}`;
    names.add(n);
    out.push({
      name: n, shape: [...t.shape], dtype: t.dtype === 'float32' ? 'float32' : 'int32', info,
      data: shapesOnly ? undefined : (t.dtype === 'float32' ? (t.dataSync() as Float32Array).slice() : Int32Array.from(t.dataSync())),
    });
  };

  // Module outputs, per component.
  const outputHooks: Partial<Record<ComponentName, OutputHook>> = {};
  for (const c of MODEL_COMPONENTS) {
    const st = STAGE_OF[c];
    if (!stages.has(st)) continue;
    const wants = (p: string) => stage === st && (ONE_SHOT.has(c) || stepOk(st, step)) && match(`${c}.${p}`);
    const hook: OutputHook = (p, t) => {
      const info: TraceTensorInfo = { key: `${c}.${p}`, stage: st, component: c, path: p };
      if (ONE_SHOT.has(c) || st === 'text') return void take(`block_out.${c}.${p}`, t, info);
      const s = st as Exclude<PipelineStage, 'text'>;
      Object.assign(info, { step, timestep: timesteps[s][step], label: label(s, step) });
      take(`${label(s, step)}.block_out.${c}.${p}`, t, info);
    };
    hook.wants = wants;
    outputHooks[c] = hook;
  }
  // Pipeline tensors.
  const cap = (name: string, t: tf.Tensor) => {
    const st = CAP_STAGE[name];
    if (st && stages.has(st) && match(`cap.${name}`)) take(`cap.${name}`, t, { key: `cap.${name}`, stage: st });
  };
  const stepTensor = (s: Exclude<PipelineStage, 'text'>, i: number, what: string, t: tf.Tensor) => {
    const key = `step.${SCHEDULER[s]}.${what}`;
    if (stages.has(s) && stepOk(s, i) && match(key)) {
      take(`${label(s, i)}.${what}`, t, { key, stage: s, step: i, timestep: timesteps[s][i], label: label(s, i) });
    }
  };
  let prevLatents: tf.Tensor | null = null;
  const keepPrev = (t: tf.Tensor) => { prevLatents?.dispose(); prevLatents = tf.keep(t.clone()); };

  let completed = true;
  let result: GenerateResult | undefined;
  try {
    result = await pipe.generate(prompts, {
      ...gen,
      outputHooks,
      onIntermediate: (name, t) => { cap(name, t); },
      onStage: (e) => {
        if (e.phase === 'load' && TRACE_STAGES.indexOf(e.stage) > lastStage) throw new StopAfterStage();
        if (e.phase === 'run') { stage = e.stage; step = 0; prevLatents?.dispose(); prevLatents = null; }
        if (e.phase === 'done') stage = null;
        gen.onStage?.(e);
      },
      onStep: (info) => {
        const s = info.stage;
        if (s === 'prior' && info.step > 0 && prevLatents) stepTensor(s, info.step, 'sample_in', prevLatents);
        stepTensor(s, info.step, 'prev_sample', info.latents);
        if (s === 'prior') keepPrev(info.latents);
        step = info.step + 1;
        gen.onStep?.(info);
      },
      stageOptions: {
        ...gen.stageOptions,
        prior: { ...gen.stageOptions?.prior, onFinalLatents: (l) => { cap('prior_latents_final', l); gen.stageOptions?.prior?.onFinalLatents?.(l); } },
        decoder: {
          ...gen.stageOptions?.decoder,
          onConditioning: (c) => {
            cap('decoder_encoder_hidden_states', c.encoderHiddenStates);
            cap('additive_clip_time_embeddings', c.additiveClipTimeEmbeddings);
            gen.stageOptions?.decoder?.onConditioning?.(c);
          },
          onModelOutput: (i) => {
            stepTensor('decoder', i.step, 'model_output_after_cfg', i.modelOutput);
            stepTensor('decoder', i.step, 'sample_in', i.sampleIn);
            gen.stageOptions?.decoder?.onModelOutput?.(i);
          },
        },
        super_res: {
          ...gen.stageOptions?.super_res,
          onUpscaled: (im) => { cap('image_upscaled', im); gen.stageOptions?.super_res?.onUpscaled?.(im); },
          onModelOutput: (i) => {
            stepTensor('super_res', i.step, 'model_output_after_cfg', i.output);
            stepTensor('super_res', i.step, 'sample_in', i.sampleIn);
            gen.stageOptions?.super_res?.onModelOutput?.(i);
          },
        },
      },
    });
  } catch (e) {
    if (!(e instanceof StopAfterStage)) throw e;
    completed = false;
  } finally {
    (prevLatents as tf.Tensor | null)?.dispose();
  }
  return { tensors: out, settings, seed: result?.seed ?? (gen.seed !== undefined ? BigInt(gen.seed) : undefined), completed };
}

/** Shapes at two steps per stage, scaled to the real step counts: the estimate of a trace before running it. */
export interface TraceEstimate {
  bytes: number;
  tensors: number;
  /** Per capture key: shape, how many times it will be written, bytes in all. */
  keys: { key: string; shape: number[]; count: number; bytes: number }[];
}

/**
 * Estimates a trace by a shape-only run with 2 steps per stage (the least the scheduler allows; super-res then
 * runs super_res_first once and super_res_last once), counting each key at the steps the real run will capture.
 */
export async function estimateTrace(pipe: UnCLIPPipeline, prompts: string[], sel: TraceSelection, gen: GenerateOptions): Promise<TraceEstimate> {
  const settings = UnCLIPPipeline.resolveSettings(gen);
  const n = { text: 1, prior: settings.priorSteps, decoder: settings.decoderSteps, super_res: settings.superResSteps };
  const probe = await recordRun(pipe, prompts, { ...sel, steps: [0, 1] }, { ...gen, priorSteps: 2, decoderSteps: 2, superResSteps: 2, onStage: undefined, onStep: undefined }, true);
  const chosen = (stage: PipelineStage, from: number, to: number) => {
    let c = 0;
    for (let i = from; i < to; i++) if (!sel.steps || sel.steps.includes(i)) c++;
    return c;
  };
  const byKey = new Map<string, { shape: number[]; count: number }>();
  for (const t of probe.tensors) {
    if (byKey.has(t.info.key)) continue;
    const { stage, component, key } = t.info;
    let count: number;
    if (t.info.step === undefined) count = 1;
    else if (component === 'super_res_first') count = chosen(stage, 0, n.super_res - 1);
    else if (component === 'super_res_last') count = chosen(stage, n.super_res - 1, n.super_res);
    else if (/\.sample_in$/.test(key) && stage === 'prior') count = chosen(stage, 1, n[stage]);
    else count = chosen(stage, 0, n[stage]);
    byKey.set(key, { shape: t.shape, count });
  }
  const keys = [...byKey].map(([key, v]) => ({ key, ...v, bytes: v.count * traceBytes([v]) }));
  return { keys, bytes: keys.reduce((a, k) => a + k.bytes, 0), tensors: keys.reduce((a, k) => a + k.count, 0) };
}

/** Writes recorded tensors to a safetensors file (atomically) with the "karlo.trace" metadata. */
export function writeTrace(file: string, tensors: TracedTensor[], meta: Record<string, unknown>): void {
  const map = new Map<string, TensorToWrite>();
  const info: Record<string, TraceTensorInfo> = {};
  for (const t of tensors) {
    if (!t.data) throw new Error(`trace tensor "${t.name}" has no data (a shape-only run cannot be written)`);
    map.set(t.name, { dtype: t.dtype === 'float32' ? 'F32' : 'I32', shape: t.shape, data: t.data });
    info[t.name] = t.info;
  }
  saveSafetensors(file, map, { format: 'pt', 'karlo.trace': JSON.stringify({ version: 1, ...meta, tensors: info }) });
}
