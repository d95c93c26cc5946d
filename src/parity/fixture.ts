// Small helpers for reading golden data: a fixture's tensors by name (a missing one is an error naming the file
// and the tensor), and a recorded diffusers pipeline run (run*.safetensors + its run*.json: captured tensors
// cap.*, inputs input.*, every random draw randn.<iii>.<site>, every scheduler step
// step.<iii>.<scheduler>.t<T>.{sample_in, model_output_after_cfg, prev_sample}).
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors, type TensorData } from '../io/safetensors.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readJson } from '../io/weights.js';
import { configClass } from '../io/config_class.js';
import type { StageName } from '../pipeline/types.js';
import type { RecordedStep } from './ill_conditioned.js';
import { compareArrays, type Comparison } from './compare.js';

const STAGE_OF: Record<string, StageName> = { prior_scheduler: 'prior', decoder_scheduler: 'decoder', super_res_scheduler: 'super_res' };

/** The stage a scheduler folder name belongs to (prior_scheduler → prior, ...). */
export const stageOfScheduler = (scheduler: string): StageName => STAGE_OF[scheduler];

/** A run*.json's `scheduler_steps` ("<iii>:<scheduler>:t=<T>", in call order); `file` names the file in errors. */
export function recordedSteps(entries: unknown, file: string): RecordedStep[] {
  return ((entries ?? []) as string[]).map((s) => {
    const m = /^(\d+):(\w+):t=(\d+)$/.exec(s);
    if (!m) throw new Error(`${file}: bad scheduler_steps entry ${JSON.stringify(s)}`);
    return { index: m[1], scheduler: m[2], t: Number(m[3]), stage: STAGE_OF[m[2]] };
  });
}

/** A run*.json's `randn_draw_order` ("<iii>:<site>:...") as the reference tensor names randn.<iii>.<site>. */
export function recordedDraws(entries: unknown, file: string): string[] {
  return ((entries ?? []) as string[]).map((s) => {
    const m = /^(\d+):(\w+):/.exec(s);
    if (!m) throw new Error(`${file}: bad randn_draw_order entry ${JSON.stringify(s)}`);
    return `randn.${m[1]}.${m[2]}`;
  });
}

/**
 * Whether `dir/<file>` (config.json, or model_index.json for a pipeline) names `className` (io/config_class.ts:
 * diffusers _class_name, transformers architectures), and every file in `need` exists beside it. A parity kind's
 * detect(): false, never an error, for anything else.
 */
export function namesClass(dir: string, className: string, opts: { file?: string; need?: string[]; modelType?: string } = {}): boolean {
  const file = path.join(dir, opts.file ?? 'config.json');
  if (!fs.existsSync(file) || !(opts.need ?? []).every((n) => fs.existsSync(path.join(dir, n)))) return false;
  try {
    const cfg = readJson(file);
    // transformers configs: `architectures` may list several classes; a bare config says only its model_type
    if (Array.isArray(cfg.architectures) && cfg.architectures.includes(className)) return true;
    return configClass(cfg) === className || (opts.modelType !== undefined && cfg.model_type === opts.modelType);
  } catch {
    return false;
  }
}

/** The tensors of one fixture file, looked up by name. */
export class FixtureTensors {
  constructor(readonly file: string, readonly tensors: Map<string, TensorData>) {}

  static open(file: string): FixtureTensors {
    return new FixtureTensors(file, loadSafetensors(file));
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The tensor's data, or undefined when the file has none of that name. */
  get(name: string): TensorData | undefined {
    return this.tensors.get(name);
  }

  keys(): string[] {
    return [...this.tensors.keys()];
  }

  /** The tensor's data, or an error naming the file and the tensor. */
  need(name: string): TensorData {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.file}: tensor "${name}" is missing`);
    return t;
  }

  /** The tensor as a tf.Tensor in its recorded dtype (caller owns it). */
  tensor(name: string): tf.Tensor {
    const t = this.need(name);
    return tf.tensor(t.data, t.shape, t.dtype);
  }
}

/**
 * Our tensors against the fixture's tensors of the same names (names the fixture lacks are skipped): one
 * Comparison each (a shape mismatch fails it), logged as `ok`/`FAIL` lines.
 */
export function compareToFixture(io: FixtureTensors, produced: Iterable<[string, tf.Tensor]>, atol: number,
  log?: (line: string) => void): Comparison[] {
  const out: Comparison[] = [];
  for (const [name, t] of produced) {
    const ref = io.get(name);
    if (!ref) continue;
    const c = compareArrays(name, t.dataSync(), ref.data, { atol });
    c.shape = ref.shape;
    if (t.shape.join(',') !== ref.shape.join(',')) c.ok = false;
    out.push(c);
    log?.(`${c.ok ? 'ok  ' : 'FAIL'} ${name} [${ref.shape}] max abs ${c.maxAbs.toExponential(2)}`);
  }
  return out;
}

/** A recorded UnCLIPPipeline run: run*.safetensors and the call's settings from the .json next to it (if any). */
export class RecordedRun extends FixtureTensors {
  /** The .json next to the .safetensors ({} when there is none). */
  readonly meta: Record<string, unknown>;

  constructor(file: string, tensors: Map<string, TensorData>) {
    super(file, tensors);
    this.meta = (() => { try { return readJson<Record<string, unknown>>(file.replace(/\.safetensors$/, '.json')); } catch { return {}; } })();
  }

  static override open(file: string): RecordedRun {
    return new RecordedRun(file, loadSafetensors(file));
  }

  /** A number of the recorded call's settings (e.g. decoder_guidance_scale), or the default. */
  setting(key: string, fallback: number): number {
    const v = this.meta[key];
    return typeof v === 'number' ? v : fallback;
  }

  /** The steps of one scheduler in order, as `step.<iii>.<scheduler>.t<T>` prefixes. */
  stepsOf(scheduler: string): string[] {
    const re = new RegExp(`^step\\.\\d+\\.${scheduler}\\.t\\d+\\.prev_sample$`);
    return this.keys().filter((k) => re.test(k)).sort().map((k) => k.replace(/\.prev_sample$/, ''));
  }

  /** The timestep of a step prefix (`...t<T>`). */
  static timestepOf(step: string): number {
    return Number(/\.t(\d+)$/.exec(step)![1]);
  }

  /** Every random draw, in draw order (randn.<iii>.<site>). */
  draws(): string[] {
    return this.keys().filter((k) => /^randn\.\d+\./.test(k)).sort();
  }
}
