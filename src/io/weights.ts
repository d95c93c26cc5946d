// Loading a component's weights from a diffusers/transformers folder (config.json + *.safetensors).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile } from './safetensors.js';
import { brief, printable, readJsonFile } from './files.js';
import type { Module, TensorSource, LoadReport } from '../layers/module.js';

/** A weights source that may span several files; `close()` releases them. */
export type WeightsSource = TensorSource & { close(): void; files: string[] };

/**
 * A safetensors file as a TensorSource (lazy, positioned reads; fp16/bf16/f64 widened to float32). Given a sharded
 * checkpoint's `*.safetensors.index.json`, a source over all its shards.
 */
export function safetensorsSource(file: string): WeightsSource {
  if (file.endsWith('.json')) return shardedSource(file);
  const f = SafetensorsFile.open(file);
  return {
    files: [file],
    names: () => f.names(),
    shape: (n) => f.info(n).shape,
    read: (n) => f.read(n),
    describe: () => file,
    close: () => f.close(),
  };
}

/** The shard files of a `*.safetensors.index.json` and which shard holds each tensor. */
export function readShardIndex(indexFile: string): { shards: string[]; weightMap: Map<string, string> } {
  const j = readJson<{ weight_map?: unknown }>(indexFile);
  const wm = j && typeof j === 'object' ? j.weight_map : undefined;
  if (!wm || typeof wm !== 'object' || Array.isArray(wm)) throw new Error(`${indexFile}: no "weight_map" object (not a sharded safetensors index)`);
  const dir = path.dirname(indexFile);
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== 'string' || !shard || shard.includes('/') || shard.includes('\\') || shard === '..') {
      throw new Error(`${indexFile}: weight_map[${brief(name)}] is not a shard file name: ${brief(shard)}`);
    }
    weightMap.set(name, path.join(dir, shard));
  }
  const shards = [...new Set(weightMap.values())];
  for (const s of shards) if (!fs.existsSync(s)) throw new Error(`${s}: shard listed in ${indexFile} is missing`);
  return { shards, weightMap };
}

/** A TensorSource over a sharded checkpoint; every tensor must sit in the shard the index names, and nowhere else. */
export function shardedSource(indexFile: string): WeightsSource & { shardFiles: SafetensorsFile[] } {
  const { shards, weightMap } = readShardIndex(indexFile);
  const open: SafetensorsFile[] = [];
  try {
    const byFile = new Map<string, SafetensorsFile>();
    for (const s of shards) {
      const f = SafetensorsFile.open(s);
      open.push(f);
      byFile.set(s, f);
    }
    for (const [name, s] of weightMap) {
      if (!byFile.get(s)!.has(name)) throw new Error(`${s}: tensor "${name}" is missing (${path.basename(indexFile)} places it in this shard)`);
    }
    for (const f of open) {
      for (const n of f.names()) {
        if (weightMap.get(n) !== f.file) throw new Error(`${f.file}: tensor "${n}" is not assigned to this shard by ${path.basename(indexFile)}`);
      }
    }
    const fileOf = (n: string) => {
      const s = weightMap.get(n);
      if (!s) throw new Error(`${indexFile}: no tensor named "${n}"`);
      return byFile.get(s)!;
    };
    return {
      shardFiles: open,
      files: shards,
      names: () => [...weightMap.keys()],
      shape: (n) => fileOf(n).info(n).shape,
      read: (n) => fileOf(n).read(n),
      describe: (n) => (n && weightMap.has(n) ? weightMap.get(n)! : indexFile),
      close: () => { for (const f of open) f.close(); },
    };
  } catch (e) {
    for (const f of open) f.close();
    throw e;
  }
}

/** Weight file names of a component folder, in the order they are looked for (diffusers, transformers, variants). */
export const WEIGHT_FILES = [
  'diffusion_pytorch_model.safetensors', 'model.safetensors',
  'diffusion_pytorch_model.safetensors.index.json', 'model.safetensors.index.json',
  'diffusion_pytorch_model.fp16.safetensors', 'model.fp16.safetensors',
  'diffusion_pytorch_model.safetensors.index.fp16.json', 'model.safetensors.index.fp16.json',
  'diffusion_pytorch_model.bf16.safetensors', 'model.bf16.safetensors',
];

/**
 * The weights file of a component folder (a sharded checkpoint's index.json, which safetensorsSource accepts);
 * an error naming the folder and every name looked for when there is none.
 */
export function findWeightsFile(dir: string): string {
  let entries: string[];
  try { entries = fs.readdirSync(dir); } catch {
    throw new Error(`${dir}: component folder does not exist or cannot be read`);
  }
  for (const n of WEIGHT_FILES) if (entries.includes(n)) return path.join(dir, n);
  const others = entries.filter((n) => n.endsWith('.safetensors') && !/-\d+-of-\d+\.safetensors$/.test(n));
  if (others.length === 1) return path.join(dir, others[0]);
  if (others.length > 1) throw new Error(`${dir}: several .safetensors files (${others.join(', ')}); expected one of ${WEIGHT_FILES.join(', ')}`);
  const bins = entries.filter((n) => n.endsWith('.bin') || n.endsWith('.ckpt') || n.endsWith('.pt') || n.endsWith('.pth'));
  throw new Error(`${dir}: no weights file (looked for ${WEIGHT_FILES.join(', ')})${bins.length ? `; found ${bins.join(', ')}: convert PyTorch files with \`karlo convert\`` : ''}`);
}

/**
 * Reads and parses `config.json` (or another JSON file) of a folder, naming the file on error. Only a regular file
 * of at most MAX_TEXT_BYTES is read (files.ts); the error never quotes the file's content.
 */
export function readJson<T = Record<string, unknown>>(file: string): T {
  return readJsonFile(file, { what: 'JSON file' }) as T;
}

export function readConfig<T = Record<string, unknown>>(dir: string): T {
  return readJson<T>(path.join(dir, 'config.json'));
}

/** Where load-time warnings go (default: one line on stderr). Tests and embedders may replace it. */
export let weightsWarning: (line: string) => void = (line) => { process.stderr.write(`karlo: warning: ${line}\n`); };
export function setWeightsWarning(fn: (line: string) => void): (line: string) => void {
  const prev = weightsWarning;
  weightsWarning = fn;
  return prev;
}

/** NaN / ±Inf values of a tensor's data. */
export function countNonFinite(data: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v !== v || v === Infinity || v === -Infinity) n++;
  }
  return n;
}

/**
 * Loads a component folder's weights into a module (strict: every key must match). Weights that are NaN or ±Inf
 * are loaded as they are, with one warning for the component (how many values, in how many tensors, the first).
 */
let weightsReadListener: ((dir: string, bytes: number) => void) | null = null;

/**
 * Called after each tensor loadWeights reads, with the component folder and the tensor's bytes in memory (float32):
 * the CLI's byte progress while a component loads. null removes it.
 */
export function setWeightsReadListener(fn: ((dir: string, bytes: number) => void) | null): void {
  weightsReadListener = fn;
}

export function loadWeights(module: Module, dir: string, opts: { strict?: boolean; trainable?: boolean; ignore?: ReadonlySet<string>; source?: TensorSource } = {}): LoadReport {
  // `source`: the folder's tensors from another reader (a prefetcher); the caller closes it.
  const src: TensorSource & { close?(): void } = opts.source ?? safetensorsSource(findWeightsFile(dir));
  let bad = 0;
  const badTensors: string[] = [];
  const ignore = opts.ignore;
  const counted: TensorSource = {
    ...src,
    // `ignore`: keys a checkpoint may carry that are no parameter (buffers older checkpoints saved).
    names: ignore?.size ? () => src.names().filter((n) => !ignore.has(n)) : src.names,
    read: (n) => {
      const t = src.read(n);
      weightsReadListener?.(dir, t.data.byteLength);
      if (t.dtype === 'float32') {
        const k = t.nonFinite ?? countNonFinite(t.data);
        if (k) { bad += k; badTensors.push(n); }
      }
      return t;
    },
  };
  try {
    const report = module.loadStateDict(counted, { strict: opts.strict, trainable: opts.trainable });
    if (bad) {
      weightsWarning(`${printable(dir)}: ${bad} weight value${bad === 1 ? ' is' : 's are'} NaN or infinite, in ${badTensors.length} tensor${badTensors.length === 1 ? '' : 's'} (first: "${printable(badTensors[0])}"); this component's outputs will not be finite`);
    }
    return report;
  } finally {
    if (!opts.source) src.close?.();
  }
}
