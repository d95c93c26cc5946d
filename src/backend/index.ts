// Choosing and preparing the tfjs backend, once, at start.
// Order for 'auto': tensorflow (tfjs-node-gpu, then tfjs-node), native, wasm, cpu.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { BackendChoiceError, BackendUnavailableError } from './errors.js';

export type BackendName = 'auto' | 'tensorflow' | 'native' | 'wasm' | 'cpu';
export const BACKEND_NAMES: BackendName[] = ['auto', 'tensorflow', 'native', 'wasm', 'cpu'];

export interface BackendChoice {
  /** What was asked for. */
  requested: BackendName;
  /** What runs: 'tensorflow' | 'native' | 'wasm' | 'cpu'. */
  name: Exclude<BackendName, 'auto'>;
  /** The tfjs backend name registered with the engine ('tensorflow', 'native', 'wasm', 'cpu'). */
  tfBackend: string;
  /** One short line: `backend: native (oneDNN 2.6, 2 threads)`. */
  message: string;
  /** Why `auto` skipped the backends before it (one entry each; for --verbose). */
  skipped: string[];
  /** For wasm and cpu: one line with the expected slowdown and how to get a faster backend; else undefined. */
  warning?: string;
}

export { BackendChoiceError, BackendUnavailableError } from './errors.js';

let current: BackendChoice | undefined;

/** The backend initBackend chose last (undefined before the first call). */
export function currentBackend(): BackendChoice | undefined {
  return current;
}

/** Short details for the backend line (library versions, threads). */
async function detailsOf(b: Exclude<BackendName, 'auto'>, pkg?: string): Promise<string> {
  if (b === 'native') {
    try {
      const mod = await import('./native/index.js');
      const d = mod.describeNative();
      const dnnl = /oneDNN (\d+\.\d+)/.exec(d)?.[1];
      const threads = /(\d+) threads?/.exec(d)?.[1];
      return [dnnl ? `oneDNN ${dnnl}` : '', /OpenBLAS/.test(d) && !dnnl ? 'OpenBLAS' : '', threads ? `${threads} thread${threads === '1' ? '' : 's'}` : '']
        .filter(Boolean).join(', ');
    } catch {
      return '';
    }
  }
  if (b === 'tensorflow') return pkg ?? '';
  if (b === 'wasm') return 'SIMD, 1 thread';
  return 'pure JavaScript';
}

/** How much slower than native a backend runs Karlo's UNets (measured here, decoder step), and the fix. */
const SLOW_WARNING: Partial<Record<Exclude<BackendName, 'auto'>, string>> = {
  wasm: 'warning: the wasm backend runs Karlo about 5-10x slower than native',
  cpu: 'warning: the cpu backend (pure JavaScript) runs Karlo about 300x slower than native',
};
const FASTER = 'for the native backend install g++ make python3 libdnnl-dev libopenblas-dev (apt-get), then run `npm rebuild karlo-tfjs`' +
  ' (in a clone: `npm run build:native`); or `npm install @tensorflow/tfjs-node`';


/** How optional packages are imported (replaceable in tests to simulate absent or broken installs). */
export type PackageImporter = (pkg: string) => Promise<unknown>;
const defaultImporter: PackageImporter = (pkg) => import(pkg);
let importPackage: PackageImporter = defaultImporter;

/** Test seam: replace (or with null restore) how tfjs-node(-gpu) are imported. */
export function setPackageImporter(fn: PackageImporter | null): void {
  importPackage = fn ?? defaultImporter;
}

export const TENSORFLOW_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'];

async function tryTensorflow(): Promise<string> {
  const reasons: string[] = [];
  for (const pkg of TENSORFLOW_PACKAGES) {
    try {
      // Never imported at load time: these packages download libtensorflow at install and may be absent.
      await importPackage(pkg);
      if (tf.findBackend('tensorflow') && (await tf.setBackend('tensorflow'))) return pkg;
      reasons.push(`${pkg} loaded but did not register the tensorflow backend`);
    } catch (e) {
      const msg = String((e as Error)?.message ?? e).split('\n')[0];
      const missing = /Cannot find (package|module)/.test(msg) && msg.includes(pkg);
      reasons.push(missing ? `${pkg} is not installed` : `${pkg} failed to load (${msg})`);
    }
  }
  throw new BackendUnavailableError('tensorflow', `${reasons.join('; ')}. Install with: npm install @tensorflow/tfjs-node (CPU) or @tensorflow/tfjs-node-gpu (CUDA 11.2 + cuDNN 8.1)`);
}

async function tryNative(): Promise<void> {
  const mod = await import('./native/index.js');
  await mod.registerNativeBackend();
  if (!(await tf.setBackend('native'))) throw new BackendUnavailableError('native', 'tf.setBackend("native") failed');
}

async function tryWasm(): Promise<void> {
  try {
    await import('@tensorflow/tfjs-backend-wasm');
  } catch (e) {
    throw new BackendUnavailableError('wasm', `@tensorflow/tfjs-backend-wasm failed to load: ${(e as Error).message}`);
  }
  if (!(await tf.setBackend('wasm'))) throw new BackendUnavailableError('wasm', 'tf.setBackend("wasm") failed');
}

async function tryCpu(): Promise<void> {
  if (!(await tf.setBackend('cpu'))) throw new BackendUnavailableError('cpu', 'tf.setBackend("cpu") failed');
}

const attempts: Record<Exclude<BackendName, 'auto'>, () => Promise<unknown>> = {
  tensorflow: tryTensorflow,
  native: tryNative,
  wasm: tryWasm,
  cpu: tryCpu,
};

function reasonOf(e: unknown): string {
  return e instanceof BackendUnavailableError ? e.message.replace(/^backend "[^"]+" is unavailable: /, '') : (e as Error).message;
}

/** Resolves the backend from an explicit choice, else KARLO_BACKEND, else 'auto'. */
export function requestedBackend(explicit?: string): BackendName {
  const v = (explicit ?? (process.env.KARLO_BACKEND || 'auto')).trim();
  if (!(BACKEND_NAMES as string[]).includes(v)) {
    throw new BackendChoiceError(`unknown backend "${v}"${explicit ? '' : ' (from KARLO_BACKEND)'}: choose one of ${BACKEND_NAMES.join(', ')}`);
  }
  return v as BackendName;
}

/**
 * Initialises the backend. A named backend that is unavailable is an error that says why; 'auto' falls through
 * tensorflow → native → wasm → cpu and says which it took and why it skipped the others.
 */
export async function initBackend(name?: string, opts: { log?: (line: string) => void } = {}): Promise<BackendChoice> {
  const requested = requestedBackend(name);
  const order: Exclude<BackendName, 'auto'>[] = requested === 'auto' ? ['tensorflow', 'native', 'wasm', 'cpu'] : [requested];
  const skipped: string[] = [];
  for (const b of order) {
    try {
      const got = await attempts[b]();
      await tf.ready();
      // tfjs-backend-cpu (and backends built on it) prints a "install tfjs-node" banner on its first tensor;
      // our own message below already says which backend runs and why.
      const be = tf.backend() as unknown as { firstUse?: boolean };
      if (be && typeof be.firstUse === 'boolean') be.firstUse = false;
      const details = await detailsOf(b, typeof got === 'string' ? got : undefined);
      const message = `backend: ${b}${details ? ` (${details})` : ''}`;
      const warning = SLOW_WARNING[b] ? `${SLOW_WARNING[b]}; ${FASTER}` : undefined;
      opts.log?.(message);
      current = { requested, name: b, tfBackend: tf.getBackend(), message, skipped, ...(warning ? { warning } : {}) };
      return current;
    } catch (e) {
      if (requested !== 'auto') {
        throw e instanceof BackendUnavailableError ? e : new BackendUnavailableError(b, (e as Error).message);
      }
      skipped.push(`${b}: ${reasonOf(e).replace(/\s*\n\s*/g, ' ')}`);
    }
  }
  throw new Error(`no backend could be initialised: ${skipped.join('; ')}`);
}

/** Which of the given backends can be initialised here (for tests that run on every backend). */
export async function availableBackends(candidates: Exclude<BackendName, 'auto'>[]): Promise<Exclude<BackendName, 'auto'>[]> {
  const prev = tf.getBackend();
  const ok: Exclude<BackendName, 'auto'>[] = [];
  for (const b of candidates) {
    try {
      await attempts[b]();
      ok.push(b);
    } catch {
      /* unavailable */
    }
  }
  if (prev) await tf.setBackend(prev);
  return ok;
}
