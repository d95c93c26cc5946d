// `karlo worker --queue redis://host:port/db --model DIR`: pulls `karlo batch` jobs from the BullMQ queue, keeps
// the model loaded, returns the PNGs through the queue. SIGTERM/SIGINT: finish the current job, then exit 0
// (a second signal exits at once; the job is then retried elsewhere after the stall interval).
// --concurrency N runs N worker processes (one pipeline each: a pipeline runs one job at a time).
import { spawn, type ChildProcess } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { UsageError } from '../errors.js';
import { DEFAULT_MODEL_DIR } from '../../package_root.js';
import { ModelHashError, modelConfigHash } from '../../batch/model_hash.js';
import { defaultWorkerName } from '../../batch/render.js';

interface WorkerArgs {
  queue?: string;
  'queue-name'?: string;
  model?: string;
  concurrency?: number;
  name?: string;
  'lock-duration'?: number;
  'stalled-interval'?: number;
  'max-stalled'?: number;
  'low-memory'?: boolean;
  backend?: string;
}

function stamp(): string {
  return new Date().toISOString().slice(11, 19);
}

function positive(name: string, v: number | undefined, integer: boolean): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
    throw new UsageError(`--${name} must be a positive ${integer ? 'integer' : 'number'}, got ${String(v)}`);
  }
}

/** --concurrency N > 1: N child processes running this command with --concurrency 1; signals are passed on. */
async function runChildren(argv: WorkerArgs, n: number): Promise<void> {
  const base = argv.name ?? defaultWorkerName();
  const args = process.argv.slice(1).filter((a, i, all) => !(a === '--concurrency' || a.startsWith('--concurrency=') || all[i - 1] === '--concurrency' || a === '--name' || a.startsWith('--name=') || all[i - 1] === '--name'));
  const threads = Math.max(1, Math.floor(os.availableParallelism() / n));
  const children: ChildProcess[] = [];
  const exits: Promise<number>[] = [];
  for (let i = 0; i < n; i++) {
    const c = spawn(process.execPath, [...process.execArgv, ...args, '--concurrency', '1', '--name', `${base}.${i}`], {
      stdio: 'inherit',
      env: { ...process.env, KARLO_NATIVE_THREADS: process.env.KARLO_NATIVE_THREADS ?? String(threads), KARLO_WORKER_PARENT: String(process.pid) },
    });
    children.push(c);
    exits.push(new Promise((resolve) => c.on('exit', (code, sig) => resolve(code ?? (sig ? 1 : 0)))));
  }
  const forward = (sig: NodeJS.Signals) => { for (const c of children) if (c.exitCode === null) c.kill(sig); };
  process.on('SIGTERM', forward);
  process.on('SIGINT', forward);
  const codes = await Promise.all(exits);
  process.exitCode = codes.find((c) => c !== 0) ?? 0;
}

async function run(argv: ArgumentsCamelCase<WorkerArgs>): Promise<void> {
  if (!argv.queue) throw new UsageError('karlo worker needs --queue redis://host:port/db');
  positive('concurrency', argv.concurrency, true);
  positive('lock-duration', argv['lock-duration'], false);
  positive('stalled-interval', argv['stalled-interval'], false);
  if (argv['max-stalled'] !== undefined && !(Number.isInteger(argv['max-stalled']) && argv['max-stalled'] >= 0)) {
    throw new UsageError(`--max-stalled must be a non-negative integer, got ${String(argv['max-stalled'])}`);
  }
  const { parseRedisUrl, startWorker, redactUrl, QueueUrlError, DEFAULT_QUEUE_NAME } = await import('../../batch/queue.js');
  try {
    parseRedisUrl(String(argv.queue));
  } catch (e) {
    if (e instanceof QueueUrlError) throw new UsageError(e.message);
    throw e;
  }
  const modelDir = argv.model ?? DEFAULT_MODEL_DIR;
  let modelHash: string;
  try {
    modelHash = modelConfigHash(modelDir);
  } catch (e) {
    if (e instanceof ModelHashError) throw new UsageError(e.message);
    throw e;
  }
  if ((argv.concurrency ?? 1) > 1) return runChildren(argv, argv.concurrency!);

  const name = argv.name ?? defaultWorkerName();
  const log = (line: string) => process.stderr.write(`${stamp()} worker ${name}: ${line}\n`);
  const { initBackend } = await import('../../backend/index.js');
  const { UnCLIPPipeline } = await import('../../pipeline/unclip_pipeline.js');
  const { ModelFolderError } = await import('../../io/model_folder.js');
  try {
    log((await initBackend(argv.backend)).message);
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
  const w = startWorker({
    url: String(argv.queue), queueName: argv['queue-name'] ?? DEFAULT_QUEUE_NAME, pipe, modelDir: path.resolve(modelDir), modelHash, name, log,
    lockDurationMs: argv['lock-duration'] !== undefined ? argv['lock-duration'] * 1000 : undefined,
    stalledIntervalMs: argv['stalled-interval'] !== undefined ? argv['stalled-interval'] * 1000 : undefined,
    maxStalledCount: argv['max-stalled'],
  });
  log(`waiting for jobs on queue ${argv['queue-name'] ?? DEFAULT_QUEUE_NAME} at ${redactUrl(String(argv.queue))} (model config ${modelHash.slice(0, 12)})`);
  await new Promise<void>((resolve) => {
    let closing = false;
    const stop = (why: string, exitCode: number) => {
      if (closing) {
        log(`${why} again: exiting now`);
        process.exit(exitCode);
      }
      closing = true;
      log(`${why}: finishing the current job, then exiting`);
      w.close().then(() => {
        pipe.dispose();
        log('stopped');
        resolve();
      }, (e: Error) => {
        log(`close: ${e.message}`);
        resolve();
      });
    };
    const onSignal = (sig: NodeJS.Signals) => stop(sig, sig === 'SIGINT' ? 130 : 143);
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // A child of --concurrency N whose parent died (kill -9) stops like on SIGTERM instead of running on alone.
    const parent = Number(process.env.KARLO_WORKER_PARENT);
    if (parent > 0) {
      const t = setInterval(() => {
        if (process.ppid !== parent) {
          clearInterval(t);
          stop('the parent worker process is gone', 1);
        }
      }, 2000);
      t.unref();
    }
  });
}

const command: CommandModule<object, WorkerArgs> = {
  command: 'worker',
  describe: 'render `karlo batch` jobs from a Redis queue (BullMQ), keeping the model loaded',
  builder: (y: Argv) => y
    .option('queue', { type: 'string', describe: 'Redis URL of the queue: redis://host:port/db' })
    .option('queue-name', { type: 'string', describe: 'BullMQ queue name (default karlo)' })
    .option('model', { type: 'string', describe: 'diffusers-layout Karlo folder (jobs for another model config are refused)' })
    .option('concurrency', { type: 'number', describe: 'worker processes on this machine, one model each (default 1)' })
    .option('name', { type: 'string', describe: 'worker name in manifests and `batch status` (default host-pid)' })
    .option('lock-duration', { type: 'number', describe: 'seconds without a lock renewal before a job counts as stalled and is retried elsewhere (default 120)' })
    .option('stalled-interval', { type: 'number', describe: 'seconds between checks for stalled jobs (default 30)' })
    .option('max-stalled', { type: 'number', describe: 'times a job may stall before it fails (default 2)' })
    .option('low-memory', { type: 'boolean', describe: 'load each stage per job and release it after (real size: peak RSS ≈ 7 GB instead of the 13.7 GB of weights held plus activations; ≈ 30 s more per image)' }) as unknown as Argv<WorkerArgs>,
  handler: run,
};

export default command;
