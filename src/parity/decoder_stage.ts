// Decoder-stage parity against a pipeline run recording (test/fixtures/pipeline_tiny/run*.safetensors): inputs
// cap.image_embeddings and the text caps (cap.prompt_embeds, cap.text_enc_hid_states, cap.text_mask). Compared:
// * text_proj's outputs (cap.decoder_encoder_hidden_states, cap.additive_clip_time_embeddings), module tolerance;
// * step by step from the RECORDED sample_in of every decoder scheduler step: the guided model output
//   (model_output_after_cfg) and the scheduler's prev_sample, module tolerance (errors do not compound);
// * the whole loop as runDecoder runs it (our own latents feed the next step): every sample_in / prev_sample and
//   cap.image_small, with the pipeline tolerance (1e-3: guidance 8 amplifies float32 rounding step after step).
// Used by the tests and available to a pipeline parity kind.
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { TensorData } from '../io/safetensors.js';
import { RecordedRun } from './fixture.js';
import type { UnCLIPTextProjModel } from '../models/text_proj.js';
import { type UNet2DConditionModel } from '../models/unet2d_condition.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { TorchGenerator } from '../random/generator.js';
import { decoderConditioning, decoderPredict, runDecoder } from '../pipeline/decoder_stage.js';
import { denoiseStep } from '../samplers/denoise.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';

export interface DecoderStageParityOptions extends ParityOptions {
  /**
   * 'recorded': the recorded randn draws (decoder latents when not given explicitly, and the variance noise);
   * 'generator': TorchGenerator(seed), advanced past the prior stage's draws, draws them as the pipeline does.
   */
  noise?: 'recorded' | 'generator';
  /** Generator seed of the run (default 0, as in the fixtures' run.json). */
  seed?: number;
  /** Also check every step from the recorded inputs (default true; false: text_proj outputs and the loop only). */
  stepByStep?: boolean;
  /** Tolerance of the whole-loop comparisons (default 1e-3, the fixtures' pipeline tolerance). */
  loopAtol?: number;
  /** Reuse already loaded models (not disposed). */
  textProj?: UnCLIPTextProjModel;
  decoder?: UNet2DConditionModel;
}

export async function runDecoderStageParity(pipelineDir: string, runFile: string, opts: DecoderStageParityOptions = {}): Promise<Comparison[]> {
  const file = path.isAbsolute(runFile) ? runFile : path.join(pipelineDir, runFile);
  const run = RecordedRun.open(file);
  const st = run.tensors;
  const need = (k: string) => run.need(k);
  const toTensor = (t: TensorData) => tf.tensor(t.data, t.shape, t.dtype);
  const guidance = run.setting('decoder_guidance_scale', 8.0);
  const atol = opts.atol ?? 1e-4;
  const mode = opts.noise ?? 'recorded';

  const steps = run.stepsOf('decoder_scheduler');
  if (!steps.length) throw new Error(`${file}: no step.*.decoder_scheduler.* tensors`);
  // Every randn draw in order: [prior latents], prior noises (t > 0), [decoder latents], decoder noises, ...
  const draws = run.draws();
  const priorDraws = (st.has('input.prior_latents') ? 0 : 1) + run.stepsOf('prior_scheduler').filter((s) => !s.endsWith('.t0')).length;
  const hasLatents = st.has('input.decoder_latents');
  const firstNoise = priorDraws + (hasLatents ? 0 : 1);

  const out: Comparison[] = [];
  const loopAtol = opts.loopAtol ?? 1e-3;
  const cmp = (name: string, ours: ArrayLike<number>, ref: TensorData, tol = atol) => {
    const c = compareArrays(name, ours, ref.data, { atol: tol });
    out.push(c);
    opts.log?.(`${c.ok ? 'ok  ' : 'FAIL'} ${name} max abs ${c.maxAbs.toExponential(2)}`);
  };

  const textProj = opts.textProj ?? loadComponent(path.join(pipelineDir, 'text_proj'), 'UnCLIPTextProjModel');
  const decoder = opts.decoder ?? loadComponent(path.join(pipelineDir, 'decoder'), 'UNet2DConditionModel');
  const scheduler = UnCLIPScheduler.fromDir(path.join(pipelineDir, 'decoder_scheduler'));
  const text = {
    promptEmbeds: toTensor(need('cap.prompt_embeds')) as tf.Tensor2D,
    textEncHiddenStates: toTensor(need('cap.text_enc_hid_states')) as tf.Tensor3D,
    textMask: toTensor(need('cap.text_mask')) as tf.Tensor2D,
  };
  const imageEmbeddings = toTensor(need('cap.image_embeddings')) as tf.Tensor2D;
  let generator: TorchGenerator | undefined;
  let latents: tf.Tensor | undefined;
  if (mode === 'generator') {
    generator = new TorchGenerator(opts.seed ?? 0);
    for (let i = 0; i < priorDraws; i++) generator.randn(need(draws[i]).shape);
    if (hasLatents) latents = toTensor(need('input.decoder_latents'));
  } else {
    latents = toTensor(need(hasLatents ? 'input.decoder_latents' : draws[priorDraws]));
  }
  const noiseAt = (i: number) => { const d = st.get(draws[firstNoise + i]); return d ? tf.tensor(d.data, d.shape) : undefined; };
  try {
    // Step by step from the recorded inputs.
    const cond = decoderConditioning(textProj, imageEmbeddings, text, true);
    try {
      cmp('cap.decoder_encoder_hidden_states', cond.encoderHiddenStates.dataSync(), need('cap.decoder_encoder_hidden_states'));
      cmp('cap.additive_clip_time_embeddings', cond.additiveClipTimeEmbeddings.dataSync(), need('cap.additive_clip_time_embeddings'));
      scheduler.setTimesteps(steps.length);
      const ts = scheduler.timesteps;
      if (opts.stepByStep ?? true) steps.forEach((s, i) => tf.tidy(() => {
        const t = RecordedRun.timestepOf(s);
        if (ts[i] !== t) throw new Error(`${file}: step ${s} is not timestep ${ts[i]} of ${steps.length} steps`);
        const x = toTensor(need(`${s}.sample_in`)) as tf.Tensor4D;
        const { prevSample: prev } = denoiseStep(scheduler, decoderPredict(decoder, cond, guidance, true), x, {
          step: i, timestep: t, prevTimestep: ts[i + 1], noise: t > 0 ? noiseAt(i) : undefined,
          onModelOutput: ({ modelOutput }) => cmp(`${s}.model_output_after_cfg`, modelOutput.dataSync(), need(`${s}.model_output_after_cfg`)),
        });
        cmp(`${s}.prev_sample`, prev.dataSync(), need(`${s}.prev_sample`));
      }));
    } finally {
      tf.dispose([cond.encoderHiddenStates, cond.additiveClipTimeEmbeddings, cond.attentionMask]);
    }

    // The whole loop.
    const image = await runDecoder(textProj, decoder, scheduler, imageEmbeddings, text, {
      steps: steps.length,
      guidanceScale: guidance,
      latents,
      generator,
      classifierFreeGuidance: true,
      noiseForStep: mode === 'recorded' ? noiseAt : undefined,
      onModelOutput: ({ step, sampleIn }) => cmp(`loop.${steps[step]}.sample_in`, sampleIn.dataSync(), need(`${steps[step]}.sample_in`), loopAtol),
      onStep: ({ step, latents: x }) => cmp(`loop.${steps[step]}.prev_sample (${mode} noise)`, x.dataSync(), need(`${steps[step]}.prev_sample`), loopAtol),
    });
    cmp('cap.image_small', image.dataSync(), need('cap.image_small'), loopAtol);
    image.dispose();
  } finally {
    tf.dispose([text.promptEmbeds, text.textEncHiddenStates, text.textMask, imageEmbeddings]);
    latents?.dispose();
    if (!opts.textProj) textProj.dispose();
    if (!opts.decoder) decoder.dispose();
  }
  return out;
}
