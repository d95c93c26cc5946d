// Quick GFLOP/s of tfjs matMul / conv2d on shapes Karlo runs (the prior's Linear layers, decoder attention, UNet
// convolutions), per backend. Small and quick: each shape runs for about --seconds per backend, and a shape whose
// estimated time on a slow backend exceeds --cap is skipped (said so). Prints backend, shape, ms/call, GFLOP/s and
// peak RSS. For the native backend's full sweep with the raw-library ceiling, see kernels.bench.ts (karlo bench kernels).
//   npx tsx bench/matmul.bench.ts [--backend B] [--seconds 0.5] [--cap 4] [--json]
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, availableBackends, type BackendName } from '../src/backend/index.js';
import { Linear } from '../src/layers/basic.js';
import { checkBenchArgs } from './args.js';

interface Case { name: string; flops: number; make: () => { run: () => tf.Tensor; inputs: tf.Tensor[] } }

const rand = (shape: number[]) => tf.randomNormal(shape, 0, 1, 'float32', 1);

function linear(name: string, m: number, k: number, n: number): Case {
  // Through our Linear layer (x[m,k]·W[n,k]ᵀ + b, however it runs that on the backend).
  return {
    name, flops: 2 * m * k * n,
    make: () => {
      const x = rand([m, k]), w = rand([n, k]), b = rand([n]);
      const lin = new Linear(k, n);
      lin.weight.assign(w);
      lin.bias!.assign(b);
      return { inputs: [x, w, b, lin.weight.value, lin.bias!.value], run: () => lin.forward(x) };
    },
  };
}

function bmm(name: string, b: number, m: number, k: number, n: number): Case {
  return {
    name, flops: 2 * b * m * k * n,
    make: () => {
      const x = rand([b, m, k]) as tf.Tensor3D, y = rand([b, k, n]) as tf.Tensor3D;
      return { inputs: [x, y], run: () => tf.matMul(x, y) };
    },
  };
}

function conv(name: string, batch: number, hw: number, cin: number, cout: number, ks: number): Case {
  return {
    name, flops: 2 * batch * hw * hw * cin * cout * ks * ks,
    make: () => {
      const x = rand([batch, hw, hw, cin]) as tf.Tensor4D, w = rand([ks, ks, cin, cout]) as tf.Tensor4D, b = rand([cout]);
      return { inputs: [x, w, b], run: () => tf.fused.conv2d({ x, filter: w, strides: 1, pad: 'same', bias: b }) };
    },
  };
}

const CASES: Case[] = [
  // Small first: it calibrates the GFLOP/s estimate that decides which of the larger shapes fit --cap.
  linear('prior time embed [2,2048]x[2048,2048]ᵀ', 2, 2048, 2048),
  linear('prior linear [162,2048]x[2048,2048]ᵀ', 162, 2048, 2048),
  linear('prior mlp [162,2048]x[8192,2048]ᵀ', 162, 2048, 8192),
  linear('clip mlp [154,768]x[3072,768]ᵀ', 154, 768, 3072),
  bmm('decoder attn QKᵀ [16,1024,64]x[16,64,1024]', 16, 1024, 64, 1024),
  conv('decoder conv3x3 320→320 64x64 b2', 2, 64, 320, 320, 3),
  conv('decoder conv3x3 640→640 32x32 b2', 2, 32, 640, 640, 3),
  conv('decoder conv1x1 1280→640 32x32 b2', 2, 32, 1280, 640, 1),
  conv('SR conv3x3 128→128 128x128 b1', 1, 128, 128, 128, 3),
];

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1];
  return process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
}

checkBenchArgs('matmul', { string: ['seconds', 'cap'], boolean: ['json'], positionals: false });
const seconds = Number(arg('seconds') ?? 0.5);
const cap = Number(arg('cap') ?? 4);
const json = process.argv.includes('--json');
const wanted = arg('backend') ?? process.env.KARLO_BACKEND;
const backends: Exclude<BackendName, 'auto'>[] = wanted && wanted !== 'auto'
  ? [wanted as Exclude<BackendName, 'auto'>]
  : await availableBackends(['tensorflow', 'native', 'wasm', 'cpu']);

let peakRss = process.memoryUsage().rss;
const rows: { backend: string; shape: string; ms: number | null; gflops: number | null; note?: string }[] = [];

for (const b of backends) {
  await initBackend(b);
  let rate = 0; // GFLOP/s seen so far on this backend, for skipping shapes that would take too long
  for (const c of CASES) {
    const estimate = rate ? c.flops / 1e9 / rate : 0;
    if (estimate > cap) {
      rows.push({ backend: b, shape: c.name, ms: null, gflops: null, note: `skipped: ~${estimate.toFixed(0)} s/call at ${rate.toFixed(1)} GFLOP/s > --cap ${cap}` });
      if (!json) console.log(`${b.padEnd(10)} ${c.name.padEnd(44)} skipped (~${estimate.toFixed(0)} s per call > --cap ${cap} s)`);
      continue;
    }
    const { run, inputs } = c.make();
    tf.dispose(run()); // warm-up (kernel setup, first allocation)
    let n = 0;
    const t0 = performance.now();
    do {
      const y = run();
      y.dataSync(); // wait for the result, as a forward pass that reads it back would
      y.dispose();
      n++;
    } while (performance.now() - t0 < seconds * 1000);
    const ms = (performance.now() - t0) / n;
    const g = c.flops / 1e6 / ms;
    rate = Math.max(rate, g);
    tf.dispose(inputs);
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    rows.push({ backend: b, shape: c.name, ms, gflops: g });
    if (!json) console.log(`${b.padEnd(10)} ${c.name.padEnd(44)} ${ms.toFixed(2).padStart(9)} ms  ${g.toFixed(1).padStart(7)} GFLOP/s`);
  }
}
if (json) console.log(JSON.stringify({ bench: 'matmul', rows, peakRssMB: peakRss / 2 ** 20 }));
else console.log(`peak RSS ${(peakRss / 2 ** 20).toFixed(0)} MB; backends: ${backends.join(', ')}`);
