// Batches across machines on BullMQ (Redis): the producer/collector side of `karlo batch --queue`, the
// `karlo worker` processor, and `karlo batch status`. BullMQ does the distributed part (atomic job moves, locks,
// stalled-job recovery, retries, events); this file only maps karlo jobs onto it:
//  - a job's BullMQ id is its identity hash, so enqueuing twice adds nothing;
//  - a worker returns the PNG bytes (base64) and metadata as the job's return value: no shared file system;
//  - the collector writes a completed job's files and manifest lines, then removes the job from Redis (results
//    are not kept twice); a result delivered twice (a stalled job finished by two workers) is written once,
//    because the output folder knows which hashes it holds.
import * as os from 'node:os';
import { Job, Queue, QueueEvents, UnrecoverableError, Worker, type ConnectionOptions, type JobsOptions } from 'bullmq';
import type { UnCLIPPipeline } from '../pipeline/unclip_pipeline.js';
import { jobHash, specProblem, type BatchJob, type JobSpec } from './jobs.js';
import type { OutputDir } from './output.js';
import { renderJob } from './render.js';

export const DEFAULT_QUEUE_NAME = 'karlo';
/** Completed events carry the return value (the PNGs): keep the events stream short. */
const EVENTS_MAX_LEN = 200;

export class QueueUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueueUrlError';
  }
}

/** redis://[user:password@]host[:port][/db] or rediss://… → ioredis connection options that ride out restarts. */
export function parseRedisUrl(url: string): ConnectionOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new QueueUrlError(`--queue ${JSON.stringify(url)}: not a URL; expected redis://host:port/db`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new QueueUrlError(`--queue ${url}: expected a redis:// or rediss:// URL`);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) throw new QueueUrlError(`--queue ${url}: no host`);
  const port = u.port ? Number(u.port) : 6379;
  const dbText = u.pathname.replace(/^\//, '');
  if (dbText !== '' && !/^\d+$/.test(dbText)) throw new QueueUrlError(`--queue ${url}: the path must be a database number (/0), got /${dbText}`);
  return {
    host, port, db: dbText === '' ? 0 : Number(dbText),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    // Commands wait for Redis to come back instead of failing (a restart mid-batch is survived).
    maxRetriesPerRequest: null,
    enableOfflineQueue: true,
    retryStrategy: (times: number) => Math.min(100 * times, 2000),
  };
}

/** Redis URL without its password, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

/** Logs connection errors at most once per 5 s per kind (a Redis restart would otherwise flood the log). */
export function errorLogger(log: (line: string) => void, what: string): (e: Error) => void {
  const last = new Map<string, number>();
  return (e: Error) => {
    const msg = String(e?.message ?? e).split('\n')[0];
    const key = msg.replace(/\d+/g, '#');
    const t = Date.now();
    if ((last.get(key) ?? 0) + 5000 > t) return;
    last.set(key, t);
    log(`${what}: ${msg}`);
  };
}

/** Our own bookkeeping keys beside BullMQ's (worker statistics, collected count). */
function statsKeys(queue: Queue): { workers: string; stats: string } {
  const base = `${queue.opts.prefix ?? 'bull'}:${queue.name}:karlo`;
  return { workers: `${base}:workers`, stats: `${base}:stats` };
}

export function openQueue(url: string, name = DEFAULT_QUEUE_NAME, log: (line: string) => void = () => {}): Queue {
  const q = new Queue(name, { connection: parseRedisUrl(url), streams: { events: { maxLen: EVENTS_MAX_LEN } } });
  q.on('error', errorLogger(log, 'redis'));
  return q;
}

/** What a worker returns through the queue for one job. */
export interface WorkerResult {
  v: 1;
  hash: string;
  /** Base64 PNG bytes, one per image of the job. */
  pngs: string[];
  worker: string;
  backend: string;
  seconds: number;
  startedAt: number;
  finishedAt: number;
}

const JOB_OPTIONS: JobsOptions = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 5000 },
  removeOnComplete: false,
  removeOnFail: false,
};

/** Pages through the ids of a BullMQ state (ascending). */
async function* idsIn(queue: Queue, state: 'completed' | 'failed', page = 1000): AsyncGenerator<string> {
  for (let start = 0; ; start += page) {
    const ids = await queue.getRanges([state], start, start + page - 1, true);
    for (const id of ids) if (id) yield id;
    if (ids.length < page) return;
  }
}

export interface EnqueueReport {
  /** Jobs added now. */
  added: number;
  /** Jobs already in the queue, by BullMQ state. */
  existing: Record<string, number>;
  /** Jobs of this batch that are in the failed state (not retried unless asked). */
  failed: { job: BatchJob; reason: string }[];
  retried: number;
}

/** Adds the jobs (id = hash; present ones are left as they are). With retryFailed, failed ones are retried. */
export async function enqueueJobs(queue: Queue, jobs: BatchJob[], opts: { retryFailed?: boolean } = {}): Promise<EnqueueReport> {
  const report: EnqueueReport = { added: 0, existing: {}, failed: [], retried: 0 };
  const chunk = 200;
  for (let i = 0; i < jobs.length; i += chunk) {
    const part = jobs.slice(i, i + chunk);
    const states = await Promise.all(part.map((j) => queue.getJobState(j.hash)));
    const fresh: BatchJob[] = [];
    for (let k = 0; k < part.length; k++) {
      const st = states[k];
      if (st === 'unknown') { fresh.push(part[k]); continue; }
      report.existing[st] = (report.existing[st] ?? 0) + 1;
      if (st === 'failed') {
        const job = await Job.fromId(queue, part[k].hash);
        if (opts.retryFailed && job) {
          await job.retry('failed');
          report.retried++;
        } else {
          report.failed.push({ job: part[k], reason: job?.failedReason ?? 'failed' });
        }
      }
    }
    if (fresh.length) {
      await queue.addBulk(fresh.map((j) => ({ name: 'generate', data: j.spec, opts: { ...JOB_OPTIONS, jobId: j.hash } })));
      report.added += fresh.length;
    }
  }
  return report;
}

/** One collected job, for progress lines and the benchmark's overhead figures. */
export interface CollectedJob {
  job: BatchJob;
  files: string[];
  /** false when the folder already had it (a second delivery). */
  written: boolean;
  worker: string;
  seconds: number;
  /** ms from enqueue (job timestamp) to the start of its (last) processing, and from its completion to the files. */
  enqueueToStartMs: number;
  resultToFileMs: number;
}

export interface CollectOptions {
  log?: (line: string) => void;
  onCollected?: (c: CollectedJob) => void;
  onFailed?: (job: BatchJob, reason: string) => void;
  /** Seconds between full sweeps of the completed/failed sets when no event arrives (default 2). */
  sweepSeconds?: number;
  /** Called once the collector listens for completions (jobs enqueued after this wake it at once). */
  onReady?: () => void;
}

function validResult(v: unknown, hash: string, n: number): WorkerResult | string {
  if (!v || typeof v !== 'object') return 'the job has no result';
  const r = v as WorkerResult;
  if (r.v !== 1 || r.hash !== hash) return 'the result is for another job';
  if (!Array.isArray(r.pngs) || r.pngs.length !== n || r.pngs.some((p) => typeof p !== 'string')) return `the result has ${Array.isArray(r.pngs) ? r.pngs.length : 'no'} images, expected ${n}`;
  return r;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * Waits for the batch's jobs and writes each completed one into `out` as it arrives (files, then manifest),
 * then removes it from Redis. Returns the jobs that failed (with BullMQ's reason). Survives Redis restarts
 * (commands wait for the reconnection) and its own restarts (results stay in Redis until written).
 */
export async function collectJobs(queue: Queue, jobs: BatchJob[], out: OutputDir, opts: CollectOptions = {}): Promise<{ failed: { job: BatchJob; reason: string }[] }> {
  const log = opts.log ?? (() => {});
  const byHash = new Map<string, BatchJob>();
  for (const j of out.pending(jobs)) if (!byHash.has(j.hash)) byHash.set(j.hash, j);
  // Results already in the folder but still in Redis (a collector stopped between writing and removing them).
  const alreadyWritten = new Set(jobs.filter((j) => out.isDone(j)).map((j) => j.hash));
  const failed: { job: BatchJob; reason: string }[] = [];
  const hot = new Set<string>();
  let wake: (() => void) | null = null;
  const events = new QueueEvents(queue.name, { connection: queue.opts.connection as ConnectionOptions, prefix: queue.opts.prefix });
  events.on('error', errorLogger(log, 'redis (events)'));
  const notice = ({ jobId }: { jobId: string }) => {
    if (!byHash.has(jobId)) return;
    hot.add(jobId);
    wake?.();
  };
  events.on('completed', notice);
  events.on('failed', notice);
  const client = await queue.client;
  const keys = statsKeys(queue);

  const handle = async (id: string): Promise<void> => {
    const bj = byHash.get(id);
    if (!bj) return;
    const job = await Job.fromId(queue, id);
    if (!job) return; // removed meanwhile: the periodic check re-adds it
    const state = await job.getState();
    if (state === 'failed') {
      byHash.delete(id);
      const reason = job.failedReason || 'failed';
      failed.push({ job: bj, reason });
      opts.onFailed?.(bj, reason);
      return;
    }
    if (state !== 'completed') return;
    const r = validResult(job.returnvalue, id, bj.spec.settings.numImagesPerPrompt);
    if (typeof r === 'string') {
      // A completed job without a usable result cannot be written: fail it so it shows up, and move on.
      byHash.delete(id);
      failed.push({ job: bj, reason: r });
      opts.onFailed?.(bj, r);
      return;
    }
    const pngs = r.pngs.map((b) => Buffer.from(b, 'base64'));
    const bad = pngs.findIndex((p) => p.length < 8 || !p.subarray(0, 8).equals(PNG_SIGNATURE));
    if (bad >= 0) {
      byHash.delete(id);
      const reason = `image ${bad} of the result is not a PNG`;
      failed.push({ job: bj, reason });
      opts.onFailed?.(bj, reason);
      return;
    }
    const w = out.write(bj, pngs, { worker: r.worker, backend: r.backend, seconds: r.seconds });
    const fileAt = Date.now();
    byHash.delete(id);
    // Statistics only (not exact: a collector killed right after writing does not count that result; one killed
    // before its job leaves the queue has it collected and counted again by the next collector).
    if (w.written) await client.hincrby(keys.stats, 'collected', 1);
    await job.remove().catch((e: Error) => log(`could not remove job ${id.slice(0, 8)} from the queue: ${e.message}`));
    opts.onCollected?.({
      job: bj, files: w.files, written: w.written, worker: r.worker, seconds: r.seconds,
      enqueueToStartMs: (job.processedOn ?? r.startedAt) - job.timestamp,
      resultToFileMs: fileAt - (job.finishedOn ?? r.finishedAt),
    });
  };

  const sweep = async () => {
    for (const state of ['completed', 'failed'] as const) {
      for await (const id of idsIn(queue, state)) {
        if (byHash.has(id)) await handle(id);
        else if (state === 'completed' && alreadyWritten.delete(id)) await (await Job.fromId(queue, id))?.remove().catch(() => {});
      }
    }
  };
  // Jobs missing from Redis (an AOF that lost its last second, a flushed queue) are added again.
  const readdMissing = async () => {
    const missing: BatchJob[] = [];
    const ids = [...byHash.keys()];
    for (let i = 0; i < ids.length; i += 200) {
      const states = await Promise.all(ids.slice(i, i + 200).map((id) => queue.getJobState(id)));
      states.forEach((s, k) => { if (s === 'unknown') missing.push(byHash.get(ids[i + k])!); });
    }
    if (missing.length) {
      log(`${missing.length} job(s) of this batch are not in the queue any more: adding them again`);
      await enqueueJobs(queue, missing);
    }
  };

  try {
    await events.waitUntilReady();
    opts.onReady?.();
    const sweepMs = (opts.sweepSeconds ?? 2) * 1000;
    let lastSweep = 0;
    let lastCheck = Date.now();
    while (byHash.size) {
      if (hot.size) {
        const ids = [...hot];
        hot.clear();
        for (const id of ids) await handle(id);
        continue;
      }
      if (Date.now() - lastSweep >= sweepMs) {
        await sweep();
        lastSweep = Date.now();
        if (Date.now() - lastCheck >= 30_000) {
          await readdMissing();
          lastCheck = Date.now();
        }
        continue;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(50, sweepMs - (Date.now() - lastSweep)));
        wake = () => { clearTimeout(t); resolve(); };
      });
      wake = null;
    }
  } finally {
    await events.close().catch(() => {});
  }
  return { failed };
}

/** Statistics a worker keeps in Redis (one hash field per worker). */
export interface WorkerStats {
  name: string;
  host: string;
  pid: number;
  backend: string;
  model: string;
  /** Jobs done, and the images they made. */
  done: number;
  images: number;
  failed: number;
  refused: number;
  busyMs: number;
  startedAt: number;
  lastAt: number;
}

export interface WorkerOptions {
  url: string;
  queueName?: string;
  pipe: UnCLIPPipeline;
  modelDir: string;
  modelHash: string;
  name: string;
  /** BullMQ lock duration (ms): a job whose worker stops renewing it for this long is stalled (default 120 s). */
  lockDurationMs?: number;
  /** How often workers look for stalled jobs (ms, default 30 s). */
  stalledIntervalMs?: number;
  /** Times a job may stall before it fails (default 2). */
  maxStalledCount?: number;
  log?: (line: string) => void;
}

/**
 * Starts a BullMQ worker that renders karlo jobs with a loaded pipeline (concurrency 1: one pipeline runs one
 * job at a time). Jobs that are malformed or for another model fail at once (UnrecoverableError) with the
 * reason; render errors are retried by BullMQ. close() finishes the current job first.
 */
export function startWorker(o: WorkerOptions): { worker: Worker; close: () => Promise<void> } {
  const log = o.log ?? (() => {});
  const connection = parseRedisUrl(o.url);
  const stats: WorkerStats = {
    name: o.name, host: os.hostname(), pid: process.pid, backend: '', model: o.modelHash,
    done: 0, images: 0, failed: 0, refused: 0, busyMs: 0, startedAt: Date.now(), lastAt: Date.now(),
  };
  let statsKey = '';
  const saveStats = async (w: Worker) => {
    const client = await w.client;
    if (!statsKey) statsKey = `${w.opts.prefix ?? 'bull'}:${w.name}:karlo:workers`;
    await client.hset(statsKey, o.name, JSON.stringify(stats));
  };

  const worker: Worker = new Worker(o.queueName ?? DEFAULT_QUEUE_NAME, async (job: Job): Promise<WorkerResult> => {
    const problem = specProblem(job.data);
    if (problem) throw new UnrecoverableError(`malformed job: ${problem}`);
    const spec = job.data as JobSpec;
    const hash = jobHash(spec);
    if (job.id !== hash) throw new UnrecoverableError(`malformed job: its id ${job.id} is not the hash of its data (${hash})`);
    if (spec.model !== o.modelHash) {
      throw new UnrecoverableError(`model mismatch: the job is for model config ${spec.model.slice(0, 12)}, worker ${o.name} has ${o.modelHash.slice(0, 12)} (${o.modelDir}); run a worker with that model`);
    }
    const startedAt = Date.now();
    log(`start ${hash.slice(0, 8)} seed ${spec.seed} "${spec.prompt.length > 60 ? `${spec.prompt.slice(0, 57)}...` : spec.prompt}"`);
    const r = await renderJob(o.pipe, spec);
    const finishedAt = Date.now();
    stats.backend = r.backend;
    stats.done++;
    stats.images += r.pngs.length;
    stats.busyMs += finishedAt - startedAt;
    stats.lastAt = finishedAt;
    await saveStats(worker).catch(() => {});
    log(`done ${hash.slice(0, 8)} in ${r.seconds.toFixed(2)} s`);
    return { v: 1, hash, pngs: r.pngs.map((b) => b.toString('base64')), worker: o.name, backend: r.backend, seconds: r.seconds, startedAt, finishedAt };
  }, {
    connection,
    name: o.name,
    concurrency: 1,
    lockDuration: o.lockDurationMs ?? 120_000,
    // After a Redis outage, look for jobs again within 2 s (BullMQ's default waits 15 s).
    runRetryDelay: 2000,
    stalledInterval: o.stalledIntervalMs ?? 30_000,
    maxStalledCount: o.maxStalledCount ?? 2,
  });
  worker.on('error', errorLogger(log, 'redis'));
  worker.on('failed', (job, err) => {
    if (!job) return;
    if (err instanceof UnrecoverableError || /^(malformed job|model mismatch)/.test(err.message)) stats.refused++;
    else stats.failed++;
    stats.lastAt = Date.now();
    log(`failed ${String(job.id).slice(0, 8)}: ${err.message}`);
    saveStats(worker).catch(() => {});
  });
  worker.on('ready', () => { saveStats(worker).catch(() => {}); });
  return { worker, close: () => worker.close() };
}

export interface QueueStatus {
  counts: { waiting: number; active: number; completed: number; failed: number; delayed: number; prioritized: number; paused: number };
  /** Results written by collectors (all time, this queue). */
  collected: number;
  workers: (WorkerStats & { live: boolean; jobsPerMinute: number; imagesPerMinute: number })[];
  /** Jobs and images per minute of the live workers together (from their busy time). */
  jobsPerMinute: number;
  imagesPerMinute: number;
  /** Seconds until the waiting/active/delayed jobs are done at the jobs rate; null without live workers. */
  etaSeconds: number | null;
  failedReasons: { id: string; reason: string }[];
}

/** Counts, per-worker throughput (from the workers' own statistics) and an ETA. */
export async function queueStatus(queue: Queue): Promise<QueueStatus> {
  const c = await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized', 'paused');
  const counts = {
    waiting: c.waiting ?? 0, active: c.active ?? 0, completed: c.completed ?? 0, failed: c.failed ?? 0,
    delayed: c.delayed ?? 0, prioritized: c.prioritized ?? 0, paused: c.paused ?? 0,
  };
  const client = await queue.client;
  const keys = statsKeys(queue);
  const collected = Number((await client.hget(keys.stats, 'collected')) ?? 0);
  const raw = await client.hgetall(keys.workers);
  const liveNames = new Set<string>();
  for (const w of await queue.getWorkers()) {
    const rn = String((w as Record<string, unknown>).rawname ?? '');
    const i = rn.indexOf(':w:');
    if (i >= 0) liveNames.add(rn.slice(i + 3));
  }
  const workers = Object.values(raw).map((s) => {
    const w = JSON.parse(s) as WorkerStats;
    const perMin = (n: number) => (w.busyMs > 0 ? (60_000 * n) / w.busyMs : 0);
    return { ...w, live: liveNames.has(w.name), jobsPerMinute: perMin(w.done), imagesPerMinute: perMin(w.images ?? w.done) };
  }).sort((a, b) => a.name.localeCompare(b.name));
  const live = workers.filter((w) => w.live);
  const jobsPerMinute = live.reduce((s, w) => s + w.jobsPerMinute, 0);
  const imagesPerMinute = live.reduce((s, w) => s + w.imagesPerMinute, 0);
  const left = counts.waiting + counts.active + counts.delayed + counts.prioritized + counts.paused;
  const etaSeconds = jobsPerMinute > 0 ? (60 * left) / jobsPerMinute : left === 0 ? 0 : null;
  const failedJobs = await queue.getJobs(['failed'], 0, 9, false);
  return {
    counts, collected, workers, jobsPerMinute, imagesPerMinute, etaSeconds,
    failedReasons: failedJobs.filter(Boolean).map((j) => ({ id: String(j.id), reason: j.failedReason })),
  };
}
