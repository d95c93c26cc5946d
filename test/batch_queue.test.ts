// `karlo batch --queue` + `karlo worker` against a REAL Redis (redis-server started here on a free 127.0.0.1 port,
// AOF on with fsync at every write, in a temp folder), two worker processes and the bundled tiny model (8×8
// decoder, 32×32 super-res, 2 steps per stage), 20 prompts. Every phase compares the PNG bytes with an in-process
// `karlo batch` of the same prompts. Faults: a worker SIGKILLed mid-job, Redis SIGKILLed and restarted mid-batch,
// a malformed job and a job for another model, the collector SIGKILLed and restarted. Everything waits on output
// lines or queue state with generous timeouts, never on fixed sleeps; redis and every child are killed at the end,
// also when a test fails.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Job, Queue } from 'bullmq';
import { BUNDLED_MODEL_DIR } from '../src/cli/commands/generate.js';
import { buildJobs, jobHash, type JobSpec } from '../src/batch/jobs.js';
import { modelConfigHash } from '../src/batch/model_hash.js';
import { parseRedisUrl } from '../src/batch/queue.js';
import { availableBackends } from '../src/backend/index.js';
import { registerNativeOrWhy } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const KARLO = path.join(ROOT, 'bin', 'karlo.js');
const REDIS = '/usr/bin/redis-server';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-queue-'));

// native when it is built here, else wasm, else cpu: the same backend for the reference and the workers.
const BACKEND = (await registerNativeOrWhy()) === undefined ? 'native' : (await availableBackends(['wasm'])).length ? 'wasm' : 'cpu';
const ENV = { ...process.env, KARLO_BACKEND: BACKEND, KARLO_NATIVE_THREADS: '1', OMP_NUM_THREADS: '1', FORCE_COLOR: '0' };

// The bundled tiny model with an 8×8 decoder and 32×32 super-res (same weights; the UNets are fully convolutional).
const MINI = path.join(tmp, 'mini');
fs.cpSync(BUNDLED_MODEL_DIR, MINI, { recursive: true });
for (const [c, size] of [['decoder', 8], ['super_res_first', 32], ['super_res_last', 32]] as const) {
  const f = path.join(MINI, c, 'config.json');
  fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, 'utf8')), sample_size: size }));
}
// 20 prompts; prompt 7 has 40 decoder steps, so that a worker can be caught in the middle of it.
const SLOW = 7;
const PROMPTS = path.join(tmp, 'prompts.jsonl');
fs.writeFileSync(PROMPTS, Array.from({ length: 20 }, (_, i) => JSON.stringify({
  prompt: `test prompt ${i}: a ${['red', 'green', 'blue', 'violet'][i % 4]} ${['frog', 'cat', 'teapot', 'castle', 'tree'][i % 5]}`,
  ...(i === SLOW ? { decoder_steps: 40 } : {}),
})).join('\n') + '\n');
const GEN = ['--model', MINI, '--seed', '11', '--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2'];
const JOBS = buildJobs(PROMPTS, { seed: 11n, priorSteps: 2, decoderSteps: 2, superResSteps: 2 }, modelConfigHash(MINI));
const SLOW_HASH = JOBS[SLOW].hash;

// ---- processes -------------------------------------------------------------------------------------------------

interface Proc { name: string; child: ChildProcess; lines: string[]; exit: Promise<number | null> }
const procs = new Set<Proc>();

function start(name: string, cmd: string, args: string[]): Proc {
  const child = spawn(cmd, args, { cwd: tmp, env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  const p: Proc = { name, child, lines: [], exit: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
  child.on('error', (e) => p.lines.push(`could not start ${cmd}: ${e.message}`));
  for (const s of [child.stdout!, child.stderr!]) {
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      p.lines.push(...parts);
    });
  }
  procs.add(p);
  p.exit.then(() => procs.delete(p));
  return p;
}

function killAll(): void {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
}
process.on('exit', killAll);

const karlo = (name: string, args: string[]) => start(name, process.execPath, [KARLO, ...args]);

/** Resolves when `cond` holds (polled every 50 ms); fails after `seconds` with `what` and the processes' output. */
async function until(what: string, cond: () => boolean | Promise<boolean>, seconds = 120): Promise<void> {
  const end = Date.now() + seconds * 1000;
  while (!(await cond())) {
    if (Date.now() > end) {
      const logs = [...procs].map((p) => `--- ${p.name}\n${p.lines.slice(-15).join('\n')}`).join('\n');
      throw new Error(`timed out after ${seconds} s waiting for ${what}\n${logs}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function finished(p: Proc, seconds = 150): Promise<number | null> {
  let code: number | null | undefined;
  p.exit.then((c) => { code = c; });
  await until(`${p.name} to exit`, () => code !== undefined, seconds);
  return code!;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const REDIS_DIR = path.join(tmp, 'redis');
fs.mkdirSync(REDIS_DIR);
const PORT = await freePort();
const URL_ = `redis://127.0.0.1:${PORT}/0`;
let redis: Proc | undefined;

async function startRedis(): Promise<void> {
  redis = start('redis', REDIS, ['--port', String(PORT), '--bind', '127.0.0.1', '--dir', REDIS_DIR, '--appendonly', 'yes',
    '--appendfsync', 'always', '--save', '', '--protected-mode', 'no', '--daemonize', 'no', '--loglevel', 'notice']);
  const r = redis;
  await until('redis to accept connections', () => r.lines.some((l) => /Ready to accept connections/.test(l)), 30);
}

const workerLines = (w: Proc, re: RegExp) => w.lines.filter((l) => re.test(l));
const startsOf = (hash: string) => [...allWorkers].reduce((n, w) => n + workerLines(w, new RegExp(`: start ${hash.slice(0, 8)} `)).length, 0);
const allWorkers = new Set<Proc>();

function startWorker(name: string): Proc {
  const w = karlo(name, ['worker', '--queue', URL_, '--model', MINI, '--name', name, '--lock-duration', '5', '--stalled-interval', '1', '--max-stalled', '5']);
  allWorkers.add(w);
  return w;
}

const readBytes = (dir: string, f: string) => fs.readFileSync(path.join(dir, f));
const manifest = (dir: string) => fs.existsSync(path.join(dir, 'manifest.jsonl'))
  ? fs.readFileSync(path.join(dir, 'manifest.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];

/** 20 manifest lines, one per job, every PNG byte-identical to the in-process run. */
function assertSameAsReference(dir: string): void {
  const m = manifest(dir);
  const ref = manifest(path.join(tmp, 'ref'));
  assert.is(m.length, 20, `${dir}: ${m.length} manifest lines`);
  assert.is(new Set(m.map((e) => e.hash)).size, 20, 'each job once');
  assert.equal(m.map((e) => e.hash).sort(), ref.map((e) => e.hash).sort());
  for (const e of ref) {
    assert.ok(readBytes(dir, e.file).equals(readBytes(path.join(tmp, 'ref'), e.file)), `${e.file}: bytes differ from the in-process run`);
  }
  assert.equal(fs.readdirSync(dir).filter((n) => n.endsWith('.png')).length, 20, 'no extra files');
  assert.equal(fs.readdirSync(dir).filter((n) => n.endsWith('.tmp')), [], 'no temporary files left');
}

let queue: Queue;
test.before(async () => {
  if (!fs.existsSync(REDIS)) throw new Error(`${REDIS} is missing: these tests need a real Redis (Debian: apt-get install redis-server; .ci/run installs it)`);
  await startRedis();
  queue = new Queue('karlo', { connection: parseRedisUrl(URL_) });
  queue.on('error', () => {});
});

test.after(async () => {
  killAll();
  await queue?.close().catch(() => {});
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ---- tests -----------------------------------------------------------------------------------------------------

test('reference: the in-process batch of the 20 prompts', async () => {
  const p = karlo('reference', ['batch', PROMPTS, ...GEN, '--out', 'ref', '--json']);
  assert.is(await finished(p), 0, p.lines.join('\n'));
  const j = JSON.parse(p.lines.find((l) => l.startsWith('{'))!);
  assert.is(j.done, 20);
  assert.is(manifest(path.join(tmp, 'ref')).length, 20);
});

test('worker SIGKILLed mid-job: the other retries it after the stall interval, written once, same bytes; a malformed job and a job for another model fail with their reason, the others complete', async () => {
  const a = startWorker('wA');
  const b = startWorker('wB');
  await until('both workers to be ready', () => [a, b].every((w) => w.lines.some((l) => /waiting for jobs/.test(l))), 90);

  // Two bad jobs put straight into the queue, as another client could.
  const spec: JobSpec = { ...JOBS[0].spec, seed: '999' };
  const foreign: JobSpec = { ...spec, model: 'f'.repeat(64) };
  await queue.add('generate', { ...spec, prompt: 42 }, { jobId: 'malformed-1', attempts: 3 });
  await queue.add('generate', foreign, { jobId: jobHash(foreign), attempts: 3 });

  const c = karlo('collector', ['batch', PROMPTS, ...GEN, '--out', 'outA', '--queue', URL_, '--wait']);
  await until('a worker to start the slow job', () => startsOf(SLOW_HASH) > 0, 120);
  const victim = workerLines(a, new RegExp(`start ${SLOW_HASH.slice(0, 8)}`)).length ? a : b;
  const survivor = victim === a ? b : a;
  victim.child.kill('SIGKILL');
  assert.is(await finished(c), 0, c.lines.join('\n'));

  assertSameAsReference(path.join(tmp, 'outA'));
  const slow = manifest(path.join(tmp, 'outA')).find((e) => e.hash === SLOW_HASH);
  assert.is(slow.worker, survivor.name, 'the slow job was finished by the other worker');
  assert.ok(workerLines(survivor, new RegExp(`start ${SLOW_HASH.slice(0, 8)}`)).length >= 1);
  assert.is(c.lines.filter((l) => l.includes(`wrote ${slow.file}`)).length, 1, 'written exactly once');

  const bad = await Job.fromId(queue, 'malformed-1');
  assert.is(await bad!.getState(), 'failed');
  assert.match(bad!.failedReason, /malformed job: "prompt" must be a non-empty string/);
  assert.is(bad!.attemptsMade, 1, 'not retried');
  const other = await Job.fromId(queue, jobHash(foreign));
  assert.is(await other!.getState(), 'failed');
  assert.match(other!.failedReason, /model mismatch: the job is for model config ffffffffffff/);
  await bad!.remove();
  await other!.remove();
  startWorker('wC'); // two workers again for the next tests
});

test('Redis SIGKILLed and restarted mid-batch (same AOF folder): the batch completes, nothing lost or duplicated', async () => {
  const c = karlo('collector', ['batch', PROMPTS, ...GEN, '--out', 'outB', '--queue', URL_, '--wait']);
  await until('5 results written', () => manifest(path.join(tmp, 'outB')).length >= 5, 120);
  const old = redis!;
  old.child.kill('SIGKILL');
  await finished(old, 30);
  await startRedis();
  assert.is(await finished(c), 0, c.lines.join('\n'));
  assertSameAsReference(path.join(tmp, 'outB'));
});

test('collector SIGKILLed and restarted: it writes the finished results without running them again', async () => {
  const c1 = karlo('collector', ['batch', PROMPTS, ...GEN, '--out', 'outC', '--queue', URL_, '--wait']);
  await until('3 results written', () => manifest(path.join(tmp, 'outC')).length >= 3, 120);
  c1.child.kill('SIGKILL');
  await finished(c1, 30);
  const written = manifest(path.join(tmp, 'outC')).length;
  // Every other job finishes in Redis with no collector running.
  await until('all jobs to finish in Redis', async () => {
    const n = await queue.getJobCounts('waiting', 'active', 'delayed', 'completed');
    return n.waiting + n.active + n.delayed === 0 && n.completed >= 20 - written;
  }, 120);
  const starts = JOBS.map((j) => startsOf(j.hash));
  const c2 = karlo('collector again', ['batch', PROMPTS, ...GEN, '--out', 'outC', '--queue', URL_, '--wait']);
  assert.is(await finished(c2), 0, c2.lines.join('\n'));
  assert.equal(JOBS.map((j) => startsOf(j.hash)), starts, 'no job ran again');
  assert.ok(c2.lines.some((l) => /0 added, already there: completed/.test(l)), c2.lines.join('\n'));
  assertSameAsReference(path.join(tmp, 'outC'));
  assert.is((await queue.getJobCounts('completed')).completed, 0, 'collected results are removed from Redis');
});

test('batch status: counts, the live workers with their throughput, ETA; workers stop on SIGTERM after their job', async () => {
  const r = spawnSync(process.execPath, [KARLO, 'batch', 'status', '--queue', URL_, '--json'], { cwd: tmp, env: ENV, encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.counts.waiting + s.counts.active + s.counts.completed, 0);
  // 3 × 20 written; the counter is statistics, bumped after the files and before the job leaves Redis: the
  // collector SIGKILLed above may have died between writing one result and counting it (59), or between counting it
  // and removing its job, which the next collector then collects (the same file again) and counts again (61).
  assert.ok(s.collected >= 59 && s.collected <= 61, `collected ${s.collected}`);
  const live = s.workers.filter((w: { live: boolean }) => w.live).map((w: { name: string }) => w.name).sort();
  const alive = [...allWorkers].filter((w) => w.child.exitCode === null && w.child.signalCode === null).map((w) => w.name).sort();
  assert.equal(live, alive);
  assert.is(alive.length, 2);
  for (const w of s.workers.filter((x: { live: boolean }) => x.live)) assert.ok(w.imagesPerMinute > 0, w.name);
  assert.is(s.etaSeconds, 0);
  const text = spawnSync(process.execPath, [KARLO, 'batch', 'status', '--queue', URL_], { cwd: tmp, env: ENV, encoding: 'utf8', timeout: 60_000 });
  assert.match(text.stdout, /waiting 0 {2}active 0/);
  assert.match(text.stdout, /images\/min/);

  for (const w of [...allWorkers].filter((x) => x.child.exitCode === null && x.child.signalCode === null)) {
    w.child.kill('SIGTERM');
    assert.is(await finished(w, 60), 0, w.lines.join('\n'));
    assert.ok(w.lines.some((l) => /SIGTERM: finishing the current job/.test(l)));
  }
});

test.run();
