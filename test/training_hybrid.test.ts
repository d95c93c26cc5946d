// The decoder's learned-range variance term (src/training/vlb.ts), text_proj trained with the decoder
// (`--text-proj`) and super-res crops (`--crop`):
// - the VLB value equals an independent float64 computation of Improved DDPM's KL / discretised likelihood at
//   t = 0, 1, 500, 999; its gradient reaches only the variance channels (ε is stopped) and equals central finite
//   differences of that float64 computation;
// - decoderLoss with vlbWeight w is the ε-MSE plus w · VLB of the decoder's own output, and exactly the old loss at 0;
// - a --text-proj run changes text_proj, saves it as text_proj/ and resumes to the same weights bit for bit;
// - a --crop run's first loss equals superResLoss on the windows an independent replay of the run's random draws
//   picks; bad combinations are refused by name.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { registerGradients } from '../src/backend/gradients.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { loadImageFolder } from '../src/training/data.js';
import { bicubicResize } from '../src/layers/interpolate.js';
import { TorchGenerator } from '../src/random/generator.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { decoderLoss, mse, superResLoss, valueAndGrads } from '../src/training/losses.js';
import { sampleIndices, train, type TrainOptions } from '../src/training/trainer.js';
import { learnedRangeVlb } from '../src/training/vlb.js';
import { BUNDLED_MODEL_DIR } from '../src/package_root.js';
import { useBackend } from './helpers.js';
import { expectRefused, lcgFloats, makeDataFolder, tinyModelCopy } from './train_helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

// The suite runner imports every test file before running any: set the backend when this file's tests start.
test.before(async () => {
  await useBackend('native').catch(() => useBackend('cpu'));
});
await registerGradients();
const scheduler = UnCLIPScheduler.fromDir(path.join(BUNDLED_MODEL_DIR, 'decoder_scheduler'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hybrid-'));

const floats = lcgFloats;

/** Improved DDPM's per-sample VLB in float64, written from the formulas (not from vlb.ts). */
function vlbReference(x0: Float64Array, xt: Float64Array, eps: Float64Array, v: Float64Array, ts: number[], per: number): number {
  const ac = Array.from(scheduler.alphasCumprod, Number);
  const cdf = (x: number) => 0.5 * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  let total = 0;
  ts.forEach((t, b) => {
    const abar = ac[t];
    const abarPrev = t ? ac[t - 1] : 1;
    const beta = 1 - abar / abarPrev;
    const post = t ? ((1 - abarPrev) / (1 - abar)) * beta : ((1 - ac[0]) / (1 - ac[1])) * (1 - ac[1] / ac[0]);
    let sum = 0;
    for (let i = b * per; i < (b + 1) * per; i++) {
      const x0hat = (xt[i] - Math.sqrt(1 - abar) * eps[i]) / Math.sqrt(abar);
      const post0 = (Math.sqrt(abarPrev) * beta) / (1 - abar);
      const postT = (Math.sqrt(abar / abarPrev) * (1 - abarPrev)) / (1 - abar);
      const muP = post0 * x0hat + postT * xt[i];
      const muQ = post0 * x0[i] + postT * xt[i];
      const f = (v[i] + 1) / 2;
      const lv = f * Math.log(beta) + (1 - f) * Math.log(post);
      if (t > 0) {
        const lq = Math.log(post);
        sum += 0.5 * (-1 + lv - lq + Math.exp(lq - lv) + (muQ - muP) ** 2 * Math.exp(-lv));
      } else {
        const s = Math.exp(0.5 * lv);
        const hi = cdf((x0[i] - muP + 1 / 255) / s);
        const lo = cdf((x0[i] - muP - 1 / 255) / s);
        const lp = x0[i] < -0.999 ? Math.log(Math.max(hi, 1e-12)) : x0[i] > 0.999 ? Math.log(Math.max(1 - lo, 1e-12)) : Math.log(Math.max(hi - lo, 1e-12));
        sum -= lp;
      }
    }
    total += sum / per;
  });
  return total / ts.length / Math.LN2;
}

const shape: [number, number, number, number] = [4, 3, 4, 4];
const per = 3 * 4 * 4;
const ts = [0, 1, 500, 999];
const n = shape.reduce((a, b) => a * b, 1);
// x0 includes the edge bins (±1) so every branch of the likelihood is used.
const x0d = floats(n, 1).map((x, i) => (i % 17 === 0 ? -1 : i % 19 === 0 ? 1 : x));
const xtd = floats(n, 2, -2, 2);
const epsd = floats(n, 3, -2, 2);
const vd = floats(n, 4, -1.2, 1.2);
const t4 = (a: Float64Array) => tf.tensor4d(Float32Array.from(a), shape);
// The reference sees the float32-rounded inputs the tensors hold.
const r32 = (a: Float64Array) => Float64Array.from(Float32Array.from(a));

test('learned-range VLB equals an independent float64 computation (t = 0, 1, 500, 999)', () => {
  const before = tf.memory().numTensors;
  const inputs = { x0: t4(x0d), xt: t4(xtd), eps: t4(epsd), v: t4(vd) };
  const got = learnedRangeVlb(scheduler, { ...inputs, timesteps: ts });
  const want = vlbReference(r32(x0d), r32(xtd), r32(epsd), r32(vd), ts, per);
  const g = got.dataSync()[0];
  assert.ok(Number.isFinite(want) && want > 0, `reference ${want}`);
  assert.ok(Math.abs(g - want) <= 2e-5 * Math.abs(want), `vlb ${g} vs float64 ${want}`);
  // Each timestep alone too (a wrong per-sample constant would hide in the mean).
  for (let b = 0; b < 4; b++) {
    const one = (a: Float64Array) => a.slice(b * per, (b + 1) * per);
    const sh: [number, number, number, number] = [1, 3, 4, 4];
    const v1 = learnedRangeVlb(scheduler, {
      x0: tf.tensor4d(Float32Array.from(one(x0d)), sh), xt: tf.tensor4d(Float32Array.from(one(xtd)), sh),
      eps: tf.tensor4d(Float32Array.from(one(epsd)), sh), v: tf.tensor4d(Float32Array.from(one(vd)), sh), timesteps: [ts[b]],
    });
    const w = vlbReference(r32(one(x0d)), r32(one(xtd)), r32(one(epsd)), r32(one(vd)), [ts[b]], per);
    assert.ok(Math.abs(v1.dataSync()[0] - w) <= 2e-5 * Math.abs(w), `t=${ts[b]}: ${v1.dataSync()[0]} vs ${w}`);
  }
  tf.dispose([...Object.values(inputs), got]);
  // The single-sample tensors were made outside a tidy: count only what this test leaked beyond them.
  assert.ok(tf.memory().numTensors - before <= 4 * 5, `${tf.memory().numTensors - before} tensors left`);
});

test('VLB gradient: zero for ε (stopped), central differences of the float64 reference for v', () => {
  const eps = tf.variable(t4(epsd));
  const v = tf.variable(t4(vd));
  const x0 = t4(x0d);
  const xt = t4(xtd);
  const before = tf.memory().numTensors;
  const { value, grads } = valueAndGrads(() => learnedRangeVlb(scheduler, { x0, xt, eps, v, timesteps: ts }), new Map([['eps', eps], ['v', v]]));
  const ge = grads.get('eps');
  assert.ok(!ge || tf.tidy(() => tf.max(tf.abs(ge)).dataSync()[0]) === 0, 'ε gets no gradient from the VLB');
  const gv = grads.get('v')!.dataSync();
  // Directional derivative along a random direction d: Σ g·d vs (f(v + h d) − f(v − h d)) / 2h in float64.
  const d = floats(n, 9);
  const h = 1e-4;
  const vv = r32(vd);
  const fd = (vlbReference(r32(x0d), r32(xtd), r32(epsd), vv.map((x, i) => x + h * d[i]), ts, per)
    - vlbReference(r32(x0d), r32(xtd), r32(epsd), vv.map((x, i) => x - h * d[i]), ts, per)) / (2 * h);
  let dot = 0;
  for (let i = 0; i < n; i++) dot += gv[i] * d[i];
  assert.ok(Math.abs(dot - fd) <= 1e-3 * Math.abs(fd) + 1e-6, `grad·d ${dot} vs finite differences ${fd}`);
  value.dispose();
  tf.dispose([...grads.values()]);
  assert.is(tf.memory().numTensors, before);
  tf.dispose([eps, v, x0, xt]);
});

test('decoderLoss: the ε-MSE alone at vlbWeight 0, ε-MSE + w · VLB of the decoder output otherwise', () => {
  const decoder = loadComponent(path.join(BUNDLED_MODEL_DIR, 'decoder'), 'UNet2DConditionModel');
  const S = decoder.config.sample_size as number;
  const B = 2;
  const cross = decoder.config.cross_attention_dim as number;
  const sh: [number, number, number, number] = [B, 3, S, S];
  const m = B * 3 * S * S;
  const x0 = tf.tensor4d(Float32Array.from(floats(m, 21)), sh);
  const noise = tf.tensor4d(Float32Array.from(floats(m, 22, -2, 2)), sh);
  const ehs = tf.tensor3d(Float32Array.from(floats(B * 5 * cross, 23)), [B, 5, cross]);
  const classLabels = tf.tensor2d(Float32Array.from(floats(B * decoder.config.block_out_channels[0] * 4, 24)), [B, decoder.config.block_out_channels[0] * 4]);
  const timesteps = [0, 637];
  const batch = { x0, noise, timesteps, encoderHiddenStates: ehs, classLabels };
  const before = tf.memory().numTensors;
  const plain = decoderLoss(decoder, scheduler, batch);
  const zero = decoderLoss(decoder, scheduler, { ...batch, vlbWeight: 0 });
  assert.is(zero.dataSync()[0], plain.dataSync()[0]);
  const w = 0.37;
  const hybrid = decoderLoss(decoder, scheduler, { ...batch, vlbWeight: w });
  const expect = tf.tidy(() => {
    const xt = scheduler.addNoise(x0, noise, timesteps) as tf.Tensor4D;
    const out = decoder.forward(xt, tf.tensor1d(timesteps, 'int32'), ehs, { classLabels });
    const eps = tf.slice(out, [0, 0, 0, 0], [-1, 3, -1, -1]) as tf.Tensor4D;
    const v = tf.slice(out, [0, 3, 0, 0], [-1, 3, -1, -1]) as tf.Tensor4D;
    return [mse(eps, noise).dataSync()[0], learnedRangeVlb(scheduler, { x0, xt, eps, v, timesteps }).dataSync()[0]];
  });
  assert.ok(Math.abs(plain.dataSync()[0] - expect[0]) <= 1e-6 * expect[0], `${plain.dataSync()[0]} vs ${expect[0]}`);
  const h = hybrid.dataSync()[0];
  assert.ok(Math.abs(h - (expect[0] + w * expect[1])) <= 1e-5 * h, `${h} vs ${expect[0]} + ${w}·${expect[1]}`);
  tf.dispose([plain, zero, hybrid]);
  assert.is(tf.memory().numTensors, before);
  tf.dispose([x0, noise, ehs, classLabels]);
  decoder.dispose();
});

const data = makeDataFolder(path.join(tmp, 'data'), 3);
const model = tinyModelCopy(path.join(tmp, 'tiny'), { decoder: 8, super_res_first: 16, super_res_last: 16 });
const base = (o: Partial<TrainOptions>): TrainOptions => ({
  model, component: 'decoder', data, steps: 2, batch: 2, lr: 1e-3, out: path.join(tmp, `run-${Math.random().toString(36).slice(2)}`), seed: 5, plotEverySeconds: 1e9, ...o,
});
const weights = (dir: string) => loadSafetensors(path.join(dir, 'diffusion_pytorch_model.safetensors'));

test('--text-proj trains text_proj with the decoder, saves text_proj/, resumes bit for bit', async () => {
  const before = tf.memory().numTensors;
  const full = await train(base({ textProj: true, vlbWeight: 1, out: path.join(tmp, 'tp-full') }));
  assert.is(tf.memory().numTensors, before);
  const ck = full.lastCheckpoint!;
  const trained = weights(path.join(ck, 'text_proj'));
  const orig = weights(path.join(model, 'text_proj'));
  assert.equal([...trained.keys()].sort(), [...orig.keys()].sort());
  let changed = 0;
  for (const [k, t] of trained) if (!(t.data as Float32Array).every((x, i) => x === (orig.get(k)!.data as Float32Array)[i])) changed++;
  assert.ok(changed >= trained.size - 1, `${changed} of ${trained.size} text_proj tensors changed`);
  assert.ok(full.losses.every((p) => Number.isFinite(p.loss)));
  // 1 step, then resume to 2: same text_proj and decoder weights as the uninterrupted run.
  const half = path.join(tmp, 'tp-half');
  await train(base({ textProj: true, vlbWeight: 1, steps: 1, out: half }));
  const resumed = await train(base({ textProj: true, vlbWeight: 1, out: half, resume: half }));
  for (const comp of ['text_proj', 'decoder']) {
    const a = weights(path.join(ck, comp));
    const b = weights(path.join(resumed.lastCheckpoint!, comp));
    for (const [k, t] of a) assert.ok((t.data as Float32Array).every((x, i) => x === (b.get(k)!.data as Float32Array)[i]), `${comp} ${k} differs after resume`);
  }
  assert.is(tf.memory().numTensors, before);
});

test('--crop: the first loss is superResLoss on the windows a replay of the random draws picks', async () => {
  const before = tf.memory().numTensors;
  const crop = 8;
  const r = await train(base({ component: 'super_res', steps: 1, crop, seed: 7 }));
  assert.is(tf.memory().numTensors, before);
  // Replay: data order, timesteps, noise, then one [y, x] per sample (trainer.ts's draw order).
  const sr = loadComponent(path.join(model, 'super_res_first'), 'UNet2DModel');
  const srSched = UnCLIPScheduler.fromDir(path.join(model, 'super_res_scheduler'));
  const imgs = await loadImageFolder(data, 16);
  const idx = sampleIndices(7, imgs.items.length, 0, 2);
  const gen = new TorchGenerator(7);
  const timesteps = idx.map(() => gen.nextU32() % srSched.config.num_train_timesteps);
  const noise = tf.tensor4d(gen.randn([2, 3, crop, crop]), [2, 3, crop, crop]);
  const corners = idx.map(() => [gen.nextU32() % 9, gen.nextU32() % 9]);
  const want = tf.tidy(() => {
    const x0 = tf.tensor4d(Float32Array.from(idx.flatMap((i) => Array.from(imgs.pixels[i]))), [2, 3, 16, 16]);
    const low = tf.clipByValue(bicubicResize(x0, [8, 8], { antialias: true }), -1, 1) as tf.Tensor4D;
    const up = bicubicResize(low, [16, 16], { antialias: true });
    const win = (t: tf.Tensor4D) => tf.concat(corners.map(([y, x], b) => tf.slice(t, [b, 0, y, x], [1, 3, crop, crop])), 0) as tf.Tensor4D;
    return superResLoss(sr, srSched, { x0: win(x0), noise, timesteps, upscaled: win(up) }).dataSync()[0];
  });
  assert.is(r.losses[0].loss, want);
  noise.dispose();
  sr.dispose();
});

test('bad combinations are refused by name', async () => {
  const cases: [Partial<TrainOptions>, RegExp][] = [
    [{ component: 'prior', textProj: true }, /--text-proj .*not apply to prior/],
    [{ textProj: true, loraRank: 2 }, /--text-proj .*--lora-rank/],
    [{ component: 'super_res', vlbWeight: 1 }, /--vlb-weight .*not apply to super_res/],
    [{ vlbWeight: -1 }, /--vlb-weight must be ≥ 0/],
    [{ crop: 4 }, /--crop applies to super_res and super_res_last, not decoder/],
    [{ component: 'super_res', crop: 64 }, /--crop 64 is larger than super_res's sample_size 16/],
  ];
  await expectRefused(base, cases);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
