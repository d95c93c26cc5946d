// Backend selection: auto falls through tensorflow → native → wasm → cpu with one line saying why; a named backend that
// is unavailable is an error with the reason; KARLO_BACKEND is respected; absent or broken tfjs-node installs fall
// through cleanly (simulated through the importer seam, since installing them downloads libtensorflow).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, availableBackends, requestedBackend, setPackageImporter, BackendUnavailableError, TENSORFLOW_PACKAGES } from '../src/backend/index.js';
import { enableNativeStats, loadAddon, nativeStats } from '../src/backend/native/index.js';

const require = createRequire(import.meta.url);
const installed = (pkg: string) => { try { require.resolve(pkg); return true; } catch { return false; } };
const tfjsNodeInstalled = TENSORFLOW_PACKAGES.some(installed);

const withEnv = async (v: string | undefined, fn: () => Promise<void>) => {
  const old = process.env.KARLO_BACKEND;
  if (v === undefined) delete process.env.KARLO_BACKEND; else process.env.KARLO_BACKEND = v;
  try { await fn(); } finally {
    if (old === undefined) delete process.env.KARLO_BACKEND; else process.env.KARLO_BACKEND = old;
  }
};

test('auto takes the first available backend and logs exactly one line naming it and why others were skipped', async () => {
  await withEnv(undefined, async () => {
    const lines: string[] = [];
    const c = await initBackend('auto', { log: (l) => lines.push(l) });
    assert.is(lines.length, 1);
    assert.not.match(lines[0], /\n/);
    assert.is(tf.getBackend(), c.tfBackend);
    const order = ['tensorflow', 'native', 'wasm', 'cpu'];
    const available = await availableBackends(order as never);
    assert.is(c.name, available[0], `auto took ${c.name}; available: ${available}`);
    // One short line; why the others were skipped is in c.skipped (printed under --verbose).
    assert.match(lines[0], new RegExp(`^backend: ${c.name}( \\(|$)`));
    assert.ok(lines[0].length < 80, lines[0]);
    const why = c.skipped.join('; ');
    for (const skipped of order.slice(0, order.indexOf(c.name))) assert.match(why, new RegExp(`${skipped}: `));
    if (!tfjsNodeInstalled) assert.match(why, /@tensorflow\/tfjs-node is not installed/);
  });
});

test('tfjs-node packages absent: auto falls through; naming tensorflow is an error saying they are not installed', async () => {
  setPackageImporter(async (pkg) => { throw new Error(`Cannot find package '${pkg}' imported from /x/src/backend/index.ts`); });
  try {
    const c = await initBackend('auto');
    assert.ok(c.name !== 'tensorflow');
    assert.match(c.skipped.join('; '), /tensorflow: @tensorflow\/tfjs-node-gpu is not installed; @tensorflow\/tfjs-node is not installed/);
    try {
      await initBackend('tensorflow');
      assert.unreachable('tensorflow should be unavailable');
    } catch (e) {
      assert.instance(e, BackendUnavailableError);
      assert.match((e as Error).message, /backend "tensorflow" is unavailable: .*not installed.*npm install @tensorflow\/tfjs-node/);
    }
  } finally {
    setPackageImporter(null);
  }
});

test('tfjs-node installed but broken (libtensorflow missing): clean fallthrough with the load error as reason', async () => {
  const tried: string[] = [];
  setPackageImporter(async (pkg) => {
    tried.push(pkg);
    throw new Error('libtensorflow.so.2: cannot open shared object file: No such file or directory\n    at Module._extensions');
  });
  try {
    const c = await initBackend('auto');
    assert.equal(tried, ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']);
    assert.ok(c.name !== 'tensorflow');
    assert.match(c.skipped.join('; '), /tfjs-node-gpu failed to load \(libtensorflow\.so\.2: cannot open shared object file: No such file or directory\)/);
    assert.not.match(c.skipped.join('; '), /\n/);
  } finally {
    setPackageImporter(null);
  }
});

test('a package that loads but registers no tensorflow backend is reported, not used', async () => {
  setPackageImporter(async () => ({}));
  try {
    const c = await initBackend('auto');
    assert.ok(c.name !== 'tensorflow');
    assert.match(c.skipped.join('; '), /loaded but did not register the tensorflow backend/);
  } finally {
    setPackageImporter(null);
  }
});

test('named backends: cpu and wasm work; native initialises exactly when its addon loads, and runs the addon', async () => {
  assert.is((await initBackend('cpu')).tfBackend, 'cpu');
  assert.is((await initBackend('wasm')).tfBackend, 'wasm');
  // Decided independently of initBackend/availableBackends: does the addon itself load?
  let addonWhy: string | undefined;
  try { loadAddon(); } catch (e) { addonWhy = (e as Error).message; }
  assert.is((await availableBackends(['native'])).length, addonWhy ? 0 : 1, `availableBackends vs the addon (${addonWhy ?? 'loads'})`);
  if (!addonWhy) {
    assert.is((await initBackend('native')).name, 'native');
    assert.is(tf.getBackend(), 'native');
    // Kernels really go to the addon (not a cpu backend under another name).
    enableNativeStats(true);
    nativeStats.clear();
    try {
      tf.tidy(() => tf.matMul(tf.ones([64, 64]), tf.ones([64, 64])).dataSync());
      assert.ok((nativeStats.get('MatMul')?.native ?? 0) + (nativeStats.get('BatchMatMul')?.native ?? 0) > 0, `the addon ran no matmul: ${JSON.stringify([...nativeStats])}`);
    } finally {
      enableNativeStats(!!process.env.KARLO_NATIVE_STATS);
    }
  } else {
    try {
      await initBackend('native');
      assert.unreachable('native reported unavailable, yet initialised');
    } catch (e) {
      assert.instance(e, BackendUnavailableError);
      assert.match((e as Error).message, /^backend "native" is unavailable: \S/);
      assert.ok((e as Error).message.includes(addonWhy), 'the error carries the addon\'s reason');
    }
  }
  await initBackend('cpu');
});

test('KARLO_BACKEND is respected; an explicit choice overrides it; unknown names are errors naming the source', async () => {
  await withEnv('wasm', async () => {
    assert.is(requestedBackend(), 'wasm');
    assert.is((await initBackend()).name, 'wasm');
    assert.is((await initBackend('cpu')).name, 'cpu');
  });
  await withEnv(' cpu ', async () => assert.is(requestedBackend(), 'cpu'));
  await withEnv('gpu', async () => {
    assert.throws(() => requestedBackend(), /unknown backend "gpu" \(from KARLO_BACKEND\): choose one of auto, tensorflow, native, wasm, cpu/);
  });
  assert.throws(() => requestedBackend('webgl'), /unknown backend "webgl": choose one of/);
  await withEnv(undefined, async () => assert.is(requestedBackend(), 'auto'));
  await initBackend('cpu');
});

test('availableBackends lists only what initialises and restores the current backend', async () => {
  await initBackend('cpu');
  const ok = await availableBackends(['cpu', 'wasm']);
  assert.equal(ok, ['cpu', 'wasm']);
  assert.is(tf.getBackend(), 'cpu');
});

test.run();
