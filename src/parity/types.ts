// The types every parity kind shares (kept out of registry.ts, which imports every kind: no kind imports it back).
import type { Comparison } from './compare.js';

export interface ParityOptions {
  /** Absolute tolerance factor (the project default 1e-4 · max(1, max|ref|)). */
  atol?: number;
  log?: (line: string) => void;
}

/** A fixture-folder kind of `karlo parity DIR`: it detects its folder layout and returns one Comparison per tensor. */
export interface ParityKind {
  name: string;
  /** True when DIR looks like this kind's fixture folder. */
  detect(dir: string): boolean;
  run(dir: string, opts: ParityOptions): Promise<Comparison[]>;
}
