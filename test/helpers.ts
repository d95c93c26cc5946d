// Shared test helpers: fixture paths, tensor comparison with the project's tolerance rule, backends under test.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, availableBackends, BackendUnavailableError, type BackendName } from '../src/backend/index.js';
import { registerNativeBackend } from '../src/backend/native/index.js';
import { compareArrays, type Comparison } from '../src/parity/compare.js';

export const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
export const fixture = (...p: string[]) => path.join(FIXTURES, ...p);

/**
 * Backends the parity tests run on: KARLO_TEST_BACKENDS (comma list) or every one of native, cpu that is
 * available here. wasm is added when asked for explicitly.
 */
export async function backendsUnderTest(): Promise<Exclude<BackendName, 'auto'>[]> {
  const env = process.env.KARLO_TEST_BACKENDS;
  const wanted = (env ? env.split(',').map((s) => s.trim()) : [...DEFAULT_TEST_BACKENDS]) as Exclude<BackendName, 'auto'>[];
  const ok = await availableBackends(wanted);
  if (env && ok.length !== wanted.length) {
    throw new Error(`KARLO_TEST_BACKENDS=${env}: unavailable here: ${wanted.filter((b) => !ok.includes(b)).join(', ')}`);
  }
  return ok;
}

/**
 * Registers the native backend; returns why it is unavailable, or undefined. The one policy for tests that need
 * the native backend: without it they fail with this reason (nativeUnavailableTest), never pass or skip silently.
 */
export async function registerNativeOrWhy(): Promise<string | undefined> {
  try {
    await registerNativeBackend();
    return undefined;
  } catch (e) {
    if (!(e instanceof BackendUnavailableError)) throw e;
    return e.message;
  }
}

/** The failing test a file that needs the native backend registers instead of its tests when it is unavailable. */
export function nativeUnavailableTest(test: (name: string, fn: () => void) => void, why: string, what: string): void {
  test(`native backend unavailable: ${what} cannot run`, () => {
    throw new Error(`native backend unavailable: ${why}`);
  });
}

/**
 * The backends the per-model parity tests run on: backendsUnderTest() plus wasm where it is available (DESIGN: all
 * backends run the parity tests; the tiny fixtures take about a second each on wasm). KARLO_TEST_BACKENDS, when
 * set, is the whole list.
 */
export async function parityBackends(): Promise<Exclude<BackendName, 'auto'>[]> {
  const base = await backendsUnderTest();
  if (process.env.KARLO_TEST_BACKENDS) return base;
  return [...new Set([...base, ...(await availableBackends(['wasm']))])];
}

/** The backends the tests run on by default: native (failing with its reason when unavailable) and cpu. */
export const DEFAULT_TEST_BACKENDS = ['native', 'cpu'] as const;

export async function useBackend(b: string): Promise<void> {
  await initBackend(b);
}

/** Throws with a readable message when ours differs from ref beyond the project's tolerance. */
export function assertClose(
  name: string,
  ours: tf.Tensor | Float32Array | Int32Array | number[],
  ref: { data: Float32Array | Int32Array; shape?: number[] } | Float32Array | number[],
  tol: { atol?: number; rtol?: number; scaleByMax?: boolean } = {},
): Comparison {
  const o = ours instanceof tf.Tensor ? (ours.dataSync() as Float32Array) : ours;
  const r = Array.isArray(ref) || ArrayBuffer.isView(ref) ? (ref as Float32Array) : (ref as { data: Float32Array }).data;
  if (ours instanceof tf.Tensor && !Array.isArray(ref) && !ArrayBuffer.isView(ref) && (ref as { shape?: number[] }).shape) {
    const rs = (ref as { shape: number[] }).shape;
    if (ours.shape.join(',') !== rs.join(',')) throw new Error(`${name}: shape [${ours.shape}] vs reference [${rs}]`);
  }
  const c = compareArrays(name, o, r, tol);
  if (!c.ok) throw new Error(`${name}: max abs err ${c.maxAbs.toExponential(3)} > allowed ${c.allowed.toExponential(3)} (max |ref| ${c.maxRef.toExponential(3)}, at index ${c.argmax})`);
  return c;
}

/** Deterministic uniform [lo, hi) values (xorshift32 from the seed), so a failing comparison reproduces. */
export function xorshiftUniform(shape: number[], seed: number, lo = -1, hi = 1): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = lo + ((s >>> 8) / 16777216) * (hi - lo);
  }
  return out;
}
