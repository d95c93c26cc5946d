// Batch throughput and queue overhead on this machine, with the bundled tiny model (models/karlo-tiny, 64×64):
//  1. in-process (`karlo batch` without --queue): one pipeline kept loaded, the jobs one after another;
//  2. through BullMQ on a local redis-server (started here on a free port, AOF on, in a temp folder) with 1 and
//     then 2 `karlo worker` processes (threads split between them), the collector in this process;
//  3. the queue's own cost per job, with one idle worker and jobs sent one at a time: enqueue → start of
//     processing, and result → file written (median and p90 in ms).
// Prints images/min per mode and the overhead, then what N machines give at real size from the README's measured
// per-image time. Everything it started is killed and its temp folder removed, also on failure or Ctrl-C.
//   npm run bench batch [-- --jobs=N --overhead-jobs=N --prior-steps=N --decoder-steps=N --sr-steps=N --json]
//   npx tsx bench/batch.bench.ts [--jobs 16] [--overhead-jobs 20] [--prior-steps 25] [--decoder-steps 25] [--sr-steps 7]
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkBenchArgs } from './args.js';
import { initBackend } from '../src/backend/index.js';
import { UnCLIPPipeline } from '../src/pipeline/unclip_pipeline.js';
import { buildJobs, type BatchJob } from '../src/batch/jobs.js';
import { modelConfigHash } from '../src/batch/model_hash.js';
import { OutputDir } from '../src/batch/output.js';
import { runLocal } from '../src/batch/local.js';
import { collectJobs, enqueueJobs, openQueue, type CollectedJob } from '../src/batch/queue.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(ROOT, 'models', 'karlo-tiny');
const KARLO = path.join(ROOT, 'bin', 'karlo.js');
/** README, "The whole pipeline at real size": 478 s of sampling per image at 25/25/7 (+ 31 s loading, once per worker). */
const REAL_SECONDS_PER_IMAGE = 478;

checkBenchArgs('batch', { string: ['jobs', 'overhead-jobs', 'prior-steps', 'decoder-steps', 'sr-steps'], boolean: ['json'] });
const argv = process.argv.slice(2);
function val(name: string, dflt: number): number {
  const k = argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (k < 0) return dflt;
  const v = Number(argv[k].includes('=') ? argv[k].split('=')[1] : argv[k + 1]);
  if (!Number.isInteger(v) || v < 1) {
    console.error(`bench batch: --${name} must be a positive integer`);
    process.exit(2);
  }
  return v;
}
const JSON_OUT = argv.includes('--json');
const N = val('jobs', 16);
const OVERHEAD_JOBS = val('overhead-jobs', 20);
const STEPS = { priorSteps: val('prior-steps', 25), decoderSteps: val('decoder-steps', 25), superResSteps: val('sr-steps', 7) };
const CORES = os.availableParallelism();
const say = (s: string) => (JSON_OUT ? process.stderr : process.stdout).write(`${s}\n`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-bench-batch-'));
const children = new Set<ChildProcess>();
function cleanup(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

function spawnLogged(cmd: string, args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; lines: string[] } {
  const child = spawn(cmd, args, { cwd: tmp, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const lines: string[] = [];
  for (const s of [child.stdout!, child.stderr!]) {
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      lines.push(...parts);
    });
  }
  return { child, lines };
}

async function until(what: string, cond: () => boolean, seconds: number): Promise<void> {
  const end = Date.now() + seconds * 1000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`bench batch: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function prompts(name: string, n: number, offset: number): string {
  const f = path.join(tmp, `${name}.txt`);
  fs.writeFileSync(f, Array.from({ length: n }, (_, i) => `bench prompt ${offset + i}: a small red frog on a leaf`).join('\n'));
  return f;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

const modelHash = modelConfigHash(MODEL);
const jobsOf = (file: string, seed: bigint): BatchJob[] => buildJobs(file, { ...STEPS, seed }, modelHash);

// ---- 1. in-process ----
const backend = (await initBackend(process.env.KARLO_BACKEND)).name;
say(`bench batch: ${path.relative(ROOT, MODEL)} (64×64 output), ${STEPS.priorSteps}/${STEPS.decoderSteps}/${STEPS.superResSteps} steps, ${N} jobs per run, backend ${backend}, ${CORES} cores, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
const pipe = await UnCLIPPipeline.load(MODEL, { keepLoaded: true });
{
  const warm = new OutputDir(path.join(tmp, 'warm-inproc'));
  await runLocal(pipe, jobsOf(prompts('warm', 1, 9000), 0n), warm, { worker: 'bench' });
  warm.close();
}
const inOut = new OutputDir(path.join(tmp, 'inproc'));
let t0 = performance.now();
await runLocal(pipe, jobsOf(prompts('inproc', N, 0), 0n), inOut, { worker: 'bench' });
const inSeconds = (performance.now() - t0) / 1000;
inOut.close();
pipe.dispose();
const rows: { mode: string; workers: number; threads: number; imagesPerMinute: number; secondsPerImage: number }[] = [];
rows.push({ mode: 'in-process', workers: 1, threads: CORES, imagesPerMinute: (60 * N) / inSeconds, secondsPerImage: inSeconds / N });

// ---- 2. queue with 1 and 2 workers ----
const port = await freePort();
const url = `redis://127.0.0.1:${port}/0`;
const redisDir = path.join(tmp, 'redis');
fs.mkdirSync(redisDir);
const redis = spawnLogged('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', redisDir, '--appendonly', 'yes', '--save', '', '--protected-mode', 'no'], process.env);
redis.child.on('error', (e) => { console.error(`bench batch: cannot start redis-server (${e.message}); install Debian redis-server`); process.exit(1); });
await until('redis-server to start', () => redis.lines.some((l) => /Ready to accept connections/.test(l)), 30);
const queue = openQueue(url, 'bench', (l) => say(`  ${l}`));

let overhead: CollectedJob[] = [];
let seedBase = 1000n;
for (const W of [1, 2]) {
  const threads = Math.max(1, Math.floor(CORES / W));
  const workers = Array.from({ length: W }, (_, i) => spawnLogged(process.execPath, [KARLO, 'worker', '--queue', url, '--queue-name', 'bench', '--model', MODEL, '--name', `bench-w${i}`],
    { ...process.env, KARLO_BACKEND: backend, KARLO_NATIVE_THREADS: String(threads) }));
  await until('the workers to be ready', () => workers.every((w) => w.lines.some((l) => /waiting for jobs/.test(l))), 120);
  // Warm-up: every worker loads its model and runs one job before the timed run.
  for (let k = 0; !workers.every((w) => w.lines.some((l) => /: done /.test(l))); k++) {
    if (k > 20) throw new Error('bench batch: a worker never got a warm-up job');
    const out = new OutputDir(path.join(tmp, `warm-${W}-${k}`));
    const jobs = jobsOf(prompts(`warm-${W}-${k}`, W, 9100 + 10 * k), seedBase++);
    await enqueueJobs(queue, jobs);
    await collectJobs(queue, jobs, out);
    out.close();
  }
  const out = new OutputDir(path.join(tmp, `queue-${W}`));
  const jobs = jobsOf(prompts(`queue-${W}`, N, 100 * W), seedBase++);
  t0 = performance.now();
  await enqueueJobs(queue, jobs);
  await collectJobs(queue, jobs, out);
  const seconds = (performance.now() - t0) / 1000;
  out.close();
  rows.push({ mode: 'queue', workers: W, threads, imagesPerMinute: (60 * N) / seconds, secondsPerImage: seconds / N });

  if (W === 1) {
    // ---- 3. overhead: one idle worker, one job at a time ----
    const ov = new OutputDir(path.join(tmp, 'overhead'));
    const all = jobsOf(prompts('overhead', OVERHEAD_JOBS, 5000), seedBase++);
    for (const j of all) {
      await new Promise((r) => setTimeout(r, 50)); // the worker is idle, blocked on Redis, when the job arrives
      let ready!: () => void;
      const listening = new Promise<void>((r) => { ready = r; });
      const collected = collectJobs(queue, [j], ov, { onCollected: (c) => overhead.push(c), onReady: ready });
      await listening;
      await enqueueJobs(queue, [j]);
      await collected;
    }
    ov.close();
  }
  for (const w of workers) w.child.kill('SIGTERM');
  await until('the workers to stop', () => workers.every((w) => w.child.exitCode !== null || w.child.signalCode !== null), 60);
}
await queue.close();

const startMs = overhead.map((c) => c.enqueueToStartMs);
const fileMs = overhead.map((c) => c.resultToFileMs);
const result = {
  model: path.relative(ROOT, MODEL), steps: STEPS, jobs: N, backend, cores: CORES, rows,
  overhead: {
    jobs: overhead.length,
    enqueueToStartMs: { median: quantile(startMs, 0.5), p90: quantile(startMs, 0.9) },
    resultToFileMs: { median: quantile(fileMs, 0.5), p90: quantile(fileMs, 0.9) },
  },
  realSize: { secondsPerImage: REAL_SECONDS_PER_IMAGE, imagesPerHourPerMachine: 3600 / REAL_SECONDS_PER_IMAGE },
};
if (JSON_OUT) process.stdout.write(`${JSON.stringify(result)}\n`);
say('');
say('mode         workers  threads each  images/min  s/image');
for (const r of rows) say(`${r.mode.padEnd(12)} ${String(r.workers).padStart(7)}  ${String(r.threads).padStart(12)}  ${r.imagesPerMinute.toFixed(1).padStart(10)}  ${r.secondsPerImage.toFixed(3).padStart(7)}`);
const o = result.overhead;
say(`queue overhead per job (${o.jobs} jobs one at a time, 1 idle worker): enqueue→start median ${o.enqueueToStartMs.median} ms (p90 ${o.enqueueToStartMs.p90}), result→file median ${o.resultToFileMs.median} ms (p90 ${o.resultToFileMs.p90})`);
const perHour = 3600 / REAL_SECONDS_PER_IMAGE;
say(`real size (README: ${REAL_SECONDS_PER_IMAGE} s per image at 25/25/7 on 2 vCPUs, native): one machine ≈ ${perHour.toFixed(1)} images/hour; ` +
  `N machines ≈ N × ${perHour.toFixed(1)} images/hour (3 → ${(3 * perHour).toFixed(1)}/hour, ${(3 * perHour * 24).toFixed(0)}/day); ` +
  `the queue adds ≈ ${((o.enqueueToStartMs.median + o.resultToFileMs.median) / 1000 / REAL_SECONDS_PER_IMAGE * 100).toFixed(4)} % per image`);
redis.child.kill('SIGTERM');
await until('redis-server to stop', () => redis.child.exitCode !== null || redis.child.signalCode !== null, 30);
process.exit(0);
