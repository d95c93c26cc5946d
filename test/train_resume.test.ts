// `karlo train`'s loop (src/training/trainer.ts) on the cpu backend:
// - resume is bit for bit: 6 steps straight == 3 steps + resume from checkpoint-3 + 3 steps (decoder, full
//   fine-tuning: weights, AdamW moments, RNG state, data position, loss history all identical bytes), and the same
//   with LoRA + gradient accumulation + a cosine schedule on the prior;
// - tf.memory().numTensors is flat from step to step and back to its baseline after the run;
// - the checkpoint layout (full component folder + links, adapters only with LoRA, optimizer + state side files);
// - the loss went down on a tiny overfitting run; user mistakes are TrainArgumentErrors naming the argument.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { TrainArgumentError, clipGradNormInPlace, epochOrder, sampleIndices, train, type TrainOptions } from '../src/training/trainer.js';
import { clipGradNorm } from '../src/training/clip_grad.js';
import { parseLossCsv } from '../src/training/plot.js';
import { useBackend } from './helpers.js';
import { makeDataFolder, tinyModelCopy } from './train_helpers.js';

await useBackend('cpu');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-train-'));

/** The bundled tiny model with an 8×8 decoder (fully convolutional; keeps cpu backprop fast). */
const MODEL = tinyModelCopy(path.join(tmp, 'tiny8'), { decoder: 8 });
const DATA = makeDataFolder(path.join(tmp, 'data'));

const bytes = (f: string) => fs.readFileSync(f);
const state = (ckpt: string) => JSON.parse(fs.readFileSync(path.join(ckpt, 'training_state.json'), 'utf8'));

test('data order: each epoch a permutation, reproducible, continuing across epoch borders', () => {
  const a = epochOrder(3, 0, 5);
  assert.equal([...a].sort(), [0, 1, 2, 3, 4]);
  assert.equal(epochOrder(3, 0, 5), a);
  assert.not.equal(epochOrder(3, 1, 5), a);
  assert.equal(sampleIndices(3, 5, 3, 4), [...a.slice(3), ...epochOrder(3, 1, 5).slice(0, 2)]);
});

test('clipGradNormInPlace = clipGradNorm (torch clip_grad_norm_) bit for bit, without a second copy of the gradients', () => {
  for (const scale of [0.01, 10]) {
    const make = () => new Map([['a', tf.mul(tf.randomNormal([5, 7], 0, 1, 'float32', 3), scale)], ['b', tf.mul(tf.randomNormal([11], 0, 1, 'float32', 4), scale)]]);
    const ref = make();
    const want = clipGradNorm(ref, 1);
    const mine = make();
    const before = tf.memory().numTensors;
    const norm = clipGradNormInPlace(mine, 1);
    assert.is(tf.memory().numTensors, before);
    assert.is(norm, want.totalNorm);
    for (const k of ['a', 'b']) assert.equal(Array.from(mine.get(k)!.dataSync()), Array.from(want.grads.get(k)!.dataSync()));
    tf.dispose([...ref.values(), ...want.grads.values(), ...mine.values()]);
  }
});

test('decoder: 6 steps straight == 3 + resume + 3, bit for bit; numTensors flat; checkpoint layout', async () => {
  const base: Omit<TrainOptions, 'out'> = { model: MODEL, component: 'decoder', data: DATA, steps: 6, batch: 1, lr: 1e-3, seed: 7 };
  const before = tf.memory().numTensors;
  const counts: number[] = [];
  const straight = await train({ ...base, out: path.join(tmp, 'straight'), saveEvery: 3, onStep: () => counts.push(tf.memory().numTensors) });
  assert.is(tf.memory().numTensors, before, 'no tensor left after the run');
  assert.equal(counts, Array(6).fill(counts[0]), `numTensors per step: ${counts}`);
  assert.equal(straight.checkpoints.map((c) => path.basename(c)), ['checkpoint-3', 'checkpoint-6']);

  const resumed = await train({ ...base, out: path.join(tmp, 'resumed'), resume: path.join(tmp, 'straight', 'checkpoint-3') });
  assert.equal(resumed.checkpoints.map((c) => path.basename(c)), ['checkpoint-6']);
  const a = straight.lastCheckpoint!, b = resumed.lastCheckpoint!;
  const w = 'decoder/diffusion_pytorch_model.safetensors';
  assert.ok(bytes(path.join(a, w)).equals(bytes(path.join(b, w))), 'decoder weights identical');
  assert.ok(bytes(path.join(a, 'optimizer.safetensors')).equals(bytes(path.join(b, 'optimizer.safetensors'))), 'AdamW state identical');
  const sa = state(a), sb = state(b);
  for (const k of ['step', 'samplesSeen', 'rng', 'optimizer', 'losses']) assert.equal(sb[k], sa[k], k);
  assert.is(sa.step, 6);
  assert.equal(resumed.losses, straight.losses);
  // and the weights did change
  assert.not.ok(bytes(path.join(a, w)).equals(bytes(path.join(MODEL, w))));

  // layout: a pipeline folder (model_index.json, the trained decoder, links to the rest)
  assert.ok(fs.existsSync(path.join(a, 'model_index.json')));
  assert.ok(fs.lstatSync(path.join(a, 'decoder')).isDirectory());
  assert.ok(fs.lstatSync(path.join(a, 'text_proj')).isSymbolicLink());
  assert.is(fs.realpathSync(path.join(a, 'prior')), fs.realpathSync(path.join(MODEL, 'prior')));
  const f = SafetensorsFile.open(path.join(a, 'optimizer.safetensors'));
  try {
    assert.ok(f.names().includes('exp_avg.conv_in.weight') && f.names().includes('exp_avg_sq.conv_in.weight'));
  } finally {
    f.close();
  }
  // loss files
  const csv = parseLossCsv(fs.readFileSync(path.join(tmp, 'straight', 'loss.csv'), 'utf8'));
  assert.equal(csv, straight.losses);
  assert.ok(fs.statSync(path.join(tmp, 'straight', 'loss.png')).size > 1000);
  // the conditioning was cached next to the data, and reused by the resumed run
  assert.ok(fs.readdirSync(path.join(DATA, '.karlo_cache')).some((n) => n.startsWith('text-')));
});

test('prior with LoRA, grad accumulation 2, a cosine schedule and CFG dropout: 2 + resume + 2 == 4 straight', async () => {
  const base: Omit<TrainOptions, 'out'> = {
    model: MODEL, component: 'prior', data: DATA, steps: 4, batch: 2, lr: 1e-2, seed: 1,
    loraRank: 2, loraAlpha: 4, gradAccum: 2, lrScheduler: 'cosine', warmupSteps: 1, condDrop: 0.5,
  };
  const straight = await train({ ...base, out: path.join(tmp, 'p-straight'), saveEvery: 2 });
  const resumed = await train({ ...base, out: path.join(tmp, 'p-resumed'), resume: path.join(tmp, 'p-straight') + '/checkpoint-2' });
  const a = straight.lastCheckpoint!, b = resumed.lastCheckpoint!;
  for (const f of ['pytorch_lora_weights.safetensors', 'optimizer.safetensors']) assert.ok(bytes(path.join(a, f)).equals(bytes(path.join(b, f))), f);
  assert.equal(state(b).rng, state(a).rng);
  assert.equal(resumed.losses, straight.losses);
  // adapters only: no component folder, peft names
  assert.not.ok(fs.existsSync(path.join(a, 'prior')));
  const f = SafetensorsFile.open(path.join(a, 'pytorch_lora_weights.safetensors'));
  try {
    assert.ok(f.names().length > 0 && f.names().every((n) => /\.lora_[AB]\.weight$/.test(n)), f.names().join(','));
    assert.ok(f.names().some((n) => n.startsWith('transformer_blocks.0.attn1.to_q.')));
    assert.is(f.metadata.karlo_component, 'prior');
  } finally {
    f.close();
  }
  // warm-up then cosine decay: lr 0 at step 1, then 1e-2·0.5(1+cos(π·k/3)) for k = 0, 1, 2
  assert.equal(straight.losses.map((p) => p.lr), [0, 1e-2, 1e-2 * 0.5 * (1 + Math.cos(Math.PI / 3)), 1e-2 * 0.5 * (1 + Math.cos((2 * Math.PI) / 3))]);
});

test('text encoder: the loss goes down when overfitting 3 captions', async () => {
  const r = await train({ model: MODEL, component: 'text_encoder', data: DATA, steps: 12, batch: 3, lr: 3e-3, seed: 0, out: path.join(tmp, 'te') });
  const l = r.losses.map((p) => p.loss);
  assert.ok(l[l.length - 1] < 0.7 * l[0], `loss ${l[0]} → ${l[l.length - 1]}`);
  assert.ok(fs.existsSync(path.join(r.lastCheckpoint!, 'text_encoder', 'model.safetensors')));
});

test('mistakes: TrainArgumentError naming the argument', async () => {
  const o = { model: MODEL, component: 'decoder' as const, data: DATA, steps: 1, batch: 1, lr: 1e-3, out: path.join(tmp, 'bad') };
  const cases: [Partial<TrainOptions>, RegExp][] = [
    [{ steps: 0 }, /--steps/],
    [{ lr: -1 }, /--lr/],
    [{ component: 'vae' as never }, /--component/],
    [{ loraAlpha: 2 }, /--lora-alpha needs --lora-rank/],
    [{ train: ['no_such_block.**'] }, /--train "no_such_block\.\*\*" matches no parameter/],
    [{ freeze: ['**'] }, /no parameter to train/],
    [{ component: 'super_res', loraRank: 2 }, /--lora-rank 2 on super_res: .*no Linear/],
    [{ resume: path.join(tmp, 'p-straight') }, /different run \(component prior vs decoder\)/],
    [{ component: 'super_res', condDrop: 0.1 }, /--cond-drop applies to the decoder and the prior/],
    [{ condDrop: 1 }, /--cond-drop must be in \[0, 1\)/],
  ];
  for (const [patch, re] of cases) {
    let err: unknown;
    try {
      await train({ ...o, ...patch });
    } catch (e) {
      err = e;
    }
    assert.instance(err, TrainArgumentError, `${JSON.stringify(patch)}: ${String(err)}`);
    assert.match((err as Error).message, re);
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
