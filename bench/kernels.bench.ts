// GFLOP/s of the GEMM and convolution shapes Karlo runs, through tfjs on the native, wasm and cpu backends, and
// the ceiling: the same problem as one raw call into the addon (oneDNN matmul/conv, OpenBLAS sgemm) with buffers
// allocated once. native/ceiling is the overhead of going through tfjs (output allocation, kernel dispatch).
// The slow backends run a shape only when its estimated time fits the cap (cpu is ~1 GFLOP/s, wasm ~20).
// First the machine's float32 peak, measured: an FMA loop in the addon (independent vector FMA chains on every
// thread: what the FMA units can do) and the best large GEMM the libraries reach (oneDNN, and OpenBLAS unless
// OPENBLAS_CORETYPE holds it below the CPU); each tfjs native row then says what share of the FMA peak it is.
//   npx tsx bench/kernels.bench.ts [--json] [--backends native,wasm,cpu] [--cap SECONDS] [--only REGEX] [--peak-only]
//   npm run bench kernels [-- --only conv] [--compare-torch]
// --compare-torch: also times the shapes in PyTorch (a python3 with torch, e.g. Debian's python3-torch), same threads,
// same warm-up and timing loop.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/backend/index.js';
import { checkBenchArgs } from './args.js';
import { loadAddon, CONV_ALGO, convAlgo, describeNative, gemmLibrary, nativeBufferPool, openblasForcedBelowCpu } from '../src/backend/native/index.js';

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
  { name: 'SR conv3x3 640->640 128x128 b1', kind: 'conv', batch: 1, hw: 128, cin: 640, cout: 640, ksize: 3 },
  { name: 'SR conv3x3 960->960 64x64 b1', kind: 'conv', batch: 1, hw: 64, cin: 960, cout: 960, ksize: 3 },
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
  checkBenchArgs('kernels', { string: ['backends', 'cap', 'only'], boolean: ['json', 'compare-torch', 'peak-only'], positionals: false });
  const a = process.argv.slice(2);
  // `--flag value` and `--flag=value` (the form bench/index.ts and `karlo bench` forward).
  const val = (flag: string) => {
    const eq = a.find((x) => x.startsWith(flag + '='));
    if (eq) return eq.slice(flag.length + 1);
    const i = a.indexOf(flag);
    return i >= 0 ? a[i + 1] : undefined;
  };
  const cap = Number(val('--cap') ?? 8);
  if (!(cap > 0)) throw new Error(`--cap must be a positive number of seconds, got ${val('--cap')}`);
  return {
    json: a.includes('--json'),
    backends: (val('--backends') ?? val('--backend') ?? 'native,wasm,cpu').split(','),
    cap,
    only: val('--only') ? new RegExp(val('--only')!) : undefined,
    torch: a.includes('--compare-torch'),
    peakOnly: a.includes('--peak-only'),
  };
}

interface Peak {
  /** The FMA loop: GFLOP/s over all threads, the threads, the vector width. */
  fma: { gflops: number; threads: number; width: string; perThread: number };
  /** The best large single GEMM: GFLOP/s, which library and shape. */
  gemm: { gflops: number; library: string; shape: string };
}

/**
 * The machine's float32 peak: the FMA loop (calls of ~0.25 s, best of 5, on all the addon's threads and on one), and
 * the best large GEMM (2048³ and 3072³, oneDNN and OpenBLAS; best of 3 calls after a warm-up).
 */
async function measurePeak(): Promise<Peak> {
  const addon = loadAddon();
  const threads = addon.getThreads();
  const fmaRate = (n: number) => {
    let iters = 1e6;
    for (;;) {
      const r = addon.fmaPeak(iters, n);
      if (r.seconds > 0.05) { iters = Math.round(iters * 0.25 / r.seconds); break; }
      iters *= 4;
    }
    let best = 0, width = '';
    for (let i = 0; i < 5; i++) {
      const r = addon.fmaPeak(iters, n);
      best = Math.max(best, r.flops / r.seconds / 1e9);
      width = r.width;
    }
    return { best, width };
  };
  const all = fmaRate(threads), one = fmaRate(1);
  let gemm = { gflops: 0, library: '', shape: '' };
  const libs: [string, boolean][] = [['oneDNN', false]];
  if (!openblasForcedBelowCpu()) libs.push(['OpenBLAS', true]);
  for (const n of [2048, 3072]) {
    const a = randArray(n * n, 1), b = randArray(n * n, 2), out = new Float32Array(n * n);
    for (const [name, blas] of libs) {
      const call = () => addon.matmul(a, b, out, null, 1, 1, n, n, n, false, false, 0, 0, blas);
      call();
      let best = Infinity;
      for (let i = 0; i < 3; i++) {
        const t = performance.now();
        call();
        best = Math.min(best, (performance.now() - t) / 1000);
      }
      const g = (2 * n ** 3) / best / 1e9;
      if (g > gemm.gflops) gemm = { gflops: g, library: name, shape: `${n}³` };
      if (blas) await pause(500); // OpenBLAS's threads spin for a while after a call
    }
  }
  return { fma: { gflops: all.best, threads, width: all.width, perThread: one.best }, gemm };
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

/**
 * Warm-up: calls until 10 have run or 0.3 s has passed, so that V8 has optimised the JS around the library call (on a
 * 0.5 ms kernel the first few dozen calls run ~10% slower) and caches and packed weights are in place.
 */
function warm(f: () => void): void {
  const t0 = performance.now();
  for (let i = 0; i < 10 && (i === 0 || performance.now() - t0 < 300); i++) f();
}

/** Per-call seconds: calls until `seconds` have passed (at least `minCalls`, at most `maxCalls`). */
function samples(f: () => void, seconds: number, minCalls = 3, maxCalls = 1000): number[] {
  const ts: number[] = [];
  const t0 = performance.now();
  while (ts.length < minCalls || (performance.now() - t0 < seconds * 1000 && ts.length < maxCalls)) {
    const t = performance.now();
    f();
    ts.push((performance.now() - t) / 1000);
  }
  return ts;
}

function median(ts: number[]): number {
  const s = [...ts].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

const pause = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** The inputs of a shape, shared by the raw calls and the tfjs op (tf.tensor keeps a Float32Array without copying). */
interface ShapeData { a: Float32Array; w: Float32Array; bias: Float32Array | null; outLen: number }

function shapeData(s: Shape): ShapeData {
  if (s.kind === 'conv') {
    return {
      a: randArray(s.batch! * s.hw! * s.hw! * s.cin!, 1), w: randArray(s.ksize! * s.ksize! * s.cin! * s.cout!, 2),
      bias: randArray(s.cout!, 3), outLen: s.batch! * s.hw! * s.hw! * s.cout!,
    };
  }
  const b = s.b ?? 1;
  return {
    a: randArray(b * s.m! * s.k!, 1), w: randArray(b * s.k! * s.n!, 2),
    bias: s.kind === 'linear' ? randArray(s.n!, 3) : null, outLen: b * s.m! * s.n!,
  };
}

/** One tfjs call of the shape on the current backend, as the models make it. */
function tfjsRunner(s: Shape, d: ShapeData): { run: () => void; dispose: () => void } {
  let inputs: tf.Tensor[];
  let op: () => tf.Tensor;
  if (s.kind === 'linear') {
    const x = tf.tensor2d(d.a, [s.m!, s.k!]);
    const w = tf.tensor2d(d.w, [s.n!, s.k!]);
    const bias = tf.tensor1d(d.bias!);
    inputs = [x, w, bias];
    // Exactly as Linear runs it (src/layers/basic.ts): on wasm, whose transposeB path is slow, it transposes W first.
    op = tf.getBackend() === 'wasm'
      ? () => tf.tidy(() => tf.fused.matMul({ a: x, b: tf.transpose(w) as tf.Tensor2D, bias }))
      : () => tf.fused.matMul({ a: x, b: w, transposeB: true, bias });
  } else if (s.kind === 'bmm') {
    const a = tf.tensor3d(d.a, [s.b!, s.m!, s.k!]);
    const bShape: [number, number, number] = s.transB ? [s.b!, s.n!, s.k!] : [s.b!, s.k!, s.n!];
    const b = tf.tensor3d(d.w, bShape);
    inputs = [a, b];
    op = () => tf.matMul(a, b, false, !!s.transB);
  } else {
    const x = tf.tensor4d(d.a, [s.batch!, s.hw!, s.hw!, s.cin!]);
    const f = tf.tensor4d(d.w, [s.ksize!, s.ksize!, s.cin!, s.cout!]);
    const bias = tf.tensor1d(d.bias!);
    inputs = [x, f, bias];
    op = () => tf.fused.conv2d({ x, filter: f, strides: 1, pad: 'same', bias });
  }
  return {
    // Every backend benchmarked here computes synchronously, so the op has finished when it returns. Reading the
    // result back (dataSync) would hand its buffer out and keep the native backend from recycling it, which the
    // models, reading nothing back between ops, never do.
    run: () => op().dispose(),
    dispose: () => tf.dispose(inputs),
  };
}

/** The raw conv calls may keep packed weights too, as the backend does for small outputs. */
const RAW_WEIGHTS_ID = 2 ** 40;

/** The same problem as raw addon calls, on the same inputs, writing into out(): the library ceiling. */
function rawRunners(s: Shape, d: ShapeData, out: () => Float32Array): { name: string; run: () => void }[] {
  const addon = loadAddon();
  if (s.kind === 'conv') {
    const p = (s.ksize! - 1) >> 1;
    const shape = [s.batch!, s.hw!, s.hw!, s.cin!, s.ksize!, s.ksize!, s.cout!, s.hw!, s.hw!, 1, 1, 1, 1, p, p, s.ksize! - 1 - p, s.ksize! - 1 - p];
    // Each forward algorithm (KARLO_NATIVE_CONV_ALGO) as its own raw call: direct, and Winograd for 3x3 convs
    // (effective GFLOP/s: the direct conv's FLOPs over the time).
    const withAlgo = (algo: number) => () => {
      const prev = addon.convAlgo();
      addon.convAlgo(algo);
      try {
        addon.conv2d(d.a, d.w, d.bias, out(), shape, 0, 0, RAW_WEIGHTS_ID);
      } finally {
        addon.convAlgo(prev);
      }
    };
    const runners = [{ name: 'oneDNN conv', run: withAlgo(CONV_ALGO.direct) }];
    if (s.ksize === 3) runners.push({ name: 'oneDNN Winograd', run: withAlgo(CONV_ALGO.winograd) });
    return runners;
  }
  const b = s.b ?? 1;
  const transB = s.kind === 'linear' ? true : !!s.transB;
  // OpenBLAS first: its worker threads spin for a while after a call and would slow whatever runs next on the
  // two cores (main() pauses after it before timing oneDNN and tfjs).
  return [
    { name: 'OpenBLAS sgemm', run: () => addon.matmul(d.a, d.w, out(), d.bias, b, b, s.m!, s.n!, s.k!, false, transB, 0, 0, true) },
    { name: 'oneDNN matmul', run: () => addon.matmul(d.a, d.w, out(), d.bias, b, b, s.m!, s.n!, s.k!, false, transB, 0, 0, false) },
  ];
}

// The user's own OMP_WAIT_POLICY, read before loadAddon() sets ours (passive) in this process.
const USER_OMP_WAIT_POLICY = process.env.OMP_WAIT_POLICY;

/**
 * A python3 with torch kept running beside the bench, so that each shape can be timed in PyTorch (F.linear /
 * torch.bmm / F.conv2d on channels_last, no_grad) in rounds interleaved with ours.
 */
class TorchTimer {
  private constructor(private proc: ChildProcessWithoutNullStreams, private lines: AsyncIterator<string>) {}

  /** waitPolicy: the OMP_WAIT_POLICY PyTorch runs under; undefined: the user's environment (else libgomp's default). */
  static async start(threads: number, waitPolicy: string | undefined): Promise<TorchTimer | string> {
    const script = `
import json, sys, time
import torch
import torch.nn.functional as F
torch.set_num_threads(${threads})
torch.set_grad_enabled(False)
fns = {}
def make(s):
    if s['kind'] == 'linear':
        x, w, b = torch.randn(s['m'], s['k']), torch.randn(s['n'], s['k']), torch.randn(s['n'])
        return lambda: F.linear(x, w, b)
    if s['kind'] == 'bmm':
        bb = s.get('b', 1)
        a = torch.randn(bb, s['m'], s['k'])
        w = torch.randn(bb, s['n'], s['k']).transpose(1, 2) if s.get('transB') else torch.randn(bb, s['k'], s['n'])
        return lambda: torch.bmm(a, w)
    x = torch.randn(s['batch'], s['cin'], s['hw'], s['hw']).to(memory_format=torch.channels_last)
    w = torch.randn(s['cout'], s['cin'], s['ksize'], s['ksize']).to(memory_format=torch.channels_last)
    b = torch.randn(s['cout'])
    return lambda: F.conv2d(x, w, b, padding=(s['ksize'] - 1) // 2)
print('ready', torch.__version__, flush=True)
for line in sys.stdin:
    req = json.loads(line)
    s = req['shape']
    if s['name'] not in fns:
        fns.clear()
        fns[s['name']] = make(s)
    f = fns[s['name']]
    ts = []
    t0 = time.perf_counter()
    while len(ts) < req['minCalls'] or (time.perf_counter() - t0 < req['seconds'] and len(ts) < req['maxCalls']):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    print(json.dumps(ts), flush=True)
`;
    const env = { ...process.env };
    const policy = waitPolicy ?? USER_OMP_WAIT_POLICY;
    if (policy === undefined) delete env.OMP_WAIT_POLICY;
    else env.OMP_WAIT_POLICY = policy;
    let why = '';
    for (const py of ['/usr/bin/python3', 'python3']) {
      const proc = spawn(py, ['-c', script], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      proc.stderr.on('data', (d) => { stderr += String(d); });
      const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
      const failed = new Promise<string>((res) => {
        proc.on('error', (e) => res(`${py}: ${e.message}`));
        proc.on('exit', () => res(`${py}: ${stderr.trim().split('\n').pop() ?? 'exited'}`));
      });
      const first = await Promise.race([lines.next().then((r) => (r.done ? null : r.value)), failed]);
      if (typeof first === 'string' && first.startsWith('ready')) return new TorchTimer(proc, lines);
      why = typeof first === 'string' ? first : `${py}: exited`;
      proc.kill();
    }
    return `PyTorch not available (${why})`;
  }

  /** Per-call seconds of the shape in PyTorch: calls until `seconds` have passed (at least minCalls, at most maxCalls). */
  async samples(s: Shape, seconds: number, minCalls = 3, maxCalls = 1000): Promise<number[]> {
    this.proc.stdin.write(JSON.stringify({ shape: s, seconds, minCalls, maxCalls }) + '\n');
    const r = await this.lines.next();
    if (r.done) throw new Error('the PyTorch process exited');
    return JSON.parse(r.value) as number[];
  }

  close(): void {
    this.proc.stdin.end();
  }
}

// Rough rates used only to decide what fits the cap on the slow backends.
const EXPECTED_GFLOPS: Record<string, number> = { cpu: 1, wasm: 20 };

/** Rounds of interleaved timing (library call, tfjs native, PyTorch), each this long per contender. */
const ROUNDS = 4;
const ROUND_SECONDS = 0.4;

async function main() {
  const opt = args();
  const shapes = SHAPES.filter((s) => !opt.only || opt.only.test(s.name));
  const results: { name: string; backend: string; gflops: number; ofCeiling?: number; ofPeak?: number }[] = [];
  const ceiling: { name: string; gflops: number; library: string }[] = [];
  const torchRes: { name: string; gflops: number; nativeRatio?: number; ompWaitPolicy: string }[] = [];
  const skipped: string[] = [];
  const log = (line: string) => { if (!opt.json) console.log(line); };
  const row = (name: string, who: string, g: number, note = '') =>
    log(`${name.padEnd(52)} ${who.padEnd(14)} ${g.toFixed(1).padStart(7)} GFLOP/s${note}`);
  const forced = openblasForcedBelowCpu();
  log(`native: ${describeNative()}; GEMM through ${gemmLibrary()}${forced ? ` (${forced}: OpenBLAS not used)` : ''}; convs ${convAlgo()}`);
  let peak: Peak | undefined;
  try {
    peak = await measurePeak();
    log(`fp32 peak: FMA loop ${peak.fma.gflops.toFixed(1)} GFLOP/s on ${peak.fma.threads} threads (${peak.fma.width}; ${peak.fma.perThread.toFixed(1)} on one thread); best large GEMM ${peak.gemm.gflops.toFixed(1)} GFLOP/s (${peak.gemm.library} ${peak.gemm.shape}) = ${(100 * peak.gemm.gflops / peak.fma.gflops).toFixed(0)}% of the FMA peak`);
  } catch (e) {
    log(`fp32 peak: not measured (${(e as Error).message})`);
  }
  const ofPeak = (g: number) => (peak ? `, ${(100 * g / peak.fma.gflops).toFixed(0)}% of the FMA peak` : '');
  if (opt.peakOnly) {
    if (opt.json) console.log(JSON.stringify({ peak }, null, 1));
    return;
  }
  // PyTorch is timed twice per round: under the environment's OpenMP wait policy (libgomp's default: spin) and
  // under the passive one. Which is faster depends on the op (measured here: F.linear, whose OpenBLAS threads
  // compete with spinning OpenMP workers, runs at 130 GFLOP/s spinning and 230 passive), and the comparison is
  // with PyTorch's better time.
  const torches: { label: string; timer: TorchTimer }[] = [];
  if (opt.torch) {
    for (const [label, policy] of [[USER_OMP_WAIT_POLICY ?? 'default', undefined], ['passive', 'passive']] as const) {
      if (label === 'passive' && torches[0]?.label === 'passive') break;
      const t = await TorchTimer.start(loadAddon().getThreads(), policy);
      if (typeof t === 'string') {
        skipped.push(t);
        break;
      }
      torches.push({ label: `OMP_WAIT_POLICY=${label}`, timer: t });
    }
  }

  for (const s of shapes) {
    const gf = flops(s) / 1e9;
    const data = shapeData(s);
    let rawOut = new Float32Array(data.outLen);
    // 1. Each raw library call on its own; the fastest is the ceiling.
    let best: { name: string; run: () => void } | undefined;
    let bestRate = 0;
    try {
      for (const r of rawRunners(s, data, () => rawOut)) {
        warm(r.run);
        const g = gf / median(samples(r.run, 1.5));
        // OpenBLAS's worker threads spin for a while after a call and would slow whatever runs next.
        if (r.name.startsWith('OpenBLAS')) await pause(500);
        row(s.name, r.name, g);
        if (g > bestRate) { bestRate = g; best = r; }
      }
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
      const r = tfjsRunner(s, data);
      if (expected) {
        // Slow backends: one call (after a warm-up call when that fits the cap).
        if (gf / expected < opt.cap / 4) r.run();
        const g = gf / median(samples(r.run, 0, 1, 1));
        results.push({ name: s.name, backend: b, gflops: g });
        row(s.name, 'tfjs ' + b, g);
        r.dispose();
        continue;
      }
      // 2. Native: rounds interleaving the best raw call, the tfjs op and PyTorch, so that the ratios compare
      // runs made under the same machine conditions; each rate is the median over all its rounds. The raw call
      // writes into the buffer the tfjs op's outputs get from the backend's pool (it borrows it for its round and
      // gives it back): how fast a large output is written depends on where it lies in memory (up to 25% on the
      // decoder's 64 MB attention scores, README), and the comparison is of the calls, not of two allocations.
      const pool = b === 'native' ? nativeBufferPool() : undefined;
      const raw: number[] = [];
      const nat: number[] = [];
      const pt: number[][] = torches.map(() => []);
      if (best) warm(best.run);
      warm(r.run);
      for (const t of torches) await t.timer.samples(s, 0.3, 1, 10);
      for (let round = 0; round < ROUNDS; round++) {
        if (pool) {
          rawOut = pool.alloc(data.outLen);
          pool.registered(rawOut);
        }
        if (best) raw.push(...samples(best.run, ROUND_SECONDS));
        if (pool) pool.release(rawOut);
        if (best?.name.startsWith('OpenBLAS')) await pause(100);
        nat.push(...samples(r.run, ROUND_SECONDS));
        for (const [i, t] of torches.entries()) {
          await pause(50);
          pt[i].push(...(await t.timer.samples(s, ROUND_SECONDS)));
          await pause(50);
        }
      }
      r.dispose();
      const g = gf / median(nat);
      const rawPaired = raw.length ? gf / median(raw) : 0;
      const ofCeiling = rawPaired ? g / rawPaired : undefined;
      results.push({ name: s.name, backend: b, gflops: g, ...(ofCeiling ? { ofCeiling } : {}), ...(peak ? { ofPeak: g / peak.fma.gflops } : {}) });
      row(s.name, 'tfjs ' + b, g, `${ofCeiling ? `  (${(100 * ofCeiling).toFixed(0)}% of ${best!.name} in the same rounds: ${rawPaired.toFixed(1)}` : '  ('}${ofPeak(g)})`.replace('(, ', '('));
      if (best) {
        bestRate = Math.max(bestRate, rawPaired);
        ceiling.push({ name: s.name, gflops: bestRate, library: best.name });
      }
      if (torches.length) {
        const rates = pt.map((ts) => gf / median(ts));
        const i = rates.indexOf(Math.max(...rates));
        const tg = rates[i];
        torchRes.push({ name: s.name, gflops: tg, nativeRatio: g / tg, ompWaitPolicy: torches[i].label.split('=')[1] });
        row(s.name, 'PyTorch', tg, `  (native/torch ${(g / tg).toFixed(2)}, same rounds; ${torches[i].label}` +
          (rates.length > 1 ? `, the other: ${rates[1 - i].toFixed(1)})` : ')'));
      }
    }
    if (best && !opt.backends.includes('native')) ceiling.push({ name: s.name, gflops: bestRate, library: best.name });
  }
  for (const t of torches) t.timer.close();
  if (opt.json) {
    console.log(JSON.stringify({ peak, results, ceiling, ...(opt.torch ? { torch: torchRes } : {}), skipped }, null, 1));
  } else {
    for (const s of skipped) console.log(`skipped: ${s}`);
  }
}

await main();
