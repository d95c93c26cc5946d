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
import { Progress } from '../progress.js';
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
  'cond-drop': number;
  'text-proj'?: boolean;
  'vlb-weight'?: number;
  'snr-gamma'?: number;
  'ema-decay'?: number;
  crop?: number;
  'cache-dir'?: string;
  backend?: string;
  json?: boolean;
}

function fmtNum(v: number, digits = 4): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(digits - 2) : v.toPrecision(digits);
}

/** The train stage on the CLI's one progress reporter: steps, steps/s, the loss (and its running mean) and lr. */
export class TrainProgress {
  private ema: number | null = null;
  private start = 0;
  constructor(readonly progress = new Progress({ everySeconds: 5 })) {}

  /** Before the first step: a resumed run counts the steps of this run only (the rate stays true). */
  begin(startStep: number, totalSteps: number): void {
    this.start = startStep;
    this.progress.begin(startStep ? `train (from step ${startStep})` : 'train', totalSteps - startStep);
  }

  update(p: StepReport): void {
    this.ema = this.ema === null ? p.loss : 0.9 * this.ema + 0.1 * p.loss;
    this.progress.setDetail(`${this.start ? `step ${p.step}/${p.totalSteps}  ` : ''}loss ${fmtNum(p.loss)} (avg ${fmtNum(this.ema)})  lr ${fmtNum(p.lr, 3)}`);
    this.progress.update(p.step - this.start);
  }

  end(): void {
    this.progress.end();
  }

  log(line: string): void {
    this.progress.log(line);
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
  for (const k of ['steps', 'batch', 'lr', 'lora-rank', 'lora-alpha', 'grad-accum', 'save-every', 'seed', 'warmup-steps', 'max-grad-norm', 'weight-decay', 'cond-drop', 'vlb-weight', 'snr-gamma', 'ema-decay', 'crop'] as const) checkNumber(k, argv[k]);
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
      progress.log('karlo: interrupted again; exiting without a checkpoint');
      process.exit(130);
    }
    stopRequested = true;
    progress.log('karlo: stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)');
  };
  process.on('SIGINT', onSigint);
  let result;
  try {
    result = await train({
      model, component, data, steps, out,
      batch: argv.batch, lr: argv.lr,
      loraRank: argv['lora-rank'], loraAlpha: argv['lora-alpha'],
      train: globs(argv.train), freeze: globs(argv.freeze),
      gradAccum: argv['grad-accum'], saveEvery: argv['save-every'], resume: argv.resume, seed: argv.seed,
      lrScheduler: argv['lr-scheduler'] as LrScheduleKind, warmupSteps: argv['warmup-steps'],
      maxGradNorm: argv['max-grad-norm'], condDrop: argv['cond-drop'],
      textProj: argv['text-proj'], vlbWeight: argv['vlb-weight'], snrGamma: argv['snr-gamma'], emaDecay: argv['ema-decay'], crop: argv.crop, weightDecay: argv['weight-decay'], cacheDir: argv['cache-dir'],
      log: (line) => progress.log(line),
      onStart: (i) => progress.begin(i.startStep, i.totalSteps),
      onStep: (p) => progress.update(p),
      shouldStop: () => stopRequested,
    });
  } catch (e) {
    if (e instanceof TrainArgumentError || e instanceof DataError || e instanceof ModelFolderError) throw new UsageError(e.message);
    throw e;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
  if (!result.interrupted) progress.end();
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
    progress.log(`karlo: interrupted at step ${result.stepsDone}; continue with --resume ${result.lastCheckpoint ?? out}`);
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
    .option('cond-drop', { type: 'number', default: 0, describe: 'decoder/prior: train this fraction of samples unconditionally ("" caption, null image embedding) so classifier-free guidance keeps working (unCLIP used 0.1)' })
    .option('text-proj', { type: 'boolean', describe: 'decoder: train text_proj with it (saved as text_proj/ in each checkpoint)' })
    .option('ema-decay', { type: 'number', describe: 'keep a moving average of the weights with this decay (diffusers --use_ema, e.g. 0.999): checkpoints hold the average, --resume continues the trained weights' })
    .option('snr-gamma', { type: 'number', describe: 'decoder, super-res: Min-SNR-gamma weighting of the noise-prediction loss (diffusers --snr_gamma; 5 is the usual value)' })
    .option('vlb-weight', { type: 'number', describe: "decoder: add this weight x the variational-bound term that trains the learned-range variance channels (Improved DDPM's hybrid loss: 1)" })
    .option('crop', { type: 'number', describe: 'super_res / super_res_last: train on random crops of this size (e.g. 64 of 128)' })
    .option('cache-dir', { type: 'string', describe: 'where to cache the conditioning (default DATA/.karlo_cache)' })
    .option('json', { type: 'boolean', describe: 'print a JSON summary on stdout' }) as unknown as Argv<TrainArgs>,
  handler: run,
};

export default command;
