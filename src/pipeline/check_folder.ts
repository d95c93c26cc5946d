// The whole-folder check that runs at load, before any weights are read or any step is computed: every model
// component is built from its config (parameters are lazy, so even the 1B prior costs milliseconds and no memory)
// and its weight file's header is compared with that model's state-dict names and shapes; the header is checked
// against the file size (a truncated file, what an interrupted git-lfs pull leaves, is found here); schedulers are
// built from their configs; the tokenizer's vocabulary must fit the text encoder's embedding table. A broken
// folder fails in seconds with one line naming the file and the key, instead of minutes into a run.
import * as path from 'node:path';
import { ModelFolderError, type ModelFolder } from '../io/model_folder.js';
import { SafetensorsFile, isFloatDType } from '../io/safetensors.js';
import { readConfig, safetensorsSource } from '../io/weights.js';
import { arraysEqual, type Module } from '../layers/module.js';
import { buildComponent, componentConfig, ignoredKeys, isComponentKind } from '../loading/load_component.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';

const oneLine = (s: string) => s.replace(/\s*\n\s*/g, ' ').trim();

/** Adds the component name to an error from a config or weights reader, as a ModelFolderError. */
function fail(component: string, e: unknown): never {
  if (e instanceof ModelFolderError) throw e;
  const msg = oneLine((e as Error)?.message ?? String(e));
  throw new ModelFolderError(`${msg} (component "${component}")`);
}

/**
 * Checks one model component: builds the model from its config, opens its weights (header only, checked against
 * the file size) and compares the state-dict names and shapes. Returns the model's parameter count.
 */
export function checkModelComponent(component: string, className: string, dir: string, weightsFile: string): number {
  const cfgFile = path.join(dir, 'config.json');
  let model: Module | undefined;
  // What loadComponent builds, minus the weights (the class check was openModelFolder's).
  if (isComponentKind(className)) {
    try {
      model = buildComponent(className, readConfig(dir), cfgFile);
    } catch (e) {
      fail(component, e);
    }
  }
  let src: ReturnType<typeof safetensorsSource>;
  try {
    src = safetensorsSource(weightsFile);
  } catch (e) {
    fail(component, e);
  }
  try {
    if (!model) return 0;
    const ignored = isComponentKind(className) ? ignoredKeys(className) : new Set<string>();
    const names = new Set(src.names().filter((n) => !ignored.has(n)));
    const params = model.namedParameters();
    const missing: string[] = [];
    const misshaped: string[] = [];
    for (const [k, p] of params) {
      if (!names.has(k)) { missing.push(k); continue; }
      const got = src.shape(k);
      if (!arraysEqual(got, p.torchShape)) misshaped.push(`tensor "${k}" has shape [${got}], the model built from ${cfgFile} expects [${p.torchShape}]`);
      names.delete(k);
    }
    const unexpected = [...names];
    // Parameters are float tensors (fp32/fp16/bf16 are widened at load): an integer tensor is refused here.
    if (weightsFile.endsWith('.safetensors')) {
      const f = SafetensorsFile.open(weightsFile);
      try {
        const present = new Set(f.names());
        for (const [k] of params) {
          if (present.has(k) && !isFloatDType(f.info(k).dtype)) misshaped.push(`tensor "${k}" is ${f.info(k).dtype}; ${className} parameters are float tensors`);
        }
      } finally {
        f.close();
      }
    }
    const problems = [
      ...misshaped,
      ...(missing.length ? [`tensor "${missing[0]}" is missing${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ''}; ${cfgFile} builds a ${className} that needs it`] : []),
      ...(unexpected.length ? [`tensor "${unexpected[0]}" is not part of the ${className} built from ${cfgFile}${unexpected.length > 1 ? ` (and ${unexpected.length - 1} more)` : ''}`] : []),
    ];
    if (problems.length) {
      const more = problems.length > 1 ? ` (${problems.length - 1} more problem${problems.length > 2 ? 's' : ''}; karlo inspect lists the tensors)` : '';
      throw new ModelFolderError(`${weightsFile}: ${problems[0]}${more} (component "${component}")`);
    }
    return model.numParameters();
  } finally {
    src.close();
  }
}

export interface FolderCheckReport {
  /** Parameters per model component (from the configs). */
  parameters: Record<string, number>;
  seconds: number;
}

/**
 * Checks every component of an opened model folder (see the file comment). Throws a ModelFolderError whose one-line
 * message names the file and the key at fault. `components` gives each component's class and kind (the pipeline
 * spec of io/model_folder.ts).
 */
export function checkModelFolder<C extends string>(
  folder: ModelFolder<C>,
  components: Record<C, { className: string; kind: string }>,
): FolderCheckReport {
  const t0 = performance.now();
  const parameters: Record<string, number> = {};
  for (const [name, spec] of Object.entries(components) as [C, { className: string; kind: string }][]) {
    const dir = folder.dirs[name];
    if (spec.kind === 'model') {
      const w = folder.weights[name];
      if (!w) throw new ModelFolderError(`${dir}: no weights file (component "${name}")`);
      parameters[name] = checkModelComponent(name, spec.className, dir, w);
    } else if (spec.kind === 'scheduler') {
      try {
        UnCLIPScheduler.fromDir(dir);
      } catch (e) {
        fail(name, e);
      }
    }
  }
  // The tokenizer's ids must index the text encoder's token embedding.
  const dirs = folder.dirs as Record<string, string>;
  if (dirs.tokenizer && dirs.text_encoder) {
    let tok: CLIPTokenizer;
    try {
      tok = CLIPTokenizer.fromDir(dirs.tokenizer);
    } catch (e) {
      fail('tokenizer', e);
    }
    const cfgFile = path.join(dirs.text_encoder, 'config.json');
    let vocab: number;
    try {
      vocab = componentConfig(dirs.text_encoder, 'CLIPTextModelWithProjection').vocab_size;
    } catch (e) {
      fail('text_encoder', e);
    }
    let maxId = -1;
    for (const id of tok.encoder.values()) if (id > maxId) maxId = id;
    if (maxId >= vocab) {
      throw new ModelFolderError(`${path.join(dirs.tokenizer, 'vocab.json')}: token id ${maxId} does not fit the text encoder's vocab_size ${vocab} (${cfgFile}); the tokenizer and text_encoder do not belong together`);
    }
  }
  return { parameters, seconds: (performance.now() - t0) / 1000 };
}
