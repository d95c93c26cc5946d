// Min-SNR-γ weighting (`karlo train --snr-gamma`, losses.ts minSnrWeights / weightedMse):
// - the weights equal min(snr, γ) / snr with snr = ᾱ / (1 − ᾱ) computed in float64 from the scheduler's ᾱ;
// - decoderLoss and superResLoss with snrGamma equal an independent float64 computation on the model's own output
//   (per-sample MSE, weighted, batch mean), with the VLB term added unweighted for the hybrid decoder loss;
// - a 4-step `train` run with it records the setting and ends with finite losses that differ from the unweighted run's;
// - it is refused for components without an ε-prediction loss, and for γ ≤ 0.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { registerGradients } from '../src/backend/gradients.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { decoderLoss, minSnrWeights, superResLoss } from '../src/training/losses.js';
import { train, type TrainOptions } from '../src/training/trainer.js';
import { learnedRangeVlb } from '../src/training/vlb.js';
import { BUNDLED_MODEL_DIR } from '../src/package_root.js';
import { loadComponent } from '../src/loading/load_component.js';
import { useBackend } from './helpers.js';
import { expectRefused, lcgFloats, makeDataFolder, tinyModelCopy } from './train_helpers.js';

test.before(async () => {
  await useBackend('native').catch(() => useBackend('cpu'));
});
await registerGradients();
const scheduler = UnCLIPScheduler.fromDir(path.join(BUNDLED_MODEL_DIR, 'decoder_scheduler'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-minsnr-'));

const floats = (n: number, seed: number, lo = -1, hi = 1) => Float32Array.from(lcgFloats(n, seed, lo, hi));
const weight64 = (t: number, gamma: number) => {
  const ac = Number(scheduler.alphasCumprod[t]);
  const snr = ac / (1 - ac);
  return Math.min(snr, gamma) / snr;
};
/** mean_b(w_b · mean_i (a − b)²) in float64. */
function weighted64(a: ArrayLike<number>, b: ArrayLike<number>, ts: number[], gamma: number): number {
  const per = a.length / ts.length;
  let total = 0;
  ts.forEach((t, k) => {
    let s = 0;
    for (let i = k * per; i < (k + 1) * per; i++) s += (a[i] - b[i]) ** 2;
    total += weight64(t, gamma) * (s / per);
  });
  return total / ts.length;
}

test('weights: min(snr, γ) / snr from the scheduler\'s ᾱ (float64 reference), 1 where snr ≤ γ', () => {
  const ts = [0, 1, 10, 100, 300, 500, 700, 999];
  for (const gamma of [1, 5, 20]) {
    const w = minSnrWeights(scheduler, ts, gamma);
    ts.forEach((t, i) => {
      const want = weight64(t, gamma);
      assert.ok(Math.abs(w[i] - want) <= 2e-6 * want, `γ ${gamma}, t ${t}: ${w[i]} vs ${want}`);
      assert.ok(w[i] <= 1 && w[i] > 0, `γ ${gamma}, t ${t}: weight ${w[i]} outside (0, 1]`);
    });
  }
  assert.ok(minSnrWeights(scheduler, [0], 5)[0] < 1e-3, 't = 0 (snr ~ 1e4) is strongly down-weighted');
  assert.is(minSnrWeights(scheduler, [999], 5)[0], 1, 't = 999 (snr ~ 0) keeps weight 1');
});

test('decoderLoss / superResLoss with snrGamma: the weighted ε-MSE of the model\'s own output (+ the VLB unweighted)', () => {
  const decoder = loadComponent(path.join(BUNDLED_MODEL_DIR, 'decoder'), 'UNet2DConditionModel');
  const S = decoder.config.sample_size as number, B = 3, cross = decoder.config.cross_attention_dim as number;
  const sh: [number, number, number, number] = [B, 3, S, S];
  const x0 = tf.tensor4d(floats(B * 3 * S * S, 31), sh), noise = tf.tensor4d(floats(B * 3 * S * S, 32, -2, 2), sh);
  const ehs = tf.tensor3d(floats(B * 5 * cross, 33), [B, 5, cross]);
  const te = decoder.config.block_out_channels[0] * 4;
  const classLabels = tf.tensor2d(floats(B * te, 34), [B, te]);
  const timesteps = [3, 250, 940], gamma = 5;
  const batch = { x0, noise, timesteps, encoderHiddenStates: ehs, classLabels };
  const before = tf.memory().numTensors;
  const weighted = decoderLoss(decoder, scheduler, { ...batch, snrGamma: gamma });
  const hybrid = decoderLoss(decoder, scheduler, { ...batch, snrGamma: gamma, vlbWeight: 0.5 });
  const [eps, vlb] = tf.tidy(() => {
    const xt = scheduler.addNoise(x0, noise, timesteps) as tf.Tensor4D;
    const out = decoder.forward(xt, tf.tensor1d(timesteps, 'int32'), ehs, { classLabels });
    const e = tf.slice(out, [0, 0, 0, 0], [-1, 3, -1, -1]) as tf.Tensor4D;
    const v = tf.slice(out, [0, 3, 0, 0], [-1, 3, -1, -1]) as tf.Tensor4D;
    return [e.dataSync().slice(), learnedRangeVlb(scheduler, { x0, xt, eps: e, v, timesteps }).dataSync()[0]] as const;
  });
  const want = weighted64(eps, noise.dataSync(), timesteps, gamma);
  const got = weighted.dataSync()[0];
  assert.ok(Math.abs(got - want) <= 1e-5 * want, `decoder: ${got} vs ${want}`);
  const h = hybrid.dataSync()[0];
  assert.ok(Math.abs(h - (want + 0.5 * vlb)) <= 1e-5 * h, `hybrid: ${h} vs ${want} + 0.5·${vlb}`);
  const plain = decoderLoss(decoder, scheduler, batch);
  assert.ok(Math.abs(plain.dataSync()[0] - got) > 1e-3 * got, 'the weighting changes the loss');
  tf.dispose([weighted, hybrid, plain]);
  assert.is(tf.memory().numTensors, before, 'decoder loss frees its tensors');
  decoder.dispose();

  const sr = loadComponent(path.join(BUNDLED_MODEL_DIR, 'super_res_first'), 'UNet2DModel');
  const R = sr.config.sample_size as number;
  const srSh: [number, number, number, number] = [B, 3, R, R];
  const hx0 = tf.tensor4d(floats(B * 3 * R * R, 41), srSh), hnoise = tf.tensor4d(floats(B * 3 * R * R, 42, -2, 2), srSh);
  const up = tf.tensor4d(floats(B * 3 * R * R, 43), srSh);
  const srLoss = superResLoss(sr, scheduler, { x0: hx0, noise: hnoise, timesteps, upscaled: up, snrGamma: gamma });
  const out = tf.tidy(() => sr.forward(tf.concat([scheduler.addNoise(hx0, hnoise, timesteps), up], 1) as tf.Tensor4D, tf.tensor1d(timesteps, 'int32')).dataSync().slice());
  const srWant = weighted64(out, hnoise.dataSync(), timesteps, gamma);
  assert.ok(Math.abs(srLoss.dataSync()[0] - srWant) <= 1e-5 * srWant, `super-res: ${srLoss.dataSync()[0]} vs ${srWant}`);
  tf.dispose([srLoss, hx0, hnoise, up, x0, noise, ehs, classLabels]);
  sr.dispose();
});

const data = makeDataFolder(path.join(tmp, 'data'), 3);
const model = tinyModelCopy(path.join(tmp, 'tiny'), { decoder: 8, super_res_first: 16, super_res_last: 16 });
const base = (o: Partial<TrainOptions>): TrainOptions => ({
  model, component: 'decoder', data, steps: 2, batch: 2, lr: 1e-3, out: path.join(tmp, `run-${Math.random().toString(36).slice(2)}`), seed: 5, plotEverySeconds: 1e9, ...o,
});

test('a --snr-gamma run records the setting; its losses differ from the unweighted run\'s', async () => {
  // Same batches and noise; a step's losses are equal when every sampled t has snr ≤ γ (weight 1), so 4 steps.
  const a = await train(base({ snrGamma: 5, steps: 4 }));
  const b = await train(base({ steps: 4 }));
  assert.is(a.losses.length, 4);
  assert.ok(a.losses.every((p) => Number.isFinite(p.loss)));
  assert.ok(a.losses.some((p, i) => Math.abs(p.loss - b.losses[i].loss) > 1e-4 * b.losses[i].loss), `weighted ${a.losses.map((p) => p.loss)} vs unweighted ${b.losses.map((p) => p.loss)}`);
  const state = JSON.parse(fs.readFileSync(path.join(a.lastCheckpoint!, 'training_state.json'), 'utf8'));
  assert.is(state.settings.snrGamma, 5);
});

test('--snr-gamma is refused where there is no ε-prediction loss, and for γ ≤ 0', async () => {
  const cases: [Partial<TrainOptions>, RegExp][] = [
    [{ component: 'prior', snrGamma: 5 }, /--snr-gamma weights an ε-prediction loss .* prior does not have one/],
    [{ snrGamma: 0 }, /--snr-gamma must be > 0/],
    [{ snrGamma: -1 }, /--snr-gamma must be > 0/],
  ];
  await expectRefused(base, cases);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
