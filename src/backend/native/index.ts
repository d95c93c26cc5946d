// The `native` backend: every tfjs-backend-cpu kernel, with the heavy ones (GEMM, convolutions and their
// gradients, the big elementwise/normalisation kernels) run by oneDNN/OpenBLAS through the addon in native/.
// Tensors live in JS memory exactly as on the cpu backend, so the addon reads and writes them in place.
import * as tf from '@tensorflow/tfjs-core';
import { copyRegisteredKernels, getKernelsForBackend, registerKernel, unregisterKernel, type KernelFunc } from '@tensorflow/tfjs-core';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-cpu';
import { BackendUnavailableError } from '../index.js';
import { loadAddon, type NativeAddon } from './addon.js';
import { nativeKernelConfigs } from './kernels.js';

export { loadAddon, threadCount, type NativeAddon } from './addon.js';

export const NATIVE_BACKEND = 'native';

/** Per-kernel counts of addon calls and cpu fallbacks, filled while KARLO_NATIVE_STATS is set or after enableNativeStats(). */
export const nativeStats = new Map<string, { native: number; fallback: number }>();
let statsOn = !!process.env.KARLO_NATIVE_STATS;
export function enableNativeStats(on = true): void {
  statsOn = on;
}

/** Which library runs GEMMs: KARLO_NATIVE_GEMM=openblas|dnnl (default dnnl, measured faster here). */
export function gemmLibrary(): 'dnnl' | 'openblas' {
  const v = (process.env.KARLO_NATIVE_GEMM ?? 'dnnl').toLowerCase();
  if (v === 'openblas' || v === 'blas') return 'openblas';
  if (v === 'dnnl' || v === 'onednn') return 'dnnl';
  throw new Error(`KARLO_NATIVE_GEMM=${v}: expected dnnl or openblas`);
}

let registered = false;

/**
 * Registers the `native` tfjs backend (idempotent). Throws BackendUnavailableError with one line saying why and
 * how to fix it when the addon is not built or cannot load.
 */
export async function registerNativeBackend(): Promise<void> {
  if (registered) return;
  let addon: NativeAddon;
  try {
    addon = loadAddon();
  } catch (e) {
    throw new BackendUnavailableError(NATIVE_BACKEND, (e as Error).message);
  }
  const cpuKernels = new Map<string, KernelFunc>(getKernelsForBackend('cpu').map((k) => [k.kernelName, k.kernelFunc]));
  if (!tf.findBackendFactory(NATIVE_BACKEND)) tf.registerBackend(NATIVE_BACKEND, () => new MathBackendCPU(), 1);
  if (getKernelsForBackend(NATIVE_BACKEND).length === 0) copyRegisteredKernels('cpu', NATIVE_BACKEND);
  const configs = nativeKernelConfigs(addon, NATIVE_BACKEND, cpuKernels, {
    gemm: gemmLibrary(),
    stats: () => (statsOn ? nativeStats : undefined),
  });
  const copied = new Set(getKernelsForBackend(NATIVE_BACKEND).map((k) => k.kernelName));
  for (const config of configs) {
    if (!cpuKernels.has(config.kernelName)) continue; // nothing to fall back to: leave it to tfjs
    if (copied.has(config.kernelName)) unregisterKernel(config.kernelName, NATIVE_BACKEND);
    registerKernel(config);
  }
  registered = true;
}

/** One line about the native libraries (versions, threads), or why the addon is unavailable. */
export function describeNative(): string {
  try {
    return loadAddon().describe();
  } catch (e) {
    return (e as Error).message;
  }
}
