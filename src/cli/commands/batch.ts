// `karlo batch PROMPTS --model DIR --out DIR`: many images. In-process by default (one pipeline kept loaded);
// with --queue redis://host:port/db the jobs go into a BullMQ queue for `karlo worker`s on any machines, and
// --wait collects their results into DIR. `karlo batch status --queue URL` shows the queue.
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { UsageError } from '../errors.js';
import { Progress, formatSeconds } from '../progress.js';
import { addGenerationOptions, parseSeedArg, readGenerationArgs, type GenerationArgs } from '../generation_options.js';
import { DEFAULT_MODEL_DIR, DEFAULT_MODEL_NOTE } from '../../package_root.js';
import { BatchInputError, buildJobs, readSeedsFile, type BatchJob } from '../../batch/jobs.js';
import { ModelHashError, modelConfigHash } from '../../batch/model_hash.js';
import { OutputDir, OutputDirError } from '../../batch/output.js';
import { defaultWorkerName } from '../../batch/render.js';

interface BatchArgs extends GenerationArgs {
  prompts: string;
  model?: string;
  out?: string;
  seed?: string;
  seeds?: string;
  queue?: string;
  'queue-name'?: string;
  wait?: boolean;
  'retry-failed'?: boolean;
  'low-memory'?: boolean;
  json?: boolean;
  backend?: string;
}

interface StatusArgs {
  queue?: string;
  'queue-name'?: string;
  json?: boolean;
}

export function fmtDuration(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s - 60 * m)).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h${String(m % 60).padStart(2, '0')}m` : `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

function say(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** ETA from the jobs finished so far in this run. */
function eta(t0: number, done: number, total: number): string {
  const el = (performance.now() - t0) / 1000;
  return done >= total ? `took ${formatSeconds(el)}` : `ETA ${done > 0 ? formatSeconds((el / done) * (total - done)) : '?'}`;
}

function loadJobs(argv: BatchArgs): { jobs: BatchJob[]; modelDir: string; modelHash: string } {
  const { opts } = readGenerationArgs(argv);
  if (argv.seed !== undefined && argv.seeds !== undefined) throw new UsageError('give --seed or --seeds, not both');
  const seed = parseSeedArg(argv.seed);
  const modelDir = argv.model ?? DEFAULT_MODEL_DIR;
  if (!argv.model) say(DEFAULT_MODEL_NOTE);
  let modelHash: string;
  try {
    modelHash = modelConfigHash(modelDir);
  } catch (e) {
    if (e instanceof ModelHashError) throw new UsageError(e.message);
    throw e;
  }
  try {
    const seeds = argv.seeds !== undefined ? readSeedsFile(String(argv.seeds)) : undefined;
    const jobs = buildJobs(String(argv.prompts), { ...opts, seed, seeds }, modelHash);
    const first = new Map<string, BatchJob>();
    for (const j of jobs) {
      const f = first.get(j.hash);
      if (f) say(`note: ${j.where} repeats ${f.where} (same prompt, seed and settings): it is made once, as ${f.where}`);
      else first.set(j.hash, j);
    }
    return { jobs, modelDir, modelHash };
  } catch (e) {
    if (e instanceof BatchInputError) throw new UsageError(e.message);
    throw e;
  }
}

function openOut(argv: BatchArgs): OutputDir {
  if (argv.out === undefined || String(argv.out).trim() === '') throw new UsageError('--out DIR is required (the folder for the PNGs and manifest.jsonl)');
  try {
    return new OutputDir(String(argv.out));
  } catch (e) {
    if (e instanceof OutputDirError) throw new UsageError(e.message);
    throw e;
  }
}

async function runInProcess(argv: BatchArgs, jobs: BatchJob[], modelDir: string, out: OutputDir): Promise<void> {
  const { initBackend } = await import('../../backend/index.js');
  const { UnCLIPPipeline } = await import('../../pipeline/unclip_pipeline.js');
  const { ModelFolderError } = await import('../../io/model_folder.js');
  const { runLocal } = await import('../../batch/local.js');
  const pending = out.pending(jobs);
  say(`batch: ${jobs.length} jobs from ${argv.prompts}, ${jobs.length - pending.length} already done in ${out.dir}, ${pending.length} to run`);
  const t0 = performance.now();
  let done = 0;
  let images = 0;
  if (pending.length) {
    try {
      say((await initBackend(argv.backend)).message);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    let pipe;
    try {
      pipe = await UnCLIPPipeline.load(modelDir, { keepLoaded: !argv['low-memory'] });
    } catch (e) {
      if (e instanceof ModelFolderError) throw new UsageError(e.message);
      throw new UsageError(`${modelDir}: ${(e as Error).message}`);
    }
    // First signal: finish the current job, then stop (rerun to resume). Second: stop now (files are atomic).
    let stop = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stop) process.exit(sig === 'SIGINT' ? 130 : 143);
      stop = true;
      say(`${sig}: finishing the current job, then stopping (run the same command again to resume)`);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const worker = defaultWorkerName();
    const t1 = performance.now();
    const progress = new Progress();
    progress.begin('batch', new Set(pending.map((j) => j.hash)).size, 'job');
    try {
      const r = await runLocal(pipe, jobs, out, {
        worker,
        shouldStop: () => stop,
        onDone: (p) => {
          images += p.files.length;
          progress.log(`[${p.done}/${p.total}] ${p.files.join(' ')}  ${p.seconds.toFixed(2)} s  ${eta(t1, p.done, p.total)}`);
          progress.tick();
        },
      });
      done = r.done;
    } finally {
      progress.end();
      pipe.dispose();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const left = out.pending(jobs).length;
  if (argv.json) {
    process.stdout.write(`${JSON.stringify({ out: out.dir, jobs: jobs.length, skipped: jobs.length - pending.length, done, images, left, seconds })}\n`);
  } else {
    process.stdout.write(`${done} jobs (${images} images) written to ${out.dir} in ${fmtDuration(seconds)}` +
      `${done && seconds > 0 ? ` (${((60 * images) / seconds).toFixed(1)} images/min)` : ''}; ${jobs.length - pending.length} were already done; ${left} left\n`);
  }
  if (left > 0) process.exitCode = 1;
}

async function runQueued(argv: BatchArgs, jobs: BatchJob[], out: OutputDir): Promise<void> {
  const { openQueue, enqueueJobs, collectJobs, redactUrl, QueueUrlError } = await import('../../batch/queue.js');
  const url = String(argv.queue);
  let queue;
  try {
    queue = openQueue(url, argv['queue-name'], say);
  } catch (e) {
    if (e instanceof QueueUrlError) throw new UsageError(e.message);
    throw e;
  }
  const onSignal = (sig: NodeJS.Signals) => {
    say(`${sig}: stopping; finished results stay in the queue until a collector writes them (run the same command again)`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const pending = out.pending(jobs);
    const t0 = performance.now();
    const rep = await enqueueJobs(queue, pending, { retryFailed: argv['retry-failed'] });
    const ex = Object.entries(rep.existing).map(([k, v]) => `${k} ${v}`).join(', ');
    say(`batch: ${jobs.length} jobs from ${argv.prompts}, ${jobs.length - pending.length} already done in ${out.dir}; ` +
      `queue ${queue.name} at ${redactUrl(url)}: ${rep.added} added${ex ? `, already there: ${ex}` : ''}${rep.retried ? `, ${rep.retried} failed ones retried` : ''}`);
    for (const f of rep.failed) say(`failed earlier: ${f.job.where} (${f.job.hash.slice(0, 8)}): ${f.reason} (--retry-failed retries it)`);
    if (!argv.wait) {
      if (argv.json) process.stdout.write(`${JSON.stringify({ queue: queue.name, jobs: jobs.length, skipped: jobs.length - pending.length, added: rep.added, existing: rep.existing, failed: rep.failed.length })}\n`);
      else process.stdout.write(`${rep.added} jobs added to queue ${queue.name}; collect with --wait (same arguments)\n`);
      return;
    }
    let collected = 0;
    let images = 0;
    const unique = new Set(pending.map((j) => j.hash)).size;
    const progress = new Progress();
    progress.begin('batch', unique, 'job');
    let failedCount = 0;
    const { failed } = await collectJobs(queue, jobs, out, {
      log: (l) => progress.log(l),
      onCollected: (c) => {
        collected++;
        images += c.files.length;
        progress.log(`[${collected}/${unique}] ${c.written ? 'wrote' : 'already had'} ${c.files.join(' ')}  ${c.seconds.toFixed(2)} s on ${c.worker}  ${eta(t0, collected + failedCount, unique)}`);
        progress.tick();
      },
      onFailed: (job, reason) => {
        failedCount++;
        progress.log(`failed: ${job.where} (${job.hash.slice(0, 8)}): ${reason}`);
        progress.tick();
      },
    }).finally(() => progress.end());
    const seconds = (performance.now() - t0) / 1000;
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ out: out.dir, jobs: jobs.length, skipped: jobs.length - pending.length, done: collected, images, failed: failed.map((f) => ({ index: f.job.index, hash: f.job.hash, where: f.job.where, reason: f.reason })), seconds })}\n`);
    } else {
      process.stdout.write(`${collected} jobs (${images} images) collected into ${out.dir} in ${fmtDuration(seconds)}; ${jobs.length - pending.length} were already done; ${failed.length} failed\n`);
    }
    if (failed.length) process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await queue.close().catch(() => {});
  }
}

async function run(argv: ArgumentsCamelCase<BatchArgs>): Promise<void> {
  if (argv.prompts === undefined) throw new UsageError('name a prompt file: karlo batch prompts.txt --out DIR (or karlo batch status --queue URL)');
  if (argv.wait && !argv.queue) throw new UsageError('--wait needs --queue (without --queue the batch runs here and waits anyway)');
  if (argv['retry-failed'] && !argv.queue) throw new UsageError('--retry-failed needs --queue');
  const { jobs, modelDir } = loadJobs(argv);
  const out = openOut(argv);
  try {
    if (argv.queue) await runQueued(argv, jobs, out);
    else await runInProcess(argv, jobs, modelDir, out);
  } finally {
    out.close();
  }
}

async function runStatus(argv: ArgumentsCamelCase<StatusArgs>): Promise<void> {
  if (!argv.queue) throw new UsageError('karlo batch status needs --queue redis://host:port/db');
  const { openQueue, queueStatus, redactUrl, QueueUrlError } = await import('../../batch/queue.js');
  let queue;
  try {
    queue = openQueue(String(argv.queue), argv['queue-name'], say);
  } catch (e) {
    if (e instanceof QueueUrlError) throw new UsageError(e.message);
    throw e;
  }
  try {
    const s = await queueStatus(queue);
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ queue: queue.name, ...s })}\n`);
      return;
    }
    const c = s.counts;
    const lines = [
      `queue ${queue.name} at ${redactUrl(String(argv.queue))}`,
      `waiting ${c.waiting + c.prioritized + c.paused}  active ${c.active}  delayed ${c.delayed}  done ${s.collected + c.completed} (collected ${s.collected}, waiting for a collector ${c.completed})  failed ${c.failed}`,
    ];
    const now = Date.now();
    lines.push(`workers: ${s.workers.filter((w) => w.live).length} live of ${s.workers.length} seen`);
    for (const w of s.workers) {
      lines.push(`  ${w.name.padEnd(24)} ${w.live ? 'live' : 'gone'}  ${w.backend || '-'}  model ${w.model.slice(0, 8)}  done ${w.done}  failed ${w.failed}  refused ${w.refused}  ` +
        `${w.imagesPerMinute.toFixed(2)} images/min  last ${fmtDuration((now - w.lastAt) / 1000)} ago`);
    }
    lines.push(s.etaSeconds === null
      ? 'ETA: ? (no live worker)'
      : `ETA ${fmtDuration(s.etaSeconds)} at ${s.jobsPerMinute.toFixed(2)} jobs/min (${s.imagesPerMinute.toFixed(2)} images/min) from the live workers`);
    for (const f of s.failedReasons) lines.push(`failed ${f.id.slice(0, 8)}: ${f.reason}`);
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await queue.close().catch(() => {});
  }
}

const queueOptions = <T>(y: Argv<T>) => y
  .option('queue', { type: 'string', describe: 'Redis URL of the BullMQ queue: redis://host:port/db' })
  .option('queue-name', { type: 'string', describe: 'BullMQ queue name (default karlo)' })
  .option('json', { type: 'boolean', describe: 'print one JSON object on stdout' });

const statusCommand: CommandModule<object, StatusArgs> = {
  command: 'status',
  describe: 'counts (waiting, active, done, failed), per-worker throughput and an ETA for a queue',
  builder: (y: Argv) => queueOptions(y) as unknown as Argv<StatusArgs>,
  handler: runStatus,
};

const command: CommandModule<object, BatchArgs> = {
  command: 'batch [prompts]',
  describe: 'many images from a prompt file (.txt or .jsonl), here or through a Redis queue; resumable',
  builder: (y: Argv) => addGenerationOptions(queueOptions(y
    .command(statusCommand as CommandModule)
    .positional('prompts', { type: 'string', describe: '.txt (one prompt per line) or .jsonl ({"prompt", "seed"?, "decoder_steps"?, …, "meta"?} per line)' })
    .option('model', { type: 'string', describe: 'diffusers-layout Karlo folder; with --queue only its configs are read (the job identity)' })
    .option('out', { type: 'string', describe: 'output folder: <index>-<hash8>.png per image and manifest.jsonl' })
    .option('seed', { type: 'string', describe: 'base seed: prompt i gets seed+i (default 0); a .jsonl "seed" wins' })
    .option('seeds', { type: 'string', describe: 'file with one seed per prompt (instead of --seed)' })
    .option('wait', { type: 'boolean', describe: 'with --queue: wait for the results and write them into --out as they complete' })
    .option('retry-failed', { type: 'boolean', describe: 'with --queue: retry jobs of this batch that failed earlier' })
    .option('low-memory', { type: 'boolean', describe: 'in-process: load each stage per job and release it after (real size: peak RSS ≈ 7 GB instead of the 13.7 GB of weights held plus activations; ≈ 30 s more per image)' })))
    .example('$0 batch prompts.txt --model karlo-v1-alpha --out run1', 'in-process, model kept loaded')
    .example('$0 batch prompts.jsonl --model karlo-v1-alpha --out run1 --queue redis://10.0.0.1:6379/0 --wait', 'through workers on other machines') as unknown as Argv<BatchArgs>,
  handler: run,
};

export default command;
