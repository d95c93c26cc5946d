// Weight averaging (`karlo train --ema-decay`, src/training/ema.ts):
// - WeightEma follows diffusers' EMAModel: the k-th update uses decay 0 (k = 1, a copy), then min(decay, (1 + j) /
//   (10 + j)) with j = k − 1; checked against the same recurrence in float64 on a sequence of weights;
// - a 3-step `train` run with a checkpoint per step: each checkpoint's decoder/ holds the average and
//   training_weights.safetensors the trained weights; the averages equal the recurrence applied, in float64, to
//   the trained weights the checkpoints recorded (within float32 rounding), and differ from them after step 1;
// - resuming from checkpoint 2 gives checkpoint 3 bit for bit as the uninterrupted run wrote it;
// - refused with LoRA, for the clip pair, outside (0, 1), and when resuming with a different setting.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { registerGradients } from '../src/backend/gradients.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { WeightEma, emaDecayAt } from '../src/training/ema.js';
import { train, type TrainOptions } from '../src/training/trainer.js';
import { useBackend } from './helpers.js';
import { expectRefused, makeDataFolder, tinyModelCopy } from './train_helpers.js';

test.before(async () => {
  await useBackend('native').catch(() => useBackend('cpu'));
});
await registerGradients();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-ema-'));

/** diffusers EMAModel.get_decay (no warm-up schedule), written from its definition. */
const decay64 = (decay: number, k: number) => (k - 1 <= 0 ? 0 : Math.min((1 + (k - 1)) / (10 + (k - 1)), decay));

test('WeightEma: the decay ramp and the update equal the float64 recurrence', () => {
  assert.equal([1, 2, 3, 50, 1000].map((k) => emaDecayAt(0.9, k)), [0, 2 / 11, 3 / 12, 50 / 59, 0.9]);
  const before = tf.memory().numTensors;
  const z = tf.zeros([5]);
  const v = tf.variable(z);
  z.dispose();
  const vars = new Map([['w', v]]);
  const ema = new WeightEma(vars, 0.95);
  const seq = [[1, 2, 3, 4, 5], [0.5, -1, 2, 0, 7], [3, 3, 3, 3, 3], [-2, 0.25, 1, 9, -4]];
  let want = [0, 0, 0, 0, 0];
  seq.forEach((w, i) => {
    const t = tf.tensor1d(w);
    v.assign(t);
    t.dispose();
    ema.update();
    const d = decay64(0.95, i + 1);
    want = want.map((s, j) => s - (1 - d) * (s - w[j]));
    const got = ema.averages().get('w')!;
    want.forEach((x, j) => assert.ok(Math.abs(got[j] - x) <= 1e-6 * Math.max(1, Math.abs(x)), `update ${i + 1}[${j}]: ${got[j]} vs ${x}`));
  });
  assert.equal(ema.state(), { decay: 0.95, updates: 4 });
  const during = ema.withAverages(() => Array.from(v.dataSync()));
  assert.equal(during, Array.from(ema.averages().get('w')!), 'withAverages puts the averages in');
  assert.equal(Array.from(v.dataSync()), seq[3], 'and the trained weights back after');
  v.dispose();
  assert.is(tf.memory().numTensors, before);
});

const data = makeDataFolder(path.join(tmp, 'data'), 3);
const model = tinyModelCopy(path.join(tmp, 'tiny'), { decoder: 8 });
const base = (o: Partial<TrainOptions>): TrainOptions => ({
  model, component: 'decoder', data, steps: 3, batch: 2, lr: 1e-2, out: path.join(tmp, `run-${Math.random().toString(36).slice(2)}`), seed: 3, plotEverySeconds: 1e9, ...o,
});
const decoderWeights = (ckpt: string) => loadSafetensors(path.join(ckpt, 'decoder', 'diffusion_pytorch_model.safetensors'));
const trained = (ckpt: string) => loadSafetensors(path.join(ckpt, 'training_weights.safetensors'));

test('--ema-decay: checkpoints hold the average of the trained weights they record; resume is bit for bit', async () => {
  const decay = 0.8;
  const run = await train(base({ emaDecay: decay, saveEvery: 1 }));
  assert.is(run.checkpoints.length, 3);
  const state = JSON.parse(fs.readFileSync(path.join(run.checkpoints[2], 'training_state.json'), 'utf8'));
  assert.equal(state.ema, { decay, updates: 3 });
  // 1-D parameters (biases, norms) have the same layout in both files: check the recurrence on all of them.
  const keys = [...trained(run.checkpoints[0]).keys()].filter((k) => trained(run.checkpoints[0]).get(k)!.shape.length === 1);
  assert.ok(keys.length > 20, `${keys.length} 1-D parameters`);
  const avg = new Map<string, Float64Array>();
  let moved = 0;
  run.checkpoints.forEach((c, i) => {
    const raw = trained(c), avgFile = decoderWeights(c);
    const d = decay64(decay, i + 1);
    for (const k of keys) {
      const w = raw.get(k)!.data as Float32Array;
      const a = avg.get(k) ?? Float64Array.from(w);
      for (let j = 0; j < w.length; j++) a[j] -= (1 - d) * (a[j] - w[j]);
      avg.set(k, a);
      const got = avgFile.get(k)!.data as Float32Array;
      for (let j = 0; j < w.length; j++) {
        assert.ok(Math.abs(got[j] - a[j]) <= 1e-5 * Math.max(1, Math.abs(a[j])), `step ${i + 1} ${k}[${j}]: ${got[j]} vs ${a[j]}`);
        if (i > 0 && Math.abs(got[j] - w[j]) > 1e-6) moved++;
      }
    }
  });
  assert.ok(moved > 100, `the averages differ from the trained weights after step 1 (${moved} values)`);
  const resumed = await train(base({ emaDecay: decay, resume: run.checkpoints[1], out: path.dirname(run.checkpoints[1]) + '-resumed' }));
  const c3 = resumed.lastCheckpoint!;
  for (const [name, read] of [['average', decoderWeights], ['trained', trained]] as const) {
    const a = read(run.checkpoints[2]), b = read(c3);
    for (const [k, t] of a) assert.equal(Buffer.from((b.get(k)!.data as Float32Array).buffer), Buffer.from((t.data as Float32Array).buffer), `${name} ${k} after resume`);
  }
});

test('--ema-decay is refused with LoRA, for clip, outside (0, 1), and on a resume that changes it', async () => {
  const plain = await train(base({ steps: 1 }));
  await expectRefused(base, [
    [{ emaDecay: 0.9, loraRank: 2 }, /--ema-decay .*--lora-rank/],
    [{ emaDecay: 0.9, component: 'clip' }, /--ema-decay does not apply to --component clip/],
    [{ emaDecay: 1 }, /--ema-decay must be in \(0, 1\)/],
    [{ emaDecay: 0 }, /--ema-decay must be in \(0, 1\)/],
    [{ emaDecay: 0.9, resume: plain.lastCheckpoint! }, /keeps no weight average/],
  ]);
  const withEma = await train(base({ steps: 1, emaDecay: 0.9 }));
  await expectRefused(base, [[{ resume: withEma.lastCheckpoint! }, /keeps a weight average with --ema-decay 0.9/]]);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
