import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { fixture, backendsUnderTest, useBackend } from './helpers.js';
import { runInterpParity } from '../src/parity/interp.js';
import { registerGradients } from '../src/backend/gradients.js';
import { bicubicResize, bicubicWeightsAA, bicubicWeightsPlain } from '../src/layers/interpolate.js';

for (const backend of await backendsUnderTest()) {
  test(`[${backend}] bicubic resize (antialias and plain) matches F.interpolate on every fixtures/interp case within 1e-5`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const res = await runInterpParity(fixture('interp'));
    assert.is(res.length, 6);
    for (const c of res) assert.ok(c.ok, `${c.name}: max abs err ${c.maxAbs} > ${c.allowed}`);
    assert.is(tf.memory().numTensors, before);
  });
}

test('bicubic weight rows sum to 1; antialias taps stay in range, plain taps clamp to the border', () => {
  for (const [inS, outS] of [[64, 256], [16, 64], [24, 96], [7, 3], [10, 10]]) {
    for (const w of [bicubicWeightsAA(inS, outS), bicubicWeightsPlain(inS, outS)]) {
      for (let i = 0; i < outS; i++) {
        let s = 0;
        for (let j = 0; j < inS; j++) s += w[i * inS + j];
        assert.ok(Math.abs(s - 1) < 1e-6, `${inS}→${outS} row ${i} sums to ${s}`);
      }
    }
  }
  // Same size: identity.
  const id = bicubicWeightsPlain(5, 5);
  for (let i = 0; i < 5; i++) for (let j = 0; j < 5; j++) assert.is(id[i * 5 + j], i === j ? 1 : 0);
});

test('bicubic resize is differentiable: d sum(resize(x)) / dx = (column sums of W_h) ⊗ (column sums of W_w)', async () => {
  await useBackend('cpu');
  await registerGradients();
  const x = tf.randomUniform([1, 2, 4, 6], -1, 1) as tf.Tensor4D;
  const g = tf.grad((v: tf.Tensor) => tf.sum(bicubicResize(v as tf.Tensor4D, [8, 12], { antialias: true })))(x);
  const wh = bicubicWeightsAA(4, 8), ww = bicubicWeightsAA(6, 12);
  const colH = (j: number) => { let s = 0; for (let i = 0; i < 8; i++) s += wh[i * 4 + j]; return s; };
  const colW = (j: number) => { let s = 0; for (let i = 0; i < 12; i++) s += ww[i * 6 + j]; return s; };
  const gd = g.dataSync();
  for (let c = 0; c < 2; c++) for (let y = 0; y < 4; y++) for (let xx = 0; xx < 6; xx++) {
    assert.ok(Math.abs(gd[c * 24 + y * 6 + xx] - colH(y) * colW(xx)) < 1e-5, `channel ${c} (${y}, ${xx})`);
  }
  tf.dispose([x, g]);
});

test('bicubic resize: bad arguments are errors naming them', () => {
  const x = tf.zeros([1, 3, 4, 4]) as tf.Tensor4D;
  assert.throws(() => bicubicResize(x, [0, 8], { antialias: true }), /output height must be a positive integer, got 0/);
  assert.throws(() => bicubicResize(tf.zeros([3, 4, 4]) as unknown as tf.Tensor4D, [8, 8], { antialias: true }), /must be NCHW/);
  x.dispose();
});

test.run();
