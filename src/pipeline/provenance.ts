// Provenance of a generated image: what made it, written into the PNG as a tEXt chunk "parameters" (one line of
// ASCII JSON), read back by `karlo inspect image.png` and re-run by `karlo generate --from image.png`.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelFolder } from '../io/model_folder.js';

export const PROVENANCE_KEY = 'parameters';

export interface Provenance {
  /** Always "karlo-tfjs". */
  generator: 'karlo-tfjs';
  /** Package version that wrote it. */
  version: string;
  /** The prompt of this image, its position in the call's prompts, and this image's index among its prompt's. */
  prompt: string;
  promptIndex: number;
  imageIndex: number;
  /** Every prompt of the call (re-running reproduces the whole call: the images of a batch share one generator). */
  prompts: string[];
  numImagesPerPrompt: number;
  /** Seed of the torch-compatible generator, as a decimal string. */
  seed: string;
  steps: { prior: number; decoder: number; superRes: number };
  guidance: { prior: number; decoder: number };
  /** The model folder (absolute path) and the sha256 of its configs (model_index.json and every component's). */
  model: string;
  modelConfigHash: string;
  backend: string;
  /** Extras a command adds (e.g. LoRA adapters). */
  extra?: Record<string, unknown>;
}

const CONFIG_FILES = ['config.json', 'scheduler_config.json', 'tokenizer_config.json', 'special_tokens_map.json', 'preprocessor_config.json'];

/** sha256 (hex) over model_index.json and every component's config files, in name order, each with its path. */
export function modelConfigHash(folder: Pick<ModelFolder<string>, 'root' | 'dirs'>): string {
  const h = createHash('sha256');
  const add = (label: string, file: string) => {
    if (!fs.existsSync(file)) return;
    h.update(`${label}\n`);
    h.update(fs.readFileSync(file));
    h.update('\n');
  };
  add('model_index.json', path.join(folder.root, 'model_index.json'));
  for (const name of Object.keys(folder.dirs).sort()) {
    for (const f of CONFIG_FILES) add(`${name}/${f}`, path.join((folder.dirs as Record<string, string>)[name], f));
  }
  return h.digest('hex');
}

/** The tEXt value: JSON with everything beyond ASCII escaped (\uXXXX), so it is valid Latin-1 and survives as is. */
export function encodeProvenance(p: Provenance): string {
  return JSON.stringify(p).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Parses and checks a "parameters" value; throws naming `what` and the field at fault. */
export function parseProvenance(text: string, what: string): Provenance {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    throw new Error(`${what}: the "${PROVENANCE_KEY}" text is not karlo-tfjs provenance (not JSON)`);
  }
  const o = j as Record<string, unknown>;
  if (!o || typeof o !== 'object' || o.generator !== 'karlo-tfjs') throw new Error(`${what}: the "${PROVENANCE_KEY}" text was not written by karlo-tfjs`);
  const need = (ok: boolean, field: string) => { if (!ok) throw new Error(`${what}: provenance field "${field}" is missing or invalid`); };
  need(Array.isArray(o.prompts) && (o.prompts as unknown[]).length > 0 && (o.prompts as unknown[]).every((x) => typeof x === 'string'), 'prompts');
  need(typeof o.seed === 'string' && /^\d+$/.test(o.seed), 'seed');
  need(Number.isInteger(o.numImagesPerPrompt) && (o.numImagesPerPrompt as number) > 0, 'numImagesPerPrompt');
  const st = o.steps as Record<string, unknown> | undefined;
  need(!!st && [st.prior, st.decoder, st.superRes].every((v) => Number.isInteger(v)), 'steps');
  const g = o.guidance as Record<string, unknown> | undefined;
  need(!!g && [g.prior, g.decoder].every((v) => typeof v === 'number' && Number.isFinite(v)), 'guidance');
  need(typeof o.model === 'string', 'model');
  return o as unknown as Provenance;
}

/** Human-readable lines for `karlo inspect image.png`. */
export function formatProvenance(p: Provenance): string[] {
  return [
    `prompt: ${JSON.stringify(p.prompt)} (prompt ${p.promptIndex + 1} of ${p.prompts.length}, image ${p.imageIndex + 1} of ${p.numImagesPerPrompt})`,
    `seed: ${p.seed}`,
    `steps: prior ${p.steps.prior}, decoder ${p.steps.decoder}, super-res ${p.steps.superRes}`,
    `guidance: prior ${p.guidance.prior}, decoder ${p.guidance.decoder}`,
    `model: ${p.model} (configs sha256 ${p.modelConfigHash.slice(0, 16)}…)`,
    `backend: ${p.backend}`,
    `made by: karlo-tfjs ${p.version}`,
    ...(p.extra ? [`extra: ${JSON.stringify(p.extra)}`] : []),
  ];
}
