// Which weights the stage runner prefetches, and with how much memory: when a stage starts running, the
// components of the next stage are read and converted in worker threads (prefetch.ts) within a byte budget, and
// their loaders take them through loadComponent's `source`. The default budget (stageBudget) keeps the process
// under 8 GB (or the call's estimated peak when larger): what is left after the resident memory when the stage
// starts and its activations. `prefetchBytes` (LoadOptions) or KARLO_PREFETCH_MB sets a fixed budget instead
// (0: no prefetching).
import * as fs from 'node:fs';
import { findWeightsFile } from '../io/weights.js';
import { COMPONENT_KINDS, componentConfig, loadComponent, type ComponentKind, type ComponentModel } from '../loading/load_component.js';
import { WeightPrefetcher, type PrefetchStats } from './prefetch.js';

/** Files below this size load directly: starting a worker (~50 ms) costs more than reading them. */
export const MIN_PREFETCH_BYTES = 32 * 2 ** 20;

/** A component a later stage loads: its folder and class. */
export interface PrefetchTarget { dir: string; kind: ComponentKind }

/** The fixed budget from the environment (KARLO_PREFETCH_MB), or undefined. */
export function envPrefetchBytes(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = env.KARLO_PREFETCH_MB;
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`KARLO_PREFETCH_MB=${v}: expected a number of MB ≥ 0`);
  return n * 2 ** 20;
}

/**
 * Per-file budgets for `sizes` (in load order) sharing `budget`: each file gets what is left of it, in order, so
 * the first component of the next stage is prefetched whole before the second gets any.
 */
export function splitBudget(sizes: number[], budget: number): number[] {
  let left = Math.max(0, budget);
  return sizes.map((s) => {
    const b = Math.min(s, left);
    left -= b;
    return b;
  });
}

/** The memory the default budget lets a call reach: 8 GB (issue 21's bound at real size) or the call's estimated peak when larger, at most half the machine. */
export const PREFETCH_CEILING_BYTES = 8e9;

/**
 * The default budget while stage `running` runs: what is left under the ceiling (max(8 GB, the call's estimated
 * peak), at most half of `totalMem`) after the process's resident memory now (the stage's weights are loaded) and
 * four times the stage's activation estimate (the estimate is low: measured real-size peaks are 3-4× it above the
 * weights). ≥ 0.
 */
export function stageBudget(stages: { weightsBytes: number; activationBytes: number }[], running: number,
  opts: { peakBytes: number; rssBytes: number; totalMem: number }): number {
  const ceiling = Math.min(Math.max(PREFETCH_CEILING_BYTES, opts.peakBytes), opts.totalMem / 2);
  return Math.max(0, ceiling - opts.rssBytes - 4 * stages[running].activationBytes);
}

export class StagePrefetch {
  private readonly pf = new WeightPrefetcher();
  /** Files smaller than this load directly (tests set 0 to prefetch tiny models). */
  minBytes = MIN_PREFETCH_BYTES;
  private readonly files = new Map<string, string>();
  /** What each prefetched load did (bytes from the worker, read directly, seconds waited), in load order. */
  readonly stats: PrefetchStats[] = [];

  /** Starts prefetching `targets` (the next stage's components, in load order) within `budget` bytes in all. */
  start(targets: PrefetchTarget[], budget: number): void {
    const plans: { dir: string; file: string; kind: ComponentKind; size: number }[] = [];
    for (const t of targets) {
      if (this.files.has(t.dir)) continue;
      let file: string;
      try {
        file = findWeightsFile(t.dir);
      } catch {
        continue; // the loader reports it
      }
      if (!file.endsWith('.safetensors')) continue; // sharded checkpoints load directly
      const size = fs.statSync(file).size;
      if (size < this.minBytes) continue;
      plans.push({ dir: t.dir, file, kind: t.kind, size });
    }
    const budgets = splitBudget(plans.map((p) => p.size), budget);
    plans.forEach((p, i) => {
      try {
        // The model's parameter order and layouts, from its config (no weights).
        const shell = (COMPONENT_KINDS[p.kind].build as (c: unknown) => ComponentModel<ComponentKind>)(componentConfig(p.dir, p.kind));
        const items = shell.namedParameters().map(([name, q]) => ({ name, conv2d: q.layout === 'conv2d' }));
        this.pf.start(p.file, items, budgets[i]);
        this.files.set(p.dir, p.file);
      } catch {
        // a config the loader will reject: it says why when the stage loads
      }
    });
  }

  /** Loads a component, taking what was prefetched for it (bit-identical to a direct load). */
  load<K extends ComponentKind>(dir: string, kind: K): ComponentModel<K> {
    const file = this.files.get(dir);
    const source = file ? this.pf.source(file) : undefined;
    if (!source) return loadComponent(dir, kind);
    this.files.delete(dir);
    try {
      return loadComponent(dir, kind, { source });
    } finally {
      this.stats.push(source.close());
    }
  }

  /** Stops every worker and frees what was prefetched and not loaded. */
  dispose(): void {
    this.pf.dispose();
    this.files.clear();
  }
}
