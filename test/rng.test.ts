// torch-compatible generator vs the golden torch.randn/rand tensors in test/fixtures/rng (made by PyTorch on x86 AVX2).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { TorchGenerator, randnTensor, TORCH_STATE_BYTES, type VectorMath } from '../src/random/generator.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { fixture } from './helpers.js';

interface Entry { name: string; fn: string; seed: number; shape: number[]; sequence_index?: number }
const entries: Entry[] = JSON.parse(fs.readFileSync(fixture('rng', 'index.json'), 'utf8'));
const refs = SafetensorsFile.open(fixture('rng', 'rng.safetensors'));

/** Replays every fixture entry: a fresh generator per entry, one shared generator per `seq`/`mixseq` sequence. */
function replay(vectorMath: VectorMath): { name: string; ours: Float32Array; ref: Float32Array }[] {
  const sequences = new Map<string, TorchGenerator>();
  const out = [];
  for (const e of [...entries].sort((a, b) => (a.sequence_index ?? 0) - (b.sequence_index ?? 0))) {
    let g: TorchGenerator;
    if (e.sequence_index !== undefined) {
      const key = e.name.split('.')[0];
      if (!sequences.has(key)) sequences.set(key, new TorchGenerator(e.seed, { vectorMath }));
      g = sequences.get(key)!;
    } else {
      g = new TorchGenerator(BigInt(e.seed), { vectorMath });
    }
    const ours = e.fn.startsWith('randn') ? g.randn(e.shape) : g.rand(e.shape);
    out.push({ name: e.name, ours, ref: refs.read(e.name).data as Float32Array });
  }
  return out;
}

test('rng fixtures: every tensor listed in index.json is in rng.safetensors (66 tensors)', () => {
  assert.is(entries.length, 66);
  for (const e of entries) assert.equal(refs.info(e.name).shape, e.shape, e.name);
});

test('randn/rand match every torch fixture tensor within 1e-6, and bit-identically (avx2 vector path)', () => {
  let total = 0;
  let exact = 0;
  let worst = 0;
  for (const { name, ours, ref } of replay('avx2')) {
    assert.is(ours.length, ref.length, name);
    for (let i = 0; i < ref.length; i++) {
      const err = Math.abs(ours[i] - ref[i]);
      if (!(err <= 1e-6)) assert.unreachable(`${name}[${i}]: ours ${ours[i]} vs torch ${ref[i]}`);
      worst = Math.max(worst, err);
      if (ours[i] === ref[i]) exact++;
      total++;
    }
  }
  console.log(`  rng: ${exact}/${total} elements bit-identical, max abs err ${worst}`);
  assert.is(exact, total, 'bit-identical elements');
});

test('libm vector path (approximating non-AVX2 torch builds) stays within 4e-6 of the AVX2 one (measured 2.0e-6); scalar path identical', () => {
  const a = replay('avx2');
  const b = replay('libm');
  for (let k = 0; k < a.length; k++) {
    const small = a[k].ref.length < 16;
    for (let i = 0; i < a[k].ours.length; i++) {
      const d = Math.abs(a[k].ours[i] - b[k].ours[i]);
      if (small) assert.is(b[k].ours[i], a[k].ours[i], a[k].name);
      else assert.ok(d <= 4e-6, `${a[k].name}[${i}] differs by ${d}`);
    }
  }
});

test('seeds: only the low 32 bits seed MT19937; seeds up to 2^64-1 and negative seeds accepted; bad seeds rejected', () => {
  assert.equal(new TorchGenerator(2n ** 32n + 7n).randn([20]), new TorchGenerator(7).randn([20]));
  assert.equal(new TorchGenerator(2n ** 64n - 1n).rand([3]), new TorchGenerator(2 ** 32 - 1).rand([3]));
  assert.equal(new TorchGenerator(-1).rand([3]), new TorchGenerator(2n ** 64n - 1n).rand([3]));
  assert.is(new TorchGenerator(2n ** 64n - 1n).initialSeed(), 2n ** 64n - 1n);
  assert.throws(() => new TorchGenerator(2n ** 64n), /out of range/);
  assert.throws(() => new TorchGenerator(1.5), /integer/);
  assert.throws(() => new TorchGenerator(2 ** 60), /bigint/);
  assert.throws(() => new TorchGenerator(0).randn([2, -1]), /bad shape/);
});

test('manualSeed resets the stream and the cached normal; clone continues the same stream', () => {
  const g = new TorchGenerator(5);
  const first = g.randn([3]); // odd count: leaves a cached second normal
  const g2 = g.clone();
  assert.equal(g.randn([5]), g2.randn([5]));
  g.manualSeed(5);
  assert.equal(g.randn([3]), first);
  assert.is(g.manualSeed(9), g);
});

test('KARLO_RNG_VECTOR_MATH picks the default vector-path flavour; bad values are errors naming it', () => {
  const old = process.env.KARLO_RNG_VECTOR_MATH;
  try {
    delete process.env.KARLO_RNG_VECTOR_MATH;
    assert.is(new TorchGenerator(0).vectorMath, 'avx2');
    process.env.KARLO_RNG_VECTOR_MATH = 'libm';
    assert.is(new TorchGenerator(0).vectorMath, 'libm');
    assert.equal(new TorchGenerator(3).randn([40]), new TorchGenerator(3, { vectorMath: 'libm' }).randn([40]));
    process.env.KARLO_RNG_VECTOR_MATH = 'sse';
    assert.throws(() => new TorchGenerator(0), /KARLO_RNG_VECTOR_MATH=sse/);
  } finally {
    if (old === undefined) delete process.env.KARLO_RNG_VECTOR_MATH; else process.env.KARLO_RNG_VECTOR_MATH = old;
  }
});

test('randnTensor returns a float32 tensor with torch.randn values and shape', () => {
  const t = randnTensor([1, 4, 8, 8], new TorchGenerator(42));
  assert.equal(t.shape, [1, 4, 8, 8]);
  assert.is(t.dtype, 'float32');
  assert.equal(t.dataSync(), refs.read('randn.seed42.shape1x4x8x8').data);
  t.dispose();
  assert.ok(tf.memory().numTensors >= 0);
});

test('torch get_state()/set_state() bytes: layout of a freshly seeded state; export → import continues the stream', () => {
  const g = new TorchGenerator(2n ** 40n + 5n);
  const st = g.toTorchState();
  assert.is(st.byteLength, TORCH_STATE_BYTES);
  const dv = new DataView(st.buffer);
  assert.is(dv.getBigUint64(0, true), 2n ** 40n + 5n); // the_initial_seed
  assert.equal([dv.getInt32(8, true), dv.getInt32(12, true), dv.getBigUint64(16, true)], [1, 1, 0n]); // left, seeded, next
  assert.is(dv.getBigUint64(24, true), 5n); // state[0] = low 32 bits of the seed
  assert.is(dv.getInt32(5040, true), 0); // no cached normal
  // Mid-stream, with a cached normal pending (odd scalar draw): the copy continues identically.
  g.randn([20]);
  g.randn([3]);
  const copy = TorchGenerator.fromTorchState(g.toTorchState());
  assert.is(new DataView(g.toTorchState().buffer).getInt32(5040, true), 1);
  assert.equal(copy.randn([5]), g.randn([5]));
  assert.equal(copy.randn([700]), g.randn([700]));
  assert.equal(copy.rand([9]), g.rand([9]));
  assert.throws(() => TorchGenerator.fromTorchState(new Uint8Array(100)), /5056-byte/);
  assert.throws(() => TorchGenerator.fromTorchState(new Uint8Array(TORCH_STATE_BYTES)), /invalid mt19937 state/);
});

test('randnTensor with one generator per row draws each row as randn([1, ...]) from its own generator (diffusers)', () => {
  const t = randnTensor([2, 3, 4, 4], [new TorchGenerator(0), new TorchGenerator(42)]);
  const d = t.dataSync();
  assert.equal(d.subarray(0, 48), new TorchGenerator(0).randn([1, 3, 4, 4]));
  assert.equal(d.subarray(48), new TorchGenerator(42).randn([1, 3, 4, 4]));
  t.dispose();
  // Rows under 16 elements take torch's scalar path, as they would in diffusers.
  const s = randnTensor([2, 5], [new TorchGenerator(1), new TorchGenerator(1)]);
  assert.equal(s.dataSync().subarray(0, 5), s.dataSync().subarray(5));
  assert.equal(s.dataSync().subarray(0, 5), new TorchGenerator(1).randn([5]));
  s.dispose();
  assert.throws(() => randnTensor([3, 2], [new TorchGenerator(0)]), /1 generators given for a batch of 3/);
});

test.run();
