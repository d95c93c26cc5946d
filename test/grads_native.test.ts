// Gradients on the native backend equal the cpu backend's, for every kernel the native backend overrides (GEMM,
// convolutions and their backprop kernels, elementwise, reductions, softmax, transpose, nearest upsampling, the
// fused GroupNorm/LayerNorm): tf.grads of sum(f(x…)·dy) on both backends, max |native − cpu| ≤ 1e-5 · max |cpu|
// per gradient. Inputs are large enough that the addon really runs (checked through its call counts), in the
// forward and, where the gradient uses an overridden kernel, in the backward pass. (tfjs-core's BatchMatMul gradient
// does not support a broadcast batch dimension on any backend; the models never need one.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { registerGradients } from '../src/backend/gradients.js';
import { enableNativeStats, nativeStats } from '../src/backend/native/index.js';
import { groupNorm } from '../src/ops/group_norm.js';
import { avgPool2x, nearestUpsample2x } from '../src/layers/resnet.js';
import { nativeUnavailableTest, registerNativeOrWhy, xorshiftUniform } from './helpers.js';

await registerGradients();
const unavailable = await registerNativeOrWhy();
const REL = 1e-5;

const rand = xorshiftUniform;

interface Input { shape: number[]; lo?: number; hi?: number }

/**
 * Gradients of sum(f(inputs)·dy) with respect to every input, on cpu and on native; asserts they agree and that
 * each kernel in `kernels` ran in the addon during the native run. Returns the worst relative error.
 */
async function gradSame(name: string, f: (...x: tf.Tensor[]) => tf.Tensor, inputs: Input[], kernels: string[]): Promise<number> {
  const results: Record<string, Float32Array[]> = {};
  for (const b of ['cpu', 'native']) {
    await tf.setBackend(b);
    nativeStats.clear();
    const before = tf.memory().numTensors;
    results[b] = tf.tidy(() => {
      const xs = inputs.map((inp, i) => tf.tensor(rand(inp.shape, 17 * (i + 1), inp.lo, inp.hi), inp.shape));
      const y0 = f(...xs);
      const dy = tf.tensor(rand(y0.shape, 99), y0.shape);
      const gs = tf.grads((...a: tf.Tensor[]) => tf.sum(tf.mul(f(...a), dy)))(xs);
      return gs.map((g) => (g.dataSync() as Float32Array).slice());
    });
    assert.is(tf.memory().numTensors, before, `${name} [${b}]: tensors freed`);
    if (b === 'native') {
      for (const k of kernels) {
        const s = nativeStats.get(k);
        assert.ok(s && s.native > 0, `${name}: the addon never ran ${k} (stats ${JSON.stringify(s)})`);
      }
    }
  }
  let worst = 0;
  results.cpu.forEach((ref, i) => {
    const ours = results.native[i];
    let maxRef = 0;
    let maxAbs = 0;
    for (let j = 0; j < ref.length; j++) {
      maxRef = Math.max(maxRef, Math.abs(ref[j]));
      maxAbs = Math.max(maxAbs, Math.abs(ours[j] - ref[j]));
    }
    assert.ok(maxRef > 0, `${name}: d/dx${i} is all zero on cpu (nothing tested)`);
    assert.ok(maxAbs <= REL * maxRef, `${name}: d/dx${i}: max |native − cpu| ${maxAbs.toExponential(3)} > ${REL} · ${maxRef.toExponential(3)}`);
    worst = Math.max(worst, maxAbs / maxRef);
  });
  return worst;
}

const worst: Record<string, number> = {};
const record = async (name: string, p: Promise<number>) => { worst[name] = await p; };

if (unavailable) {
  nativeUnavailableTest(test, unavailable, 'its gradient tests');
} else {
  test.before(() => enableNativeStats(true));
  test.after(() => {
    enableNativeStats(!!process.env.KARLO_NATIVE_STATS);
    const w = Object.entries(worst).sort((a, b) => b[1] - a[1]);
    console.log(`  worst relative gradient differences: ${w.slice(0, 4).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(', ')}`);
  });

  test('BatchMatMul (all transpose flags) and _FusedMatMul (bias, relu): gradients equal cpu', async () => {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      await record(`BatchMatMul ${ta}${tb}`, gradSame(`BatchMatMul ta=${ta} tb=${tb}`, (a, b) => tf.matMul(a, b, ta, tb),
        [{ shape: ta ? [3, 40, 70] : [3, 70, 40] }, { shape: tb ? [3, 60, 40] : [3, 40, 60] }], ['BatchMatMul']));
    }
    await record('_FusedMatMul', gradSame('_FusedMatMul bias relu', (a, b, c) => tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, transposeB: true, bias: c, activation: 'relu' }),
      [{ shape: [90, 64] }, { shape: [80, 64] }, { shape: [80] }], ['_FusedMatMul']));
    await record('_FusedMatMul linear', gradSame('_FusedMatMul linear', (a, b, c) => tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias: c }),
      [{ shape: [90, 64] }, { shape: [64, 80] }, { shape: [80] }], ['_FusedMatMul']));
  });

  test('Conv2D, FusedConv2D (bias, relu), Conv2DBackpropInput/Filter (first and second order): gradients equal cpu', async () => {
    const convs: { x: number[]; f: number[]; s: number; pad: 'same' | 'valid' }[] = [
      { x: [2, 16, 16, 8], f: [3, 3, 8, 16], s: 1, pad: 'same' },
      { x: [2, 17, 15, 6], f: [3, 3, 6, 8], s: 2, pad: 'same' },
      { x: [1, 20, 20, 4], f: [1, 1, 4, 12], s: 1, pad: 'valid' },
    ];
    for (const c of convs) {
      await record(`Conv2D ${c.x}`, gradSame(`Conv2D x${c.x} f${c.f} s${c.s} ${c.pad}`, (x, f) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, c.s, c.pad),
        [{ shape: c.x }, { shape: c.f }], ['Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter']));
    }
    await record('FusedConv2D', gradSame('FusedConv2D bias relu', (x, f, b) => tf.fused.conv2d({ x: x as tf.Tensor4D, filter: f as tf.Tensor4D, strides: 1, pad: 1, bias: b, activation: 'relu' }),
      [{ shape: [2, 16, 16, 8] }, { shape: [3, 3, 8, 16] }, { shape: [16] }], ['FusedConv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter']));
    // conv2dTranspose runs Conv2DBackpropInput forward; its gradient needs Conv2D and Conv2DBackpropFilter.
    await record('Conv2DBackpropInput', gradSame('Conv2DBackpropInput (conv2dTranspose)', (x, f) => tf.conv2dTranspose(x as tf.Tensor4D, f as tf.Tensor4D, [2, 16, 16, 8], 1, 'same'),
      [{ shape: [2, 16, 16, 16] }, { shape: [3, 3, 8, 16] }], ['Conv2DBackpropInput', 'Conv2D', 'Conv2DBackpropFilter']));
  });

  test('elementwise binary kernels (Add, Sub, Multiply, RealDiv, SquaredDifference, Maximum, Minimum; broadcasting): gradients equal cpu', async () => {
    const ops: [string, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, Input[]][] = [
      ['Add', tf.add, [{ shape: [4, 32, 48] }, { shape: [48] }]],
      ['Sub', tf.sub, [{ shape: [4, 32, 48] }, { shape: [4, 1, 48] }]],
      ['Multiply', tf.mul, [{ shape: [4, 32, 48] }, { shape: [4, 32, 48] }]],
      ['RealDiv', tf.div, [{ shape: [4, 32, 48] }, { shape: [4, 32, 1], lo: 0.5, hi: 2 }]],
      ['SquaredDifference', tf.squaredDifference, [{ shape: [4, 32, 48] }, { shape: [4, 32, 48] }]],
      ['Maximum', tf.maximum, [{ shape: [4, 32, 48] }, { shape: [4, 32, 48] }]],
      ['Minimum', tf.minimum, [{ shape: [4, 32, 48] }, { shape: [4, 32, 48] }]],
    ];
    for (const [k, f, inputs] of ops) await record(k, gradSame(k, f, inputs, [k]));
  });

  test('elementwise unary kernels (Sigmoid, Exp, Rsqrt, Sqrt, Tanh, Erf, Neg, Relu, Square, Abs, Log): gradients equal cpu', async () => {
    const ops: [string, (x: tf.Tensor) => tf.Tensor, Input][] = [
      ['Sigmoid', tf.sigmoid, { shape: [8, 1024], lo: -4, hi: 4 }],
      ['Exp', tf.exp, { shape: [8, 1024] }],
      ['Rsqrt', tf.rsqrt, { shape: [8, 1024], lo: 0.5, hi: 3 }],
      ['Sqrt', tf.sqrt, { shape: [8, 1024], lo: 0.5, hi: 3 }],
      ['Tanh', tf.tanh, { shape: [8, 1024], lo: -3, hi: 3 }],
      ['Erf', tf.erf, { shape: [8, 1024], lo: -2, hi: 2 }],
      ['Neg', tf.neg, { shape: [8, 1024] }],
      ['Relu', tf.relu, { shape: [8, 1024] }],
      ['Square', tf.square, { shape: [8, 1024] }],
      ['Abs', tf.abs, { shape: [8, 1024] }],
      ['Log', tf.log, { shape: [8, 1024], lo: 0.5, hi: 3 }],
    ];
    for (const [k, f, inp] of ops) await record(k, gradSame(k, f, [inp], [k]));
  });

  test('reductions (Sum, Mean, Max, Min over inner and outer axes), Softmax, Transpose: gradients equal cpu', async () => {
    await record('Sum', gradSame('Sum', (x) => tf.sum(x, [0, 2]), [{ shape: [8, 32, 40] }], ['Sum']));
    await record('Mean', gradSame('Mean', (x) => tf.mean(x, -1, true), [{ shape: [8, 32, 40] }], ['Mean']));
    await record('Max', gradSame('Max', (x) => tf.max(x, 1), [{ shape: [8, 32, 40] }], ['Max']));
    await record('Min', gradSame('Min', (x) => tf.min(x, 2), [{ shape: [8, 32, 40] }], ['Min']));
    await record('Softmax', gradSame('Softmax', (x) => tf.softmax(x, -1), [{ shape: [4, 8, 81, 81], lo: -5, hi: 5 }], ['Softmax']));
    await record('Transpose', gradSame('Transpose', (x) => tf.transpose(x, [0, 2, 1, 3]), [{ shape: [4, 24, 16, 20] }], ['Transpose']));
  });

  test('Concat on channels and on a middle axis (the UNet skip connections): gradients (SplitV) equal cpu', async () => {
    await record('SplitV', gradSame('concat channels', (a, b) => tf.concat([a, b], 3), [{ shape: [2, 16, 16, 32] }, { shape: [2, 16, 16, 48] }], ['SplitV']));
    await record('SplitV axis 1', gradSame('concat axis 1', (a, b, c) => tf.concat([a, b, c], 1), [{ shape: [4, 20, 64] }, { shape: [4, 5, 64] }, { shape: [4, 11, 64] }], ['SplitV']));
  });

  test('ResizeNearestNeighbor 2x (the UNet upsampler, batch 2), the 2x2 average pool gradient and fused GroupNorm (+SiLU) / LayerNorm: gradients equal cpu', async () => {
    await record('ResizeNearestNeighbor', gradSame('nearestUpsample2x', (x) => nearestUpsample2x(x as tf.Tensor4D), [{ shape: [2, 16, 16, 32] }], ['ResizeNearestNeighbor']));
    await record('AvgPoolGrad', gradSame('avgPool2x (the resnet downsampler)', (x) => avgPool2x(x as tf.Tensor4D), [{ shape: [2, 16, 16, 32] }], ['AvgPoolGrad']));
    for (const silu of [false, true]) {
      await record(`GroupNorm silu=${silu}`, gradSame(`GroupNorm silu=${silu}`, (x, w, b) => groupNorm(x, w, b, 8, 1e-5, { silu }),
        [{ shape: [2, 16, 16, 32] }, { shape: [32], lo: 0.5, hi: 1.5 }, { shape: [32] }], ['KarloGroupNorm', 'KarloGroupNormGrad']));
    }
    await record('LayerNorm', gradSame('LayerNorm (groupNorm, one group over [tokens, 1, C])', (x, w, b) => tf.reshape(groupNorm(tf.reshape(x, [-1, 1, 64]), w, b, 1, 1e-5), x.shape),
      [{ shape: [4, 81, 64] }, { shape: [64], lo: 0.5, hi: 1.5 }, { shape: [64] }], ['KarloGroupNorm', 'KarloGroupNormGrad']));
  });
}

test.run();
