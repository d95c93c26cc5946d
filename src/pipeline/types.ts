// Types shared by the pipeline stages (encodePrompt → runPrior → runDecoder → runSuperRes).
import type * as tf from '@tensorflow/tfjs-core';
import type { TorchGenerator } from '../random/generator.js';

/**
 * CLIP text outputs as UnCLIPPipeline prepares them for classifier-free guidance: the unconditional ("") rows
 * first, then the prompts (each repeated numImagesPerPrompt times). Batch = 2·B.
 */
export interface TextOutputs {
  /** text_embeds [2B, D] */
  promptEmbeds: tf.Tensor2D;
  /** last_hidden_state [2B, 77, D] */
  textEncHiddenStates: tf.Tensor3D;
  /** attention mask [2B, 77], int32 0/1 */
  textMask: tf.Tensor2D;
}

export type StageName = 'prior' | 'decoder' | 'super_res';

/** Called after every scheduler step with the new latents (owned by the pipeline: do not dispose; clone to keep). */
export type StepCallback = (info: { stage: StageName; step: number; numSteps: number; timestep: number; latents: tf.Tensor }) => void;

export interface StageOptions {
  steps?: number;
  guidanceScale?: number;
  /** Explicit initial latents (not disposed by the stage); otherwise drawn from `generator`. */
  latents?: tf.Tensor;
  /** torch-compatible generator for the initial latents and the variance noise (diffusers' draw order). */
  generator?: TorchGenerator;
  onStep?: StepCallback;
  /**
   * Recorded variance noise per step (parity with run.safetensors): returns the noise for step i, or undefined
   * to draw from the generator.
   */
  noiseForStep?: (step: number, shape: number[]) => tf.Tensor | undefined;
}
