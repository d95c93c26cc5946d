// Training on wasm: tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter kernel; ours (src/backend/wasm_grads.ts:
// im2col + the backend's BatchMatMul) equals the cpu backend's filter gradient (stride 1/2, same/valid, 1x1 and
// 3x3, odd sizes), and with it the decoder and super-res gradients match torch autograd on wasm (fixtures/grads).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { availableBackends } from '../src/backend/index.js';
import { registerGradients } from '../src/backend/gradients.js';
import { runDecoderGrads, runSuperResGrads } from '../src/parity/grads.js';
import { check, type GradsCase } from './grads_helpers.js';
import { useBackend, xorshiftUniform } from './helpers.js';

await registerGradients();
const wasm = (await availableBackends(['wasm'])).length > 0;

const rand = (shape: number[], seed: number) => xorshiftUniform(shape, seed);

if (!wasm) {
  test('wasm backend unavailable', () => { throw new Error('@tensorflow/tfjs-backend-wasm did not initialise'); });
} else {
  test('Conv2DBackpropFilter on wasm equals the cpu backend (conv gradients w.r.t. input and filter)', async () => {
    const convs: { x: [number, number, number, number]; f: [number, number, number, number]; s: number; pad: 'same' | 'valid' | number }[] = [
      { x: [2, 9, 9, 5], f: [3, 3, 5, 7], s: 1, pad: 'same' },
      { x: [1, 10, 11, 4], f: [3, 3, 4, 6], s: 2, pad: 1 },
      { x: [2, 11, 9, 3], f: [3, 2, 3, 4], s: 2, pad: 'valid' },
      { x: [3, 8, 8, 6], f: [1, 1, 6, 3], s: 1, pad: 'valid' },
    ];
    for (const c of convs) {
      const res: Record<string, Float32Array[]> = {};
      for (const b of ['cpu', 'wasm']) {
        await useBackend(b);
        const before = tf.memory().numTensors;
        res[b] = tf.tidy(() => {
          const x = tf.tensor(rand(c.x, 1), c.x) as tf.Tensor4D;
          const f = tf.tensor(rand(c.f, 2), c.f) as tf.Tensor4D;
          const y = tf.conv2d(x, f, c.s, c.pad);
          const dy = tf.tensor(rand(y.shape, 3), y.shape);
          return tf.grads((a: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, w as tf.Tensor4D, c.s, c.pad), dy)))([x, f])
            .map((g) => (g.dataSync() as Float32Array).slice());
        });
        assert.is(tf.memory().numTensors, before, `[${b}] tensors freed`);
      }
      res.cpu.forEach((ref, i) => {
        let maxRef = 0, maxAbs = 0;
        for (let j = 0; j < ref.length; j++) { maxRef = Math.max(maxRef, Math.abs(ref[j])); maxAbs = Math.max(maxAbs, Math.abs(res.wasm[i][j] - ref[j])); }
        assert.ok(maxAbs <= 1e-5 * maxRef, `conv x${c.x} f${c.f} s${c.s} ${c.pad}: d/d${i ? 'filter' : 'x'} wasm vs cpu ${maxAbs} > 1e-5 · ${maxRef}`);
      });
    }
  });

  const UNETS: GradsCase[] = [
    ['decoder', runDecoderGrads, { min: 400, names: ['loss', 'output', 'grad.conv_in.weight', 'grad_input.sample'] }],
    ['super_res_first', (c) => runSuperResGrads(c), { min: 240, names: ['loss', 'output', 'grad.conv_in.weight', 'grad_input.sample'] }],
  ];
  for (const [label, run, expect] of UNETS) {
    test(`[wasm] ${label}: loss, outputs and every gradient match torch autograd (fixtures/grads)`, async () => {
      await useBackend('wasm');
      check(`[wasm] ${label}`, run, expect);
    });
  }
}

test.run();
