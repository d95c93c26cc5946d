// `karlo parity` kind "variation": an UnCLIPImageVariationPipeline folder (model_index.json _class_name
// UnCLIPImageVariationPipeline, fixtures README section m) with run*.json / run*.safetensors recorded from
// diffusers. run*.json names the input image(s) ("image": paths relative to the folder) and the call's settings;
// every recorded tensor (cap.pixel_values, cap.image_encoder_image_embeds, the text rows, text_proj outputs, each
// scheduler step, image_small, the final image, and with a seed only every random draw) is compared by the shared
// pipeline parity runner (parity/pipeline.ts), which here calls UnCLIPImageVariationPipeline.vary.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readJson } from '../io/weights.js';
import { UnCLIPImageVariationPipeline } from '../pipeline/variation_pipeline.js';
import type { GenerateOptions } from '../pipeline/unclip_pipeline.js';
import type { Comparison } from './compare.js';
import { pipelineRuns, runPipelineParity } from './pipeline.js';
import type { ParityKind, ParityOptions } from './types.js';
import { namesClass } from './fixture.js';

const isVariationFolder = (dir: string) => namesClass(dir, 'UnCLIPImageVariationPipeline', { file: 'model_index.json' });

/** The pipeline parity options a vary() call understands, from the shared runner's GenerateOptions. */
export function varyOptionsOf(o: GenerateOptions) {
  return {
    numImagesPerPrompt: o.numImagesPerPrompt, decoderSteps: o.decoderSteps, superResSteps: o.superResSteps,
    decoderGuidance: o.decoderGuidance, generator: o.generator, seed: o.seed,
    decoderLatents: o.decoderLatents, superResLatents: o.superResLatents, noiseForStep: o.noiseForStep,
    onStep: o.onStep, onIntermediate: o.onIntermediate, onPreview: o.onPreview,
    outputHooks: o.outputHooks,
    stageOptions: { decoder: o.stageOptions?.decoder, super_res: o.stageOptions?.super_res },
  };
}

/** One recorded UnCLIPImageVariationPipeline call (run*.json next to run*.safetensors) through vary(). */
export async function runVariationRunParity(runFile: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const dir = path.dirname(runFile);
  const run = readJson<{ image?: unknown }>(runFile);
  const list = typeof run.image === 'string' ? [run.image] : run.image;
  if (!Array.isArray(list) || !list.length || list.some((x) => typeof x !== 'string')) {
    throw new Error(`${runFile}: "image" must name the input image file(s), relative to the folder`);
  }
  const images = (list as string[]).map((f) => path.resolve(dir, f));
  for (const f of images) if (!fs.existsSync(f)) throw new Error(`${runFile}: input image ${f} does not exist`);
  return runPipelineParity(runFile, {
    ...opts,
    call: async (o) => {
      const pipe = await UnCLIPImageVariationPipeline.load(dir);
      try {
        return await pipe.vary(images, varyOptionsOf(o));
      } finally {
        pipe.dispose();
      }
    },
  });
}

export async function runVariationParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const out: Comparison[] = [];
  const runs = pipelineRuns(dir);
  if (!runs.length) throw new Error(`${dir}: no run*.json with its run*.safetensors`);
  for (const runFile of runs) {
    const prefix = path.basename(runFile, '.json');
    for (const c of await runVariationRunParity(runFile, opts)) out.push({ ...c, name: `${prefix}: ${c.name}` });
  }
  return out;
}

export const variationParity: ParityKind = {
  name: 'variation',
  detect: (dir) => isVariationFolder(dir) && pipelineRuns(dir).length > 0,
  run: runVariationParity,
};
