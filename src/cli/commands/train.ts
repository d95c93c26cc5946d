// `karlo train --model DIR --component prior|decoder|super_res|super_res_last|text_encoder --data DIR --steps N
//  --out DIR [--batch B --lr X --lora-rank R --lora-alpha A --train GLOB --freeze GLOB --grad-accum K
//  --save-every N --resume CKPT ...]`: fine-tunes one component of a Karlo folder on a folder of captioned images.
// Progress on stderr (redrawn in place on a terminal; a line every few seconds otherwise), the loss curve as
// <out>/loss.csv and <out>/loss.png, checkpoints in <out>/checkpoint-<step>/. Ctrl-C saves a checkpoint at the end
// of the current step and exits 130 (a second Ctrl-C exits at once). Bad arguments: one line, exit 2.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { UsageError } from '../errors.js';
import { ModelFolderError } from '../../io/model_folder.js';
import { DataError } from '../../training/data.js';
import { LR_SCHEDULES, type LrScheduleKind } from '../../training/lr_schedule.js';
import { TRAIN_COMPONENTS, TrainArgumentError, train, type StepReport, type TrainComponent } from '../../training/trainer.js';

interface TrainArgs {
  model?: string;
  component?: string;
  data?: string;
  steps?: number;
  batch: number;
  lr: number;
  out?: string;
  'lora-rank'?: number;
  'lora-alpha'?: number;
  train?: string[];
  freeze?: string[];
  'grad-accum': number;
  'save-every'?: number;
  resume?: string;
  seed: number;
  'lr-scheduler': string;
  'warmup-steps': number;
  'max-grad-norm': number;
  'weight-decay': number;
  'cache-dir'?: string;
  backend?: string;
  json?: boolean;
}

function fmtSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s - 60 * m)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

function fmtNum(v: number, digits = 4): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(digits - 2) : v.toPrecision(digits);
}

/**
 * The training progress line on stderr: on a terminal redrawn in place (at most 10 times a second); otherwise one
 * line every `everySeconds` and at the last step, so logs stay readable.
 */
export class TrainProgress {
  private readonly tty: boolean;
  private lastDraw = -Infinity;
  private ema: number | null = null;
  private drawn = false;
  constructor(private readonly stream: NodeJS.WriteStream = process.stderr, private readonly everySeconds = 5, tty?: boolean) {
    this.tty = tty ?? Boolean(stream.isTTY);
  }

  update(p: StepReport): void {
    this.ema = this.ema === null ? p.loss : 0.9 * this.ema + 0.1 * p.loss;
    const now = performance.now();
    const last = p.step === p.totalSteps;
    if (!last && now - this.lastDraw < (this.tty ? 100 : this.everySeconds * 1000)) return;
    this.lastDraw = now;
    const width = 20;
    const filled = Math.round((width * p.step) / p.totalSteps);
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const eta = p.stepsPerSecond > 0 ? (p.totalSteps - p.step) / p.stepsPerSecond : NaN;
    const line = `step ${String(p.step).padStart(String(p.totalSteps).length)}/${p.totalSteps} [${bar}] loss ${fmtNum(p.loss)} (avg ${fmtNum(this.ema)}) lr ${fmtNum(p.lr, 3)} ${p.stepsPerSecond.toFixed(2)} steps/s ${last ? `took ${fmtSeconds(p.elapsedSeconds)}` : `ETA ${fmtSeconds(eta)}`}`;
    if (this.tty) {
      this.stream.write(`\r\x1b[K${line}`);
      this.drawn = true;
    } else {
      this.stream.write(`${line}\n`);
    }
  }

  /** Ends an in-place line before other output. */
  break(): void {
    if (this.tty && this.drawn) {
      this.stream.write('\n');
      this.drawn = false;
    }
  }
}

function need<T>(v: T | undefined, name: string, example: string): T {
  if (v === undefined || v === null || (typeof v === 'string' && v.trim() === '')) throw new UsageError(`--${name} is required (e.g. --${name} ${example})`);
  return v;
}

function checkNumber(name: string, v: unknown): void {
  if (v !== undefined && (typeof v !== 'number' || Number.isNaN(v))) throw new UsageError(`--${name} must be a number, got ${String(v)}`);
}

async function run(argv: ArgumentsCamelCase<TrainArgs>): Promise<void> {
  const model = need(argv.model, 'model', 'path/to/karlo-v1-alpha');
  const component = need(argv.component, 'component', 'decoder') as TrainComponent;
  if (!TRAIN_COMPONENTS.includes(component)) throw new UsageError(`--component must be one of ${TRAIN_COMPONENTS.join(', ')}, got "${component}"`);
  const data = need(argv.data, 'data', 'my_images/');
  const out = need(argv.out, 'out', 'runs/decoder-ft');
  for (const k of ['steps', 'batch', 'lr', 'lora-rank', 'lora-alpha', 'grad-accum', 'save-every', 'seed', 'warmup-steps', 'max-grad-norm', 'weight-decay'] as const) checkNumber(k, argv[k]);
  const steps = need(argv.steps, 'steps', '1000');
  if (!LR_SCHEDULES.includes(argv['lr-scheduler'] as LrScheduleKind)) throw new UsageError(`--lr-scheduler must be one of ${LR_SCHEDULES.join(', ')}, got "${argv['lr-scheduler']}"`);
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new UsageError(`--out ${out}: exists and is not a folder`);
  if (!argv.resume && fs.existsSync(out) && fs.readdirSync(out).some((n) => /^checkpoint-\d+$/.test(n))) {
    throw new UsageError(`--out ${out} already holds checkpoints of a run; continue it with --resume ${out}, or choose another --out`);
  }
  const globs = (v: string[] | undefined) => (v === undefined ? undefined : (Array.isArray(v) ? v : [v]).map(String));

  const { initBackend } = await import('../../backend/index.js');
  let backendMessage: string;
  try {
    backendMessage = (await initBackend(argv.backend)).message;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  process.stderr.write(`${backendMessage}\n`);

  const progress = new TrainProgress();
  let stopRequested = false;
  const onSigint = () => {
    if (stopRequested) {
      progress.break();
      process.stderr.write('karlo: interrupted again; exiting without a checkpoint\n');
      process.exit(130);
    }
    stopRequested = true;
    progress.break();
    process.stderr.write('karlo: stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)\n');
  };
  process.on('SIGINT', onSigint);
  const log = (line: string) => { progress.break(); process.stderr.write(`${line}\n`); };
  let result;
  try {
    result = await train({
      model, component, data, steps, out,
      batch: argv.batch, lr: argv.lr,
      loraRank: argv['lora-rank'], loraAlpha: argv['lora-alpha'],
      train: globs(argv.train), freeze: globs(argv.freeze),
      gradAccum: argv['grad-accum'], saveEvery: argv['save-every'], resume: argv.resume, seed: argv.seed,
      lrScheduler: argv['lr-scheduler'] as LrScheduleKind, warmupSteps: argv['warmup-steps'],
      maxGradNorm: argv['max-grad-norm'], weightDecay: argv['weight-decay'], cacheDir: argv['cache-dir'],
      log, onStep: (p) => progress.update(p), shouldStop: () => stopRequested,
    });
  } catch (e) {
    progress.break();
    if (e instanceof TrainArgumentError || e instanceof DataError || e instanceof ModelFolderError) throw new UsageError(e.message);
    throw e;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
  progress.break();
  const summary = {
    steps: result.stepsDone, interrupted: result.interrupted, checkpoint: result.lastCheckpoint,
    checkpoints: result.checkpoints, lossCsv: result.lossCsv, lossPng: result.lossPng,
    finalLoss: result.losses.length ? result.losses[result.losses.length - 1].loss : null,
    trainableParameters: result.trainableParameters, totalParameters: result.totalParameters,
  };
  if (argv.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } else {
    if (result.lastCheckpoint) process.stdout.write(`checkpoint ${result.lastCheckpoint}\n`);
    process.stdout.write(`loss curve ${result.lossPng} (${path.basename(result.lossCsv)})\n`);
    if (result.lastCheckpoint && argv['lora-rank'] === undefined) {
      process.stdout.write(`generate with it: karlo generate "a prompt" --model ${result.lastCheckpoint}\n`);
    } else if (result.lastCheckpoint) {
      process.stdout.write(`generate with it: karlo generate "a prompt" --model ${model} --lora ${path.join(result.lastCheckpoint, 'pytorch_lora_weights.safetensors')}\n`);
    }
  }
  if (result.interrupted) {
    process.stderr.write(`karlo: interrupted at step ${result.stepsDone}; continue with --resume ${result.lastCheckpoint ?? out}\n`);
    process.exit(130);
  }
}

const command: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'fine-tune a component (prior, decoder, super-res, text encoder) on a folder of captioned images',
  builder: (y: Argv) => y
    .option('model', { type: 'string', describe: 'diffusers-layout Karlo folder to start from (model_index.json)' })
    .option('component', { type: 'string', describe: `what to train: ${TRAIN_COMPONENTS.join(' | ')}` })
    .option('data', { type: 'string', describe: 'folder of images (PNG/JPEG) with captions in same-stem .txt files' })
    .option('steps', { type: 'number', describe: 'optimizer steps in all (a resumed run continues up to this)' })
    .option('batch', { type: 'number', default: 1, describe: 'images per micro-batch' })
    .option('lr', { type: 'number', default: 1e-4, describe: 'AdamW learning rate' })
    .option('out', { type: 'string', describe: 'output folder: checkpoint-<step>/, loss.csv, loss.png' })
    .option('lora-rank', { type: 'number', describe: 'train LoRA adapters of this rank on the attention projections (base weights frozen)' })
    .option('lora-alpha', { type: 'number', describe: 'LoRA alpha (scale = alpha / rank; default: the rank)' })
    .option('train', { type: 'string', array: true, describe: "train only parameters matching these globs over state-dict keys (e.g. 'up_blocks.**')" })
    .option('freeze', { type: 'string', array: true, describe: "freeze parameters matching these globs (wins over --train), e.g. '**.norm*'" })
    .option('grad-accum', { type: 'number', default: 1, describe: 'micro-batches per optimizer step (gradient accumulation)' })
    .option('save-every', { type: 'number', describe: 'write a checkpoint every N steps (always at the end)' })
    .option('resume', { type: 'string', describe: 'continue from a checkpoint-<step> folder (or the --out folder of a run: its latest)' })
    .option('seed', { type: 'number', default: 0, describe: 'seed of the data order, timesteps and noise' })
    .option('lr-scheduler', { type: 'string', default: 'constant', describe: `learning-rate schedule: ${LR_SCHEDULES.join(' | ')}` })
    .option('warmup-steps', { type: 'number', default: 0, describe: 'linear learning-rate warm-up steps' })
    .option('max-grad-norm', { type: 'number', default: 1, describe: 'clip the global gradient norm to this (0: no clipping)' })
    .option('weight-decay', { type: 'number', default: 1e-2, describe: 'AdamW decoupled weight decay' })
    .option('cache-dir', { type: 'string', describe: 'where to cache the conditioning (default DATA/.karlo_cache)' })
    .option('json', { type: 'boolean', describe: 'print a JSON summary on stdout' }) as unknown as Argv<TrainArgs>,
  handler: run,
};

export default command;
