// KARLO_NATIVE_CONV_ALGO: oneDNN's Winograd F(4x4,3x3) for float32 forward convolutions on the native backend.
// winograd: every 3x3 stride-1 conv runs it (the addon's counter and oneDNN's implementation name say so) and equals
// the cpu backend within WINO_TOL; other convs and every gradient stay direct. direct: no Winograd, outputs as
// before. auto (the default): Winograd only with >= 64 input and output channels, >= 16384 output pixels per call
// and its scratch within KARLO_NATIVE_WINOGRAD_MB.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { compareArrays } from '../src/parity/compare.js';
import { registerGradients } from '../src/backend/gradients.js';
import { CONV_ALGO, convAlgo, loadAddon, type ConvAlgoName } from '../src/backend/native/index.js';
import { winogradMB } from '../src/backend/native/addon.js';
import { nativeUnavailableTest, registerNativeOrWhy, xorshiftUniform } from './helpers.js';

// Direct vs cpu: the tolerance of test/native.test.ts (float32 sums in another order).
const TOL = 1e-5;
// Winograd vs cpu. Measured (bench kernels' shapes and Karlo's 15 real 3x3 conv shapes, 3-1280 channels):
// max |winograd − direct| ≤ 3.3e-6 · max |direct|; on this file's shapes ≤ 2.2e-6 · max |cpu| against cpu. F(4x4,3x3)
// transforms the input and the filter with coefficients up to 8 and 1/4, which costs a few ulps more than a direct
// sum; 2e-5 allows 6x the worst measured error and still catches a wrong result (a wrong tile or channel is off by
// O(max |y|)). The parity fixtures keep their own tolerances with winograd on (README, Native backend).
const WINO_TOL = 2e-5;

await registerGradients();
const unavailable = await registerNativeOrWhy();

const rand = (shape: number[], seed: number, scale = 1) => tf.tensor(xorshiftUniform(shape, seed, -scale, scale), shape);

interface Conv { x: number[]; f: number[]; s?: number; pad?: 'same' | 'valid'; d?: number; act?: 'relu' | 'linear' }
const name = (c: Conv) => `x${c.x} f${c.f} s${c.s ?? 1} ${c.pad ?? 'same'} d${c.d ?? 1} ${c.act ?? 'linear'}`;

/** The conv with bias (and activation) on the current backend; fresh tensors from fixed seeds. */
function runConv(c: Conv, seed: number): Float32Array {
  return tf.tidy(() => {
    const x = rand(c.x, seed) as tf.Tensor4D;
    const f = rand(c.f, seed + 1, 1 / Math.sqrt(c.f[0] * c.f[1] * c.f[2])) as tf.Tensor4D;
    const bias = rand([c.f[3]], seed + 2, 0.1);
    return tf.fused.conv2d({ x, filter: f, strides: c.s ?? 1, pad: c.pad ?? 'same', dilations: c.d ?? 1, bias,
      activation: c.act ?? 'linear' });
  }).dataSync() as Float32Array;
}

/** Runs f with the addon's forward conv algorithm set to algo, then puts back what was there. */
async function withAlgo<T>(algo: ConvAlgoName, f: () => Promise<T> | T): Promise<T> {
  const addon = loadAddon();
  const prev = addon.convAlgo();
  addon.convAlgo(CONV_ALGO[algo]);
  try {
    return await f();
  } finally {
    addon.convAlgo(prev);
  }
}

/** The conv on native under algo: its output, how many forward convs ran Winograd, and the last implementation. */
async function nativeConv(c: Conv, seed: number, algo: ConvAlgoName) {
  return withAlgo(algo, async () => {
    await tf.setBackend('native');
    const addon = loadAddon();
    const before = addon.convRuns();
    const y = runConv(c, seed);
    const after = addon.convRuns();
    return { y, winograd: after.winograd - before.winograd, direct: after.direct - before.direct, impl: after.lastImpl };
  });
}

async function cpuConv(c: Conv, seed: number): Promise<Float32Array> {
  await tf.setBackend('cpu');
  return runConv(c, seed);
}

function within(what: string, ours: Float32Array, ref: Float32Array, tol: number): number {
  const r = compareArrays(what, ours, ref, { atol: tol });
  assert.ok(r.ok, `${what}: max abs err ${r.maxAbs.toExponential(3)} > allowed ${r.allowed.toExponential(3)} (max |ref| ${r.maxRef.toExponential(3)})`);
  return r.maxAbs / Math.max(1, r.maxRef);
}

// Convs Winograd takes (3x3, stride 1, no dilation): 'same' and 'valid', batch 2, fused relu, 64-128 channels.
const WINO: Conv[] = [
  { x: [1, 24, 24, 128], f: [3, 3, 128, 128] },
  { x: [2, 20, 20, 64], f: [3, 3, 64, 96], act: 'relu' },
  { x: [1, 17, 19, 96], f: [3, 3, 96, 64], pad: 'valid' },
];
// Convs it does not take: these run direct under every setting.
const NOT_WINO: Conv[] = [
  { x: [1, 16, 16, 64], f: [3, 3, 64, 64], s: 2 },
  { x: [1, 16, 16, 64], f: [3, 3, 64, 64], d: 2 },
  { x: [1, 16, 16, 64], f: [1, 1, 64, 64] },
];

if (unavailable) {
  nativeUnavailableTest(test, unavailable, 'the Winograd conv tests');
} else {
  test('KARLO_NATIVE_CONV_ALGO: auto (default), direct or winograd; anything else is refused', () => {
    assert.is(convAlgo({}), 'auto');
    assert.is(convAlgo({ KARLO_NATIVE_CONV_ALGO: 'direct' }), 'direct');
    assert.is(convAlgo({ KARLO_NATIVE_CONV_ALGO: 'winograd' }), 'winograd');
    assert.is(convAlgo({ KARLO_NATIVE_CONV_ALGO: 'AUTO' }), 'auto');
    assert.throws(() => convAlgo({ KARLO_NATIVE_CONV_ALGO: 'fft' }), /KARLO_NATIVE_CONV_ALGO=fft: expected direct, winograd or auto/);
    assert.throws(() => loadAddon().convAlgo(7), /conv algorithm/);
  });

  test('winograd: every 3x3 stride-1 conv runs oneDNN\'s Winograd and equals cpu within WINO_TOL', async () => {
    let worst = 0;
    for (const [i, c] of WINO.entries()) {
      const r = await nativeConv(c, 10 * i, 'winograd');
      assert.is(r.winograd, 1, `${name(c)}: ran ${r.winograd} Winograd convs (impl ${r.impl})`);
      assert.match(r.impl, /wino/, `${name(c)}: implementation ${r.impl}`);
      worst = Math.max(worst, within(`winograd ${name(c)}`, r.y, await cpuConv(c, 10 * i), WINO_TOL));
      // Not the direct result by accident: Winograd rounds differently.
      const d = await nativeConv(c, 10 * i, 'direct');
      assert.ok(d.y.some((v, j) => v !== r.y[j]), `${name(c)}: winograd output identical to direct`);
    }
    assert.ok(worst > 0);
  });

  test('direct: no Winograd, the same outputs as before (cpu within TOL, bit-identical run to run)', async () => {
    for (const [i, c] of [...WINO, ...NOT_WINO].entries()) {
      const a = await nativeConv(c, 10 * i, 'direct');
      assert.is(a.winograd, 0, `${name(c)}: ran Winograd under direct`);
      assert.is(a.direct, 1);
      assert.not.match(a.impl, /wino/);
      within(`direct ${name(c)}`, a.y, await cpuConv(c, 10 * i), TOL);
      const b = await nativeConv(c, 10 * i, 'direct');
      assert.equal(Array.from(b.y), Array.from(a.y), `${name(c)}: direct not reproducible`);
    }
  });

  test('winograd and auto leave convs Winograd cannot run (stride 2, dilation 2, 1x1) direct and bit-identical', async () => {
    for (const [i, c] of NOT_WINO.entries()) {
      const d = await nativeConv(c, 10 * i, 'direct');
      for (const algo of ['winograd', 'auto'] as const) {
        const w = await nativeConv(c, 10 * i, algo);
        assert.is(w.winograd, 0, `${algo} ${name(c)}: ran Winograd`);
        assert.equal(Array.from(w.y), Array.from(d.y), `${algo} ${name(c)}: differs from direct`);
      }
    }
  });

  test('auto: Winograd from 64 input and output channels and 16384 output pixels per call, direct otherwise', async () => {
    // 1x128x128 = 16384 output pixels: auto takes Winograd (the same primitive as winograd mode: bit-identical).
    const big: Conv = { x: [1, 128, 128, 64], f: [3, 3, 64, 64] };
    const wino = await nativeConv(big, 0, 'winograd');
    const auto = await nativeConv(big, 0, 'auto');
    assert.is(auto.winograd, 1, `auto ${name(big)}: impl ${auto.impl}`);
    assert.match(auto.impl, /wino/);
    assert.equal(Array.from(auto.y), Array.from(wino.y), 'auto and winograd run the same primitive');
    const direct = await nativeConv(big, 0, 'direct');
    within(`auto ${name(big)} vs direct`, auto.y, direct.y, WINO_TOL);
    // Over auto's scratch budget (KARLO_NATIVE_WINOGRAD_MB; this conv needs ~25 MB): direct.
    const addon = loadAddon();
    addon.convAlgo(undefined, 2 ** 20);
    try {
      const over = await nativeConv(big, 0, 'auto');
      assert.is(over.winograd, 0, 'auto ran Winograd over its scratch budget');
      assert.equal(Array.from(over.y), Array.from(direct.y));
    } finally {
      addon.convAlgo(undefined, winogradMB() * 2 ** 20);
    }
    // Too few channels, or too few pixels to amortise the filter transform: direct, bit for bit.
    for (const c of [{ x: [1, 128, 128, 32], f: [3, 3, 32, 64] }, { x: [1, 128, 128, 64], f: [3, 3, 64, 16] }, WINO[0]]) {
      const d = await nativeConv(c, 5, 'direct');
      const a = await nativeConv(c, 5, 'auto');
      assert.is(a.winograd, 0, `auto ran Winograd for ${name(c)}`);
      assert.equal(Array.from(a.y), Array.from(d.y), `auto ${name(c)} differs from direct`);
      assert.is((await nativeConv(c, 5, 'winograd')).winograd, 1, `winograd mode runs ${name(c)}`);
    }
  });

  test('gradients stay direct: Conv2DBackpropInput/Filter bit-identical under winograd and direct', async () => {
    const c = WINO[1];
    const grads = (algo: ConvAlgoName) => withAlgo(algo, async () => {
      await tf.setBackend('native');
      const before = loadAddon().convRuns().winograd;
      const g = tf.tidy(() => {
        const x = rand(c.x, 1);
        const f = rand(c.f, 2, 0.05);
        const dy = rand([...c.x.slice(0, 3), c.f[3]], 3);
        return tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same'), dy)))([x, f]);
      });
      const out = g.map((t) => Array.from(t.dataSync()));
      tf.dispose(g);
      return { out, winograd: loadAddon().convRuns().winograd - before };
    });
    const w = await grads('winograd');
    const d = await grads('direct');
    assert.is(w.winograd, 1, 'the forward conv ran Winograd');
    assert.is(d.winograd, 0);
    assert.equal(w.out, d.out);
  });

  test.after(async () => {
    await tf.setBackend('cpu');
  });
}

test.run();
