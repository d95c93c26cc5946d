// GFLOP/s of the GEMM and convolution shapes Karlo runs, through tfjs on the native, wasm and cpu backends, and
// the ceiling: the same problem as one raw call into the addon (oneDNN matmul/conv, OpenBLAS sgemm) with buffers
// allocated once. native/ceiling is the overhead of going through tfjs (output allocation, kernel dispatch).
// The slow backends run a shape only when its estimated time fits the cap (cpu is ~1 GFLOP/s, wasm ~20).
//   npx tsx bench/kernels.bench.ts [--json] [--backends native,wasm,cpu] [--cap SECONDS] [--only REGEX]
//   npm run bench kernels [-- --only conv] [--compare-torch]
// --compare-torch: also times the shapes in PyTorch (a python3 with torch, e.g. Debian's python3-torch), same threads.
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/backend/index.js';
import { loadAddon, describeNative, gemmLibrary } from '../src/backend/native/index.js';

interface Shape {
  name: string;
  kind: 'linear' | 'bmm' | 'conv';
  // linear: x[m,k] · W[n,k]ᵀ + bias (as Linear runs it); bmm: [b,m,k]·[b,k,n] (attention); conv: NHWC 'same' stride 1.
  m?: number; k?: number; n?: number; b?: number; transB?: boolean;
  batch?: number; hw?: number; cin?: number; cout?: number; ksize?: number;
}

const SHAPES: Shape[] = [
  { name: 'prior linear [162,2048]x[2048,2048]', kind: 'linear', m: 162, k: 2048, n: 2048 },
  { name: 'prior linear [162,2048]x[2048,6144]', kind: 'linear', m: 162, k: 2048, n: 6144 },
  { name: 'prior linear [162,2048]x[2048,8192]', kind: 'linear', m: 162, k: 2048, n: 8192 },
  { name: 'prior linear [162,8192]x[8192,2048]', kind: 'linear', m: 162, k: 8192, n: 2048 },
  { name: 'gemm 2048^3', kind: 'bmm', b: 1, m: 2048, k: 2048, n: 2048 },
  { name: 'prior attention QK^T [64,81,64]x[64,64,81]', kind: 'bmm', b: 64, m: 81, k: 64, n: 81, transB: true },
  { name: 'decoder attention QK^T [16,1024,64]x[16,64,1024]', kind: 'bmm', b: 16, m: 1024, k: 64, n: 1024, transB: true },
  { name: 'decoder attention AV [16,1024,1024]x[16,1024,64]', kind: 'bmm', b: 16, m: 1024, k: 1024, n: 64 },
  { name: 'SR conv3x3 320->320 256x256 b1', kind: 'conv', batch: 1, hw: 256, cin: 320, cout: 320, ksize: 3 },
  { name: 'SR conv3x3 3->320 256x256 b1', kind: 'conv', batch: 1, hw: 256, cin: 3, cout: 320, ksize: 3 },
  { name: 'SR conv1x1 320->640 128x128 b1', kind: 'conv', batch: 1, hw: 128, cin: 320, cout: 640, ksize: 1 },
  { name: 'decoder conv3x3 640->640 64x64 b2', kind: 'conv', batch: 2, hw: 64, cin: 640, cout: 640, ksize: 3 },
  { name: 'decoder conv3x3 1920->1920 16x16 b2', kind: 'conv', batch: 2, hw: 16, cin: 1920, cout: 1920, ksize: 3 },
  { name: 'decoder conv1x1 1280->640 64x64 b2', kind: 'conv', batch: 2, hw: 64, cin: 1280, cout: 640, ksize: 1 },
];

function flops(s: Shape): number {
  if (s.kind === 'conv') return 2 * s.batch! * s.hw! * s.hw! * s.cin! * s.cout! * s.ksize! * s.ksize!;
  return 2 * (s.b ?? 1) * s.m! * s.k! * s.n!;
}

function args() {
  const a = process.argv.slice(2);
  const val = (flag: string) => {
    const i = a.indexOf(flag);
    return i >= 0 ? a[i + 1] : undefined;
  };
  return {
    json: a.includes('--json'),
    backends: (val('--backends') ?? val('--backend') ?? 'native,wasm,cpu').split(','),
    cap: Number(val('--cap') ?? 8),
    only: val('--only') ? new RegExp(val('--only')!) : undefined,
    torch: a.includes('--compare-torch'),
  };
}

function randArray(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 4294967296 - 0.5) * 0.2;
  }
  return out;
}

/** Median seconds per call: one warm-up (unless told not to), then until `minTime` has passed (at least 3 calls) or `maxCalls`. */
function time(f: () => void, minTime = 1.5, maxCalls = 50, warmUp = true): number {
  if (warmUp) f();
  const ts: number[] = [];
  const t0 = performance.now();
  while (ts.length < Math.min(3, maxCalls) || (performance.now() - t0 < minTime * 1000 && ts.length < maxCalls)) {
    const t = performance.now();
    f();
    ts.push((performance.now() - t) / 1000);
  }
  ts.sort((x, y) => x - y);
  return ts[Math.floor(ts.length / 2)];
}

/** One tfjs call of the shape on the current backend, as the models make it. */
function tfjsRunner(s: Shape): { run: () => void; dispose: () => void } {
  let inputs: tf.Tensor[];
  let op: () => tf.Tensor;
  if (s.kind === 'linear') {
    const x = tf.tensor2d(randArray(s.m! * s.k!, 1), [s.m!, s.k!]);
    const w = tf.tensor2d(randArray(s.n! * s.k!, 2), [s.n!, s.k!]);
    const bias = tf.tensor1d(randArray(s.n!, 3));
    inputs = [x, w, bias];
    // Exactly as Linear runs it (src/layers/basic.ts): on wasm, whose transposeB path is slow, it transposes W first.
    op = tf.getBackend() === 'wasm'
      ? () => tf.tidy(() => tf.fused.matMul({ a: x, b: tf.transpose(w) as tf.Tensor2D, bias }))
      : () => tf.fused.matMul({ a: x, b: w, transposeB: true, bias });
  } else if (s.kind === 'bmm') {
    const a = tf.tensor3d(randArray(s.b! * s.m! * s.k!, 1), [s.b!, s.m!, s.k!]);
    const bShape: [number, number, number] = s.transB ? [s.b!, s.n!, s.k!] : [s.b!, s.k!, s.n!];
    const b = tf.tensor3d(randArray(s.b! * s.k! * s.n!, 2), bShape);
    inputs = [a, b];
    op = () => tf.matMul(a, b, false, !!s.transB);
  } else {
    const x = tf.tensor4d(randArray(s.batch! * s.hw! * s.hw! * s.cin!, 1), [s.batch!, s.hw!, s.hw!, s.cin!]);
    const f = tf.tensor4d(randArray(s.ksize! * s.ksize! * s.cin! * s.cout!, 2), [s.ksize!, s.ksize!, s.cin!, s.cout!]);
    const bias = tf.tensor1d(randArray(s.cout!, 3));
    inputs = [x, f, bias];
    op = () => tf.fused.conv2d({ x, filter: f, strides: 1, pad: 'same', bias });
  }
  return {
    run: () => {
      const y = op();
      y.dataSync();
      y.dispose();
    },
    dispose: () => tf.dispose(inputs),
  };
}

/** The raw conv calls may keep packed weights too, as the backend does for small outputs. */
const RAW_WEIGHTS_ID = 2 ** 40;

/** The same problem as raw addon calls (buffers allocated once): the library ceiling. */
function rawRunners(s: Shape): { name: string; run: () => void }[] {
  const addon = loadAddon();
  if (s.kind === 'conv') {
    const x = randArray(s.batch! * s.hw! * s.hw! * s.cin!, 1);
    const w = randArray(s.ksize! * s.ksize! * s.cin! * s.cout!, 2);
    const bias = randArray(s.cout!, 3);
    const y = new Float32Array(s.batch! * s.hw! * s.hw! * s.cout!);
    const p = (s.ksize! - 1) >> 1;
    const shape = [s.batch!, s.hw!, s.hw!, s.cin!, s.ksize!, s.ksize!, s.cout!, s.hw!, s.hw!, 1, 1, 1, 1, p, p, s.ksize! - 1 - p, s.ksize! - 1 - p];
    return [{ name: 'oneDNN conv', run: () => addon.conv2d(x, w, bias, y, shape, 0, 0, RAW_WEIGHTS_ID) }];
  }
  const b = s.b ?? 1;
  const a = randArray(b * s.m! * s.k!, 1);
  const w = randArray(b * s.k! * s.n!, 2);
  const out = new Float32Array(b * s.m! * s.n!);
  const transB = s.kind === 'linear' ? true : !!s.transB;
  const bias = s.kind === 'linear' ? randArray(s.n!, 3) : null;
  // OpenBLAS first: its worker threads spin for a while after a call and would slow whatever runs next on the
  // two cores (main() pauses after it before timing oneDNN and tfjs).
  return [
    { name: 'OpenBLAS sgemm', run: () => addon.matmul(a, w, out, bias, b, b, s.m!, s.n!, s.k!, false, transB, 0, 0, true) },
    { name: 'oneDNN matmul', run: () => addon.matmul(a, w, out, bias, b, b, s.m!, s.n!, s.k!, false, transB, 0, 0, false) },
  ];
}

/** GFLOP/s of each shape in PyTorch (F.linear / torch.bmm / F.conv2d, channels_last), or why not. */
function torchRates(shapes: Shape[], threads: number): Map<string, number> | string {
  const script = `
import json, sys, time
import torch
import torch.nn.functional as F
torch.set_num_threads(${threads})
out = {}
for s in json.loads(sys.stdin.read()):
    with torch.no_grad():
        if s['kind'] == 'linear':
            x, w, b = torch.randn(s['m'], s['k']), torch.randn(s['n'], s['k']), torch.randn(s['n'])
            f = lambda: F.linear(x, w, b)
        elif s['kind'] == 'bmm':
            bb = s.get('b', 1)
            a = torch.randn(bb, s['m'], s['k'])
            w = torch.randn(bb, s['n'], s['k']).transpose(1, 2) if s.get('transB') else torch.randn(bb, s['k'], s['n'])
            f = lambda: torch.bmm(a, w)
        else:
            x = torch.randn(s['batch'], s['cin'], s['hw'], s['hw']).to(memory_format=torch.channels_last)
            w = torch.randn(s['cout'], s['cin'], s['ksize'], s['ksize']).to(memory_format=torch.channels_last)
            b = torch.randn(s['cout'])
            f = lambda: F.conv2d(x, w, b, padding=(s['ksize'] - 1) // 2)
        f()
        ts = []
        t0 = time.perf_counter()
        while len(ts) < 3 or (time.perf_counter() - t0 < 1.5 and len(ts) < 50):
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
        ts.sort()
        out[s['name']] = s['gflop'] / ts[len(ts) // 2]
print(json.dumps(out))
`;
  const input = JSON.stringify(shapes.map((s) => ({ ...s, gflop: flops(s) / 1e9 })));
  let why = '';
  for (const py of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(py, ['-c', script], { input, encoding: 'utf8', maxBuffer: 1 << 24 });
    if (r.status === 0) return new Map(Object.entries(JSON.parse(r.stdout.trim().split('\n').pop()!)) as [string, number][]);
    why = `${py}: ${(r.stderr || String(r.error ?? '')).trim().split('\n').pop()}`;
  }
  return `PyTorch not available (${why})`;
}

// Rough rates used only to decide what fits the cap on the slow backends.
const EXPECTED_GFLOPS: Record<string, number> = { cpu: 1, wasm: 20 };

async function main() {
  const opt = args();
  const shapes = SHAPES.filter((s) => !opt.only || opt.only.test(s.name));
  const results: { name: string; backend: string; gflops: number }[] = [];
  const ceiling: { name: string; gflops: number; library: string }[] = [];
  const skipped: string[] = [];
  const log = (line: string) => { if (!opt.json) console.log(line); };
  log(`native: ${describeNative()}; GEMM through ${gemmLibrary()}`);

  for (const s of shapes) {
    const gf = flops(s) / 1e9;
    let best = 0;
    let bestLib = '';
    try {
      for (const r of rawRunners(s)) {
        const g = gf / time(r.run);
        if (r.name.startsWith('OpenBLAS')) await new Promise((res) => setTimeout(res, 500));
        log(`${s.name.padEnd(52)} ${r.name.padEnd(14)} ${g.toFixed(1).padStart(7)} GFLOP/s`);
        if (g > best) { best = g; bestLib = r.name; }
      }
      ceiling.push({ name: s.name, gflops: best, library: bestLib });
    } catch (e) {
      log(`${s.name}: raw addon unavailable (${(e as Error).message})`);
    }
    for (const b of opt.backends) {
      const expected = EXPECTED_GFLOPS[b];
      if (expected && gf / expected > opt.cap) {
        skipped.push(`${s.name} on ${b} (~${(gf / expected).toFixed(0)} s per call > cap ${opt.cap} s)`);
        continue;
      }
      try {
        await initBackend(b);
      } catch (e) {
        skipped.push(`${b}: ${(e as Error).message}`);
        continue;
      }
      const r = tfjsRunner(s);
      // Slow backends: one call after warm-up is enough; native: the median of several.
      const sec = expected ? time(r.run, 0, 1, gf / expected < opt.cap / 4) : time(r.run);
      r.dispose();
      const g = gf / sec;
      results.push({ name: s.name, backend: b, gflops: g });
      const rel = b === 'native' && best ? `  (${((100 * g) / best).toFixed(0)}% of ${bestLib})` : '';
      log(`${s.name.padEnd(52)} ${('tfjs ' + b).padEnd(14)} ${g.toFixed(1).padStart(7)} GFLOP/s${rel}`);
    }
  }
  let torch: { name: string; gflops: number; nativeRatio?: number }[] | undefined;
  if (opt.torch) {
    const rates = torchRates(shapes, loadAddon().getThreads());
    if (typeof rates === 'string') {
      skipped.push(rates);
    } else {
      torch = [...rates].map(([name, g]) => {
        const n = results.find((r) => r.name === name && r.backend === 'native');
        const nativeRatio = n ? n.gflops / g : undefined;
        log(`${name.padEnd(52)} ${'PyTorch'.padEnd(14)} ${g.toFixed(1).padStart(7)} GFLOP/s` +
          (nativeRatio ? `  (native/torch ${nativeRatio.toFixed(2)})` : ''));
        return { name, gflops: g, nativeRatio };
      });
    }
  }
  if (opt.json) {
    console.log(JSON.stringify({ results, ceiling, ...(torch ? { torch } : {}), skipped }, null, 1));
  } else {
    for (const s of skipped) console.log(`skipped: ${s}`);
  }
}

await main();
