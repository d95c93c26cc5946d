// Fixture-folder kinds that `karlo parity DIR` understands. Each kind detects its folder layout (the format of
// the fixtures README) and returns one Comparison per compared tensor.
import type { Comparison } from './compare.js';
import { pipelineParity } from './pipeline.js';
import { schedulersParity } from './schedulers.js';
import { priorParity } from './prior.js';
import { tokenizerParity } from './tokenizer.js';
import { clipTextParity } from './clip_text.js';
import { rngParity } from './rng.js';
import { superResParity } from './super_res.js';
import { interpParity } from './interp.js';
import { textProjParity } from './text_proj.js';
import { decoderParity } from './decoder.js';
import { originalCkptParity } from './original_ckpt.js';
import { gradsParity } from './grads.js';
import { clipVisionParity } from './clip_vision.js';
import { variationParity } from './variation.js';
import { interpolationParity } from './interpolation.js';

export interface ParityOptions {
  /** Absolute tolerance factor (the project default 1e-4 · max(1, max|ref|)). */
  atol?: number;
  log?: (line: string) => void;
}

export interface ParityKind {
  name: string;
  /** True when DIR looks like this kind's fixture folder. */
  detect(dir: string): boolean;
  run(dir: string, opts: ParityOptions): Promise<Comparison[]>;
}

export const PARITY_KINDS: ParityKind[] = [
  gradsParity,
  pipelineParity,
  variationParity,
  interpolationParity,
  rngParity,
  superResParity,
  interpParity,
  textProjParity,
  decoderParity,
  schedulersParity,
  priorParity,
  tokenizerParity,
  clipTextParity,
  clipVisionParity,
  originalCkptParity,
];
