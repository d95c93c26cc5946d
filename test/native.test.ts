// The native backend (oneDNN/OpenBLAS kernels) against tfjs-backend-cpu on random inputs: every overridden
// kernel and attribute combination, gradients through tf.grad, that the addon really ran (not a cpu fallback),
// and that no tensor leaks.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { compareArrays } from '../src/parity/compare.js';
import { registerGradients } from '../src/backend/gradients.js';
import { enableNativeStats, nativeStats, loadAddon } from '../src/backend/native/index.js';
import { groupNorm, groupNormComposite } from '../src/ops/group_norm.js';
import { weightCacheMB } from '../src/backend/native/addon.js';
import { nativeUnavailableTest, registerNativeOrWhy, xorshiftUniform } from './helpers.js';

// Native vs cpu: max |native − cpu| ≤ 1e-5 · max(1, max |cpu|) (float32 sums in another order).
const TOL = 1e-5;

await registerGradients();
const unavailable = await registerNativeOrWhy();

const rand = xorshiftUniform;

/** Runs f on cpu and on native with the same inputs; asserts the outputs agree; returns the max error seen. */
async function same(name: string, f: () => tf.Tensor | tf.Tensor[], tol = TOL, ref = f): Promise<number> {
  const results: Record<string, { shape: number[]; data: Float32Array }[]> = {};
  for (const b of ['cpu', 'native']) {
    await tf.setBackend(b);
    const outs = tf.tidy(() => {
      const r = b === 'cpu' ? ref() : f();
      return Array.isArray(r) ? r : [r];
    });
    results[b] = outs.map((t) => ({ shape: t.shape, data: t.dataSync() as Float32Array }));
    tf.dispose(outs);
  }
  let worst = 0;
  results.cpu.forEach((ref, i) => {
    const ours = results.native[i];
    assert.equal(ours.shape, ref.shape, `${name}[${i}]: shape`);
    const c = compareArrays(`${name}[${i}]`, ours.data, ref.data, { atol: tol });
    if (!c.ok) {
      throw new Error(`${name}[${i}]: max abs err ${c.maxAbs.toExponential(3)} > allowed ${c.allowed.toExponential(3)} ` +
        `(max |cpu| ${c.maxRef.toExponential(3)}, at ${c.argmax}: native ${ours.data[c.argmax]} vs cpu ${ref.data[c.argmax]})`);
    }
    worst = Math.max(worst, c.maxAbs / Math.max(1, c.maxRef));
  });
  return worst;
}

const T = (shape: number[], seed: number, lo?: number, hi?: number) => tf.tensor(rand(shape, seed, lo, hi), shape);

/** Asserts the addon ran `kernel` at least once since the last reset (so the comparison is not cpu vs cpu). */
function ranNative(kernel: string) {
  const s = nativeStats.get(kernel);
  assert.ok(s && s.native > 0, `${kernel}: the addon never ran (stats ${JSON.stringify(s)})`);
}

if (unavailable) {
  // The one policy (test/helpers.ts): tests that need the native backend fail with its reason.
  test('native backend reports in one line why it is unavailable and how to fix it', () => {
    assert.ok(!unavailable!.includes('\n'), 'one line');
    assert.match(unavailable!, /apt-get|install|build/);
  });
  nativeUnavailableTest(test, unavailable, 'the native kernel tests');
} else {
  test.before.each(() => {
    enableNativeStats(true);
    nativeStats.clear();
  });
  test.after.each(() => enableNativeStats(false));

  test('matMul: every transpose combination, 2-D and batched, equals cpu', async () => {
    let i = 0;
    for (const [m, k, n] of [[7, 13, 5], [33, 64, 17], [1, 40, 9], [65, 3, 70]]) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          const as = ta ? [k, m] : [m, k];
          const bs = tb ? [n, k] : [k, n];
          i++;
          await same(`matMul ${as}x${bs} ta=${ta} tb=${tb}`, () => tf.matMul(T(as, i), T(bs, i + 100), ta, tb));
          await same(`batched ${as}x${bs}`, () => tf.matMul(T([3, ...as], i), T([3, ...bs], i + 200), ta, tb));
        }
      }
    }
    ranNative('BatchMatMul');
  });

  test('matMul: batch broadcasting (one side 1, both sides, rank 4) equals cpu', async () => {
    await same('a batch 1', () => tf.matMul(T([1, 6, 8], 1), T([4, 8, 5], 2)));
    await same('b batch 1', () => tf.matMul(T([4, 6, 8], 3), T([1, 8, 5], 4), false, false));
    await same('b rank 2 against rank 3', () => tf.matMul(T([4, 6, 8], 5), T([8, 5], 6)));
    // tfjs-cpu itself gets two-sided batch broadcasting wrong (it indexes batches modulo), so the reference
    // here is cpu on explicitly tiled inputs.
    await same('[2,1] x [1,3] batches', () => tf.matMul(T([2, 1, 6, 8], 7), T([1, 3, 8, 5], 8)), TOL,
      () => tf.matMul(tf.tile(T([2, 1, 6, 8], 7), [1, 3, 1, 1]), tf.tile(T([1, 3, 8, 5], 8), [2, 1, 1, 1])));
    await same('[2,1] x [1,3] batches, transposed', () => tf.matMul(T([2, 1, 8, 6], 9), T([1, 3, 5, 8], 10), true, true), TOL,
      () => tf.matMul(tf.tile(T([2, 1, 8, 6], 9), [1, 3, 1, 1]), tf.tile(T([1, 3, 5, 8], 10), [2, 1, 1, 1]), true, true));
    // Larger batched products (oneDNN picks other kernels for them).
    await same('oneDNN batched [2,128,96]x[2,96,128]', () => tf.matMul(T([2, 128, 96], 13), T([2, 96, 128], 14)));
    await same('oneDNN batched, a broadcast [1,128,96]x[3,128,96]^T', () => tf.matMul(T([1, 128, 96], 15), T([3, 128, 96], 16), false, true));
    await same('oneDNN batched, b broadcast [3,96,128]^T x[1,96,128]', () => tf.matMul(T([3, 96, 128], 17), T([1, 96, 128], 18), true, false));
    await same('attention-like [2,8,77,64]x[2,8,64,77]', () => tf.matMul(T([2, 8, 77, 64], 11), T([2, 8, 77, 64], 12), false, true));
    ranNative('BatchMatMul');
  });

  test('fused matMul: bias shapes and every activation equal cpu', async () => {
    const acts = ['linear', 'relu', 'relu6', 'elu', 'sigmoid', 'leakyrelu', 'prelu'] as const;
    let s = 0;
    for (const activation of acts) {
      for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]]) {
        s++;
        const [m, k, n] = [9, 31, 12];
        const a = () => T(ta ? [2, k, m] : [2, m, k], s, -3, 3);
        const b = () => T(tb ? [2, n, k] : [2, k, n], s + 1, -3, 3);
        const prelu = () => (activation === 'prelu' ? T([n], s + 3, 0, 0.5) : undefined);
        await same(`${activation} bias[n] ta=${ta} tb=${tb}`, () => tf.fused.matMul({
          a: a(), b: b(), transposeA: ta, transposeB: tb, bias: T([n], s + 2), activation,
          preluActivationWeights: prelu(), leakyreluAlpha: 0.13,
        }));
        await same(`${activation} bias[m,n] (broadcast, unfused)`, () => tf.fused.matMul({
          a: a(), b: b(), transposeA: ta, transposeB: tb, bias: T([m, n], s + 4), activation,
          preluActivationWeights: prelu(), leakyreluAlpha: 0.13,
        }));
        await same(`${activation} no bias`, () => tf.fused.matMul({
          a: a(), b: b(), transposeA: ta, transposeB: tb, activation, preluActivationWeights: prelu(), leakyreluAlpha: 0.13,
        }));
      }
    }
    for (const activation of ['relu', 'leakyrelu', 'prelu'] as const) {
      await same(`oneDNN batched fused ${activation}`, () => tf.fused.matMul({ a: T([2, 128, 128], 1), b: T([2, 96, 128], 2), transposeB: true,
        bias: T([96], 3), activation, leakyreluAlpha: 0.3, preluActivationWeights: activation === 'prelu' ? T([96], 4) : undefined }));
    }
    await same('2-D with bias [1,n]', () => tf.fused.matMul({ a: T([5, 16], 1), b: T([16, 7], 2), bias: T([1, 7], 3), activation: 'relu' }));
    ranNative('_FusedMatMul');
  });

  test('conv2d: strides, same/valid/explicit padding, dilations, 1x1 and non-square filters equal cpu', async () => {
    type Pad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
    const cases: { x: number[]; f: number[]; s: number | [number, number]; pad: Pad; d?: number | [number, number] }[] = [
      { x: [1, 9, 9, 5], f: [3, 3, 5, 7], s: 1, pad: 'same' },
      { x: [2, 9, 8, 5], f: [3, 3, 5, 7], s: 1, pad: 'valid' },
      { x: [2, 10, 9, 4], f: [3, 3, 4, 6], s: 2, pad: 'same' },
      { x: [1, 11, 10, 4], f: [3, 3, 4, 6], s: 2, pad: 'valid' },
      { x: [1, 8, 8, 3], f: [5, 3, 3, 4], s: [2, 1], pad: 'same' },
      { x: [2, 7, 9, 6], f: [1, 1, 6, 8], s: 1, pad: 'valid' },
      { x: [1, 12, 12, 4], f: [3, 3, 4, 5], s: 1, pad: 'same', d: 2 },
      { x: [1, 12, 11, 4], f: [3, 2, 4, 5], s: 1, pad: 'valid', d: [2, 3] },
      { x: [1, 9, 9, 3], f: [3, 3, 3, 4], s: 1, pad: [[0, 0], [1, 2], [2, 0], [0, 0]] },
      { x: [2, 10, 10, 3], f: [3, 3, 3, 4], s: 2, pad: [[0, 0], [1, 1], [0, 1], [0, 0]] },
      { x: [1, 16, 16, 32], f: [3, 3, 32, 32], s: 1, pad: 'same' },
    ];
    let i = 0;
    for (const c of cases) {
      i++;
      await same(`conv2d x${c.x} f${c.f} s${c.s} ${JSON.stringify(c.pad)} d${c.d ?? 1}`,
        () => tf.conv2d(T(c.x, i) as tf.Tensor4D, T(c.f, i + 50) as tf.Tensor4D, c.s, c.pad, 'NHWC', c.d ?? 1));
    }
    // Numeric padding goes through tfjs's dimRoundingMode.
    await same('conv2d pad=1 (number) round', () => tf.conv2d(T([1, 8, 8, 3], 1) as tf.Tensor4D, T([3, 3, 3, 2], 2) as tf.Tensor4D, 2, 1, 'NHWC', 1, 'round'));
    await same('conv2d pad=0 ceil', () => tf.conv2d(T([1, 8, 8, 3], 3) as tf.Tensor4D, T([3, 3, 3, 2], 4) as tf.Tensor4D, 2, 0, 'NHWC', 1, 'ceil'));
    ranNative('Conv2D');
  });

  test('fused conv2d: bias and every activation (prelu, leakyrelu alpha) equal cpu', async () => {
    const acts = ['linear', 'relu', 'relu6', 'elu', 'sigmoid', 'leakyrelu', 'prelu'] as const;
    let s = 0;
    for (const activation of acts) {
      s++;
      const x = () => T([2, 9, 9, 6], s, -2, 2) as tf.Tensor4D;
      const f = () => T([3, 3, 6, 8], s + 1) as tf.Tensor4D;
      const prelu = () => (activation === 'prelu' ? T([8], s + 3, 0, 0.5) : undefined);
      await same(`fused conv ${activation} bias[c]`, () => tf.fused.conv2d({
        x: x(), filter: f(), strides: 1, pad: 'same', bias: T([8], s + 2), activation,
        preluActivationWeights: prelu(), leakyreluAlpha: 0.07,
      }));
      await same(`fused conv ${activation} no bias, stride 2 valid`, () => tf.fused.conv2d({
        x: x(), filter: f(), strides: 2, pad: 'valid', activation, preluActivationWeights: prelu(), leakyreluAlpha: 0.07,
      }));
      await same(`fused conv ${activation} bias[1,1,1,c] dilation 2`, () => tf.fused.conv2d({
        x: x(), filter: f(), strides: 1, pad: 'same', dilations: 2, bias: T([1, 1, 1, 8], s + 4), activation,
        preluActivationWeights: prelu(), leakyreluAlpha: 0.07,
      }));
    }
    ranNative('FusedConv2D');
  });

  test('gradients of matMul and conv2d through tf.grad equal cpu (Conv2DBackpropInput/Filter in oneDNN)', async () => {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      await same(`grad matMul ta=${ta} tb=${tb}`, () => {
        const a = T(ta ? [2, 11, 6] : [2, 6, 11], 1);
        const b = T(tb ? [2, 9, 11] : [2, 11, 9], 2);
        const dy = T([2, 6, 9], 3);
        return tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.mul(tf.matMul(x, y, ta, tb), dy))([a, b]);
      });
    }
    const convs: { x: number[]; f: number[]; s: number; pad: 'same' | 'valid' }[] = [
      { x: [2, 9, 9, 5], f: [3, 3, 5, 7], s: 1, pad: 'same' },
      { x: [1, 10, 11, 4], f: [3, 3, 4, 6], s: 2, pad: 'same' },
      { x: [2, 11, 9, 3], f: [3, 2, 3, 4], s: 2, pad: 'valid' },
      { x: [1, 8, 8, 6], f: [1, 1, 6, 3], s: 1, pad: 'valid' },
    ];
    let i = 0;
    for (const c of convs) {
      i++;
      await same(`grad conv2d x${c.x} f${c.f} s${c.s} ${c.pad}`, () => {
        const x = T(c.x, i) as tf.Tensor4D;
        const f = T(c.f, i + 10) as tf.Tensor4D;
        return tf.grads((a: tf.Tensor, b: tf.Tensor) =>
          tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.s, c.pad), 1.5)))([x, f]);
      });
    }
    ranNative('Conv2DBackpropInput');
    ranNative('Conv2DBackpropFilter');
  });

  test('elementwise binary ops with broadcasting equal cpu', async () => {
    const pairs: [number[], number[]][] = [
      [[4, 33, 40], [4, 33, 40]],
      [[2, 16, 16, 32], [32]],
      [[2, 256, 8, 4], [2, 1, 8, 1]],
      [[4, 1, 50], [1, 30, 50]],
      [[1], [3, 2000]],
      [[3, 2000], [3, 1]],
      [[40, 1, 7, 1], [1, 30, 1, 9]],
    ];
    const ops = { add: tf.add, sub: tf.sub, mul: tf.mul, div: tf.div, squaredDifference: tf.squaredDifference,
      maximum: tf.maximum, minimum: tf.minimum };
    let i = 0;
    for (const [name, op] of Object.entries(ops)) {
      for (const [sa, sb] of pairs) {
        i++;
        const lo = name === 'div' ? 0.5 : -1;
        await same(`${name} ${sa} ${sb}`, () => op(T(sa, i), T(sb, i + 1000, lo, 2)));
      }
    }
    for (const k of ['Add', 'Sub', 'Multiply', 'RealDiv', 'SquaredDifference', 'Maximum', 'Minimum']) ranNative(k);
  });

  test('transpose (every permutation of a rank-4 tensor, and rank 3) and 2x nearest upsampling equal cpu', async () => {
    const perms = [[0, 1, 2, 3], [0, 2, 1, 3], [0, 3, 1, 2], [0, 2, 3, 1], [3, 2, 1, 0], [1, 0, 3, 2], [2, 0, 3, 1]];
    let i = 0;
    for (const perm of perms) {
      i++;
      await same(`transpose ${perm}`, () => tf.transpose(T([3, 17, 10, 12], i), perm));
    }
    await same('transpose [B,L,H,D]->[B,H,L,D]', () => tf.transpose(T([2, 100, 8, 64], 9), [0, 2, 1, 3]));
    await same('transpose rank 3', () => tf.transpose(T([30, 40, 7], 10), [2, 0, 1]));
    ranNative('Transpose');
    for (const hpc of [false, true]) {
      await same(`resizeNearestNeighbor 2x halfPixelCenters=${hpc}`, () =>
        tf.image.resizeNearestNeighbor(T([2, 9, 13, 24], 11) as tf.Tensor4D, [18, 26], false, hpc));
    }
    await same('resizeNearestNeighbor 3x (cpu path)', () => tf.image.resizeNearestNeighbor(T([1, 9, 13, 40], 12) as tf.Tensor4D, [27, 39]));
    ranNative('ResizeNearestNeighbor');
  });

  test('split (SplitV: the gradient of every concat) on the last, a middle and the first axis equals cpu', async () => {
    await same('split channels [64, 32, 96] (NHWC skip concat)', () => tf.split(T([2, 12, 10, 192], 21), [64, 32, 96], 3));
    await same('split channels into 4 equal parts', () => tf.split(T([3, 8, 8, 64], 22), 4, -1));
    await same('split a middle axis with -1', () => tf.split(T([4, 30, 5, 40], 23), [7, -1, 3], 1));
    await same('split the first axis', () => tf.split(T([6, 20, 40], 24), [1, 5], 0));
    await same('split with a size-1 piece and an inner axis of 1', () => tf.split(T([4096, 3, 1], 25), [1, 2], 1));
    ranNative('SplitV');
  });

  test('concat (the UNet skip connections) on the last, a middle and the first axis, 2 and 3 inputs, equals cpu', async () => {
    await same('concat channels [64, 32] (NHWC skip concat)', () => tf.concat([T([2, 12, 10, 64], 31), T([2, 12, 10, 32], 32)], 3));
    await same('concat three on the last axis', () => tf.concat([T([3, 8, 8, 16], 33), T([3, 8, 8, 40], 34), T([3, 8, 8, 8], 35)], -1));
    await same('concat a middle axis', () => tf.concat([T([4, 30, 5, 40], 36), T([4, 3, 5, 40], 37)], 1));
    await same('concat the first axis', () => tf.concat([T([6, 20, 40], 38), T([1, 20, 40], 39)], 0));
    ranNative('Concat');
  });

  test('unary ops, pow by 2, reductions (incl. whole 1-D tensors and GroupNorm moments) and softmax equal cpu', async () => {
    const shape = [2, 24, 24, 16];
    const ops: [string, (x: tf.Tensor) => tf.Tensor, number, number][] = [
      ['Sigmoid', tf.sigmoid, -8, 8], ['Exp', tf.exp, -5, 5], ['Rsqrt', tf.rsqrt, 0.01, 4], ['Sqrt', tf.sqrt, 0, 4],
      ['Tanh', tf.tanh, -4, 4], ['Erf', tf.erf, -3, 3], ['Neg', tf.neg, -1, 1], ['Relu', tf.relu, -1, 1],
      ['Square', tf.square, -3, 3], ['Abs', tf.abs, -1, 1], ['Log', tf.log, 0.01, 5],
    ];
    let i = 0;
    for (const [name, op, lo, hi] of ops) {
      i++;
      // tfjs-cpu's erf is a 1.5e-7-accurate polynomial; the addon's is libm's.
      await same(name, () => op(T(shape, i, lo, hi)));
      ranNative(name);
    }
    const axesCases: (number | number[])[] = [-1, 0, [1, 2], [1, 3], [0, 1, 2, 3], [0, 2]];
    for (const axes of axesCases) {
      for (const keep of [false, true]) {
        i++;
        await same(`sum ${axes} ${keep}`, () => tf.sum(T(shape, i), axes, keep));
        await same(`mean ${axes} ${keep}`, () => tf.mean(T(shape, i), axes, keep));
        await same(`max ${axes} ${keep}`, () => tf.max(T(shape, i), axes, keep));
        await same(`min ${axes} ${keep}`, () => tf.min(T(shape, i), axes, keep));
      }
    }
    // Whole 1-D tensors (tf.norm, gradient clipping): the one-dim path, small and large enough to use both threads.
    for (const n of [5000, 65536, 300001]) {
      i++;
      await same(`sum 1-D ${n}`, () => tf.sum(T([n], i)));
      await same(`mean 1-D ${n}`, () => tf.mean(T([n], i)));
      await same(`max 1-D ${n}`, () => tf.max(T([n], i)));
      await same(`min 1-D ${n}`, () => tf.min(T([n], i)));
      await same(`norm 1-D ${n}`, () => tf.norm(T([n], i)));
    }
    await same('pow by 2 (int32 and float32 exponent)', () => [tf.pow(T(shape, 91, -3, 3), tf.scalar(2, 'int32')), tf.pow(T(shape, 92, -3, 3), tf.scalar(2))]);
    ranNative('Pow');
    await same('pow by 3 (runs on cpu)', () => tf.pow(T(shape, 93, -3, 3), tf.scalar(3, 'int32')));
    await same('moments as GroupNorm uses them', () => {
      const m = tf.moments(T([2, 576, 4, 4], 77), [1, 3], true);
      return [m.mean, m.variance];
    });
    for (const k of ['Sum', 'Mean', 'Max', 'Min']) ranNative(k);
    await same('softmax last axis', () => tf.softmax(T([2, 8, 77, 77], 5, -6, 6)));
    ranNative('Softmax');
  });

  test('fused groupNorm (+SiLU) and its gradients equal the tfjs-op GroupNorm on cpu', async () => {
    let i = 0;
    for (const [shape, groups] of [[[2, 9, 7, 32], 8], [[1, 40, 64], 32], [[2, 16, 16, 96], 32]] as [number[], number][]) {
      for (const silu of [false, true]) {
        i++;
        const c = shape[shape.length - 1];
        // An offset mean (3 + ...) checks the variance does not cancel badly.
        const x = () => tf.add(T(shape, i, -2, 2), 3);
        const w = () => T([c], i + 1, 0.5, 1.5);
        const b = () => T([c], i + 2);
        await same(`groupNorm ${shape} g${groups} silu=${silu}`, () => groupNorm(x(), w(), b(), groups, 1e-5, { silu }), TOL,
          () => groupNormComposite(x(), w(), b(), groups, 1e-5, silu));
        const dy = () => T(shape, i + 3);
        const loss = (f: (a: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => tf.Tensor) =>
          tf.grads((a: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(f(a, ww, bb), dy())))([x(), w(), b()]);
        await same(`grad groupNorm ${shape} silu=${silu}`, () => loss((a, ww, bb) => groupNorm(a, ww, bb, groups, 1e-5, { silu })), TOL,
          () => loss((a, ww, bb) => groupNormComposite(a, ww, bb, groups, 1e-5, silu)));
      }
    }
    ranNative('KarloGroupNorm');
  });

  test('packed conv filters: a new filter of the same shape is never served stale; the cache keeps its budget', async () => {
    const addon = loadAddon();
    for (let i = 0; i < 3; i++) {
      // Same shapes every round, new filter values: each must match cpu.
      await same(`conv with filter #${i}`, () => tf.conv2d(T([1, 6, 6, 16], 1) as tf.Tensor4D, T([3, 3, 16, 16], 100 + i) as tf.Tensor4D, 1, 'same'));
    }
    const before = addon.weightCache();
    addon.weightCache(64 * 1024); // smaller than one packed [3,3,64,64] filter (147 KB): served uncached
    try {
      await same('conv with a filter over the cache budget', () => tf.conv2d(T([1, 5, 5, 64], 1) as tf.Tensor4D, T([3, 3, 64, 64], 2) as tf.Tensor4D, 1, 'same'));
      assert.ok(addon.weightCache() <= 64 * 1024, `cache holds ${addon.weightCache()} bytes over its 64 KB budget`);
    } finally {
      addon.weightCache(weightCacheMB() * 2 ** 20);
    }
    assert.ok(before >= 0);
    ranNative('Conv2D');
  });

  test('native kernels free every tensor (numTensors and numBytes return to baseline)', async () => {
    await tf.setBackend('native');
    const before = tf.memory();
    const x = T([1, 12, 12, 8], 1) as tf.Tensor4D;
    const f = T([3, 3, 8, 8], 2) as tf.Tensor4D;
    const r = tf.tidy(() => {
      let y: tf.Tensor = tf.fused.conv2d({ x, filter: f, strides: 1, pad: 'same', bias: T([8], 3), activation: 'prelu', preluActivationWeights: T([8], 4) });
      y = tf.fused.conv2d({ x: y as tf.Tensor4D, filter: f, strides: 1, pad: 'same', bias: T([1, 12, 12, 8], 5), activation: 'elu' });
      y = tf.fused.matMul({ a: tf.reshape(y, [144, 8]), b: T([8, 8], 6), bias: T([144, 8], 7), activation: 'leakyrelu' });
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same')))([x, f]);
      const gn = tf.grads((a: tf.Tensor) => tf.sum(groupNorm(a, tf.ones([8]), tf.zeros([8]), 4, 1e-5, { silu: true })))([x]);
      return tf.add(tf.add(tf.sum(y), tf.sum(gn[0])), tf.add(tf.sum(g[0]), tf.sum(g[1])));
    });
    r.dispose();
    x.dispose();
    f.dispose();
    const after = tf.memory();
    assert.is(after.numTensors, before.numTensors, 'numTensors');
    assert.is(after.numBytes, before.numBytes, 'numBytes');
    await tf.setBackend('cpu');
  });

  test('bad input is an error naming the problem, as on cpu', async () => {
    await tf.setBackend('native');
    assert.throws(() => tf.matMul(tf.ones([2, 3]), tf.ones([4, 5])), /inner shapes \(3\) and \(4\)/);
    await tf.setBackend('cpu');
  });
}

test.run();
