// Opening a diffusers-layout Karlo folder (what `UnCLIPPipeline.save_pretrained` writes, e.g. the
// kakaobrain/karlo-v1-alpha repository): model_index.json names each component and its class; each component
// is a sub-folder. Everything is checked up front, so a missing or wrong component is one clear error before
// any weights are read.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findWeightsFile, readJson } from './weights.js';

/** A model folder that cannot be used: missing, incomplete, or with a component of the wrong class. */
export class ModelFolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelFolderError';
  }
}

export type ComponentName =
  | 'tokenizer' | 'text_encoder' | 'prior' | 'text_proj' | 'decoder' | 'super_res_first' | 'super_res_last'
  | 'prior_scheduler' | 'decoder_scheduler' | 'super_res_scheduler';

type Kind = 'model' | 'tokenizer' | 'scheduler';

/** The components of UnCLIPPipeline, their expected class, and what each folder must hold. */
export const UNCLIP_COMPONENTS: Record<ComponentName, { className: string; kind: Kind }> = {
  tokenizer: { className: 'CLIPTokenizer', kind: 'tokenizer' },
  text_encoder: { className: 'CLIPTextModelWithProjection', kind: 'model' },
  prior: { className: 'PriorTransformer', kind: 'model' },
  text_proj: { className: 'UnCLIPTextProjModel', kind: 'model' },
  decoder: { className: 'UNet2DConditionModel', kind: 'model' },
  super_res_first: { className: 'UNet2DModel', kind: 'model' },
  super_res_last: { className: 'UNet2DModel', kind: 'model' },
  prior_scheduler: { className: 'UnCLIPScheduler', kind: 'scheduler' },
  decoder_scheduler: { className: 'UnCLIPScheduler', kind: 'scheduler' },
  super_res_scheduler: { className: 'UnCLIPScheduler', kind: 'scheduler' },
};

export interface ModelFolder {
  /** Absolute path of the folder. */
  root: string;
  /** Absolute path of each component's sub-folder. */
  dirs: Record<ComponentName, string>;
  /** The weights file each model component will load (fp32/fp16/bf16 safetensors; widened at load). */
  weights: Partial<Record<ComponentName, string>>;
  modelIndex: Record<string, unknown>;
}

const TOKENIZER_FILES = ['vocab.json', 'merges.txt'];

/** Class named by a component's own config, when it names one (diffusers: _class_name; transformers: architectures). */
function configClass(cfg: Record<string, unknown>): string | undefined {
  if (typeof cfg._class_name === 'string') return cfg._class_name;
  if (Array.isArray(cfg.architectures) && typeof cfg.architectures[0] === 'string') return cfg.architectures[0];
  return undefined;
}

function readJsonOrFail(file: string, what: string): Record<string, unknown> {
  if (!fs.existsSync(file)) throw new ModelFolderError(`${file}: missing (${what})`);
  try {
    const v = readJson<unknown>(file);
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ModelFolderError(`${file}: ${(e as Error).message.replace(`${file}: `, '')}`);
  }
}

/**
 * Checks a Karlo/unCLIP folder and returns the path of every component. Throws a ModelFolderError naming the
 * file or component at fault: no folder, no model_index.json, a pipeline other than UnCLIPPipeline, a component
 * missing from the index or on disk, a component of another class, a missing config or weights file.
 */
export function openModelFolder(dir: string): ModelFolder {
  const root = path.resolve(dir);
  if (!fs.existsSync(root)) throw new ModelFolderError(`${dir}: model folder does not exist`);
  if (!fs.statSync(root).isDirectory()) throw new ModelFolderError(`${dir}: not a folder (expected a diffusers-layout Karlo folder with model_index.json)`);
  const indexFile = path.join(root, 'model_index.json');
  if (!fs.existsSync(indexFile)) {
    throw new ModelFolderError(`${indexFile}: missing; is ${dir} a diffusers-layout Karlo folder (e.g. kakaobrain/karlo-v1-alpha)?`);
  }
  const index = readJsonOrFail(indexFile, 'pipeline index');
  if (index._class_name !== 'UnCLIPPipeline') {
    throw new ModelFolderError(`${indexFile}: _class_name is ${JSON.stringify(index._class_name)}, expected "UnCLIPPipeline"`);
  }
  const dirs = {} as Record<ComponentName, string>;
  const weights: Partial<Record<ComponentName, string>> = {};
  for (const [name, spec] of Object.entries(UNCLIP_COMPONENTS) as [ComponentName, (typeof UNCLIP_COMPONENTS)[ComponentName]][]) {
    const entry = index[name];
    if (entry === undefined) throw new ModelFolderError(`${indexFile}: component "${name}" (${spec.className}) is missing`);
    if (!Array.isArray(entry) || entry.length !== 2 || entry[1] === null) {
      throw new ModelFolderError(`${indexFile}: component "${name}" must be [library, "${spec.className}"], got ${JSON.stringify(entry)}`);
    }
    if (entry[1] !== spec.className) {
      throw new ModelFolderError(`${indexFile}: component "${name}" is ${JSON.stringify(entry[1])}, expected "${spec.className}"`);
    }
    const d = path.join(root, name);
    if (!fs.existsSync(d) || !fs.statSync(d).isDirectory()) throw new ModelFolderError(`${d}: component folder "${name}" (${spec.className}) is missing`);
    dirs[name] = d;
    if (spec.kind === 'tokenizer') {
      // vocab.json + merges.txt, or only the configs (the tokenizer then uses the bundled CLIP BPE files).
      const hasFiles = TOKENIZER_FILES.every((f) => fs.existsSync(path.join(d, f)));
      if (!hasFiles && !fs.existsSync(path.join(d, 'tokenizer_config.json'))) {
        throw new ModelFolderError(`${d}: tokenizer "${name}" has neither ${TOKENIZER_FILES.join(' + ')} nor tokenizer_config.json`);
      }
    } else if (spec.kind === 'scheduler') {
      const cfg = readJsonOrFail(path.join(d, 'scheduler_config.json'), `scheduler "${name}"`);
      const cls = configClass(cfg);
      if (cls !== undefined && cls !== spec.className) {
        throw new ModelFolderError(`${path.join(d, 'scheduler_config.json')}: _class_name is "${cls}", expected "${spec.className}" for "${name}"`);
      }
    } else {
      const cfgFile = path.join(d, 'config.json');
      const cfg = readJsonOrFail(cfgFile, `config of "${name}"`);
      const cls = configClass(cfg);
      if (cls !== undefined && cls !== spec.className) {
        throw new ModelFolderError(`${cfgFile}: the config is for "${cls}", expected "${spec.className}" for "${name}"`);
      }
      try {
        weights[name] = findWeightsFile(d);
      } catch (e) {
        throw new ModelFolderError(`${(e as Error).message} (component "${name}")`);
      }
    }
  }
  return { root, dirs, weights, modelIndex: index };
}
