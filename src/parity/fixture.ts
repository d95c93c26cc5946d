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

/**
 * Whether `dir/<file>` (config.json, or model_index.json for a pipeline) names `className` (io/config_class.ts:
 * diffusers _class_name, transformers architectures), and every file in `need` exists beside it. A parity kind's
 * detect(): false, never an error, for anything else.
 */
export function namesClass(dir: string, className: string, opts: { file?: string; need?: string[] } = {}): boolean {
  const file = path.join(dir, opts.file ?? 'config.json');
  if (!fs.existsSync(file) || !(opts.need ?? []).every((n) => fs.existsSync(path.join(dir, n)))) return false;
  try {
    return configClass(readJson(file)) === className;
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
