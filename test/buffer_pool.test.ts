// The native backend's recycled output buffers (src/backend/native/buffer_pool.ts): they are reused, and memory
// anything else can still see (a slice's subarray, a dataSync() array, a user's array) is never overwritten.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { BufferPool, nativeBufferPool } from '../src/backend/native/index.js';
import { nativeUnavailableTest, registerNativeOrWhy } from './helpers.js';

const unavailable = await registerNativeOrWhy();

const N = 64 * 1024; // above the pool's minimum size
const ramp = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => (i % 1000) * k);

/** Names the first differing element (uvu's diff of two 64K-element arrays takes minutes). */
function sameArray(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.is(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) assert.unreachable(`${what}: element ${i} is ${got[i]}, expected ${want[i]}`);
  }
}

/**
 * The control for the "never recycled" tests: the same sequence without the reference to the memory does reuse
 * the disposed output's buffer, so the tests below fail when recycling is switched off, not only when it is wrong.
 */
function assertRecyclesWithoutReference(make: () => tf.Tensor, others: () => tf.Tensor[]): void {
  const pool = nativeBufferPool()!;
  const x = make();
  x.dispose();
  const hits = pool.hits;
  const outs = others();
  assert.ok(pool.hits > hits, 'control: with nothing referencing the disposed output, a later output reuses its buffer');
  tf.dispose(outs);
}

if (unavailable) {
  nativeUnavailableTest(test, unavailable, 'the buffer pool tests');
} else {
  test('a disposed kernel output is handed to the next output of the same size, with correct values', async () => {
    await tf.setBackend('native');
    const pool = nativeBufferPool()!;
    const a = tf.tensor1d(ramp(N, 1));
    const b = tf.tensor1d(ramp(N, 2));
    tf.add(a, b).dispose();
    const hits = pool.hits;
    const y = tf.mul(a, b);
    assert.is(pool.hits, hits + 1, 'the second output of the same size reused the first one\'s buffer');
    const v = y.dataSync();
    for (let i = 0; i < N; i += 997) assert.is(v[i], (i % 1000) * (i % 1000) * 2, `element ${i}`);
    tf.dispose([a, b, y]);
  });

  test('a slice aliasing a disposed output keeps its values (tfjs-cpu Slice returns a subarray)', async () => {
    await tf.setBackend('native');
    const a = tf.tensor1d(ramp(N, 1));
    const b = tf.tensor1d(ramp(N, 1));
    assertRecyclesWithoutReference(() => tf.add(a, b), () => [tf.mul(a, b), tf.sub(a, b), tf.add(b, b)]);
    const x = tf.add(a, b);
    const s = tf.slice(x, [0], [N / 2]);
    x.dispose();
    // Outputs of x's size: none may land in x's memory while s lives.
    const others = [tf.mul(a, b), tf.sub(a, b), tf.add(b, b)];
    const v = s.dataSync();
    for (let i = 0; i < N / 2; i += 101) assert.is(v[i], 2 * (i % 1000), `slice element ${i}`);
    tf.dispose([a, b, s, ...others]);
  });

  test('an array handed out by dataSync() is never recycled', async () => {
    await tf.setBackend('native');
    const a = tf.tensor1d(ramp(N, 1));
    assertRecyclesWithoutReference(() => tf.add(a, a), () => [tf.mul(a, a), tf.sub(a, a), tf.neg(a)]);
    const x = tf.add(a, a);
    const v = x.dataSync();
    const copy = v.slice();
    x.dispose();
    const others = [tf.mul(a, a), tf.sub(a, a), tf.neg(a)];
    sameArray(v, copy, 'the read-out array after its tensor was disposed');
    tf.dispose([a, ...others]);
  });

  test('an array the user passed to tf.tensor() is never recycled', async () => {
    await tf.setBackend('native');
    const pool = nativeBufferPool()!;
    const user = ramp(N, 3);
    const copy = user.slice();
    const t = tf.tensor1d(user);
    const free = pool.bytesFree;
    t.dispose();
    assert.is(pool.bytesFree, free, 'the user\'s array went into the pool');
    const b = tf.tensor1d(ramp(N, 1));
    const others = [tf.add(b, b), tf.mul(b, b)];
    sameArray(user, copy, 'the user\'s array');
    tf.dispose([b, ...others]);
  });

  test('the pool keeps its byte budget (oldest first out) and trim() empties it', () => {
    const pool = new BufferPool(3 * N * 4);
    const arrs = [1, 2, 3, 4, 5].map(() => pool.alloc(N));
    for (const a of arrs) pool.registered(a);
    for (const a of arrs) pool.release(a);
    assert.is(pool.bytesFree, 3 * N * 4);
    // The last three released are kept: alloc hands back one of them.
    const again = pool.alloc(N);
    assert.ok(arrs.slice(2).some((a) => a.buffer === again.buffer), 'alloc reused a kept buffer');
    assert.ok(!arrs.slice(0, 2).some((a) => a.buffer === again.buffer), 'an evicted buffer came back');
    pool.trim();
    assert.is(pool.bytesFree, 0);
    // Small requests are plain arrays, never pooled.
    const small = pool.alloc(100);
    pool.registered(small);
    pool.release(small);
    assert.is(pool.bytesFree, 0);
  });

  test('tensor counts return to baseline with recycling on', async () => {
    await tf.setBackend('native');
    const before = tf.memory().numTensors;
    const a = tf.tensor1d(ramp(N, 1));
    for (let i = 0; i < 5; i++) tf.tidy(() => tf.sum(tf.mul(tf.add(a, a), tf.sigmoid(a)))).dispose();
    a.dispose();
    assert.is(tf.memory().numTensors, before);
  });
}

test.run();
