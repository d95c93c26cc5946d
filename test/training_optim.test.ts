// Training building blocks against independent computations: UnCLIPScheduler.addNoise (the fixtures' schedules),
// AdamW (a float64 re-derivation; skipping parameters without a gradient; state export/import resumes bit for bit),
// clipGradNorm (torch.nn.utils.clip_grad_norm_ semantics), the learning-rate schedules (diffusers' formulas), and
// the --train/--freeze glob selection.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { fixture, useBackend } from './helpers.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { AdamW } from '../src/training/adamw.js';
import { clipGradNorm } from '../src/training/clip_grad.js';
import { learningRate, lrSchedule } from '../src/training/lr_schedule.js';
import { globMatches, selectTrainable } from '../src/training/trainable.js';

test.before(async () => { await useBackend('cpu'); });

function rand(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = ((s >>> 8) / 16777216 * 2 - 1) * scale;
  }
  return out;
}

test('addNoise: sqrt(ab[t])*x0 + sqrt(1-ab[t])*noise with the fixtures\' alphas_cumprod, one t per sample, float32 exact', () => {
  const before = tf.memory().numTensors;
  for (const name of ['prior', 'decoder', 'super_res']) {
    const ab = loadSafetensors(fixture('schedulers', `${name}.safetensors`)).get('alphas_cumprod')!.data as Float32Array;
    const s = UnCLIPScheduler.fromDir(fixture('schedulers', name));
    assert.equal(Array.from(s.alphasCumprod), Array.from(ab), `${name}: alphas_cumprod`);
    const ts = [0, 10, 500, 999];
    const x0 = rand(4 * 3 * 2 * 2, 1);
    const noise = rand(4 * 3 * 2 * 2, 2);
    const got = tf.tidy(() => s.addNoise(tf.tensor(x0, [4, 3, 2, 2]), tf.tensor(noise, [4, 3, 2, 2]), ts).dataSync());
    const f = Math.fround;
    for (let i = 0; i < x0.length; i++) {
      const t = ts[Math.floor(i / 12)];
      const want = f(f(f(Math.sqrt(ab[t])) * x0[i]) + f(f(Math.sqrt(f(1 - ab[t]))) * noise[i]));
      assert.is(got[i], want, `${name}: element ${i}`);
    }
  }
  const s = new UnCLIPScheduler();
  assert.throws(() => tf.tidy(() => s.addNoise(tf.zeros([2, 3]), tf.zeros([2, 3]), [1000, 1])), /timestep 1000 is not an integer in \[0, 1000\)/);
  assert.throws(() => tf.tidy(() => s.addNoise(tf.zeros([2, 3]), tf.zeros([2, 3]), [1, 2, 3])), /3 timesteps for a batch of 2/);
  assert.throws(() => tf.tidy(() => s.addNoise(tf.zeros([2, 3]), tf.zeros([2, 4]), [1, 2])), /noise \[2,4\] must be shaped like x0 \[2,3\]/);
  assert.is(tf.memory().numTensors, before);
});

/** torch.optim.AdamW in float64 (the reference the float32 path must approach). */
function adamwRef(p: number[], grads: (number[] | null)[], o: { lr: number; b1: number; b2: number; eps: number; wd: number }) {
  let m = p.map(() => 0);
  let v = p.map(() => 0);
  let step = 0;
  for (const g of grads) {
    if (!g) continue;
    step++;
    const bc1 = 1 - o.b1 ** step;
    const bc2 = 1 - o.b2 ** step;
    p = p.map((x) => x * (1 - o.lr * o.wd));
    m = m.map((x, i) => x * o.b1 + (1 - o.b1) * g[i]);
    v = v.map((x, i) => x * o.b2 + (1 - o.b2) * g[i] * g[i]);
    p = p.map((x, i) => x - (o.lr / bc1) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + o.eps));
  }
  return { p, m, v, step };
}

test('AdamW: matches a float64 torch.optim.AdamW; a parameter without a gradient is skipped (no decay, no step count)', () => {
  const before = tf.memory().numTensors;
  const n = 64;
  const p0 = Array.from(rand(n, 3));
  const a = tf.tidy(() => tf.variable(tf.tensor(p0), true));
  const b = tf.tidy(() => tf.variable(tf.tensor(p0), true));
  const opt = new AdamW(new Map([['a', a], ['b', b]]), { lr: 1e-2, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.1 });
  const gs = [1, 2, 3, 4, 5].map((k) => Array.from(rand(n, 10 + k, 0.5)));
  const bGrads = gs.map((g, i) => (i % 2 === 0 ? g : null)); // b has no gradient on steps 2 and 4
  gs.forEach((g, i) => {
    const grads = new Map<string, tf.Tensor>([['a', tf.tensor(g)]]);
    if (bGrads[i]) grads.set('b', tf.tensor(bGrads[i]!));
    opt.step(grads);
    tf.dispose([...grads.values()]);
  });
  const o = { lr: 1e-2, b1: 0.9, b2: 0.99, eps: 1e-8, wd: 0.1 };
  const ra = adamwRef(p0, gs, o);
  const rb = adamwRef(p0, bGrads, o);
  const close = (x: ArrayLike<number>, y: number[], what: string) => {
    let worst = 0;
    for (let i = 0; i < y.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]) / Math.max(1e-3, Math.abs(y[i])));
    assert.ok(worst < 1e-5, `${what}: rel err ${worst}`);
  };
  close(a.dataSync(), ra.p, 'a');
  close(b.dataSync(), rb.p, 'b');
  const s = opt.state();
  assert.is(s.step, 5);
  assert.equal(s.paramSteps, { a: 5, b: 3 });
  close(s.tensors.get('exp_avg.a')!.dataSync(), ra.m, 'exp_avg.a');
  close(s.tensors.get('exp_avg_sq.b')!.dataSync(), rb.v, 'exp_avg_sq.b');
  tf.dispose([...s.tensors.values()]);
  opt.dispose();
  tf.dispose([a, b]);
  assert.is(tf.memory().numTensors, before);
});

test('AdamW: state() -> loadState() into a fresh optimizer continues bit for bit; bad state is one clear error', () => {
  const before = tf.memory().numTensors;
  const p0 = rand(32, 5);
  const run = (split: boolean) => {
    const w = tf.tidy(() => tf.variable(tf.tensor(p0), true));
    let opt = new AdamW(new Map([['w', w]]), { lr: 3e-3 });
    for (let i = 0; i < 6; i++) {
      if (split && i === 3) {
        const s = opt.state();
        opt.dispose();
        opt = new AdamW(new Map([['w', w]]), { lr: 3e-3 });
        opt.loadState(s);
        tf.dispose([...s.tensors.values()]);
      }
      const g = tf.tensor(rand(32, 100 + i));
      opt.step(new Map([['w', g]]));
      g.dispose();
    }
    const out = Array.from(w.dataSync());
    opt.dispose();
    w.dispose();
    return out;
  };
  assert.equal(run(true), run(false));
  const w = tf.tidy(() => tf.variable(tf.zeros([2]), true));
  const opt = new AdamW(new Map([['w', w]]));
  const t = tf.zeros([3]);
  assert.throws(() => opt.loadState({ step: 1, paramSteps: { w: 1 }, tensors: new Map([['exp_avg.w', t], ['exp_avg_sq.w', t]]) }), /exp_avg.w has shape \[3\], the parameter \[2\]/);
  assert.throws(() => opt.loadState({ step: 1, paramSteps: { x: 1 }, tensors: new Map() }), /unknown parameter "x"/);
  assert.throws(() => opt.step(new Map([['w', t]])), /gradient of "w" has shape \[3\], the parameter \[2\]/);
  tf.dispose([t, w]);
  opt.dispose();
  assert.is(tf.memory().numTensors, before);
});

test('clipGradNorm: total 2-norm over all gradients, coef = max/(total+1e-6) clamped to 1, returns the total', () => {
  const before = tf.memory().numTensors;
  const g1 = rand(100, 7, 2);
  const g2 = rand(33, 8, 3);
  const total = Math.sqrt([...g1, ...g2].reduce((a, x) => a + x * x, 0));
  const grads = new Map([['a', tf.tensor(g1)], ['b', tf.tensor(g2)]]);
  for (const maxNorm of [1, total * 2]) {
    const r = clipGradNorm(grads, maxNorm);
    assert.ok(Math.abs(r.totalNorm - total) / total < 1e-6, `total ${r.totalNorm} vs ${total}`);
    const coef = Math.min(1, maxNorm / (total + 1e-6));
    const a = r.grads.get('a')!.dataSync();
    for (let i = 0; i < g1.length; i++) assert.ok(Math.abs(a[i] - g1[i] * coef) <= 1e-6 * Math.abs(g1[i] * coef) + 1e-12);
    const newTotal = Math.sqrt([...a, ...r.grads.get('b')!.dataSync()].reduce((s, x) => s + x * x, 0));
    assert.ok(newTotal <= Math.min(maxNorm, total) * (1 + 1e-6), `clipped norm ${newTotal}`);
    tf.dispose([...r.grads.values()]);
  }
  tf.dispose([...grads.values()]);
  assert.throws(() => clipGradNorm(new Map(), 0), /max norm must be positive/);
  assert.is(tf.memory().numTensors, before);
});

test('lr schedules: constant, constant_with_warmup, cosine with warmup (diffusers get_cosine_schedule_with_warmup)', () => {
  assert.is(learningRate({ kind: 'constant', baseLr: 1e-4 }, 123), 1e-4);
  const w = lrSchedule({ kind: 'constant_with_warmup', baseLr: 1, warmupSteps: 4 });
  assert.equal([0, 1, 2, 3, 4, 9].map(w), [0, 0.25, 0.5, 0.75, 1, 1]);
  const c = lrSchedule({ kind: 'cosine', baseLr: 2, warmupSteps: 10, totalSteps: 110 });
  assert.is(c(0), 0);
  assert.is(c(5), 1);
  assert.is(c(10), 2);
  assert.ok(Math.abs(c(60) - 1) < 1e-12, 'half way: base/2');
  assert.ok(Math.abs(c(35) - 2 * 0.5 * (1 + Math.cos(Math.PI * 0.25))) < 1e-12);
  assert.is(c(110), 0);
  assert.is(c(200), 0.5 * 2 * (1 + Math.cos(Math.PI * 1.9)) > 0 ? c(200) : 0);
  assert.throws(() => lrSchedule({ kind: 'cosine', baseLr: 1 }), /cosine needs total steps/);
  assert.throws(() => lrSchedule({ kind: 'linear' as 'cosine', baseLr: 1 }), /unknown kind "linear"/);
});

test('trainable globs: * within a segment, ** across, module prefixes, freeze wins, a pattern matching nothing is an error', () => {
  const keys = [
    'conv_in.weight', 'down_blocks.0.attentions.0.to_q.weight', 'down_blocks.0.attentions.0.to_q.bias',
    'down_blocks.0.attentions.0.to_k.weight', 'down_blocks.1.resnets.0.conv1.weight', 'mid_block.attentions.0.to_q.weight',
  ];
  assert.ok(globMatches('down_blocks.0', 'down_blocks.0.attentions.0.to_q.weight'), 'module prefix');
  assert.not.ok(globMatches('down_blocks.*', 'down_blocks_x.0'), '* stays within a segment');
  assert.not.ok(globMatches('down', 'down_blocks.0.x'), 'no partial segment');
  assert.equal(selectTrainable(keys).trainable, keys);
  assert.equal(selectTrainable(keys, { train: ['**.to_q'] }).trainable,
    ['down_blocks.0.attentions.0.to_q.weight', 'down_blocks.0.attentions.0.to_q.bias', 'mid_block.attentions.0.to_q.weight']);
  const s = selectTrainable(keys, { train: ['**attentions**'], freeze: ['*.*.attentions.*.to_q.bias', 'mid_block'] });
  assert.equal(s.trainable, ['down_blocks.0.attentions.0.to_q.weight', 'down_blocks.0.attentions.0.to_k.weight']);
  assert.equal(s.frozen.length, 4);
  assert.equal(selectTrainable(keys, { freeze: ['**'] }).trainable, []);
  assert.throws(() => selectTrainable(keys, { train: ['up_blocks'] }), /--train "up_blocks" matches no parameter/);
  assert.throws(() => selectTrainable(keys, { freeze: ['*.to_v'] }), /--freeze "\*\.to_v" matches no parameter/);
});

test.run();
