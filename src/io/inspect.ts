// What `karlo inspect PATH` reports: the tensors (name, dtype, shape) and parameter counts of a .safetensors file, a
// sharded checkpoint index, a component folder (config.json + weights) or a diffusers pipeline folder
// (model_index.json + component folders). Reads headers only, never tensor data.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile, numel } from './safetensors.js';
import { findWeightsFile, readJson, readShardIndex } from './weights.js';
import { TorchCheckpoint } from './torch/checkpoint.js';
import { configClass } from './config_class.js';

export interface InspectTensor {
  name: string;
  dtype: string;
  shape: number[];
}

export interface InspectComponent {
  name: string;
  class: string | null;
  parameters: number;
  tensors: InspectTensor[];
}

export interface InspectResult {
  components: InspectComponent[];
  parameters: number;
}

/** Extra facts for the human-readable listing (not part of the JSON contract). */
export interface InspectDetails {
  kind: 'file' | 'torch' | 'sharded' | 'component' | 'pipeline';
  pipelineClass: string | null;
  /** Weight file(s) of each component, by component name. */
  files: Record<string, string[]>;
  /** Components of model_index.json not listed (schedulers, unset entries), with their class. */
  skipped: { name: string; class: string | null; why: string }[];
}

/** Bad input for inspect: the message names the file or folder at fault. */
export class InspectError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InspectError';
  }
}

function tensorsOfFile(file: string): InspectTensor[] {
  const f = SafetensorsFile.open(file);
  try {
    return f.names().map((n) => {
      const t = f.info(n);
      return { name: n, dtype: t.dtype, shape: [...t.shape] };
    });
  } finally {
    f.close();
  }
}

/** PyTorch files (torch.save zip or legacy pickle, Lightning .ckpt, TorchScript), read by the safe torch reader. */
const TORCH_EXT = /\.(pt|pth|ckpt|bin|th|pkl|jit)$/i;

/** Tensors of a PyTorch file (no code runs: the whitelisted unpickler; tensor data is not read). */
function tensorsOfTorchFile(file: string): InspectTensor[] {
  const ck = TorchCheckpoint.open(file);
  try {
    return [...ck.tensors()].map(([name, t]) => ({ name, dtype: t.dtype, shape: [...t.shape] }));
  } finally {
    ck.close();
  }
}

/** Tensors of a weights file: a .safetensors file, a PyTorch file, or a sharded index (all its shards, in index order). */
function tensorsOfWeights(file: string): { tensors: InspectTensor[]; files: string[] } {
  if (TORCH_EXT.test(file)) return { tensors: tensorsOfTorchFile(file), files: [file] };
  if (!file.endsWith('.json')) return { tensors: tensorsOfFile(file), files: [file] };
  const { shards, weightMap } = readShardIndex(file);
  const byName = new Map<string, InspectTensor>();
  for (const s of shards) {
    for (const t of tensorsOfFile(s)) {
      if (weightMap.get(t.name) !== s) throw new InspectError(`${s}: tensor "${t.name}" is not assigned to this shard by ${path.basename(file)}`);
      byName.set(t.name, t);
    }
  }
  for (const [n, s] of weightMap) if (!byName.has(n)) throw new InspectError(`${s}: tensor "${n}" is missing (${path.basename(file)} places it in this shard)`);
  return { tensors: [...weightMap.keys()].map((n) => byName.get(n)!), files: shards };
}

function component(name: string, cls: string | null, tensors: InspectTensor[]): InspectComponent {
  let parameters = 0;
  for (const t of tensors) parameters += numel(t.shape);
  return { name, class: cls, parameters, tensors };
}

/** The class a component folder's own config names (diffusers `_class_name`, transformers `architectures[0]`). */
function classOfFolder(dir: string): string | null {
  const cfgFile = path.join(dir, 'config.json');
  if (!fs.existsSync(cfgFile)) return null;
  const cfg = readJson<Record<string, unknown>>(cfgFile);
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw new InspectError(`${cfgFile}: not a JSON object`);
  return configClass(cfg) ?? null;
}

const NON_MODEL_CONFIGS = ['tokenizer_config.json', 'preprocessor_config.json', 'vocab.json', 'tokenizer.json'];
const NON_MODEL_CLASS = /(Tokenizer|Scheduler|FeatureExtractor|ImageProcessor|Processor)(Fast)?$/;

function inspectPipeline(dir: string): { result: InspectResult; details: InspectDetails } {
  const indexFile = path.join(dir, 'model_index.json');
  const idx = readJson<unknown>(indexFile);
  if (!idx || typeof idx !== 'object' || Array.isArray(idx)) throw new InspectError(`${indexFile}: not a JSON object`);
  const entries = idx as Record<string, unknown>;
  const details: InspectDetails = {
    kind: 'pipeline',
    pipelineClass: typeof entries._class_name === 'string' ? entries._class_name : null,
    files: Object.create(null) as Record<string, string[]>, // component names come from the file (__proto__ too)
    skipped: [],
  };
  const components: InspectComponent[] = [];
  for (const [name, spec] of Object.entries(entries)) {
    if (name.startsWith('_')) continue;
    if (!Array.isArray(spec) || spec.length !== 2) {
      throw new InspectError(`${indexFile}: component "${name}" is ${JSON.stringify(spec)}, expected [library, class]`);
    }
    const cls = typeof spec[1] === 'string' ? spec[1] : null;
    const sub = path.join(dir, name);
    if (spec[0] === null && spec[1] === null) {
      details.skipped.push({ name, class: null, why: 'not set in model_index.json' });
      continue;
    }
    if (!fs.existsSync(sub) || !fs.statSync(sub).isDirectory()) {
      throw new InspectError(`${sub}: component folder "${name}" (${cls ?? 'unknown class'}) named in ${indexFile} is missing`);
    }
    const files = fs.readdirSync(sub);
    // Schedulers are configuration only and are not listed; tokenizers / processors are listed with no tensors.
    if (files.includes('scheduler_config.json') || (cls !== null && /Scheduler$/.test(cls))) {
      details.skipped.push({ name, class: cls, why: 'scheduler (configuration only)' });
      continue;
    }
    const hasConfig = files.includes('config.json');
    const configOnly = !hasConfig && (NON_MODEL_CONFIGS.some((f) => files.includes(f)) || (cls !== null && NON_MODEL_CLASS.test(cls)));
    if (configOnly && !files.some((f) => f.endsWith('.safetensors') || f.endsWith('.safetensors.index.json'))) {
      details.files[name] = [];
      components.push(component(name, cls, []));
      continue;
    }
    const weights = findWeightsFile(sub);
    const { tensors, files: wf } = tensorsOfWeights(weights);
    details.files[name] = wf;
    components.push(component(name, cls ?? classOfFolder(sub), tensors));
  }
  return { result: total(components), details };
}

function total(components: InspectComponent[]): InspectResult {
  return { components, parameters: components.reduce((a, c) => a + c.parameters, 0) };
}

/**
 * Inspects PATH. Errors (missing path, malformed files, folders with nothing to inspect) are InspectError or
 * SafetensorsError/Error whose message names the file at fault.
 */
export function inspectPath(p: string): { result: InspectResult; details: InspectDetails } {
  if (!fs.existsSync(p)) throw new InspectError(`${p}: no such file or folder`);
  const st = fs.statSync(p);
  if (st.isFile()) {
    const { tensors, files } = tensorsOfWeights(p);
    const kind = p.endsWith('.json') ? 'sharded' : TORCH_EXT.test(p) ? 'torch' : 'file';
    const name = path.basename(p);
    return { result: total([component(name, null, tensors)]), details: { kind, pipelineClass: null, files: { [name]: files }, skipped: [] } };
  }
  if (!st.isDirectory()) throw new InspectError(`${p}: not a file or folder`);
  if (fs.existsSync(path.join(p, 'model_index.json'))) return inspectPipeline(p);
  let weights: string;
  try {
    weights = findWeightsFile(p);
  } catch (e) {
    throw new InspectError(`${(e as Error).message}; nor is it a pipeline folder (no model_index.json)`);
  }
  const name = path.basename(path.resolve(p));
  const { tensors, files } = tensorsOfWeights(weights);
  return { result: total([component(name, classOfFolder(p), tensors)]), details: { kind: 'component', pipelineClass: null, files: { [name]: files }, skipped: [] } };
}
