// Training checkpoints, written atomically in the diffusers layout:
//
//   <out>/checkpoint-<step>/
//     <component>/config.json + diffusion_pytorch_model.safetensors (model.safetensors for the text encoder)
//                                           full fine-tuning: the whole trained component folder
//     pytorch_lora_weights.safetensors      LoRA: the adapters only (peft/diffusers key names)
//     model_index.json + links              full fine-tuning: the other components link to the base model's folders,
//                                           so the checkpoint is itself a pipeline folder for `karlo generate --model`
//     optimizer.safetensors                 AdamW moments: exp_avg.<param>, exp_avg_sq.<param>
//     training_weights.safetensors          --ema-decay runs: the trained weights (tfjs layout); the component
//                                           folders then hold the moving averages (what generate should use)
//     training_state.json                   step, data position, RNG state, per-parameter AdamW steps, loss history,
//                                           the run's settings (checked on resume)
//
// The folder is built under `.checkpoint-<step>.partial-<pid>` and renamed into place, so a checkpoint is either
// complete or absent (a kill mid-write leaves only the partial folder, removed by the next run).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors, saveSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { writeFileAtomic } from '../io/png.js';
import type { Module } from '../layers/module.js';
import type { AdamWState } from './adamw.js';
import type { EmaState } from './ema.js';
import type { LossPoint } from './plot.js';

export const STATE_FILE = 'training_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const LORA_FILE = 'pytorch_lora_weights.safetensors';
const STATE_FORMAT = 'karlo-training-state';

/** The run settings a resume must agree with (others may change, at the cost of bit-exactness). */
export interface RunIdentity {
  component: string;
  /** Folder name of the component in the model folder (decoder, prior, super_res_first, ...). */
  componentDir: string;
  lora: { rank: number; alpha: number } | null;
  /** Trainable parameter names (hash-free: the list itself is small enough to compare). */
  trainable: string[];
}

export interface TrainingState {
  format: typeof STATE_FORMAT;
  version: 1;
  /** Optimizer steps done. */
  step: number;
  /** Training samples drawn so far (the data sampler's position). */
  samplesSeen: number;
  /** torch-compatible generator state (TorchGenerator.toTorchState), base64. */
  rng: string;
  optimizer: Pick<AdamWState, 'step' | 'paramSteps' | 'options'>;
  identity: RunIdentity;
  /** Everything else about the run, for the record (lr, batch, seed, ...). */
  settings: Record<string, unknown>;
  losses: LossPoint[];
  baseModel: string;
  /** --ema-decay runs: the component folders hold the averages, TRAINING_WEIGHTS_FILE the trained weights. */
  ema?: EmaState;
}

export interface CheckpointWeights {
  /** Full fine-tuning: the trained module and the base component folder (its config.json is copied). */
  full?: {
    module: Module; baseComponentDir: string; weightsName: string;
    /** More trained component folders of the same run (e.g. image_encoder/ beside text_encoder/ for --component clip). */
    extra?: { module: Module; componentDir: string; baseComponentDir: string; weightsName: string }[];
  };
  /** LoRA: writes the adapters file (peft names) to the path given. */
  lora?: (file: string) => void;
  /** More safetensors files at the checkpoint's top level (e.g. the trained weights of an EMA run). */
  files?: { name: string; tensors: Map<string, TensorToWrite>; format: string }[];
}

/** An EMA run's trained (not averaged) weights, by trainable-parameter name in tfjs layout: what --resume continues. */
export const TRAINING_WEIGHTS_FILE = 'training_weights.safetensors';

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes `.checkpoint-*.partial-<pid>` folders of processes that no longer run. */
export function removeStalePartials(outDir: string): string[] {
  const removed: string[] = [];
  let names: string[] = [];
  try { names = fs.readdirSync(outDir); } catch { return removed; }
  for (const n of names) {
    const m = /^\.checkpoint-\d+\.(?:partial|old)-(\d+)$/.exec(n);
    if (!m || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
    fs.rmSync(path.join(outDir, n), { recursive: true, force: true });
    removed.push(path.join(outDir, n));
  }
  return removed;
}

export function checkpointDir(outDir: string, step: number): string {
  return path.join(outDir, `checkpoint-${step}`);
}

/** A module's state dict as safetensors tensors (PyTorch layout; conv weights transposed back once). */
export function stateDictTensors(module: Module): Map<string, TensorToWrite> {
  const out = new Map<string, TensorToWrite>();
  for (const [k, p] of module.namedParameters()) {
    out.set(k, {
      dtype: 'F32',
      shape: p.torchShape,
      data: () => {
        const t = p.toTorch();
        try {
          return t.dataSync() as Float32Array;
        } finally {
          t.dispose();
        }
      },
    });
  }
  return out;
}

function writeJson(file: string, v: unknown): void {
  writeFileAtomic(file, Buffer.from(`${JSON.stringify(v, null, 1)}\n`));
}

/**
 * Writes `<outDir>/checkpoint-<state.step>` atomically (replacing one of the same step) and returns its path.
 * optimizerTensors: AdamW state tensors (exp_avg.* / exp_avg_sq.*), read here, not disposed.
 */
export function saveCheckpoint(
  outDir: string,
  state: Omit<TrainingState, 'format' | 'version'>,
  weights: CheckpointWeights,
  optimizerTensors: Map<string, tf.Tensor>,
  baseModel: { root: string; dirs: Record<string, string>; modelIndex: Record<string, unknown> },
): string {
  fs.mkdirSync(outDir, { recursive: true });
  removeStalePartials(outDir);
  const final = checkpointDir(outDir, state.step);
  const tmp = path.join(outDir, `.checkpoint-${state.step}.partial-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    const compDir = state.identity.componentDir;
    if (weights.full) {
      const dir = path.join(tmp, compDir);
      fs.mkdirSync(dir);
      fs.copyFileSync(path.join(weights.full.baseComponentDir, 'config.json'), path.join(dir, 'config.json'));
      saveSafetensors(path.join(dir, weights.full.weightsName), stateDictTensors(weights.full.module));
      const extraDirs = new Set((weights.full.extra ?? []).map((e) => e.componentDir));
      for (const e of weights.full.extra ?? []) {
        const ed = path.join(tmp, e.componentDir);
        fs.mkdirSync(ed);
        fs.copyFileSync(path.join(e.baseComponentDir, 'config.json'), path.join(ed, 'config.json'));
        saveSafetensors(path.join(ed, e.weightsName), stateDictTensors(e.module));
      }
      // The rest of the pipeline: links to the base model's component folders.
      fs.writeFileSync(path.join(tmp, 'model_index.json'), `${JSON.stringify(baseModel.modelIndex, null, 2)}\n`);
      for (const [name, d] of Object.entries(baseModel.dirs)) {
        if (name === compDir || extraDirs.has(name)) continue;
        fs.symlinkSync(fs.realpathSync(d), path.join(tmp, name), 'dir');
      }
      for (const extra of ['image_encoder', 'feature_extractor']) {
        const d = path.join(baseModel.root, extra);
        if (fs.existsSync(d) && extra !== compDir && !extraDirs.has(extra)) fs.symlinkSync(fs.realpathSync(d), path.join(tmp, extra), 'dir');
      }
    }
    if (weights.lora) weights.lora(path.join(tmp, LORA_FILE));
    for (const file of weights.files ?? []) saveSafetensors(path.join(tmp, file.name), file.tensors, { format: file.format });
    const opt = new Map<string, TensorToWrite>();
    for (const k of [...optimizerTensors.keys()].sort()) {
      const t = optimizerTensors.get(k)!;
      opt.set(k, { dtype: 'F32', shape: [...t.shape], data: () => t.dataSync() as Float32Array });
    }
    saveSafetensors(path.join(tmp, OPTIMIZER_FILE), opt, { format: 'karlo-adamw' });
    writeJson(path.join(tmp, STATE_FILE), { format: STATE_FORMAT, version: 1, ...state });
    if (fs.existsSync(final)) {
      const old = path.join(outDir, `.checkpoint-${state.step}.old-${process.pid}`);
      fs.renameSync(final, old);
      fs.renameSync(tmp, final);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, final);
    }
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return final;
}

/** The checkpoint a --resume argument names: a checkpoint folder, or an output folder (its latest checkpoint). */
export function resolveCheckpoint(p: string): string {
  const abs = path.resolve(p);
  if (!fs.existsSync(abs)) throw new Error(`${p}: no such checkpoint folder`);
  if (!fs.statSync(abs).isDirectory()) throw new Error(`${p}: not a folder (pass a checkpoint-<step> folder or the run's --out folder)`);
  if (fs.existsSync(path.join(abs, STATE_FILE))) return abs;
  const steps = fs.readdirSync(abs)
    .map((n) => /^checkpoint-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && fs.existsSync(path.join(abs, m[0], STATE_FILE)))
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  if (!steps.length) throw new Error(`${p}: no ${STATE_FILE} here and no checkpoint-<step> folder with one`);
  return checkpointDir(abs, steps[steps.length - 1]);
}

export interface LoadedCheckpoint {
  dir: string;
  state: TrainingState;
  /** exp_avg.* / exp_avg_sq.* tensors (the caller disposes them). */
  optimizerTensors: Map<string, tf.Tensor>;
  /** Full fine-tuning: the component folder with the trained weights. */
  componentDir?: string;
  /** LoRA: the adapters file. */
  loraFile?: string;
}

/** Reads a checkpoint folder written by saveCheckpoint (validating its state file). */
export function loadCheckpoint(dir: string): LoadedCheckpoint {
  const file = path.join(dir, STATE_FILE);
  let state: TrainingState;
  try {
    state = JSON.parse(fs.readFileSync(file, 'utf8')) as TrainingState;
  } catch (e) {
    throw new Error(`${file}: cannot read the training state (${(e as Error).message})`);
  }
  if (state?.format !== STATE_FORMAT || state.version !== 1) throw new Error(`${file}: not a karlo training state (format ${JSON.stringify(state?.format)}, version ${JSON.stringify(state?.version)})`);
  for (const k of ['step', 'samplesSeen'] as const) {
    if (!Number.isInteger(state[k]) || state[k] < 0) throw new Error(`${file}: "${k}" must be a non-negative integer, got ${JSON.stringify(state[k])}`);
  }
  if (typeof state.rng !== 'string') throw new Error(`${file}: "rng" (base64 generator state) is missing`);
  const optFile = path.join(dir, OPTIMIZER_FILE);
  if (!fs.existsSync(optFile)) throw new Error(`${optFile}: missing (the optimizer state of the checkpoint)`);
  const optimizerTensors = new Map<string, tf.Tensor>();
  for (const [k, t] of loadSafetensors(optFile)) optimizerTensors.set(k, tf.tensor(t.data, t.shape, 'float32'));
  const out: LoadedCheckpoint = { dir, state, optimizerTensors };
  if (state.identity.lora) {
    out.loraFile = path.join(dir, LORA_FILE);
    if (!fs.existsSync(out.loraFile)) throw new Error(`${out.loraFile}: missing (the checkpoint was written by a LoRA run)`);
  } else {
    out.componentDir = path.join(dir, state.identity.componentDir);
    if (!fs.existsSync(path.join(out.componentDir, 'config.json'))) throw new Error(`${out.componentDir}: missing the trained component folder`);
  }
  return out;
}
