// src/pipeline/prefetch.ts (hidden loading): weights read and converted in a worker thread load bit for bit as a
// direct read does, within a memory budget (nothing held beyond it until the loader asks), with the non-finite
// values counted by the worker; tensors the worker does not cover (not F32, not planned) are read directly.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { Module } from '../src/layers/module.js';
import { Conv2d, Linear } from '../src/layers/basic.js';
import { SafetensorsFile, saveSafetensors, toF16Bits, type TensorToWrite } from '../src/io/safetensors.js';
import { WeightPrefetcher } from '../src/pipeline/prefetch.js';

class Tiny extends Module {
  readonly conv = this.module('conv', new Conv2d(3, 5, 3));
  readonly proj = this.module('proj', new Linear(7, 4));
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-prefetch-test-'));
const values = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 1000 + i * 1.7) * 3.1);

function writeFile(name: string, opts: { f16Bias?: boolean; nan?: boolean } = {}): string {
  const w = values(5 * 3 * 3 * 3, 1);
  if (opts.nan) { w[3] = NaN; w[7] = Infinity; }
  const f32 = (shape: number[], data: Float32Array): TensorToWrite => ({ dtype: 'F32', shape, data: new Uint8Array(data.buffer) });
  const bias = values(4, 4);
  const tensors: Record<string, TensorToWrite> = {
    'conv.weight': f32([5, 3, 3, 3], w),
    'conv.bias': f32([5], values(5, 2)),
    'proj.weight': f32([4, 7], values(28, 3)),
    'proj.bias': opts.f16Bias
      ? { dtype: 'F16', shape: [4], data: new Uint8Array(Uint16Array.from(bias, (v) => toF16Bits(v)).buffer) }
      : f32([4], bias),
  };
  const file = path.join(dir, name);
  saveSafetensors(file, tensors);
  return file;
}

const plan = (m: Module) => m.namedParameters().map(([name, p]) => ({ name, conv2d: p.layout === 'conv2d' }));

function bits(m: Module): Map<string, number[]> {
  return new Map(m.namedParameters().map(([k, p]) => [k, Array.from(new Uint32Array((p.value.dataSync() as Float32Array).slice().buffer))]));
}

function direct(file: string): Tiny {
  const m = new Tiny();
  const f = SafetensorsFile.open(file);
  try {
    m.loadStateDict({ names: () => f.names(), shape: (n) => f.info(n).shape, read: (n) => f.read(n), describe: () => file }, { trainable: false });
  } finally {
    f.close();
  }
  return m;
}

test.before(async () => { await tf.setBackend('cpu'); });
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('a prefetched load equals a direct read bit for bit (conv filters arrive in HWIO); stats count what came from the worker', () => {
  const file = writeFile('a.safetensors');
  const pf = new WeightPrefetcher();
  const m = new Tiny();
  pf.start(file, plan(m), 1e9);
  assert.ok(pf.has(file));
  const src = pf.source(file)!;
  const first = src.read('conv.weight') as { layout?: string; shape: number[]; nonFinite?: number };
  assert.is(first.layout, 'tfjs');
  assert.equal(first.shape, [3, 3, 3, 5]);
  assert.is(first.nonFinite, 0);
  src.close();
  // again, through loadStateDict
  pf.start(file, plan(m), 1e9);
  const s2 = pf.source(file)!;
  m.loadStateDict(s2, { trainable: false });
  const stats = s2.close();
  assert.is(stats.prefetchedBytes + stats.loaderBytes, 4 * (135 + 5 + 28 + 4));
  assert.is(stats.directBytes, 0);
  assert.not.ok(pf.has(file));
  const ref = direct(file);
  assert.equal(bits(m), bits(ref));
  m.dispose();
  ref.dispose();
});

test('budget 0: the worker holds nothing until the loader asks, then reads everything; same values', () => {
  const file = writeFile('b.safetensors');
  const pf = new WeightPrefetcher();
  const m = new Tiny();
  pf.start(file, plan(m), 0);
  const src = pf.source(file)!;
  m.loadStateDict(src, { trainable: false });
  const stats = src.close();
  // the worker and the loader's thread share the reading once the loader asks
  assert.is(stats.prefetchedBytes + stats.loaderBytes, 4 * 172);
  const ref = direct(file);
  assert.equal(bits(m), bits(ref));
  m.dispose();
  ref.dispose();
});

test('tensors that are not F32 or not planned are read directly; non-finite values are counted by the worker', () => {
  const file = writeFile('c.safetensors', { f16Bias: true, nan: true });
  const pf = new WeightPrefetcher();
  const m = new Tiny();
  pf.start(file, plan(m).filter((p) => p.name !== 'conv.bias'), 1e9);
  const src = pf.source(file)!;
  const w = src.read('conv.weight') as { nonFinite?: number };
  assert.is(w.nonFinite, 2);
  const rest = new Tiny();
  rest.loadStateDict(src, { trainable: false });
  const stats = src.close();
  // conv.weight was taken already (a second read goes to the file), conv.bias was not planned, proj.bias is F16
  // (widened by the direct reader): 135 + 5 + 4 floats read directly
  assert.is(stats.directBytes, 4 * (135 + 5 + 4));
  assert.is(stats.prefetchedBytes + stats.loaderBytes, 4 * (135 + 28));
  const ref = direct(file);
  const a = bits(rest), b = bits(ref);
  for (const k of ['conv.weight', 'conv.bias', 'proj.weight', 'proj.bias']) assert.equal(a.get(k), b.get(k), k);
  rest.dispose();
  ref.dispose();
  m.dispose();
});

test('dispose stops the workers and forgets the files', () => {
  const file = writeFile('d.safetensors');
  const pf = new WeightPrefetcher();
  pf.start(file, plan(new Tiny()), 1e9);
  pf.dispose();
  assert.not.ok(pf.has(file));
  assert.is(pf.source(file), undefined);
});

test.run();
