// Running one job on a loaded pipeline: the same function in-process (`karlo batch`) and in a queue worker
// (`karlo worker`), so both produce the same PNG bytes for the same job on the same backend.
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { encodePng, floatToRgb8 } from '../io/png.js';
import type { UnCLIPPipeline } from '../pipeline/unclip_pipeline.js';
import type { JobSpec } from './jobs.js';

export interface RenderResult {
  /** One PNG per image of the job. */
  pngs: Buffer[];
  backend: string;
  /** Seconds of generation + encoding. */
  seconds: number;
}

/** A name for this process in manifests and worker lists: host-pid. */
export function defaultWorkerName(): string {
  return `${os.hostname()}-${process.pid}`;
}

/** Generates a job's images with `pipe` (kept loaded by the caller) and encodes them as PNG. */
export async function renderJob(pipe: UnCLIPPipeline, spec: JobSpec): Promise<RenderResult> {
  const t0 = performance.now();
  const s = spec.settings;
  const res = await pipe.generate([spec.prompt], {
    seed: BigInt(spec.seed),
    numImagesPerPrompt: s.numImagesPerPrompt,
    priorSteps: s.priorSteps, decoderSteps: s.decoderSteps, superResSteps: s.superResSteps,
    priorGuidance: s.priorGuidance, decoderGuidance: s.decoderGuidance,
  });
  const pngs: Buffer[] = [];
  for (let k = 0; k < res.shape[0]; k++) pngs.push(encodePng(floatToRgb8(res.images, res.shape, k)));
  return { pngs, backend: tf.getBackend(), seconds: (performance.now() - t0) / 1000 };
}
