// Running one job on a loaded pipeline: the same function in-process (`karlo batch`) and in a queue worker
// (`karlo worker`), so both produce the same PNG bytes for the same job on the same backend.
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { encodePng, floatToRgb8 } from '../io/png.js';
import { PACKAGE_VERSION } from '../package_root.js';
import { PROVENANCE_KEY, encodeProvenance, modelConfigHash, type Provenance } from '../pipeline/provenance.js';
import type { UnCLIPPipeline } from '../pipeline/unclip_pipeline.js';
import { jobHash, type JobSpec } from './jobs.js';

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

/**
 * Generates a job's images with `pipe` (kept loaded by the caller) and encodes them as PNG with the provenance
 * chunk `karlo generate` writes (so `karlo inspect` shows it and `karlo generate --from` re-runs it), the job's
 * hash in its extra. It names the model folder by its absolute path: workers whose folders have the same path
 * write the same bytes; elsewhere only that text differs, never the pixels.
 */
export async function renderJob(pipe: UnCLIPPipeline, spec: JobSpec): Promise<RenderResult> {
  const t0 = performance.now();
  const s = spec.settings;
  const res = await pipe.generate([spec.prompt], {
    seed: BigInt(spec.seed),
    numImagesPerPrompt: s.numImagesPerPrompt,
    priorSteps: s.priorSteps, decoderSteps: s.decoderSteps, superResSteps: s.superResSteps,
    priorGuidance: s.priorGuidance, decoderGuidance: s.decoderGuidance,
  });
  const configHash = modelConfigHash(pipe.folder);
  const pngs: Buffer[] = [];
  for (let k = 0; k < res.shape[0]; k++) {
    const prov: Provenance = {
      generator: 'karlo-tfjs', version: PACKAGE_VERSION,
      prompt: spec.prompt, promptIndex: 0, imageIndex: k, prompts: [spec.prompt], numImagesPerPrompt: s.numImagesPerPrompt, seed: spec.seed,
      steps: { prior: s.priorSteps, decoder: s.decoderSteps, superRes: s.superResSteps },
      guidance: { prior: s.priorGuidance, decoder: s.decoderGuidance },
      model: pipe.folder.root, modelConfigHash: configHash, backend: res.timings.backend,
      extra: { batchJob: jobHash(spec) },
    };
    pngs.push(encodePng(floatToRgb8(res.images, res.shape, k), { [PROVENANCE_KEY]: encodeProvenance(prov) }));
  }
  return { pngs, backend: tf.getBackend(), seconds: (performance.now() - t0) / 1000 };
}
