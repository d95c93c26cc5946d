// Basic layers against independent naive loops in double precision (PyTorch semantics: Linear y = xWᵀ + b,
// Conv2d cross-correlation on [out,in,kh,kw] filters with zero padding, LayerNorm/GroupNorm with biased variance),
// on every backend under test.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { Linear, Conv2d, LayerNorm, GroupNorm, Embedding, silu, gelu, quickGelu } from '../src/layers/basic.js';
import { mapSource, type Module } from '../src/layers/module.js';
import type { TensorData } from '../src/io/safetensors.js';
import { TorchGenerator } from '../src/random/generator.js';
import { backendsUnderTest, useBackend, assertClose, registerNativeOrWhy, DEFAULT_TEST_BACKENDS } from './helpers.js';

const backends = await backendsUnderTest();
const g = new TorchGenerator(1234);
const rnd = (shape: number[], scale = 1, offset = 0) => g.randn(shape).map((v) => v * scale + offset);

/** Loads torch-layout arrays into a module by state-dict key. */
function load(m: Module, tensors: Record<string, Float32Array>): void {
  const map = new Map<string, TensorData>();
  for (const [k, p] of m.namedParameters()) map.set(k, { dtype: 'float32', shape: p.torchShape, data: tensors[k] });
  m.loadStateDict(mapSource(map, 'test'));
}

/** Runs fn on each backend (the layer is loaded once per backend, since variables live on the backend). */
async function onEachBackend(fn: (b: string) => void): Promise<void> {
  for (const b of backends) {
    await useBackend(b);
    const before = tf.memory().numTensors;
    fn(b);
    assert.is(tf.memory().numTensors, before, `${b}: tensors leaked`);
  }
}

test(`backends under test: ${backends.join(', ')} (every requested one available)`, async () => {
  // By default native and cpu: a missing native backend fails here with its reason instead of silently
  // narrowing every parity test of this file to cpu.
  const wanted = process.env.KARLO_TEST_BACKENDS?.split(',').map((s) => s.trim()) ?? [...DEFAULT_TEST_BACKENDS];
  const why = wanted.includes('native') ? await registerNativeOrWhy() : undefined;
  assert.equal(backends, wanted, why ? `native backend unavailable: ${why}` : 'backends under test');
});

test('Linear = x·Wᵀ + b (naive loop), with and without bias, leading dims kept', async () => {
  const [B, T, I, O] = [2, 3, 7, 5];
  const x = rnd([B, T, I]);
  const w = rnd([O, I], 0.5);
  const bias = rnd([O]);
  const ref = new Float64Array(B * T * O);
  for (let r = 0; r < B * T; r++) for (let o = 0; o < O; o++) {
    let s = bias[o];
    for (let i = 0; i < I; i++) s += x[r * I + i] * w[o * I + i];
    ref[r * O + o] = s;
  }
  await onEachBackend((b) => {
    for (const withBias of [true, false]) {
      const lin = new Linear(I, O, withBias);
      load(lin, withBias ? { weight: w, bias } : { weight: w });
      const xt = tf.tensor(x, [B, T, I]);
      const y = lin.forward(xt);
      assert.equal(y.shape, [B, T, O]);
      const want = withBias ? ref : ref.map((v, k) => v - bias[k % O]);
      assertClose(`${b} linear bias=${withBias}`, y, Float32Array.from(want), { atol: 1e-5 });
      tf.dispose([xt, y]);
      lin.dispose();
    }
  });
});

function naiveConv(x: Float32Array, [N, H, W, C]: number[], w: Float32Array, bias: Float32Array | null, O: number, K: number, stride: number, pad: number) {
  const Ho = Math.floor((H + 2 * pad - K) / stride) + 1;
  const Wo = Math.floor((W + 2 * pad - K) / stride) + 1;
  const out = new Float64Array(N * Ho * Wo * O);
  for (let n = 0; n < N; n++) for (let oy = 0; oy < Ho; oy++) for (let ox = 0; ox < Wo; ox++) for (let o = 0; o < O; o++) {
    let s = bias ? bias[o] : 0;
    for (let ky = 0; ky < K; ky++) for (let kx = 0; kx < K; kx++) {
      const iy = oy * stride - pad + ky;
      const ix = ox * stride - pad + kx;
      if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
      for (let c = 0; c < C; c++) s += x[((n * H + iy) * W + ix) * C + c] * w[((o * C + c) * K + ky) * K + kx];
    }
    out[((n * Ho + oy) * Wo + ox) * O + o] = s;
  }
  return { out, shape: [N, Ho, Wo, O] };
}

test('Conv2d (NHWC, torch [out,in,kh,kw] weights) = naive cross-correlation: 3x3 pad 1, 3x3 stride 2 pad 1, 1x1', async () => {
  const xs = [2, 7, 6, 3];
  const x = rnd(xs);
  await onEachBackend((b) => {
    for (const [K, stride, pad, O, withBias] of [[3, 1, 1, 4, true], [3, 2, 1, 5, true], [1, 1, 0, 2, false]] as const) {
      const w = rnd([O, xs[3], K, K], 0.3);
      const bias = withBias ? rnd([O]) : null;
      const conv = new Conv2d(xs[3], O, K, { stride, padding: pad, bias: withBias });
      load(conv, bias ? { weight: w, bias } : { weight: w });
      const xt = tf.tensor4d(x, xs as [number, number, number, number]);
      const y = conv.forward(xt);
      const ref = naiveConv(x, xs, w, bias, O, K, stride, pad);
      assert.equal(y.shape, ref.shape);
      assertClose(`${b} conv k${K} s${stride} p${pad}`, y, Float32Array.from(ref.out), { atol: 1e-5 });
      tf.dispose([xt, y]);
      conv.dispose();
    }
  });
});

test('LayerNorm = (x − mean)/sqrt(var + eps)·γ + β over the last dim (naive, biased variance)', async () => {
  const [R, D] = [6, 10];
  const x = rnd([R, D], 3, 2);
  const w = rnd([D], 0.1, 1);
  const bb = rnd([D], 0.1);
  const eps = 1e-5;
  const ref = new Float64Array(R * D);
  for (let r = 0; r < R; r++) {
    let m = 0;
    for (let d = 0; d < D; d++) m += x[r * D + d];
    m /= D;
    let v = 0;
    for (let d = 0; d < D; d++) v += (x[r * D + d] - m) ** 2;
    v /= D;
    for (let d = 0; d < D; d++) ref[r * D + d] = ((x[r * D + d] - m) / Math.sqrt(v + eps)) * w[d] + bb[d];
  }
  await onEachBackend((b) => {
    const ln = new LayerNorm(D, eps);
    load(ln, { weight: w, bias: bb });
    const xt = tf.tensor(x, [2, 3, D]);
    const y = ln.forward(xt);
    assert.equal(y.shape, [2, 3, D]);
    assertClose(`${b} layernorm`, y, Float32Array.from(ref), { atol: 1e-5 });
    tf.dispose([xt, y]);
    ln.dispose();
  });
});

test('GroupNorm over NHWC = per (sample, group) normalisation over H·W·(C/G) with per-channel affine (naive)', async () => {
  const [N, H, W, C, G] = [2, 3, 4, 6, 3];
  const x = rnd([N, H, W, C], 2, -1);
  const w = rnd([C], 0.1, 1);
  const bb = rnd([C], 0.1);
  const eps = 1e-6;
  const ref = new Float64Array(x.length);
  const cg = C / G;
  for (let n = 0; n < N; n++) for (let grp = 0; grp < G; grp++) {
    const idx: number[] = [];
    for (let p = 0; p < H * W; p++) for (let c = grp * cg; c < (grp + 1) * cg; c++) idx.push((n * H * W + p) * C + c);
    const m = idx.reduce((a, i) => a + x[i], 0) / idx.length;
    const v = idx.reduce((a, i) => a + (x[i] - m) ** 2, 0) / idx.length;
    for (const i of idx) ref[i] = ((x[i] - m) / Math.sqrt(v + eps)) * w[i % C] + bb[i % C];
  }
  await onEachBackend((b) => {
    const gn = new GroupNorm(G, C, eps);
    load(gn, { weight: w, bias: bb });
    const xt = tf.tensor4d(x, [N, H, W, C]);
    const y = gn.forward(xt);
    assertClose(`${b} groupnorm`, y, Float32Array.from(ref), { atol: 1e-5 });
    // Also [N, L, C].
    const x3 = tf.reshape(xt, [N, H * W, C]);
    const y3 = gn.forward(x3);
    assertClose(`${b} groupnorm NLC`, y3, Float32Array.from(ref), { atol: 1e-5 });
    tf.dispose([xt, y, x3, y3]);
    gn.dispose();
  });
  assert.throws(() => new GroupNorm(4, 6), /6 channels are not divisible into 4 groups/);
});

test('Embedding gathers rows by id (int32 or float ids)', async () => {
  const table = rnd([9, 4]);
  const ids = [0, 8, 3, 3, 1, 7];
  const ref = Float32Array.from(ids.flatMap((i) => [...table.subarray(i * 4, i * 4 + 4)]));
  await onEachBackend((b) => {
    const e = new Embedding(9, 4);
    load(e, { weight: table });
    for (const dtype of ['int32', 'float32'] as const) {
      const it = tf.tensor(ids, [2, 3], dtype);
      const y = e.forward(it);
      assert.equal(y.shape, [2, 3, 4]);
      assertClose(`${b} embedding ${dtype}`, y, ref, { atol: 0 });
      tf.dispose([it, y]);
    }
    e.dispose();
  });
});

/** erf to ~1e-15 (Maclaurin series for |x| < 3, continued fraction beyond): the independent reference for GELU. */
function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction (Lentz), accurate for large |x|.
  let f = ax;
  for (let k = 60; k >= 1; k--) f = ax + (k / 2) / f;
  const erfc = Math.exp(-ax * ax) / (Math.sqrt(Math.PI) * f);
  return Math.sign(x) * (1 - erfc);
}

test('activations: silu, exact gelu (erf), quickGelu vs double-precision formulas', async () => {
  const xs = Float32Array.from([-8, -3.5, -1, -0.25, 0, 1e-3, 0.5, 1, 2.5, 6, ...rnd([30], 2)]);
  const sig = (v: number) => 1 / (1 + Math.exp(-v));
  const refs = {
    silu: xs.map((v) => v * sig(v)),
    gelu: xs.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2))),
    quickGelu: xs.map((v) => v * sig(1.702 * v)),
  };
  await onEachBackend((b) => {
    const x = tf.tensor1d(xs);
    for (const [name, fn] of [['silu', silu], ['gelu', gelu], ['quickGelu', quickGelu]] as const) {
      const y = fn(x);
      // tfjs cpu/wasm erf is a 1.5e-7-accurate polynomial: allow a few 1e-7 on values up to 8.
      assertClose(`${b} ${name}`, y, refs[name], { atol: 1e-6 });
      y.dispose();
    }
    x.dispose();
  });
  assert.ok(Math.abs(erf(0.5) - 0.5204998778130465) < 1e-15 && Math.abs(erf(3.5) - 0.9999992569016276) < 1e-15, 'reference erf itself');
});

test.run();
