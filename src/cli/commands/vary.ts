// `karlo vary IMAGE... --model DIR --out PATH`: image variations with UnCLIPImageVariationPipeline (the
// kakaobrain/karlo-v1-alpha-image-variations folder). Images are read and checked before any model is loaded;
// PNGs are written atomically and never over an existing file without --force; progress per stage on stderr and
// the timing table at the end, as `karlo generate`.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { DEFAULT_MODEL_DIR, DEFAULT_MODEL_NOTE, PACKAGE_ROOT } from '../../package_root.js';
import { UsageError } from '../errors.js';
import { parseSeedArg } from '../generation_options.js';
import { ImageError, readImage, type RgbImage } from '../../io/image.js';
import { ModelFolderError } from '../../io/model_folder.js';
import { floatToRgb8, writePng } from '../../io/png.js';
import type { StageTiming } from '../../pipeline/unclip_pipeline.js';
import { UnCLIPImageVariationPipeline, type VaryOptions } from '../../pipeline/variation_pipeline.js';
import { outputPaths } from './generate.js';
import { whyNotReplaceable } from '../../io/files.js';
import { VARIATION_PIPELINE } from '../../io/model_folder.js';
import { defaultMemoryBound, estimateGenerateMemory, memoryRefusal, parseBytes } from '../../pipeline/memory_estimate.js';

/**
 * The bundled tiny random-weight image-variation folder: the fixtures' tiny CLIP image encoder and image processor,
 * its other components linked to models/karlo-tiny (link files, see io/model_folder.ts).
 */
export const BUNDLED_VARIATION_DIR = path.join(PACKAGE_ROOT, 'models', 'karlo-tiny-variations');

export const STAGE_LABELS: Record<string, string> = {
  text: 'text encoder', image: 'image encoder', prior: 'prior', decoder: 'decoder', super_res: 'super-res',
};

function fmtSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s - 60 * m)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/**
 * One progress bar per stage on stderr (redrawn in place on a terminal, one line per stage otherwise), the same
 * output as `karlo generate`, for any stage names.
 */
export class StageProgress {
  private stage: string | null = null;
  private total = 0;
  private done = 0;
  private started = 0;
  private readonly tty = Boolean(process.stderr.isTTY);
  private lastDraw = 0;

  event(e: { stage: string; phase: 'load' | 'run' | 'done'; numSteps?: number; timing?: StageTiming }): void {
    const label = STAGE_LABELS[e.stage] ?? e.stage;
    if (e.phase === 'load') {
      if (this.tty) process.stderr.write(`\r\x1b[K${label.padEnd(13)} loading…`);
    } else if (e.phase === 'run') {
      this.stage = e.stage;
      this.total = e.numSteps ?? 1;
      this.done = 0;
      this.started = performance.now();
      this.draw(true);
    } else {
      this.done = this.total;
      this.draw(true, e.timing?.runSeconds);
      process.stderr.write('\n');
      this.stage = null;
    }
  }

  step(): void {
    this.done = Math.min(this.done + 1, this.total);
    this.draw(false);
  }

  private draw(force: boolean, runSeconds?: number): void {
    if (!this.stage) return;
    if (!this.tty && !(force && this.done === this.total)) return;
    const t = performance.now();
    if (!force && t - this.lastDraw < 100) return;
    this.lastDraw = t;
    const elapsed = runSeconds ?? (t - this.started) / 1000;
    const rate = elapsed > 0 ? this.done / elapsed : 0;
    const width = 24;
    const filled = Math.round((width * this.done) / this.total);
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const eta = this.done === this.total ? `took ${fmtSeconds(elapsed)}` : `ETA ${rate > 0 ? fmtSeconds((this.total - this.done) / rate) : '?'}`;
    const line = `${(STAGE_LABELS[this.stage] ?? this.stage).padEnd(13)} [${bar}] ${String(this.done).padStart(String(this.total).length)}/${this.total}  ${rate.toFixed(2)} steps/s  ${eta}`;
    process.stderr.write(this.tty ? `\r\x1b[K${line}` : line);
  }
}

/** The timing table of `karlo generate` for the stages a call ran, in order. */
export function stageTimingTable(t: { stages: Partial<Record<string, StageTiming>>; totalSeconds: number; peakRssMB: number; backend: string }, order: string[]): string {
  const rows = [['stage', 'load s', 'steps', 's/step', 'total s']];
  for (const s of order) {
    const x = t.stages[s];
    if (!x) continue;
    rows.push([STAGE_LABELS[s] ?? s, x.loadSeconds.toFixed(2), String(x.steps), x.secondsPerStep.toFixed(3), x.totalSeconds.toFixed(2)]);
  }
  rows.push(['all', '', '', '', t.totalSeconds.toFixed(2)]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  '));
  lines.splice(1, 0, w.map((n) => '-'.repeat(n)).join('  '));
  lines.push(`peak RSS ${t.peakRssMB.toFixed(0)} MB · backend ${t.backend}`);
  return lines.join('\n');
}

/** Reads every input image up front (one UsageError naming the file for a bad one). */
export async function readInputImages(files: string[]): Promise<RgbImage[]> {
  const out: RgbImage[] = [];
  for (const f of files) {
    try {
      out.push(await readImage(f));
    } catch (e) {
      if (e instanceof ImageError) throw new UsageError(e.message);
      throw e;
    }
  }
  return out;
}

/** Checks that the output files may be written: the folder exists, no folder in the way, no overwrite without --force. */
export function checkOutputs(files: string[], force: boolean | undefined, what = '--out'): void {
  for (const f of files) {
    const dir = path.dirname(path.resolve(f));
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UsageError(`${what} ${f}: folder ${dir} does not exist`);
    if (path.extname(f).toLowerCase() !== '.png') throw new UsageError(`${what} ${f}: output files are PNG; use a .png name`);
    // Only regular files are ever replaced (never a device, FIFO, socket or symlink), --force or not.
    const notOurs = whyNotReplaceable(f);
    if (notOurs !== null && !(fs.existsSync(f) && fs.statSync(f).isDirectory())) throw new UsageError(`${f}: ${notOurs}; ${what} must name a .png file`);
    if (fs.existsSync(f)) {
      if (fs.statSync(f).isDirectory()) throw new UsageError(`${f} is a folder; ${what} must name a .png file`);
      if (!force) throw new UsageError(`${f} exists; pass --force to overwrite it`);
    }
  }
}

/** Loads a variation folder; folder problems are one UsageError line (with a hint for a text-to-image folder). */
export async function loadVariationPipeline(modelDir: string, backend: string | undefined): Promise<UnCLIPImageVariationPipeline> {
  try {
    return await UnCLIPImageVariationPipeline.load(modelDir, { backend, log: (l) => process.stderr.write(`${l}\n`) });
  } catch (e) {
    if (e instanceof ModelFolderError) {
      const t2i = /_class_name is "UnCLIPPipeline"/.test(e.message);
      throw new UsageError(t2i
        ? `${modelDir} is a text-to-image Karlo folder (UnCLIPPipeline): image variation needs kakaobrain/karlo-v1-alpha-image-variations, which adds image_encoder/ (CLIP ViT-L/14 vision) and feature_extractor/ (the CLIP image processor)`
        : e.message);
    }
    throw e;
  }
}

export function numberArg(name: string, v: unknown): void {
  if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) throw new UsageError(`--${name} must be a number, got ${String(v)}`);
}

const OPT_NAMES: Record<string, string> = {
  decoderSteps: '--decoder-steps', superResSteps: '--sr-steps', decoderGuidance: '--decoder-guidance', numImagesPerPrompt: '--num-images', preprocess: '--preprocess',
};

/** Validates variation settings as the pipeline will, with the error naming the option. */
export function resolveVaryArgs(o: VaryOptions): void {
  try {
    UnCLIPImageVariationPipeline.resolveSettings(o);
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^(\w+)/, (m) => OPT_NAMES[m] ?? m));
  }
}

interface VaryArgs {
  images: string[];
  model?: string;
  out: string;
  seed?: string;
  'num-images'?: number;
  'max-memory'?: string;
  'decoder-steps'?: number;
  'sr-steps'?: number;
  'decoder-guidance'?: number;
  preprocess?: string;
  backend?: string;
  force?: boolean;
  json?: boolean;
}

async function run(argv: ArgumentsCamelCase<VaryArgs>): Promise<void> {
  const inputs = (argv.images ?? []).map(String);
  if (!inputs.length) throw new UsageError('give at least one image: karlo vary photo.png --out variation.png');
  for (const k of ['num-images', 'decoder-steps', 'sr-steps', 'decoder-guidance'] as const) numberArg(k, argv[k]);
  const seed = parseSeedArg(argv.seed) ?? BigInt(Math.floor(Math.random() * 2 ** 32));
  const opts: VaryOptions = {
    numImagesPerPrompt: argv['num-images'], decoderSteps: argv['decoder-steps'], superResSteps: argv['sr-steps'],
    decoderGuidance: argv['decoder-guidance'], preprocess: argv.preprocess as VaryOptions['preprocess'], seed,
  };
  resolveVaryArgs(opts);
  // Memory the call needs, before anything is allocated (issue 18 item 7).
  const maxMemory = argv['max-memory'] === undefined ? defaultMemoryBound() : parseBytes(String(argv['max-memory']));
  if (maxMemory === null) throw new UsageError(`--max-memory must be an amount of bytes such as 64G or 512M, got "${argv['max-memory']}"`);
  const refusal = memoryRefusal(estimateGenerateMemory(argv.model ?? DEFAULT_MODEL_DIR, { prompts: inputs.length, numImagesPerPrompt: opts.numImagesPerPrompt ?? 1, decoderGuidance: opts.decoderGuidance }, VARIATION_PIPELINE as never), maxMemory);
  if (refusal) throw new UsageError(refusal);
  const out = String(argv.out);
  const files = outputPaths(out, inputs.length * (opts.numImagesPerPrompt ?? 1));
  checkOutputs(files, argv.force);
  const images = await readInputImages(inputs);
  const modelDir = argv.model ?? DEFAULT_MODEL_DIR;
  if (!argv.model) process.stderr.write(`${DEFAULT_MODEL_NOTE}\n`);
  process.stderr.write(`seed ${seed}\n`);
  const pipe = await loadVariationPipeline(modelDir, argv.backend);
  const progress = new StageProgress();
  let result;
  try {
    result = await pipe.vary(images, { ...opts, onStage: (e) => progress.event(e), onStep: () => progress.step() });
  } finally {
    pipe.dispose();
  }
  for (let i = 0; i < files.length; i++) writePng(files[i], floatToRgb8(result.images, result.shape, i));
  if (argv.json) {
    process.stdout.write(`${JSON.stringify({ images: files, inputs, seed: String(seed), settings: result.settings, timings: result.timings })}\n`);
  } else {
    process.stdout.write(`${stageTimingTable(result.timings, ['text', 'image', 'decoder', 'super_res'])}\n`);
    process.stdout.write(`seed ${seed}\n`);
    for (const f of files) process.stdout.write(`wrote ${f}\n`);
  }
}

const command: CommandModule<object, VaryArgs> = {
  command: 'vary <images..>',
  describe: 'image → variations (UnCLIPImageVariationPipeline: CLIP image embedding → decoder → super-res)',
  builder: (y: Argv) => y
    .positional('images', { type: 'string', array: true, describe: 'one or more PNG/JPEG images' })
    .option('model', { type: 'string', describe: 'image-variation Karlo folder (kakaobrain/karlo-v1-alpha-image-variations layout); default: the bundled karlo-nano' })
    .option('out', { type: 'string', default: 'variation.png', describe: 'output PNG (several images: NAME-0.png, NAME-1.png, …; image-major)' })
    .option('seed', { type: 'string', describe: 'seed of the torch-compatible generator (default: random, printed)' })
    .option('num-images', { type: 'number', describe: 'variations per input image (default 1)' })
    .option('max-memory', { type: 'string', describe: 'refuse calls estimated to need more memory than this (e.g. 64G; default: physical memory)' })
    .option('decoder-steps', { type: 'number', describe: 'decoder denoising steps (default 25)' })
    .option('sr-steps', { type: 'number', describe: 'super-res denoising steps (default 7)' })
    .option('decoder-guidance', { type: 'number', describe: 'decoder classifier-free guidance scale (default 8)' })
    .option('preprocess', { type: 'string', choices: ['clip', 'karlo'], describe: "clip: CLIPImageProcessor (shortest side, centre crop; diffusers); karlo: Karlo's own sampler (square resize to 224, no crop)" })
    .option('force', { type: 'boolean', describe: 'overwrite existing output files' })
    .option('json', { type: 'boolean', describe: 'print {"images": [...], "timings": {...}} on stdout' }) as unknown as Argv<VaryArgs>,
  handler: run,
};

export default command;
