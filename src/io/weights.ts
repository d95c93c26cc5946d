// Loading a component's weights from a diffusers/transformers folder (config.json + *.safetensors).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile } from './safetensors.js';
import type { Module, TensorSource, LoadReport } from '../layers/module.js';

/** A safetensors file as a TensorSource (lazy, positioned reads; fp16/bf16/f64 widened to float32). */
export function safetensorsSource(file: string): TensorSource & { close(): void; file: SafetensorsFile } {
  const f = SafetensorsFile.open(file);
  return {
    file: f,
    names: () => f.names(),
    shape: (n) => f.info(n).shape,
    read: (n) => f.read(n),
    describe: () => file,
    close: () => f.close(),
  };
}

const WEIGHT_FILES = ['diffusion_pytorch_model.safetensors', 'model.safetensors', 'diffusion_pytorch_model.fp16.safetensors', 'model.fp16.safetensors'];

/** The weights file of a component folder; an error naming the folder when there is none. */
export function findWeightsFile(dir: string): string {
  for (const n of WEIGHT_FILES) {
    const p = path.join(dir, n);
    if (fs.existsSync(p)) return p;
  }
  let others: string[] = [];
  try { others = fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors')); } catch {
    throw new Error(`${dir}: component folder does not exist`);
  }
  if (others.length === 1) return path.join(dir, others[0]);
  if (others.length > 1) throw new Error(`${dir}: several .safetensors files (${others.join(', ')}); expected one of ${WEIGHT_FILES.join(', ')}`);
  const bins = fs.readdirSync(dir).filter((n) => n.endsWith('.bin') || n.endsWith('.ckpt') || n.endsWith('.pt'));
  throw new Error(`${dir}: no weights file (expected ${WEIGHT_FILES[0]} or ${WEIGHT_FILES[1]})${bins.length ? `; found ${bins.join(', ')}: convert PyTorch files with \`karlo convert\`` : ''}`);
}

/** Reads and parses `config.json` (or another JSON file) of a folder, naming the file on error. */
export function readJson<T = Record<string, unknown>>(file: string): T {
  let text: string;
  try { text = fs.readFileSync(file, 'utf8'); } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try { return JSON.parse(text) as T; } catch (e) {
    throw new Error(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

export function readConfig<T = Record<string, unknown>>(dir: string): T {
  return readJson<T>(path.join(dir, 'config.json'));
}

/** Loads a component folder's weights into a module (strict: every key must match). */
export function loadWeights(module: Module, dir: string, opts: { strict?: boolean; trainable?: boolean } = {}): LoadReport {
  const src = safetensorsSource(findWeightsFile(dir));
  try {
    return module.loadStateDict(src, opts);
  } finally {
    src.close();
  }
}
