// registerGradients(): tfjs-core's gradient functions and chained tensor methods registered without a bundler, so
// tf.grad works on every backend. Also checked in a child process on plain Node (no tsx, no esbuild): the module
// transpiled to JavaScript by TypeScript's transpileModule, as an installed package would run it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import * as tf from '@tensorflow/tfjs-core';
import { registerGradients } from '../src/backend/gradients.js';
import { availableBackends } from '../src/backend/index.js';
import { registerNativeOrWhy, useBackend } from './helpers.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

test('registerGradients: idempotent, concurrent calls share one registration; tf.grad and chained ops work on every backend', async () => {
  await Promise.all([registerGradients(), registerGradients()]);
  await registerGradients();
  for (const k of ['Multiply', 'BatchMatMul', 'Conv2D', 'GatherV2', 'Softmax', 'Erf', 'ResizeNearestNeighbor']) assert.ok(tf.getGradient(k), `gradient of ${k}`);
  await registerNativeOrWhy();
  const backends = await availableBackends(['native', 'wasm', 'cpu']);
  assert.ok(backends.includes('cpu'));
  for (const b of backends) {
    await useBackend(b);
    const before = tf.memory().numTensors;
    const g = tf.tidy(() => Array.from(tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.exp(x), x)))(tf.tensor([0.5, -1, 2])).dataSync()));
    // d/dx x·e^x = e^x (1 + x)
    [0.5, -1, 2].forEach((x, i) => assert.ok(Math.abs(g[i] - Math.exp(x) * (1 + x)) < 1e-5 * Math.exp(x) * Math.abs(1 + x) + 1e-6, `[${b}] ${g[i]}`));
    const sq = tf.tidy(() => (tf.tensor([3]) as unknown as { square(): tf.Tensor }).square().dataSync()[0]);
    assert.is(sq, 9, `[${b}] chained op x.square()`);
    assert.is(tf.memory().numTensors, before);
  }
});

test('registerGradients on plain Node without tsx or esbuild (the modules as compiled JavaScript)', () => {
  const dir = path.join(HERE, `.grads-register-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  for (const m of ['gradients', 'wasm_grads']) {
    const src = fs.readFileSync(path.join(HERE, `../src/backend/${m}.ts`), 'utf8');
    const js = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } }).outputText;
    fs.writeFileSync(path.join(dir, `${m}.js`), js);
  }
  const main = path.join(dir, 'main.mjs');
  fs.writeFileSync(main, `
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { registerGradients } from './gradients.js';
await tf.setBackend('cpu');
await registerGradients();
const g = tf.grad((x) => tf.sum(tf.square(x)))(tf.tensor([1, 2, 3]));
console.log(JSON.stringify(Array.from(g.dataSync())), typeof tf.tensor([1]).square);
`);
  try {
    const r = spawnSync(process.execPath, [main], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '' } });
    assert.is(r.status, 0, r.stderr);
    assert.match(r.stdout, /^\[2,4,6\] function$/m);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
