// `karlo trace PROMPT --capture GLOB[,GLOB...] [--stages prior,decoder] [--steps 0,12,24] --out trace.safetensors`:
// module outputs, attention probabilities and pipeline tensors of one run at the chosen stages and steps, in one
// safetensors file named like the parity fixtures (see src/internals/trace.ts). The size is estimated first (a
// shape-only run with 2 steps per stage) and a trace above --max-bytes is refused with the estimate. `--list`
// prints every capture key of the model with its shape.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { DEFAULT_MODEL_DIR, DEFAULT_MODEL_NOTE } from '../../package_root.js';
import { UsageError } from '../errors.js';
import { ModelFolderError } from '../../io/model_folder.js';
import { UnCLIPPipeline, type GenerateOptions, type PipelineStage } from '../../pipeline/unclip_pipeline.js';
import { TRACE_STAGES, estimateTrace, formatBytes, recordRun, traceBytes, writeTrace } from '../../internals/trace.js';

export interface RunArgs {
  prompts: string[];
  model?: string;
  seed?: string;
  'prior-steps'?: number;
  'decoder-steps'?: number;
  'sr-steps'?: number;
  'prior-guidance'?: number;
  'decoder-guidance'?: number;
  'num-images'?: number;
  backend?: string;
}

interface TraceArgs extends RunArgs {
  capture?: string;
  stages?: string;
  steps?: string;
  out?: string;
  'max-bytes'?: string;
  list?: boolean;
  force?: boolean;
  json?: boolean;
}

/** "2GB", "500 MB", "1e9", "123456" → bytes. */
export function parseBytes(s: string, what = '--max-bytes'): number {
  const m = /^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?i?b?)?\s*$/i.exec(String(s));
  if (!m) throw new UsageError(`${what} must be a size like 2GB, 500MB or 1000000, got "${s}"`);
  const unit = (m[2] ?? '').toLowerCase().replace(/i?b$/, '');
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[unit];
  if (mult === undefined) throw new UsageError(`${what}: unknown unit in "${s}"`);
  return Math.floor(Number(m[1]) * mult);
}

export function parseStages(s: string | undefined): PipelineStage[] | undefined {
  if (s === undefined) return undefined;
  const list = String(s).split(',').map((x) => x.trim().replace('-', '_')).filter(Boolean);
  const alias: Record<string, PipelineStage> = { text: 'text', text_encoder: 'text', prior: 'prior', decoder: 'decoder', super_res: 'super_res', sr: 'super_res' };
  return list.map((x) => {
    const st = alias[x];
    if (!st) throw new UsageError(`--stages: unknown stage "${x}"; stages: ${TRACE_STAGES.join(', ')}`);
    return st;
  });
}

export function parseSteps(s: string | undefined): number[] | undefined {
  if (s === undefined) return undefined;
  const list = String(s).split(',').map((x) => x.trim()).filter(Boolean);
  if (!list.length) throw new UsageError('--steps must list step indices, e.g. 0,12,24');
  return list.map((x) => {
    if (!/^\d+$/.test(x)) throw new UsageError(`--steps: "${x}" is not a step index (0, 1, …)`);
    return Number(x);
  });
}

/** The generate options shared by trace/attention (seed, steps, guidance, images per prompt), validated. */
export function generateOptions(argv: RunArgs): GenerateOptions {
  for (const k of ['prior-steps', 'decoder-steps', 'sr-steps', 'prior-guidance', 'decoder-guidance', 'num-images'] as const) {
    const v = argv[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) throw new UsageError(`--${k} must be a number, got ${String(v)}`);
  }
  let seed: bigint | undefined;
  if (argv.seed !== undefined) {
    if (!/^\d+$/.test(String(argv.seed).trim())) throw new UsageError(`--seed must be a non-negative integer, got "${argv.seed}"`);
    seed = BigInt(String(argv.seed).trim());
  }
  const opts: GenerateOptions = {
    priorSteps: argv['prior-steps'], decoderSteps: argv['decoder-steps'], superResSteps: argv['sr-steps'],
    priorGuidance: argv['prior-guidance'], decoderGuidance: argv['decoder-guidance'], numImagesPerPrompt: argv['num-images'],
    seed: seed ?? 0n,
  };
  try {
    UnCLIPPipeline.resolveSettings(opts);
  } catch (e) {
    const flag: Record<string, string> = { priorSteps: '--prior-steps', decoderSteps: '--decoder-steps', superResSteps: '--sr-steps', priorGuidance: '--prior-guidance', decoderGuidance: '--decoder-guidance', numImagesPerPrompt: '--num-images' };
    throw new UsageError((e as Error).message.replace(/^(\w+)/, (w) => flag[w] ?? w));
  }
  return opts;
}

/** Initialises the backend and opens the model folder (the bundled tiny model by default), with one-line errors. */
export async function openPipeline(argv: RunArgs): Promise<{ pipe: UnCLIPPipeline; modelDir: string }> {
  const modelDir = argv.model ?? DEFAULT_MODEL_DIR;
  if (!argv.model) process.stderr.write(`${DEFAULT_MODEL_NOTE}\n`);
  const { initBackend } = await import('../../backend/index.js');
  try {
    process.stderr.write(`${(await initBackend(argv.backend)).message}\n`);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  try {
    return { pipe: await UnCLIPPipeline.load(modelDir, { keepLoaded: false }), modelDir };
  } catch (e) {
    if (e instanceof ModelFolderError) throw new UsageError(e.message);
    throw new UsageError(`${modelDir}: ${(e as Error).message}`);
  }
}

/** The run options every pipeline command shares. */
export function runOptions<T>(y: Argv<T>): Argv<T> {
  return y
    .positional('prompts', { type: 'string', array: true, describe: 'one or more prompts' })
    .option('model', { type: 'string', describe: 'diffusers-layout Karlo folder; default: the bundled karlo-nano' })
    .option('seed', { type: 'string', describe: 'seed of the torch-compatible generator (default 0)' })
    .option('prior-steps', { type: 'number', describe: 'prior denoising steps (default 25)' })
    .option('decoder-steps', { type: 'number', describe: 'decoder denoising steps (default 25)' })
    .option('sr-steps', { type: 'number', describe: 'super-res denoising steps (default 7)' })
    .option('prior-guidance', { type: 'number', describe: 'prior guidance scale (default 4)' })
    .option('decoder-guidance', { type: 'number', describe: 'decoder guidance scale (default 8)' })
    .option('num-images', { type: 'number', describe: 'images per prompt (default 1)' }) as unknown as Argv<T>;
}

async function run(argv: TraceArgs): Promise<void> {
  const prompts = (argv.prompts ?? []).map(String);
  if (!prompts.length || prompts.some((p) => p.trim() === '')) throw new UsageError('give a prompt: karlo trace "a red frog" --capture "decoder.*.attentions.*" --out trace.safetensors');
  const gen = generateOptions(argv);
  const stages = parseStages(argv.stages);
  const steps = parseSteps(argv.steps);
  const maxBytes = parseBytes(argv['max-bytes'] ?? '2GB');
  if (!argv.list) {
    if (!argv.capture || !argv.capture.trim()) throw new UsageError('--capture is required: globs over capture keys, e.g. "decoder.down_blocks.*,cap.*" (karlo trace PROMPT --list prints them)');
    if (!argv.out) throw new UsageError('--out is required: the trace file (.safetensors)');
    const dir = path.dirname(path.resolve(argv.out));
    if (!fs.existsSync(dir)) throw new UsageError(`--out ${argv.out}: folder ${dir} does not exist`);
    if (fs.existsSync(argv.out) && !argv.force) throw new UsageError(`${argv.out} exists; pass --force to overwrite it`);
  }
  const { pipe, modelDir } = await openPipeline(argv);
  const settings = UnCLIPPipeline.resolveSettings(gen);
  if (steps) {
    const most = Math.max(settings.priorSteps, settings.decoderSteps, settings.superResSteps);
    const bad = steps.filter((s) => s >= most);
    if (bad.length) throw new UsageError(`--steps ${bad.join(',')}: no stage has that many steps (prior ${settings.priorSteps}, decoder ${settings.decoderSteps}, super-res ${settings.superResSteps})`);
  }

  if (argv.list) {
    const est = await estimateTrace(pipe, prompts, { capture: argv.capture ?? '*', stages, steps }, gen);
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ keys: est.keys.map((k) => ({ key: k.key, shape: k.shape, times: k.count, bytes: k.bytes })) })}\n`);
      return;
    }
    const w = Math.max(...est.keys.map((k) => k.key.length));
    for (const k of est.keys) process.stdout.write(`${k.key.padEnd(w)}  [${k.shape.join(', ')}]  ×${k.count}  ${formatBytes(k.bytes)}\n`);
    process.stdout.write(`${est.keys.length} capture keys; everything at every step would be ${formatBytes(est.bytes)}\n`);
    return;
  }

  const sel = { capture: argv.capture!, stages, steps };
  const est = await estimateTrace(pipe, prompts, sel, gen);
  if (!est.tensors) throw new UsageError(`--capture "${argv.capture}" matches nothing${stages ? ` in stages ${stages.join(',')}` : ''}${steps ? ` at steps ${steps.join(',')}` : ''}; karlo trace PROMPT --list prints the capture keys`);
  const estimate = `${est.tensors} tensors, ${formatBytes(est.bytes)}`;
  if (est.bytes > maxBytes) {
    throw new UsageError(`the trace would be ${estimate} (${est.bytes} bytes), above --max-bytes ${formatBytes(maxBytes)}; narrow --capture/--steps/--stages or raise --max-bytes`);
  }
  process.stderr.write(`trace estimate: ${estimate}\n`);
  const t0 = performance.now();
  const rec = await recordRun(pipe, prompts, sel, gen);
  const bytes = traceBytes(rec.tensors);
  writeTrace(argv.out!, rec.tensors, {
    prompts, model: path.resolve(modelDir), seed: rec.seed?.toString(), settings: rec.settings, capture: argv.capture,
    stages: stages ?? TRACE_STAGES, steps: steps ?? 'all',
  });
  const seconds = (performance.now() - t0) / 1000;
  if (argv.json) {
    process.stdout.write(`${JSON.stringify({ out: argv.out, tensors: rec.tensors.length, bytes, estimateBytes: est.bytes, seconds })}\n`);
  } else {
    process.stdout.write(`wrote ${argv.out}: ${rec.tensors.length} tensors, ${formatBytes(bytes)} (${seconds.toFixed(1)} s)\n`);
  }
}

const command: CommandModule<object, TraceArgs> = {
  command: 'trace <prompts..>',
  describe: 'capture module outputs, attention probabilities and pipeline tensors of one run into a safetensors file',
  builder: (y: Argv) => runOptions(y)
    .option('capture', { type: 'string', describe: 'comma-separated globs over capture keys (* any run of characters): "decoder.down_blocks.*", "prior.transformer_blocks.*.attn1.probs", "cap.*", "step.decoder_scheduler.*"' })
    .option('stages', { type: 'string', describe: 'stages to capture in: text,prior,decoder,super_res (default all; the run stops after the last)' })
    .option('steps', { type: 'string', describe: 'step indices within each denoising stage, e.g. 0,12,24 (default every step)' })
    .option('out', { type: 'string', describe: 'the trace file (.safetensors)' })
    .option('max-bytes', { type: 'string', default: '2GB', describe: 'refuse traces larger than this (estimated before running)' })
    .option('list', { type: 'boolean', describe: 'print the capture keys of the model with their shapes (a shape-only run with 2 steps per stage)' })
    .option('force', { type: 'boolean', describe: 'overwrite --out' })
    .option('json', { type: 'boolean', describe: 'print one JSON object' }) as unknown as Argv<TraceArgs>,
  handler: run,
};

export default command;
