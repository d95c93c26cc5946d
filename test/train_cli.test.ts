// `karlo train` end to end through the CLI on a generated folder of a few images (PNG + JPEG, with files to skip):
// progress lines when stderr is not a terminal, loss CSV/PNG, checkpoints; the checkpoint loads back in
// `karlo generate` (full fine-tuning: --model CHECKPOINT; LoRA: --lora FILE[:scale], scale 0 = the base model);
// Ctrl-C saves a checkpoint and exits 130, and --resume continues it; bad arguments are one line, exit 2; the
// conditioning cache is reused, and uses the CLIP image encoder when the model folder has image_encoder/.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readPng } from '../src/io/png.js';
import { availableBackends } from '../src/backend/index.js';
import { train } from '../src/training/trainer.js';
import { parseLossCsv } from '../src/training/plot.js';
import { fixture, useBackend } from './helpers.js';
import { makeDataFolder, tinyModelCopy } from './train_helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The fastest backend here (these tests are about the command; numerics and bit-exact resume are in train_resume).
const backend = (await availableBackends(['native'])).length ? 'native' : 'cpu';
await useBackend(backend);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-train-cli-'));

const MODEL = tinyModelCopy(path.join(tmp, 'tiny8'), { decoder: 8, super_res_first: 32, super_res_last: 32 });
const DATA = makeDataFolder(path.join(tmp, 'data'), 2);
fs.copyFileSync(fixture('images', 'q90_420.jpg'), path.join(DATA, 'photo.jpg'));
fs.writeFileSync(path.join(DATA, 'photo.txt'), 'a photograph');
fs.writeFileSync(path.join(DATA, 'notes.md'), 'not data');
fs.copyFileSync(path.join(DATA, 'img0.png'), path.join(DATA, 'uncaptioned.png'));

function karlo(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args, '--backend', backend], { cwd: tmp, encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const GEN = ['--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2', '--seed', '5'];
const pixels = (f: string) => Buffer.from(readPng(f).data);

test('train → checkpoint → generate; progress lines without a terminal; loss CSV and PNG; skipped files listed', () => {
  const out = path.join(tmp, 'run');
  const r = karlo(['train', '--model', MODEL, '--component', 'decoder', '--data', DATA, '--steps', '4', '--batch', '2', '--lr', '1e-3', '--save-every', '2', '--out', out]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /skipped notes\.md: not an image/);
  assert.match(r.stderr, /skipped uncaptioned\.png: no caption file uncaptioned\.txt/);
  assert.match(r.stderr, /data: 3 image\/caption pair\(s\)/);
  assert.match(r.stderr, /^train: 0\/4 steps$/m);
  assert.match(r.stderr, /^train: 4\/4 steps  [\d.]+ (steps\/s|s\/step)  loss [\d.]+ \(avg [\d.]+\)  lr 0\.00100  took /m);
  assert.not.match(r.stderr, /\r/, 'no carriage returns when stderr is not a terminal');
  assert.match(r.stdout, /checkpoint .*checkpoint-4/);
  for (const c of ['checkpoint-2', 'checkpoint-4']) assert.ok(fs.existsSync(path.join(out, c, 'decoder', 'diffusion_pytorch_model.safetensors')), c);
  const csv = parseLossCsv(fs.readFileSync(path.join(out, 'loss.csv'), 'utf8'));
  assert.equal(csv.map((p) => p.step), [1, 2, 3, 4]);
  assert.ok(csv.every((p) => p.loss > 0 && p.lr === 1e-3));
  const png = readPng(path.join(out, 'loss.png'));
  assert.equal([png.width, png.height], [720, 420]);

  const base = karlo(['generate', 'a blue card', '--model', MODEL, '--out', path.join(tmp, 'base.png'), ...GEN]);
  assert.is(base.code, 0, base.stderr);
  const tuned = karlo(['generate', 'a blue card', '--model', path.join(out, 'checkpoint-4'), '--out', path.join(tmp, 'tuned.png'), ...GEN]);
  assert.is(tuned.code, 0, tuned.stderr);
  assert.not.ok(pixels(path.join(tmp, 'tuned.png')).equals(pixels(path.join(tmp, 'base.png'))), 'the fine-tuned decoder changes the image');
});

test('LoRA: adapters only in the checkpoint; generate --lora changes the image, --lora FILE:0 gives the base image', () => {
  const out = path.join(tmp, 'lora');
  const r = karlo(['train', '--model', MODEL, '--component', 'decoder', '--data', DATA, '--steps', '2', '--batch', '2', '--lr', '5e-2', '--lora-rank', '2', '--lora-alpha', '2', '--out', out, '--json']);
  assert.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.is(j.steps, 2);
  assert.ok(j.trainableParameters < j.totalParameters / 10, `${j.trainableParameters} of ${j.totalParameters}`);
  const file = path.join(out, 'checkpoint-2', 'pytorch_lora_weights.safetensors');
  assert.ok(fs.existsSync(file));
  assert.not.ok(fs.existsSync(path.join(out, 'checkpoint-2', 'decoder')));
  const withLora = karlo(['generate', 'a blue card', '--model', MODEL, '--lora', file, '--out', path.join(tmp, 'lora.png'), ...GEN]);
  assert.is(withLora.code, 0, withLora.stderr);
  assert.not.ok(pixels(path.join(tmp, 'lora.png')).equals(pixels(path.join(tmp, 'base.png'))));
  const zero = karlo(['generate', 'a blue card', '--model', MODEL, '--lora', `${file}:0`, '--out', path.join(tmp, 'lora0.png'), ...GEN]);
  assert.is(zero.code, 0, zero.stderr);
  assert.ok(pixels(path.join(tmp, 'lora0.png')).equals(pixels(path.join(tmp, 'base.png'))));
  const bad = karlo(['generate', 'x', '--model', MODEL, '--lora', path.join(tmp, 'nope.safetensors'), '--out', path.join(tmp, 'x.png'), ...GEN]);
  assert.is(bad.code, 2);
  const errs = bad.stderr.split('\n').filter((l) => l.startsWith('karlo:'));
  assert.is(errs.length, 1, bad.stderr);
  assert.match(errs[0], /^karlo: --lora .*nope\.safetensors: .*nope\.safetensors does not exist$/);
});

test('Ctrl-C saves a checkpoint and exits 130; --resume continues from it', async () => {
  const out = path.join(tmp, 'sigint');
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), 'train', '--model', MODEL, '--component', 'prior', '--data', DATA,
    '--steps', '100000', '--out', out, '--backend', backend], { cwd: tmp });
  let stderr = '';
  let stdout = '';
  child.stdout.on('data', (d) => { stdout += d; });
  const code = await new Promise<number | null>((resolve) => {
    let sent = false;
    child.stderr.on('data', (d) => {
      stderr += d;
      if (!sent && /train: 0\/100000 steps/.test(stderr)) { sent = true; child.kill('SIGINT'); }
    });
    child.on('close', (c) => resolve(c));
  });
  assert.is(code, 130, stderr);
  const m = /interrupted at step (\d+); continue with --resume (\S+)/.exec(stderr);
  assert.ok(m, stderr);
  const step = Number(m![1]);
  assert.ok(step >= 1);
  assert.ok(fs.existsSync(path.join(out, `checkpoint-${step}`, 'training_state.json')), stdout);
  const r = karlo(['train', '--model', MODEL, '--component', 'prior', '--data', DATA, '--steps', String(step + 1), '--out', out, '--resume', out]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`resumed from .*checkpoint-${step} at step ${step}`));
  assert.ok(fs.existsSync(path.join(out, `checkpoint-${step + 1}`)));
  assert.is(parseLossCsv(fs.readFileSync(path.join(out, 'loss.csv'), 'utf8')).length, step + 1);
});

test('bad arguments and unusable data: one line, exit 2', () => {
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty);
  const base = ['train', '--model', MODEL, '--component', 'decoder', '--out', path.join(tmp, 'e')];
  const cases: [string[], RegExp][] = [
    [[...base, '--data', DATA], /--steps is required/],
    [[...base, '--data', empty, '--steps', '2'], /empty: no usable image\/caption pair/],
    [['train', '--model', MODEL, '--component', 'vae', '--data', DATA, '--steps', '1', '--out', path.join(tmp, 'e')], /--component must be one of prior, decoder/],
    [[...base, '--data', DATA, '--steps', '2', '--batch', '0'], /--batch must be an integer/],
    [['train', '--model', MODEL, '--component', 'decoder', '--data', DATA, '--steps', '2', '--out', path.join(tmp, 'run')], /already holds checkpoints.*--resume/],
    [[...base, '--data', DATA, '--steps', '2', '--train', 'nothing.here'], /--train "nothing\.here" matches no parameter/],
  ];
  for (const [args, re] of cases) {
    const r = karlo(args);
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('karlo:'));
    assert.is(lines.length, 1, r.stderr);
    assert.match(lines[0], re);
  }
});

test('conditioning cache: reused by the next run; image embeddings from image_encoder/ when the folder has one', async () => {
  const logs: string[] = [];
  await train({ model: MODEL, component: 'prior', data: DATA, steps: 1, batch: 1, lr: 1e-4, out: path.join(tmp, 'c1'), log: (l) => logs.push(l) });
  assert.ok(logs.some((l) => /conditioning: 6 cached, 0 computed/.test(l)), logs.join('\n')); // 3 captions × (text, prior embedding)
  // add the tiny CLIP vision encoder (projection 16 = the tiny embedding width)
  const withVision = path.join(tmp, 'tiny8-vision');
  fs.cpSync(MODEL, withVision, { recursive: true });
  for (const d of ['image_encoder', 'feature_extractor']) fs.cpSync(fixture('variation_tiny', d), path.join(withVision, d), { recursive: true, dereference: true });
  const logs2: string[] = [];
  await train({ model: withVision, component: 'prior', data: DATA, steps: 1, batch: 1, lr: 1e-4, out: path.join(tmp, 'c2'), log: (l) => logs2.push(l) });
  assert.ok(logs2.some((l) => /conditioning: 3 cached, 3 computed .*image embeddings from the CLIP image encoder/.test(l)), logs2.join('\n'));
  const images = fs.readdirSync(path.join(DATA, '.karlo_cache')).filter((n) => n.startsWith('image-'));
  assert.is(images.length, 2, 'one image-embedding cache per source model');
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
