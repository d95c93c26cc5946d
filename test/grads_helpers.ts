// Shared by the fixtures/grads tests: runs one fixture file's comparisons and asserts them (all within tolerance,
// the expected tensors compared, no tensor left behind), printing the worst one.
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { fixture } from './helpers.js';
import type { Comparison } from '../src/parity/compare.js';
import { gradsContext, type GradsContext } from '../src/parity/grads.js';

const ctx = gradsContext(fixture('grads'));

export type GradsCase = [string, (c: GradsContext) => Comparison[], { min: number; names: string[] }];

export function check(label: string, run: (c: GradsContext) => Comparison[], expect: { min: number; names: string[] }): void {
  const before = tf.memory().numTensors;
  const t0 = performance.now();
  const res = run(ctx);
  const ms = performance.now() - t0;
  const names = res.map((c) => c.name);
  for (const n of expect.names) assert.ok(names.some((x) => x.includes(n)), `${label}: ${n} compared`);
  assert.ok(res.length >= expect.min, `${label}: ${res.length} comparisons, at least ${expect.min} expected`);
  const worst = res.reduce((a, c) => (c.allowed > 0 && c.maxAbs / c.allowed > a.r ? { r: c.maxAbs / c.allowed, c } : a), { r: 0, c: res[0] });
  console.log(`  ${label}: ${res.length} tensors, worst ${worst.c.name} max abs err ${worst.c.maxAbs.toExponential(2)} = ${(worst.r * 100).toFixed(1)}% of allowed (${ms.toFixed(0)} ms)`);
  for (const c of res) assert.ok(c.ok, `${label}: ${c.name}: max abs err ${c.maxAbs} > allowed ${c.allowed}`);
  assert.is(tf.memory().numTensors, before, `${label}: tensors freed`);
}
