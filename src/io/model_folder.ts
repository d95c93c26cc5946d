// Opening a diffusers-layout Karlo folder (what `UnCLIPPipeline.save_pretrained` writes, e.g. the
// kakaobrain/karlo-v1-alpha repository; or `UnCLIPImageVariationPipeline`'s, kakaobrain/karlo-v1-alpha-image-
// variations): model_index.json names each component and its class; each component is a sub-folder. Everything
// is checked up front, so a missing or wrong component is one clear error before any weights are read.
// A component may also be a link to a folder elsewhere: a symbolic link, or a small text file holding a relative
// path (what git checks a symbolic link out as where links are off; the fixtures' variation_tiny shares its
// components with pipeline_tiny that way, and so does the bundled models/karlo-tiny-variations).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findWeightsFile, readJson } from './weights.js';
import { checkConfigClass } from './config_class.js';

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

type Kind = 'model' | 'tokenizer' | 'scheduler' | 'processor';

export interface ComponentSpec {
  className: string;
  kind: Kind;
}

/** A pipeline class: its model_index.json _class_name and the components it needs. */
export interface PipelineSpec<C extends string> {
  className: string;
  components: Record<C, ComponentSpec>;
  /**
   * Other _class_name values whose folders this pipeline can also run, when they list every component above
   * (an UnCLIPPipeline folder with image_encoder/ and feature_extractor/, like models/karlo-nano, runs image
   * variation too).
   */
  alsoRuns?: string[];
  /** Where such a folder comes from, for error messages. */
  example: string;
}

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

export const UNCLIP_PIPELINE: PipelineSpec<ComponentName> = {
  className: 'UnCLIPPipeline', components: UNCLIP_COMPONENTS, example: 'kakaobrain/karlo-v1-alpha',
};

export type VariationComponentName =
  | 'tokenizer' | 'text_encoder' | 'text_proj' | 'decoder' | 'super_res_first' | 'super_res_last'
  | 'decoder_scheduler' | 'super_res_scheduler' | 'image_encoder' | 'feature_extractor';

/** The components of UnCLIPImageVariationPipeline: no prior; a CLIP image encoder and its image processor. */
export const VARIATION_PIPELINE: PipelineSpec<VariationComponentName> = {
  className: 'UnCLIPImageVariationPipeline',
  components: {
    tokenizer: UNCLIP_COMPONENTS.tokenizer,
    text_encoder: UNCLIP_COMPONENTS.text_encoder,
    text_proj: UNCLIP_COMPONENTS.text_proj,
    decoder: UNCLIP_COMPONENTS.decoder,
    super_res_first: UNCLIP_COMPONENTS.super_res_first,
    super_res_last: UNCLIP_COMPONENTS.super_res_last,
    decoder_scheduler: UNCLIP_COMPONENTS.decoder_scheduler,
    super_res_scheduler: UNCLIP_COMPONENTS.super_res_scheduler,
    image_encoder: { className: 'CLIPVisionModelWithProjection', kind: 'model' },
    feature_extractor: { className: 'CLIPImageProcessor', kind: 'processor' },
  },
  alsoRuns: ['UnCLIPPipeline'],
  example: 'kakaobrain/karlo-v1-alpha-image-variations (the text-to-image components plus image_encoder/ and feature_extractor/)',
};

export interface ModelFolder<C extends string = ComponentName> {
  /** Absolute path of the folder. */
  root: string;
  /** Absolute path of each component's sub-folder (links resolved). */
  dirs: Record<C, string>;
  /** The weights file each model component will load (fp32/fp16/bf16 safetensors; widened at load). */
  weights: Partial<Record<C, string>>;
  modelIndex: Record<string, unknown>;
}

/**
 * The folder of component `name` under `root`: the sub-folder itself (or what a symbolic link points to), or,
 * when `root/name` is a small regular file holding one relative path (a git symlink checked out without link
 * support), the folder that path names relative to `root`. Undefined when there is no such folder.
 */
export function componentDir(root: string, name: string): string | undefined {
  const p = path.join(root, name);
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    return undefined;
  }
  if (st.isDirectory()) return p;
  if (!st.isFile() || st.size === 0 || st.size > 1024) return undefined;
  const target = fs.readFileSync(p, 'utf8').trim();
  if (!target || /[\n\r\0]/.test(target) || path.isAbsolute(target)) return undefined;
  const d = path.resolve(root, target);
  try {
    return fs.statSync(d).isDirectory() ? d : undefined;
  } catch {
    return undefined;
  }
}

const TOKENIZER_FILES = ['vocab.json', 'merges.txt'];

function classOrFail(cfg: Record<string, unknown>, expected: string, file: string, name: string): void {
  try {
    checkConfigClass(cfg, expected, file, ` for "${name}"`);
  } catch (e) {
    throw new ModelFolderError((e as Error).message);
  }
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
 * file or component at fault: no folder, no model_index.json, a pipeline other than `spec`'s (default
 * UnCLIPPipeline), a component missing from the index or on disk, a component of another class, a missing config
 * or weights file.
 */
export function openModelFolder(dir: string): ModelFolder<ComponentName>;
export function openModelFolder<C extends string>(dir: string, spec: PipelineSpec<C>): ModelFolder<C>;
export function openModelFolder<C extends string>(dir: string, spec: PipelineSpec<C> = UNCLIP_PIPELINE as unknown as PipelineSpec<C>): ModelFolder<C> {
  const root = path.resolve(dir);
  if (!fs.existsSync(root)) throw new ModelFolderError(`${dir}: model folder does not exist`);
  if (!fs.statSync(root).isDirectory()) throw new ModelFolderError(`${dir}: not a folder (expected a diffusers-layout Karlo folder with model_index.json)`);
  const indexFile = path.join(root, 'model_index.json');
  if (!fs.existsSync(indexFile)) {
    throw new ModelFolderError(`${indexFile}: missing; is ${dir} a diffusers-layout Karlo folder (e.g. ${spec.example})?`);
  }
  const index = readJsonOrFail(indexFile, 'pipeline index');
  const alsoRuns = spec.alsoRuns?.includes(index._class_name as string) && Object.keys(spec.components).every((c) => index[c] !== undefined);
  if (index._class_name !== spec.className && !alsoRuns) {
    throw new ModelFolderError(`${indexFile}: _class_name is ${JSON.stringify(index._class_name)}, expected "${spec.className}" (e.g. ${spec.example})`);
  }
  const pipelineSpec = spec;
  const dirs = {} as Record<C, string>;
  const weights: Partial<Record<C, string>> = {};
  for (const [name, spec] of Object.entries(pipelineSpec.components) as [C, ComponentSpec][]) {
    const entry = index[name];
    if (entry === undefined) throw new ModelFolderError(`${indexFile}: component "${name}" (${spec.className}) is missing`);
    if (!Array.isArray(entry) || entry.length !== 2 || entry[1] === null) {
      throw new ModelFolderError(`${indexFile}: component "${name}" must be [library, "${spec.className}"], got ${JSON.stringify(entry)}`);
    }
    if (entry[1] !== spec.className) {
      throw new ModelFolderError(`${indexFile}: component "${name}" is ${JSON.stringify(entry[1])}, expected "${spec.className}"`);
    }
    const d = componentDir(root, name);
    if (!d) throw new ModelFolderError(`${path.join(root, name)}: component folder "${name}" (${spec.className}) is missing`);
    dirs[name] = d;
    if (spec.kind === 'tokenizer') {
      // vocab.json + merges.txt, or only the configs (the tokenizer then uses the bundled CLIP BPE files).
      const hasFiles = TOKENIZER_FILES.every((f) => fs.existsSync(path.join(d, f)));
      if (!hasFiles && !fs.existsSync(path.join(d, 'tokenizer_config.json'))) {
        throw new ModelFolderError(`${d}: tokenizer "${name}" has neither ${TOKENIZER_FILES.join(' + ')} nor tokenizer_config.json`);
      }
    } else if (spec.kind === 'processor') {
      const file = path.join(d, 'preprocessor_config.json');
      const cfg = readJsonOrFail(file, `image processor "${name}"`);
      const t = cfg.image_processor_type ?? cfg.feature_extractor_type;
      if (t !== undefined && t !== spec.className && t !== 'CLIPFeatureExtractor') {
        throw new ModelFolderError(`${file}: image_processor_type is ${JSON.stringify(t)}, expected "${spec.className}" for "${name}"`);
      }
    } else if (spec.kind === 'scheduler') {
      const file = path.join(d, 'scheduler_config.json');
      classOrFail(readJsonOrFail(file, `scheduler "${name}"`), spec.className, file, name);
    } else {
      const cfgFile = path.join(d, 'config.json');
      classOrFail(readJsonOrFail(cfgFile, `config of "${name}"`), spec.className, cfgFile, name);
      try {
        weights[name] = findWeightsFile(d);
      } catch (e) {
        throw new ModelFolderError(`${(e as Error).message} (component "${name}")`);
      }
    }
  }
  return { root, dirs, weights, modelIndex: index };
}
