// The `native` backend: every tfjs-backend-cpu kernel, with the heavy ones (GEMM, convolutions and their
// gradients, the big elementwise/normalisation kernels) run by oneDNN/OpenBLAS through the addon in native/.
// Tensors live in JS memory exactly as on the cpu backend, so the addon reads and writes them in place.
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { getKernelsForBackend, registerKernel, unregisterKernel, type KernelFunc } from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { BackendUnavailableError } from '../errors.js';
import { registerMemoryTrimmer } from '../memory.js';
import { loadAddon, poolBudgetMB, type NativeAddon } from './addon.js';
import { BufferPool, PooledCPUBackend } from './buffer_pool.js';
import { nativeKernelConfigs } from './kernels/index.js';
import { GROUP_NORM_GRAD_KERNEL, GROUP_NORM_KERNEL } from '../../ops/group_norm.js';

export { loadAddon, threadCount, poolBudgetMB, convAlgo, CONV_ALGO, type ConvAlgoName, type NativeAddon } from './addon.js';
export { BufferPool, PooledCPUBackend } from './buffer_pool.js';

export const NATIVE_BACKEND = 'native';

/** Per-kernel counts of addon calls and cpu fallbacks, filled while KARLO_NATIVE_STATS is set or after enableNativeStats(). */
export const nativeStats = new Map<string, { native: number; fallback: number }>();
let statsOn = !!process.env.KARLO_NATIVE_STATS;
export function enableNativeStats(on = true): void {
  statsOn = on;
}

/** OpenBLAS core names (OPENBLAS_CORETYPE, DYNAMIC_ARCH builds) whose kernels use AVX-512. */
const OPENBLAS_AVX512_CORES = /^(skylakex|cooperlake|sapphirerapids)$/i;

let cpuFlagsCache: Set<string> | undefined;
/** The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere). */
export function cpuFlags(): Set<string> {
  if (!cpuFlagsCache) {
    try {
      const line = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
      cpuFlagsCache = new Set(line.trim().split(/\s+/));
    } catch {
      cpuFlagsCache = new Set();
    }
  }
  return cpuFlagsCache;
}

/**
 * Why OpenBLAS runs below this CPU, or null: OPENBLAS_CORETYPE names a core without AVX-512 (e.g. Haswell) on a CPU
 * with it, so OpenBLAS runs its AVX2 kernels (measured here on 2048³: 109 GFLOP/s forced to Haswell, 205 unforced,
 * oneDNN 195 either way).
 */
export function openblasForcedBelowCpu(env: NodeJS.ProcessEnv = process.env, flags: Set<string> = cpuFlags()): string | null {
  const core = env.OPENBLAS_CORETYPE;
  if (!core || OPENBLAS_AVX512_CORES.test(core) || !flags.has('avx512f')) return null;
  return `OPENBLAS_CORETYPE=${core} restricts OpenBLAS to ${core}'s kernels on this AVX-512 CPU`;
}

/**
 * Which library runs GEMMs: KARLO_NATIVE_GEMM=auto|dnnl|openblas. auto (default) chooses per shape what measured
 * faster here: OpenBLAS for single large GEMMs with every dimension >= 1024, oneDNN matmul for everything else;
 * oneDNN for every shape when OPENBLAS_CORETYPE holds OpenBLAS below the CPU (openblasForcedBelowCpu).
 */
export function gemmLibrary(env: NodeJS.ProcessEnv = process.env, flags?: Set<string>): 'auto' | 'dnnl' | 'openblas' {
  const v = (env.KARLO_NATIVE_GEMM ?? 'auto').toLowerCase();
  if (v === 'auto') return openblasForcedBelowCpu(env, flags ?? cpuFlags()) ? 'dnnl' : 'auto';
  if (v === 'openblas' || v === 'blas') return 'openblas';
  if (v === 'dnnl' || v === 'onednn') return 'dnnl';
  throw new Error(`KARLO_NATIVE_GEMM=${v}: expected auto, dnnl or openblas`);
}

let pool: BufferPool | undefined;
/** The native backend's recycled output buffers (created with the backend; KARLO_NATIVE_POOL_MB sets its budget). */
export function nativeBufferPool(): BufferPool | undefined {
  return pool;
}
/** Lets the garbage collector have the free recycled buffers, e.g. when a pipeline stage ends. No-op without native. */
export function trimNativeBufferPool(): void {
  pool?.trim();
}

/** Wall time per kernel name (top-level kernel calls only), filled while enableKernelProfile() is on. */
export const kernelProfile = new Map<string, { calls: number; ms: number }>();
let profiling = false;
let depth = 0;
export function enableKernelProfile(on = true): void {
  profiling = on;
}

/** Wraps a kernel so that, while profiling, its wall time is added to kernelProfile (nested calls count once). */
function profiled(name: string, f: KernelFunc): KernelFunc {
  return (args) => {
    if (!profiling) return f(args);
    const t0 = performance.now();
    depth++;
    try {
      return f(args);
    } finally {
      depth--;
      if (depth === 0) {
        const e = kernelProfile.get(name) ?? { calls: 0, ms: 0 };
        e.calls++;
        e.ms += performance.now() - t0;
        kernelProfile.set(name, e);
      }
    }
  };
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
  const bufferPool = (pool ??= new BufferPool(poolBudgetMB() * 2 ** 20));
  registerMemoryTrimmer(trimNativeBufferPool);
  if (!tf.findBackendFactory(NATIVE_BACKEND)) tf.registerBackend(NATIVE_BACKEND, () => new PooledCPUBackend(bufferPool), 1);
  if (getKernelsForBackend(NATIVE_BACKEND).length === 0) {
    for (const k of getKernelsForBackend('cpu')) {
      registerKernel({ ...k, backendName: NATIVE_BACKEND, kernelFunc: profiled(k.kernelName, k.kernelFunc) });
    }
  }
  const configs = nativeKernelConfigs(addon, NATIVE_BACKEND, cpuKernels, {
    gemm: gemmLibrary(),
    pool: bufferPool,
    stats: () => (statsOn ? nativeStats : undefined),
  });
  const copied = new Set(getKernelsForBackend(NATIVE_BACKEND).map((k) => k.kernelName));
  for (const config of configs) {
    // A kernel tfjs-cpu lacks is left to tfjs, except our own fused ones (reached only through src/ops).
    if (!cpuKernels.has(config.kernelName) && config.kernelName !== GROUP_NORM_KERNEL && config.kernelName !== GROUP_NORM_GRAD_KERNEL) continue;
    if (copied.has(config.kernelName)) unregisterKernel(config.kernelName, NATIVE_BACKEND);
    registerKernel({ ...config, kernelFunc: profiled(config.kernelName, config.kernelFunc) });
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
