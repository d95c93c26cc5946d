// AdamW's one-pass update (src/training/adamw.ts) equals, bit for bit, the same update written as float32 tensor
// ops in torch's order (the independent computation below), over several steps, with a learning-rate change, for
// tensors below and above the size at which the native backend runs elementwise ops in the addon, on every
// backend under test; a parameter without a gradient is left alone; every tensor is freed. Against torch itself:
// the AdamW rows of grads_parity / grads_unets (fixtures/grads).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { AdamW } from '../src/training/adamw.js';
import { backendsUnderTest, useBackend } from './helpers.js';

const f = Math.fround;

function values(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    a[i] = ((s >>> 8) / 16777216 - 0.5) * scale;
  }
  return a;
}

/** torch.optim.AdamW's single-tensor step as tensor ops (scalars rounded to float32 where torch hands them over). */
function referenceStep(p: tf.Tensor, g: tf.Tensor, m0: tf.Tensor, v0: tf.Tensor, step: number, lr: number,
  o = { beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 1e-2 }): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.tidy(() => {
    const bc1 = 1 - o.beta1 ** step, bc2 = 1 - o.beta2 ** step;
    const decayed = tf.mul(p, f(1 - lr * o.wd));
    const m1 = tf.add(tf.mul(m0, f(o.beta1)), tf.mul(g, f(1 - o.beta1)));
    const v1 = tf.add(tf.mul(v0, f(o.beta2)), tf.mul(tf.mul(g, f(1 - o.beta2)), g));
    const denom = tf.add(tf.div(tf.sqrt(v1), f(Math.sqrt(bc2))), f(o.eps));
    const p1 = tf.add(decayed, tf.div(tf.mul(m1, f(-lr / bc1)), denom));
    return [p1, m1, v1];
  });
}

for (const backend of await backendsUnderTest()) {
  test(`[${backend}] AdamW step equals the tensor-op update bit for bit (small and large tensors, 4 steps, lr changes)`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const shapes: Record<string, number[]> = { small: [7, 13], large: [64, 3, 3, 9], skipped: [5] };
    const params = new Map(Object.entries(shapes).map(([k, s], i) => {
      const init = tf.tensor(values(s.reduce((a, b) => a * b, 1), i + 1, 2), s);
      const v = tf.variable(init);
      init.dispose();
      return [k, v];
    }));
    const ref = new Map([...params].map(([k, p]) => [k, { p: p.clone(), m: tf.zerosLike(p), v: tf.zerosLike(p) }]));
    const skippedBefore = params.get('skipped')!.dataSync().slice();
    const opt = new AdamW(params);
    const lrs = [1e-3, 1e-3, 3e-4, 5e-2];
    lrs.forEach((lr, s) => {
      const grads = new Map(['small', 'large'].map((k, i) => [k, tf.tensor(values(params.get(k)!.size, 100 * s + i + 7, s === 3 ? 1e-6 : 3), shapes[k])]));
      opt.step(grads, lr);
      for (const [k, g] of grads) {
        const r = ref.get(k)!;
        const [p1, m1, v1] = referenceStep(r.p, g, r.m, r.v, s + 1, lr);
        tf.dispose([r.p, r.m, r.v]);
        Object.assign(r, { p: p1, m: m1, v: v1 });
        const ours = params.get(k)!.dataSync(), want = p1.dataSync();
        for (let i = 0; i < want.length; i++) {
          if (!Object.is(ours[i], want[i])) assert.unreachable(`step ${s + 1} ${k}[${i}]: ${ours[i]} vs tensor ops ${want[i]}`);
        }
      }
      tf.dispose([...grads.values()]);
    });
    const st = opt.state();
    for (const k of ['small', 'large']) {
      assert.equal(Array.from(st.tensors.get(`exp_avg.${k}`)!.dataSync()), Array.from(ref.get(k)!.m.dataSync()), `exp_avg.${k}`);
      assert.equal(Array.from(st.tensors.get(`exp_avg_sq.${k}`)!.dataSync()), Array.from(ref.get(k)!.v.dataSync()), `exp_avg_sq.${k}`);
    }
    assert.equal(st.paramSteps, { small: 4, large: 4 }, 'a parameter without a gradient has no step');
    assert.equal(Array.from(params.get('skipped')!.dataSync()), Array.from(skippedBefore), 'no gradient: no decay either');
    tf.dispose([...st.tensors.values()]);
    opt.dispose();
    for (const r of ref.values()) tf.dispose([r.p, r.m, r.v]);
    for (const p of params.values()) p.dispose();
    assert.is(tf.memory().numTensors, before, 'every tensor freed');
  });
}

test.run();
