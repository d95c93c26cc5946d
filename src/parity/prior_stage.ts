// Prior-stage parity against a pipeline run recording (test/fixtures/pipeline_tiny/run*.safetensors): the text
// inputs come from cap.prompt_embeds / cap.text_enc_hid_states / cap.text_mask, and every prior scheduler step
// (step.*.prior_scheduler.t*.{sample_in, model_output_after_cfg, prev_sample}), cap.prior_latents_final and
// cap.image_embeddings are compared. Used by the tests and available to a pipeline parity kind.
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { TensorData } from '../io/safetensors.js';
import { RecordedRun } from './fixture.js';
import type { PriorTransformer } from '../models/prior_transformer.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { TorchGenerator } from '../random/generator.js';
import { runPrior } from '../pipeline/prior_stage.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';

export interface PriorStageParityOptions extends ParityOptions {
  /** 'recorded': the recorded randn draws as variance noise; 'generator': draw from TorchGenerator(seed). */
  noise?: 'recorded' | 'generator';
  /** Generator seed of the run (default 0, as in the fixtures' run.json). */
  seed?: number;
  /** Reuse an already loaded prior (not disposed). */
  prior?: PriorTransformer;
}

/**
 * Runs the prior stage of a recorded UnCLIPPipeline run. `runFile` is e.g. run.safetensors (explicit latents in
 * input.prior_latents) or run_seed_only.safetensors (latents drawn from the generator).
 */
export async function runPriorStageParity(pipelineDir: string, runFile: string, opts: PriorStageParityOptions = {}): Promise<Comparison[]> {
  const file = path.isAbsolute(runFile) ? runFile : path.join(pipelineDir, runFile);
  const run = RecordedRun.open(file);
  const st = run.tensors;
  const need = (k: string) => run.need(k);
  const guidance = run.setting('prior_guidance_scale', 4.0);
  const atol = opts.atol ?? 1e-4;
  const mode = opts.noise ?? 'recorded';

  // The prior scheduler's steps in order, and the recorded randn draws of the scheduler (prior ones come first).
  const steps = run.stepsOf('prior_scheduler');
  if (!steps.length) throw new Error(`${file}: no step.*.prior_scheduler.* tensors`);
  const hasLatents = st.has('input.prior_latents');
  // Draws in order: [prior latents when not given], then one per prior step with t > 0.
  const draws = run.draws();
  const firstNoise = hasLatents ? 0 : 1;

  const out: Comparison[] = [];
  const cmp = (name: string, ours: ArrayLike<number>, ref: TensorData) => {
    const c = compareArrays(name, ours, ref.data, { atol });
    out.push(c);
    opts.log?.(`${c.ok ? 'ok  ' : 'FAIL'} ${name} max abs ${c.maxAbs.toExponential(2)}`);
  };

  const prior = opts.prior ?? loadComponent(path.join(pipelineDir, 'prior'), 'PriorTransformer');
  const scheduler = UnCLIPScheduler.fromDir(path.join(pipelineDir, 'prior_scheduler'));
  const text = {
    promptEmbeds: tf.tensor2d(need('cap.prompt_embeds').data as Float32Array, need('cap.prompt_embeds').shape as [number, number]),
    textEncHiddenStates: tf.tensor3d(need('cap.text_enc_hid_states').data as Float32Array, need('cap.text_enc_hid_states').shape as [number, number, number]),
    textMask: tf.tensor2d(need('cap.text_mask').data, need('cap.text_mask').shape as [number, number], 'int32'),
  };
  const latents = hasLatents ? tf.tensor2d(need('input.prior_latents').data as Float32Array, need('input.prior_latents').shape as [number, number]) : undefined;
  let raw: Float32Array | null = null;
  let sampleIn: Float32Array | null = null;
  prior.setOutputHook((p, x) => { if (p === 'predicted_image_embedding') raw = x.dataSync() as Float32Array; });
  try {
    // Without explicit latents the stage draws them first from the generator: the same draw, made here, is
    // what the first step's sample_in must be.
    sampleIn = latents ? (latents.dataSync() as Float32Array).slice() : new TorchGenerator(opts.seed ?? 0).randn(need(`${steps[0]}.sample_in`).shape);
    const emb = await runPrior(prior, scheduler, text, {
      steps: steps.length,
      guidanceScale: guidance,
      latents,
      classifierFreeGuidance: true,
      generator: new TorchGenerator(opts.seed ?? 0),
      noiseForStep: mode === 'recorded'
        ? (i) => { const d = st.get(draws[firstNoise + i]); return d ? tf.tensor(d.data, d.shape) : undefined; }
        : undefined,
      onStep: ({ step, latents: x }) => {
        const s = steps[step];
        if (sampleIn) cmp(`${s}.sample_in`, sampleIn, need(`${s}.sample_in`));
        if (raw) {
          // Guidance recomputed from the raw prior output (an independent check of the CFG combination).
          const half = raw.length / 2;
          const g = new Float32Array(half);
          for (let j = 0; j < half; j++) g[j] = Math.fround(raw[j] + Math.fround(guidance * Math.fround(raw[half + j] - raw[j])));
          cmp(`${s}.model_output_after_cfg`, g, need(`${s}.model_output_after_cfg`));
        }
        const prev = x.dataSync() as Float32Array;
        cmp(`${s}.prev_sample (${mode} noise)`, prev, need(`${s}.prev_sample`));
        sampleIn = prev.slice();
      },
      onFinalLatents: (x) => { if (st.has('cap.prior_latents_final')) cmp('cap.prior_latents_final', x.dataSync(), st.get('cap.prior_latents_final')!); },
    });
    cmp('cap.image_embeddings', emb.dataSync(), need('cap.image_embeddings'));
    emb.dispose();
  } finally {
    prior.setOutputHook(null);
    tf.dispose([text.promptEmbeds, text.textEncHiddenStates, text.textMask]);
    latents?.dispose();
    if (!opts.prior) prior.dispose();
  }
  return out;
}
