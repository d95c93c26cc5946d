// Batch jobs: what one image job is (prompt, seed, settings, model config hash), its identity (a SHA-256 of
// exactly those), reading prompt files (.txt: one prompt per line; .jsonl: {"prompt", "seed"?, options?, "meta"?})
// and the output file names. Pure functions: no model, no queue, no files written.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UnCLIPPipeline, type GenerateOptions, type GenerateResult } from '../pipeline/unclip_pipeline.js';
import { canonicalJson } from './model_hash.js';

export type JobSettings = GenerateResult['settings'];

/** One job: everything that decides its images. This is the job's data in the queue. */
export interface JobSpec {
  /** Format version of the spec. */
  v: 1;
  prompt: string;
  /** Seed of the torch-compatible generator, as a decimal string (u64). */
  seed: string;
  settings: JobSettings;
  /** modelConfigHash() of the model folder (hex SHA-256). */
  model: string;
}

/** A job in a batch: its position in the prompt file, identity and spec, plus pass-through metadata. */
export interface BatchJob {
  /** 0-based position among the prompts of the file. */
  index: number;
  hash: string;
  spec: JobSpec;
  /** "meta" of a .jsonl line (e.g. COCO ids), copied into the manifest; not part of the identity. */
  meta?: Record<string, unknown>;
  /** Where it came from, for messages: FILE:LINE. */
  where: string;
}

export class BatchInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BatchInputError';
  }
}

const SETTING_KEYS: (keyof JobSettings)[] = ['numImagesPerPrompt', 'priorSteps', 'decoderSteps', 'superResSteps', 'priorGuidance', 'decoderGuidance'];
const U64 = 1n << 64n;
const HEX64 = /^[0-9a-f]{64}$/;

/** The job's identity: SHA-256 (hex) of the canonical JSON of its spec. */
export function jobHash(spec: JobSpec): string {
  return createHash('sha256').update(canonicalJson(spec)).digest('hex');
}

/** Output file of image `k` of a job: DIR/<index>-<hash8>.png (…-<k>.png when a job makes several images). */
export function imageFileName(index: number, hash: string, k: number, count: number): string {
  const stem = `${String(index).padStart(5, '0')}-${hash.slice(0, 8)}`;
  return count === 1 ? `${stem}.png` : `${stem}-${k}.png`;
}

/** Parses a seed: a non-negative integer below 2^64 (number or decimal string). Returns undefined when invalid. */
export function parseSeedValue(v: unknown): bigint | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? BigInt(v) : undefined;
  if (typeof v === 'bigint') return v >= 0n && v < U64 ? v : undefined;
  if (typeof v !== 'string' || !/^\d+$/.test(v.trim())) return undefined;
  const b = BigInt(v.trim());
  return b < U64 ? b : undefined;
}

/**
 * Checks that a value is a valid JobSpec (a job from the queue is untrusted input); returns the reason it is not,
 * or undefined when it is.
 */
export function specProblem(d: unknown): string | undefined {
  if (!d || typeof d !== 'object' || Array.isArray(d)) return 'job data is not an object';
  const s = d as Record<string, unknown>;
  const known = new Set(['v', 'prompt', 'seed', 'settings', 'model']);
  const extra = Object.keys(s).filter((k) => !known.has(k));
  if (extra.length) return `unknown field(s) ${extra.map((k) => JSON.stringify(k)).join(', ')} in job data`;
  if (s.v !== 1) return `job format version ${JSON.stringify(s.v)} is not supported (expected 1)`;
  if (typeof s.prompt !== 'string' || s.prompt.trim() === '') return `"prompt" must be a non-empty string, got ${JSON.stringify(s.prompt)?.slice(0, 60)}`;
  if (typeof s.seed !== 'string' || parseSeedValue(s.seed) === undefined || String(parseSeedValue(s.seed)) !== s.seed) {
    return `"seed" must be a decimal integer string in [0, 2^64), got ${JSON.stringify(s.seed)?.slice(0, 60)}`;
  }
  if (typeof s.model !== 'string' || !HEX64.test(s.model)) return `"model" must be a model config hash (64 hex digits), got ${JSON.stringify(s.model)?.slice(0, 80)}`;
  if (!s.settings || typeof s.settings !== 'object' || Array.isArray(s.settings)) return '"settings" must be an object';
  const st = s.settings as Record<string, unknown>;
  const bad = Object.keys(st).filter((k) => !(SETTING_KEYS as string[]).includes(k));
  if (bad.length) return `unknown setting(s) ${bad.map((k) => JSON.stringify(k)).join(', ')}`;
  const missing = SETTING_KEYS.filter((k) => st[k] === undefined);
  if (missing.length) return `settings lack ${missing.join(', ')}`;
  try {
    const r = UnCLIPPipeline.resolveSettings(st as unknown as GenerateOptions);
    for (const k of SETTING_KEYS) if (r[k] !== st[k]) return `setting ${k} ${JSON.stringify(st[k])} is not valid`;
  } catch (e) {
    return `bad settings: ${(e as Error).message}`;
  }
  return undefined;
}

/** Batch-wide generation options (the CLI's), before per-line overrides. */
export interface BatchDefaults {
  preset?: GenerateOptions['preset'];
  priorSteps?: number;
  decoderSteps?: number;
  superResSteps?: number;
  priorGuidance?: number;
  decoderGuidance?: number;
  numImagesPerPrompt?: number;
  /** Base seed: prompt i gets seed + i (default 0). */
  seed?: bigint;
  /** Or one seed per prompt (from --seeds FILE). */
  seeds?: bigint[];
}

/** Per-line option names in a .jsonl file (the CLI's names; "_" and "-" both accepted). */
const LINE_OPTIONS: Record<string, keyof GenerateOptions> = {
  'prior-steps': 'priorSteps', 'decoder-steps': 'decoderSteps', 'sr-steps': 'superResSteps',
  'prior-guidance': 'priorGuidance', 'decoder-guidance': 'decoderGuidance', 'num-images': 'numImagesPerPrompt', preset: 'preset',
};
const OPTION_LABEL: Record<string, string> = {
  priorSteps: 'prior-steps', decoderSteps: 'decoder-steps', superResSteps: 'sr-steps', priorGuidance: 'prior-guidance',
  decoderGuidance: 'decoder-guidance', numImagesPerPrompt: 'num-images',
};

interface PromptLine { prompt: string; where: string; seed?: bigint; overrides: Partial<GenerateOptions>; meta?: Record<string, unknown> }

function readText(file: string, what: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new BatchInputError(`${file}: ${what} does not exist`);
  }
  if (!st.isFile()) throw new BatchInputError(`${file}: ${what} is not a regular file`);
  const buf = fs.readFileSync(file);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new BatchInputError(`${file}: ${what} is not valid UTF-8`);
  }
}

function lines(text: string): string[] {
  return text.replace(/^\uFEFF/, '').split(/\r?\n/);
}

/** Reads a prompt file: .txt (one prompt per non-blank line) or .jsonl (one JSON object per non-blank line). */
export function readPromptFile(file: string): PromptLine[] {
  const ext = path.extname(file).toLowerCase();
  if (ext !== '.txt' && ext !== '.jsonl') throw new BatchInputError(`${file}: prompts must be a .txt (one prompt per line) or .jsonl file`);
  const text = readText(file, 'prompt file');
  const out: PromptLine[] = [];
  const all = lines(text);
  for (let i = 0; i < all.length; i++) {
    const line = all[i];
    const where = `${file}:${i + 1}`;
    if (line.trim() === '') continue;
    if (ext === '.txt') {
      out.push({ prompt: line.trim(), where, overrides: {} });
      continue;
    }
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new BatchInputError(`${where}: invalid JSON (${(e as Error).message})`);
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new BatchInputError(`${where}: expected a JSON object {"prompt": ...}`);
    const o = v as Record<string, unknown>;
    if (typeof o.prompt !== 'string' || o.prompt.trim() === '') throw new BatchInputError(`${where}: "prompt" must be a non-empty string`);
    const p: PromptLine = { prompt: o.prompt.trim(), where, overrides: {} };
    for (const [rawKey, val] of Object.entries(o)) {
      if (rawKey === 'prompt') continue;
      if (rawKey === 'seed') {
        const s = parseSeedValue(val);
        if (s === undefined) throw new BatchInputError(`${where}: "seed" must be an integer in [0, 2^64) (a string for values above 2^53), got ${JSON.stringify(val)}`);
        p.seed = s;
        continue;
      }
      if (rawKey === 'meta') {
        if (!val || typeof val !== 'object' || Array.isArray(val)) throw new BatchInputError(`${where}: "meta" must be an object`);
        p.meta = val as Record<string, unknown>;
        continue;
      }
      const key = rawKey.replace(/_/g, '-');
      const opt = LINE_OPTIONS[key];
      if (!opt) {
        throw new BatchInputError(`${where}: unknown key ${JSON.stringify(rawKey)} (known: prompt, seed, meta, ${Object.keys(LINE_OPTIONS).join(', ')})`);
      }
      if (opt === 'preset' ? typeof val !== 'string' : typeof val !== 'number' || !Number.isFinite(val)) {
        throw new BatchInputError(`${where}: "${rawKey}" must be ${opt === 'preset' ? 'a string' : 'a number'}, got ${JSON.stringify(val)}`);
      }
      (p.overrides as Record<string, unknown>)[opt] = val;
    }
    out.push(p);
  }
  if (out.length === 0) throw new BatchInputError(`${file}: no prompts in the file`);
  return out;
}

/** Reads --seeds FILE: one integer per non-blank line. */
export function readSeedsFile(file: string): bigint[] {
  const text = readText(file, 'seeds file');
  const out: bigint[] = [];
  const all = lines(text);
  for (let i = 0; i < all.length; i++) {
    if (all[i].trim() === '') continue;
    const s = parseSeedValue(all[i].trim());
    if (s === undefined) throw new BatchInputError(`${file}:${i + 1}: a seed must be an integer in [0, 2^64), got ${JSON.stringify(all[i].trim().slice(0, 40))}`);
    out.push(s);
  }
  return out;
}

/** Settings of a job: batch defaults, then the line's own options; errors name the line and the option. */
export function resolveJobSettings(defaults: BatchDefaults, overrides: Partial<GenerateOptions>, where: string): JobSettings {
  const opts: GenerateOptions = {
    preset: defaults.preset, priorSteps: defaults.priorSteps, decoderSteps: defaults.decoderSteps, superResSteps: defaults.superResSteps,
    priorGuidance: defaults.priorGuidance, decoderGuidance: defaults.decoderGuidance, numImagesPerPrompt: defaults.numImagesPerPrompt,
  };
  if (overrides.preset !== undefined) {
    // A line's preset replaces the batch's step/guidance choices it covers, then the line's own options apply.
    opts.preset = overrides.preset;
    for (const k of ['priorSteps', 'decoderSteps', 'superResSteps', 'priorGuidance', 'decoderGuidance'] as const) opts[k] = undefined;
  }
  Object.assign(opts, Object.fromEntries(Object.entries(overrides).filter(([k]) => k !== 'preset')));
  try {
    return UnCLIPPipeline.resolveSettings(opts);
  } catch (e) {
    const msg = (e as Error).message.replace(/^(\w+)/, (m) => (OPTION_LABEL[m] ? `--${OPTION_LABEL[m]}` : m));
    throw new BatchInputError(`${where}: ${msg}`);
  }
}

/** Builds the batch's jobs from a prompt file, the CLI's options and the model hash. */
export function buildJobs(promptFile: string, defaults: BatchDefaults, model: string): BatchJob[] {
  const prompts = readPromptFile(promptFile);
  if (defaults.seeds && defaults.seeds.length !== prompts.length) {
    throw new BatchInputError(`--seeds has ${defaults.seeds.length} seeds for ${prompts.length} prompts in ${promptFile}: give one seed per prompt`);
  }
  const base = defaults.seed ?? 0n;
  return prompts.map((p, index) => {
    const seed = p.seed ?? defaults.seeds?.[index] ?? (base + BigInt(index)) % U64;
    const spec: JobSpec = { v: 1, prompt: p.prompt, seed: seed.toString(), settings: resolveJobSettings(defaults, p.overrides, p.where), model };
    return { index, hash: jobHash(spec), spec, meta: p.meta, where: p.where };
  });
}
