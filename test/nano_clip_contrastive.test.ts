// CLIP's contrastive loss (src/training/clip_contrastive.ts) on the nano CLIP towers: the value equals an
// independent float64 computation from the towers' own embeddings (with duplicate captions sharing targets), the
// gradient of both towers matches central finite differences along a random direction, tensors are freed, and
// bad batches are refused with a clear message.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { registerGradients } from '../src/backend/gradients.js';
import { writeNanoInitFolder } from '../src/nano/init.js';
import { CLIPTokenizer } from '../src/tokenizer/clip_tokenizer.js';
import { CLIP_DEFAULT_LOGIT_SCALE, clipContrastiveLoss, clipNormalise, contrastiveTargets } from '../src/training/clip_contrastive.js';
import { valueAndGrads } from '../src/training/losses.js';
import { Rng } from '../src/nano/world.js';
import { writeNanoDataset } from '../src/nano/dataset.js';
import { UnCLIPPipeline } from '../src/pipeline/unclip_pipeline.js';
import { TrainArgumentError, train, type TrainOptions } from '../src/training/trainer.js';
import { useBackend } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

await useBackend('native').catch(() => useBackend('cpu'));
await registerGradients();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-nano-clip-'));
writeNanoInitFolder(tmp, { seed: 3 });
const text = loadComponent(path.join(tmp, 'text_encoder'), 'CLIPTextModelWithProjection', { trainable: true });
const vision = loadComponent(path.join(tmp, 'image_encoder'), 'CLIPVisionModelWithProjection', { trainable: true });
const tok = CLIPTokenizer.fromDir(path.join(tmp, 'tokenizer'));
const captions = ['a red star on black', 'two blue rings on a white background', 'a red star on black', 'a green square left of a white ring', 'one pink circle on gray'];
const B = captions.length;
const enc = tok.encode(captions, { padding: 'max_length', maxLength: 77 });
const ids = tf.tensor2d(enc.inputIds.flat(), [B, 77], 'int32');
const rng = new Rng(11);
const S = vision.config.image_size;
const raw = tf.tensor4d(Float32Array.from({ length: B * 3 * S * S }, () => 2 * rng.next() - 1), [B, 3, S, S]);
const pixels = clipNormalise(raw);

function reference(): number {
  const t = text.forward(ids).textEmbeds, v = vision.forward(pixels).imageEmbeds;
  const T = Array.from(t.dataSync(), Number), V = Array.from(v.dataSync(), Number);
  tf.dispose([t, v]);
  const D = t.shape[1];
  const unit = (a: number[], i: number) => { const r = a.slice(i * D, (i + 1) * D); const n = Math.hypot(...r); return r.map((x) => x / n); };
  const tn = captions.map((_, i) => unit(T, i)), vn = captions.map((_, i) => unit(V, i));
  const logits = tn.map((ti) => vn.map((vj) => CLIP_DEFAULT_LOGIT_SCALE * ti.reduce((s, x, k) => s + x * vj[k], 0)));
  const same: number[][] = captions.map((a) => captions.map((b) => (a === b ? 1 : 0)));
  const ce = (rows: number[][]) => rows.reduce((acc, row, i) => {
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
    const n = same[i].reduce((a: number, b: number) => a + b, 0);
    return acc - row.reduce((s, x, j) => s + (same[i][j] / n) * (x - lse), 0);
  }, 0) / rows.length;
  const transposed = logits.map((_, i) => logits.map((r) => r[i]));
  return (ce(logits) + ce(transposed)) / 2;
}

test('targets: identity, with identical captions sharing their row', () => {
  const t = contrastiveTargets(ids.dataSync(), B, 77);
  assert.equal(Array.from(t.slice(0, 5)), [0.5, 0, 0.5, 0, 0]);
  assert.equal(Array.from(t.slice(5, 10)), [0, 1, 0, 0, 0]);
  assert.equal(Array.from(t.slice(10, 15)), [0.5, 0, 0.5, 0, 0]);
});

test('clipNormalise: ((x + 1)/2 − CLIP mean)/CLIP std per channel', () => {
  const x = tf.tensor4d([-1, 1, 0], [1, 3, 1, 1]);
  const y = clipNormalise(x).dataSync();
  assert.ok(Math.abs(y[0] - (0 - 0.48145466) / 0.26862954) < 1e-5);
  assert.ok(Math.abs(y[1] - (1 - 0.4578275) / 0.26130258) < 1e-5);
  assert.ok(Math.abs(y[2] - (0.5 - 0.40821073) / 0.27577711) < 1e-5);
  x.dispose();
});

test('loss value equals the float64 computation from the towers\' embeddings', () => {
  const before = tf.memory().numTensors;
  const l = clipContrastiveLoss(text, vision, { inputIds: ids, pixelValues: pixels });
  const ours = l.dataSync()[0];
  l.dispose();
  assert.is(tf.memory().numTensors, before);
  const ref = reference();
  assert.ok(Math.abs(ours - ref) <= 1e-5 * Math.max(1, Math.abs(ref)), `ours ${ours} vs float64 ${ref}`);
});

test('gradients of both towers match central finite differences along a random direction; no leaks', () => {
  const names = ['text_model.encoder.layers.0.self_attn.q_proj.weight', 'visual_projection.weight', 'vision_model.embeddings.patch_embedding.weight'];
  const params = new Map([...text.namedParameters(), ...vision.namedParameters()]);
  const vars = new Map(names.map((n) => [n, params.get(n)!.value]));
  const before = tf.memory().numTensors;
  const { value, grads } = valueAndGrads(() => clipContrastiveLoss(text, vision, { inputIds: ids, pixelValues: pixels }), vars);
  value.dispose();
  for (const n of names) {
    const v = vars.get(n)!;
    const g = grads.get(n);
    assert.ok(g, `no gradient for ${n}`);
    const dirData = Float32Array.from({ length: v.size }, () => 2 * rng.next() - 1);
    const norm = Math.hypot(...dirData);
    const dir = tf.tensor(dirData.map((x) => x / norm), v.shape);
    const analytic = tf.tidy(() => tf.sum(tf.mul(g!, dir)).dataSync()[0]);
    const orig = v.clone();
    const eps = 1e-2;
    const at = (s: number) => {
      const moved = tf.tidy(() => tf.add(orig, tf.mul(dir, s)));
      v.assign(moved);
      moved.dispose();
      const l = clipContrastiveLoss(text, vision, { inputIds: ids, pixelValues: pixels });
      const r = l.dataSync()[0];
      l.dispose();
      return r;
    };
    const numeric = (at(eps) - at(-eps)) / (2 * eps);
    v.assign(orig);
    tf.dispose([orig, dir]);
    assert.ok(Math.abs(numeric - analytic) <= 0.03 * Math.abs(analytic) + 2e-4, `${n}: analytic ${analytic} vs numeric ${numeric}`);
  }
  tf.dispose([...grads.values()]);
  assert.is(tf.memory().numTensors, before);
});

test('bad batches are refused with a clear message', () => {
  assert.throws(() => clipContrastiveLoss(text, vision, { inputIds: tf.slice(ids, [0, 0], [1, 77]) as tf.Tensor2D, pixelValues: tf.slice(pixels, [0, 0, 0, 0], [1, 3, S, S]) as tf.Tensor4D }), /at least 2 pairs/);
  assert.throws(() => clipContrastiveLoss(text, vision, { inputIds: ids, pixelValues: tf.slice(pixels, [0, 0, 0, 0], [2, 3, S, S]) as tf.Tensor4D }), /5 captions but 2 images/);
});

test('karlo train --component clip: both towers saved as their own folders, 4 steps = 2 + resume + 2 bit for bit, no leaks', async () => {
  const data = path.join(tmp, 'data');
  writeNanoDataset({ out: data, seed: 1, train: 8, heldoutSingle: 0, heldoutDouble: 0, size: 32, decoderSize: 32 });
  const base: Omit<TrainOptions, 'out'> = { model: tmp, component: 'clip', data: path.join(data, 'train'), steps: 4, batch: 4, lr: 1e-3, seed: 5, cacheDir: path.join(tmp, 'cache') };
  const before = tf.memory().numTensors;
  const straight = await train({ ...base, out: path.join(tmp, 'straight'), saveEvery: 2 });
  assert.is(tf.memory().numTensors, before);
  const resumed = await train({ ...base, out: path.join(tmp, 'resumed'), resume: path.join(tmp, 'straight', 'checkpoint-2') });
  const a = straight.lastCheckpoint!, b = resumed.lastCheckpoint!;
  for (const f of ['text_encoder/model.safetensors', 'image_encoder/model.safetensors', 'optimizer.safetensors']) {
    const fa = fs.readFileSync(path.join(a, f));
    assert.ok(fa.equals(fs.readFileSync(path.join(b, f))), `${f} differs after resume`);
    if (f !== 'optimizer.safetensors') {
      assert.ok(fs.lstatSync(path.join(a, path.dirname(f))).isDirectory(), `${path.dirname(f)} is a real folder`);
      assert.not.ok(fa.equals(fs.readFileSync(path.join(tmp, f))), `${f} did not change`);
    }
  }
  assert.ok(fs.lstatSync(path.join(a, 'decoder')).isSymbolicLink());
  assert.equal(resumed.losses, straight.losses);
  // The checkpoint is a pipeline folder whose CLIP towers load where the pipeline and the evaluation look for them.
  const pipe = await UnCLIPPipeline.load(a);
  pipe.dispose();
  try {
    await train({ ...base, out: path.join(tmp, 'lora'), loraRank: 2 });
    assert.unreachable('LoRA on clip should be refused');
  } catch (e) {
    assert.instance(e, TrainArgumentError);
    assert.match((e as Error).message, /--component clip trains both CLIP towers fully/);
  }
});

test.after(() => {
  text.dispose();
  vision.dispose();
  tf.dispose([ids, raw, pixels]);
  fs.rmSync(tmp, { recursive: true, force: true });
});
test.run();
