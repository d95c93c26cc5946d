import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from './helpers.js';
import { timestepEmbedding, broadcastTimesteps } from '../src/layers/embeddings.js';
import { nearestUpsample2x, avgPool2x, ResnetBlock2D } from '../src/layers/resnet.js';

test('timestepEmbedding equals the float64 formula (sin/cos order, freq shift, odd-dim padding)', async () => {
  await useBackend('cpu');
  const ts = [0, 1, 3, 10];
  for (const [dim, flip, shift] of [[8, true, 0], [8, false, 1], [7, true, 0]] as const) {
    const e = timestepEmbedding(tf.tensor1d(ts), dim, { flipSinToCos: flip, freqShift: shift });
    assert.equal(e.shape, [ts.length, dim]);
    const d = e.dataSync();
    const half = Math.floor(dim / 2);
    ts.forEach((t, r) => {
      for (let i = 0; i < half; i++) {
        const a = t * Math.exp((-Math.log(10000) * i) / (half - shift));
        const [first, second] = flip ? [Math.cos(a), Math.sin(a)] : [Math.sin(a), Math.cos(a)];
        assert.ok(Math.abs(d[r * dim + i] - first) < 2e-6, `row ${r} col ${i}`);
        assert.ok(Math.abs(d[r * dim + half + i] - second) < 2e-6, `row ${r} col ${half + i}`);
      }
      if (dim % 2) assert.is(d[r * dim + dim - 1], 0);
    });
    e.dispose();
  }
});

test('broadcastTimesteps: number, 0-d, [1] and [N] tensors; wrong count is an error', () => {
  assert.equal(Array.from(broadcastTimesteps(5, 3).dataSync()), [5, 5, 5]);
  assert.equal(Array.from(broadcastTimesteps(tf.scalar(7, 'int32'), 2).dataSync()), [7, 7]);
  assert.equal(Array.from(broadcastTimesteps(tf.tensor1d([1, 2]), 2).dataSync()), [1, 2]);
  assert.throws(() => broadcastTimesteps(tf.tensor1d([1, 2, 3]), 2, 'unet timestep'), /unet timestep: 3 timesteps for a batch of 2/);
});

test('2x resampling: nearest upsample repeats each pixel 2×2; avg pool averages 2×2 blocks (NHWC)', () => {
  const x = tf.tensor4d([1, 10, 2, 20, 3, 30, 4, 40], [1, 2, 2, 2]);
  const up = nearestUpsample2x(x);
  assert.equal(up.shape, [1, 4, 4, 2]);
  assert.equal(Array.from(up.dataSync()).filter((_, i) => i % 2 === 0), [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
  const down = avgPool2x(up);
  assert.equal(Array.from(down.dataSync()), Array.from(x.dataSync()));
  assert.equal(Array.from(avgPool2x(x).dataSync()), [2.5, 25]);
});

test('ResnetBlock2D: state-dict names per variant, frees its intermediates, errors name the block', async () => {
  await useBackend('cpu');
  const plain = new ResnetBlock2D({ inChannels: 4, outChannels: 4, tembChannels: 6, groups: 2 });
  assert.equal(plain.namedParameters().map(([k]) => k), ['norm1.weight', 'norm1.bias', 'conv1.weight', 'conv1.bias', 'time_emb_proj.weight', 'time_emb_proj.bias', 'norm2.weight', 'norm2.bias', 'conv2.weight', 'conv2.bias']);
  const ss = new ResnetBlock2D({ inChannels: 4, outChannels: 8, tembChannels: 6, groups: 2, timeEmbeddingNorm: 'scale_shift', down: true });
  assert.equal(ss.time_emb_proj!.weight.torchShape, [16, 6]);
  assert.equal(ss.conv_shortcut!.weight.torchShape, [8, 4, 1, 1]);
  for (const [, p] of ss.namedParameters()) p.assign(tf.tidy(() => tf.randomNormal(p.tfShape)));
  const x = tf.randomNormal([2, 6, 6, 4]) as tf.Tensor4D, temb = tf.randomNormal([2, 6]) as tf.Tensor2D;
  const before = tf.memory().numTensors;
  const y = ss.forward(x, temb);
  assert.equal(y.shape, [2, 3, 3, 8]);
  assert.is(tf.memory().numTensors, before + 1);
  assert.throws(() => ss.forward(tf.zeros([1, 4, 4, 3]) as tf.Tensor4D, temb), /input must be NHWC with 4 channels/);
  assert.throws(() => ss.forward(x, null), /a time embedding is required/);
  tf.dispose([x, temb, y]);
  ss.dispose();
});

test.run();
