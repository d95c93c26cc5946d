// `npm run train:nano -- [--out runs/nano] [--ship models/karlo-nano] [--steps-scale 1] [--untrained-clip]`:
// the whole karlo-nano recipe, every component trained from scratch by `karlo train` (no other training code):
//   1 data        tools/nano-data world (seed 0): train/ at 128 px, train-32/ at 32 px, held-out split
//   2 init        a freshly initialised nano folder (src/nano/init.ts)
//   3 clip        karlo train --component clip (contrastive, text_encoder + image_encoder) on train-32/
//   4 prior stats clip_mean / clip_std of the prior = statistics of the training images' CLIP image embeddings
//   5 prior       karlo train --component prior on train-32/ (targets: the CLIP image embeddings of the images)
//   6 decoder     karlo train --component decoder on train-32/ (text_proj too where karlo train can train it)
//   7 super_res   karlo train --component super_res on train/ (x0 at 128, low-res = x0 resized to 32)
//   8 sr last     karlo train --component super_res_last on train/, starting from super_res_first's weights
//   9 ship        the final pipeline folder packed as float16 (--ship), evaluated with eval-nano
// Each step's checkpoint is a pipeline folder linking the others, so step k trains on top of step k-1. Logs go to
// <out>/recipe.log, wall time per step to <out>/recipe.json. A step whose output exists is skipped (re-running
// continues an interrupted recipe).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { initBackend } from '../../src/backend/index.js';
import { writeNanoDataset, readNanoManifest } from '../../src/nano/dataset.js';
import { imageEmbeddingStats, packFolder, setPriorClipStats } from '../../src/nano/folder_ops.js';
import { writeNanoInitFolder } from '../../src/nano/init.js';
import { TRAIN_COMPONENTS } from '../../src/training/trainer.js';

const argv = yargs(hideBin(process.argv))
  .scriptName('train-nano')
  .option('out', { type: 'string', default: 'runs/nano' })
  .option('ship', { type: 'string', describe: 'write the final float16 folder here (e.g. models/karlo-nano)' })
  .option('seed', { type: 'number', default: 0 })
  .option('scenes', { type: 'number', default: 3000, describe: 'training scenes in the data set' })
  .option('steps-scale', { type: 'number', default: 1, describe: 'multiply every step count (0.01 for a smoke run)' })
  .option('untrained-clip', { type: 'boolean', describe: 'skip CLIP training (random CLIP towers as fixed features) when karlo train has no --component clip' })
  .option('backend', { type: 'string', default: 'native' })
  .strict()
  .parseSync();

/**
 * Per step: component, data folder (relative to <out>/data), steps, batch, learning rate, warm-up, extra `karlo
 * train` arguments. Sized for the 2-hour budget on 2 cores (quiet machine: clip 3.5 s/step, prior 0.8, decoder 2.2,
 * super-res on 64 px crops ~1). --cond-drop trains the unconditional rows classifier-free guidance samples.
 */
const PLAN = {
  clip: { component: 'clip', data: 'train-32', steps: 400, batch: 64, lr: 5e-4, warmup: 40, extra: [] },
  prior: { component: 'prior', data: 'train-32', steps: 1000, batch: 32, lr: 3e-4, warmup: 50, extra: ['--cond-drop', '0.1'] },
  decoder: { component: 'decoder', data: 'train-32', steps: 1200, batch: 16, lr: 5e-4, warmup: 50, extra: ['--cond-drop', '0.1', '--text-proj', '--vlb-weight', '1'] },
  super_res: { component: 'super_res', data: 'train', steps: 800, batch: 8, lr: 5e-4, warmup: 50, extra: ['--crop', '64'] },
  super_res_last: { component: 'super_res_last', data: 'train', steps: 200, batch: 8, lr: 2e-4, warmup: 20, extra: ['--crop', '64'] },
} as const;

const out = path.resolve(argv.out);
fs.mkdirSync(out, { recursive: true });
const logFile = path.join(out, 'recipe.log');
const log = (line: string) => {
  const l = `[${new Date().toISOString()}] ${line}\n`;
  process.stderr.write(l);
  fs.appendFileSync(logFile, l);
};
const timesFile = path.join(out, 'recipe.json');
const times: Record<string, number> = fs.existsSync(timesFile) ? JSON.parse(fs.readFileSync(timesFile, 'utf8')) : {};
/** Runs a step and records its wall time; a step that was done already (f returns false) keeps its recorded time. */
const timed = async (name: string, f: () => unknown | Promise<unknown>) => {
  const t0 = performance.now();
  if ((await f()) === false) return;
  times[name] = (performance.now() - t0) / 1000;
  fs.writeFileSync(timesFile, `${JSON.stringify(times, null, 1)}\n`);
  log(`${name}: ${times[name].toFixed(0)} s`);
};

function fail(msg: string): never {
  log(`train-nano: ${msg}`);
  process.exit(2);
}

const missing: string[] = [];
if (!(TRAIN_COMPONENTS as readonly string[]).includes('clip') && !argv['untrained-clip']) missing.push('karlo train --component clip (the contrastive loss is src/training/clip_contrastive.ts; the trainer must save text_encoder/ and image_encoder/ together)');
if (missing.length) fail(`karlo train cannot run this recipe yet: ${missing.join('; ')}. Use --untrained-clip to train the rest on random CLIP features.`);

const dataDir = path.join(out, 'data');
if (!fs.existsSync(path.join(dataDir, 'manifest.json'))) {
  await timed('data', () => writeNanoDataset({ out: dataDir, seed: argv.seed, train: argv.scenes }));
} else {
  readNanoManifest(dataDir);
}
let model = path.join(out, 'init');
if (!fs.existsSync(path.join(model, 'model_index.json'))) await timed('init', () => writeNanoInitFolder(model, { seed: argv.seed }));

/** Runs one `karlo train` step; false when its final checkpoint exists already. */
function trainStep(name: keyof typeof PLAN): boolean {
  const p = PLAN[name];
  const runDir = path.join(out, name);
  const steps = Math.max(2, Math.round(p.steps * argv['steps-scale']));
  const done = path.join(runDir, `checkpoint-${steps}`);
  if (fs.existsSync(path.join(done, 'model_index.json'))) { model = done; log(`${name}: done already (${done})`); return false; }
  const args = [
    'bin/karlo.js', 'train', '--model', model, '--component', p.component, '--data', path.join(dataDir, p.data),
    '--steps', String(steps), '--batch', String(p.batch), '--lr', String(p.lr), '--lr-scheduler', 'cosine',
    '--warmup-steps', String(Math.min(p.warmup, steps - 1)), '--save-every', String(Math.max(50, Math.round(steps / 4))),
    '--seed', String(argv.seed), '--out', runDir, '--backend', argv.backend, ...p.extra,
  ];
  if (fs.existsSync(runDir) && fs.readdirSync(runDir).some((n) => /^checkpoint-\d+$/.test(n))) args.push('--resume', runDir);
  log(`${name}: node ${args.join(' ')}`);
  const fd = fs.openSync(logFile, 'a');
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  if (r.status !== 0) fail(`${name}: karlo train exited ${r.status ?? r.signal}; see ${logFile}`);
  model = done;
  return true;
}

if (!argv['untrained-clip']) await timed('clip', () => trainStep('clip'));
await timed('prior_stats', async () => {
  await initBackend(argv.backend);
  const s = await imageEmbeddingStats(model, path.join(dataDir, PLAN.prior.data));
  // The prior folder of the current pipeline may be a link into an earlier run: write a fresh copy here.
  const statsDir = path.join(out, 'prior_stats');
  fs.rmSync(statsDir, { recursive: true, force: true });
  packFolder(model, statsDir, 'F32');
  setPriorClipStats(path.join(statsDir, 'prior'), s.mean, s.std);
  model = statsDir;
  log(`prior_stats: ${s.n} images; mean |clip_mean| ${(s.mean.reduce((a, b) => a + Math.abs(b), 0) / s.mean.length).toFixed(4)}, mean clip_std ${(s.std.reduce((a, b) => a + b, 0) / s.std.length).toFixed(4)}`);
});
await timed('prior', () => trainStep('prior'));
await timed('decoder', () => trainStep('decoder'));
await timed('super_res', () => trainStep('super_res'));
await timed('super_res_last', () => {
  // super_res_last starts from super_res_first's trained weights (Karlo uses it for the last step only).
  const seeded = path.join(out, 'sr_last_init');
  if (!fs.existsSync(path.join(seeded, 'model_index.json'))) {
    packFolder(model, seeded, 'F32');
    fs.rmSync(path.join(seeded, 'super_res_last'), { recursive: true, force: true });
    fs.cpSync(path.join(seeded, 'super_res_first'), path.join(seeded, 'super_res_last'), { recursive: true });
  }
  model = seeded;
  return trainStep('super_res_last');
});
const final = path.join(out, 'final');
fs.rmSync(final, { recursive: true, force: true });
const bytes = packFolder(model, final, 'F16');
log(`final: ${final} (${(bytes / 2 ** 20).toFixed(1)} MiB float16); total ${Object.values(times).reduce((a, b) => a + b, 0).toFixed(0)} s`);
if (argv.ship) {
  fs.rmSync(argv.ship, { recursive: true, force: true });
  fs.cpSync(final, argv.ship, { recursive: true });
  log(`shipped to ${argv.ship}; evaluate with: npm run eval:nano -- --model ${argv.ship}`);
}
