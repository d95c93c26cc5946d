// Fixture-folder kinds that `karlo parity DIR` understands. Each kind detects its folder layout (the format of
// the fixtures README) and returns one Comparison per compared tensor.
import type { ParityKind } from './types.js';
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

export type { ParityKind, ParityOptions } from './types.js';

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
