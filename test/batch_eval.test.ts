// `karlo eval`: CLIP score of a batch folder against an independent computation (test/fixtures/clip_score:
// make_reference.py evaluates the same tiny CLIP towers in float64 numpy, with transformers' tokenizer and image
// processor prepared as torchmetrics' CLIPScore does), for both CLIP folder layouts; histogram PNG; errors.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import { readPng } from '../src/io/png.js';
import { readImage } from '../src/io/image.js';
import { clipCosines, loadClipScorer, summarise, ClipFolderError } from '../src/batch/clip_score.js';
import { readManifest } from '../src/batch/output.js';
import { binScores } from '../src/batch/histogram.js';
import { availableBackends } from '../src/backend/index.js';
import { assertClose, fixture, registerNativeOrWhy, useBackend } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BACKEND = (await registerNativeOrWhy()) === undefined ? 'native' : (await availableBackends(['wasm'])).length ? 'wasm' : 'cpu';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-eval-'));
const BATCH = fixture('clip_score', 'batch');
const REF = JSON.parse(fs.readFileSync(fixture('clip_score', 'reference.json'), 'utf8')) as { files: string[]; cos100: number[]; torchmetrics_score: number; mean_clamped: number };

// Layout 1: diffusers-style subfolders, from the clip_text / clip_vision fixtures (a matched pair, projection 16).
const SUB = path.join(tmp, 'clip-sub');
for (const [d, src] of [['text_encoder', 'clip_text'], ['image_encoder', 'clip_vision']] as const) {
  fs.mkdirSync(path.join(SUB, d), { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(fixture(src, f), path.join(SUB, d, f));
}
fs.cpSync(path.join(ROOT, 'models/karlo-tiny/tokenizer'), path.join(SUB, 'tokenizer'), { recursive: true });
fs.mkdirSync(path.join(SUB, 'feature_extractor'));
fs.copyFileSync(fixture('clip_vision', 'preprocessor_32', 'preprocessor_config.json'), path.join(SUB, 'feature_extractor', 'preprocessor_config.json'));

// Layout 2: one transformers CLIPModel folder (both towers in one file, as openai/clip-vit-base-patch16).
const JOINT = path.join(tmp, 'clip-joint');
fs.mkdirSync(JOINT);
const textCfg = JSON.parse(fs.readFileSync(fixture('clip_text', 'config.json'), 'utf8'));
const visionCfg = JSON.parse(fs.readFileSync(fixture('clip_vision', 'config.json'), 'utf8'));
fs.writeFileSync(path.join(JOINT, 'config.json'), JSON.stringify({
  architectures: ['CLIPModel'], model_type: 'clip', projection_dim: 16, logit_scale_init_value: 2.6592,
  text_config: { ...textCfg, architectures: undefined }, vision_config: { ...visionCfg, architectures: undefined },
}));
const joint = new Map<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>();
for (const src of ['clip_text', 'clip_vision']) {
  for (const [k, t] of loadSafetensors(fixture(src, 'model.safetensors'))) joint.set(k, { dtype: 'F32', shape: t.shape, data: t.data as Float32Array });
}
joint.set('logit_scale', { dtype: 'F32', shape: [], data: Float32Array.of(2.6592) });
saveSafetensors(path.join(JOINT, 'model.safetensors'), joint);
for (const f of fs.readdirSync(path.join(SUB, 'tokenizer'))) fs.copyFileSync(path.join(SUB, 'tokenizer', f), path.join(JOINT, f));
fs.copyFileSync(path.join(SUB, 'feature_extractor', 'preprocessor_config.json'), path.join(JOINT, 'preprocessor_config.json'));

function karlo(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { cwd: tmp, env: { ...process.env, KARLO_BACKEND: BACKEND }, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('karlo eval --json: per-image 100·cos equal to the independent float64 computation, torchmetrics mean (clamped), histogram PNG', () => {
  const hist = path.join(tmp, 'hist.png');
  const r = karlo(['eval', BATCH, '--clip', SUB, '--json', '--hist', hist]);
  assert.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.images.map((i: { file: string }) => i.file), REF.files);
  assertClose('cos100', Float32Array.from(j.images.map((i: { cos100: number }) => i.cos100)), REF.cos100);
  for (const i of j.images) assert.is(i.score, Math.max(i.cos100, 0));
  assert.ok(REF.cos100.some((x) => x > 0) && REF.cos100.some((x) => x < 0), 'the fixture exercises both sides of the clamp');
  assert.ok(Math.abs(j.score - REF.torchmetrics_score) <= 1e-4, `${j.score} vs ${REF.torchmetrics_score}`);
  assert.ok(Math.abs(j.meanClamped - REF.mean_clamped) <= 1e-4, `${j.meanClamped} vs ${REF.mean_clamped}`);
  assert.is(j.count, 6);
  const png = readPng(hist);
  assert.equal([png.width, png.height], [640, 360]);
  assert.not.ok(fs.existsSync(path.join(BATCH, 'clip_score_hist.png')), '--hist puts it elsewhere');
  const text = karlo(['eval', BATCH, '--clip', SUB, '--hist', hist]);
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout, /CLIP score 0\.0000 \(torchmetrics: max\(mean 100·cos, 0\)\) over 6 images; per image max\(100·cos, 0\): mean 3\.85/);
});

test('a transformers CLIPModel folder (both towers in one file) gives the same scores; memory back to baseline', async () => {
  await useBackend(BACKEND);
  const pairs = await Promise.all(readManifest(BATCH).map(async (e) => ({ image: await readImage(path.join(BATCH, e.file)), prompt: e.prompt })));
  for (const dir of [SUB, JOINT]) {
    const s = loadClipScorer(dir);
    try {
      assert.is(s.layout, dir === SUB ? 'subfolders' : 'clip-model');
      const before = tf.memory().numTensors;
      const cos = clipCosines(s, pairs, 4); // batches of 4: padding to the longest prompt per batch changes nothing
      assert.is(tf.memory().numTensors, before);
      assertClose(`cos100 (${s.layout})`, Float32Array.from(cos), REF.cos100);
      assert.ok(Math.abs(summarise(cos).meanClamped - REF.mean_clamped) <= 1e-4);
    } finally {
      s.dispose();
    }
  }
  assert.equal(binScores([0, 2.4, 2.5, 39.9, 41]).counts.slice(0, 2), [2, 1]);
  assert.is(binScores([0, 2.4, 2.5, 39.9, 41]).edges.at(-1), 50);
});

test('karlo eval: a CLIP folder it cannot use, no --clip, a folder without manifest: one line, exit 2', () => {
  const broken = path.join(tmp, 'broken');
  fs.cpSync(SUB, broken, { recursive: true });
  fs.rmSync(path.join(broken, 'feature_extractor'), { recursive: true });
  assert.throws(() => loadClipScorer(broken), (e: Error) => e instanceof ClipFolderError && /preprocessor_config\.json/.test(e.message));
  const cases: [string[], RegExp][] = [
    [['eval', BATCH], /--clip CLIP_DIR is required/],
    [['eval', BATCH, '--clip', broken], /feature_extractor: missing preprocessor_config\.json/],
    [['eval', tmp, '--clip', SUB], /manifest\.jsonl: missing/],
  ];
  for (const [args, re] of cases) {
    const r = karlo(args);
    assert.is(r.code, 2, r.stderr);
    assert.is(r.stderr.trim().split('\n').filter((l) => !/^backend/.test(l)).length, 1, r.stderr);
    assert.match(r.stderr, re);
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
