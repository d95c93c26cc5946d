// The identity of a model folder for batch jobs: a SHA-256 over what decides the images apart from the weights'
// values: model_index.json, every component's config.json / scheduler_config.json / tokenizer files. JSON is
// hashed in a canonical form (sorted keys, without the bookkeeping keys that start with "_" except _class_name),
// so re-saving a config or another diffusers version does not change the hash; tokenizer vocab/merges are hashed
// as bytes. Weights are not read: a collector needs only the configs (a folder without weight files hashes the
// same), and a fine-tune with identical configs hashes the same as its base (name it apart with another folder).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export class ModelHashError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelHashError';
  }
}

/** JSON with object keys sorted at every level (arrays keep their order). */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).sort().filter((k) => o[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
}

function readJsonFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ModelHashError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ModelHashError(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ModelHashError(`${file}: not a JSON object`);
  return v as Record<string, unknown>;
}

/** Drops bookkeeping keys ("_diffusers_version", "_name_or_path", ...) but keeps "_class_name". */
function meaningful(cfg: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(cfg)) if (!k.startsWith('_') || k === '_class_name') out[k] = v;
  return out;
}

const JSON_FILES = ['config.json', 'scheduler_config.json', 'tokenizer_config.json', 'special_tokens_map.json'];
const BYTE_FILES = ['vocab.json', 'merges.txt'];

/** SHA-256 (hex) of a diffusers-layout model folder's configs; throws ModelHashError naming the file at fault. */
export function modelConfigHash(dir: string): string {
  const root = path.resolve(dir);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new ModelHashError(`${dir}: model folder does not exist`);
  const indexFile = path.join(root, 'model_index.json');
  if (!fs.existsSync(indexFile)) throw new ModelHashError(`${indexFile}: missing; is ${dir} a diffusers-layout Karlo folder?`);
  const index = readJsonFile(indexFile);
  const h = createHash('sha256');
  h.update(`karlo-model-v1\0model_index.json\0${canonicalJson(meaningful(index))}\0`);
  const components = Object.keys(index).filter((k) => !k.startsWith('_') && Array.isArray(index[k])).sort();
  if (components.length === 0) throw new ModelHashError(`${indexFile}: names no components`);
  for (const c of components) {
    const d = path.join(root, c);
    if (!fs.existsSync(d) || !fs.statSync(d).isDirectory()) throw new ModelHashError(`${d}: component folder "${c}" is missing`);
    let found = 0;
    for (const f of JSON_FILES) {
      const file = path.join(d, f);
      if (!fs.existsSync(file)) continue;
      found++;
      h.update(`${c}/${f}\0${canonicalJson(meaningful(readJsonFile(file)))}\0`);
    }
    for (const f of BYTE_FILES) {
      const file = path.join(d, f);
      if (!fs.existsSync(file)) continue;
      found++;
      h.update(`${c}/${f}\0`);
      h.update(createHash('sha256').update(fs.readFileSync(file)).digest('hex'));
      h.update('\0');
    }
    if (found === 0) throw new ModelHashError(`${d}: component "${c}" has no config file (${JSON_FILES.join(', ')})`);
  }
  return h.digest('hex');
}
