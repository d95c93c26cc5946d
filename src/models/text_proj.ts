// diffusers' UnCLIPTextProjModel: turns the prior's CLIP image embedding and the CLIP text outputs into the
// decoder's conditioning: 4 extra context tokens prepended to the projected text sequence, and an additive
// embedding for the UNet's time embedding (its `class_labels`).
import * as tf from '@tensorflow/tfjs-core';
import { Module, type Parameter } from '../layers/module.js';
import { LayerNorm, Linear } from '../layers/basic.js';
import { isPosInt, modelConfigParser } from './config.js';

export interface UnCLIPTextProjConfig {
  clip_extra_context_tokens: number;
  clip_embeddings_dim: number;
  time_embed_dim: number;
  cross_attention_dim: number;
}

/** diffusers' defaults; time_embed_dim and cross_attention_dim have none. */
export const TEXT_PROJ_DEFAULTS: Partial<UnCLIPTextProjConfig> = { clip_extra_context_tokens: 4, clip_embeddings_dim: 768 };

/** Typed config from a parsed config.json (diffusers field names and defaults); `source` names the file in errors. */
export const textProjConfig = modelConfigParser<UnCLIPTextProjConfig>({
  className: 'UnCLIPTextProjModel',
  defaults: TEXT_PROJ_DEFAULTS,
  required: ['time_embed_dim', 'cross_attention_dim'],
  check: (c, bad) => {
    for (const k of ['clip_extra_context_tokens', 'clip_embeddings_dim', 'time_embed_dim', 'cross_attention_dim'] as const) {
      if (!isPosInt(c[k])) bad(k, 'a positive integer');
    }
  },
});

export interface TextProjInputs {
  /** CLIP image embeddings from the prior, [B, clip_embeddings_dim] (conditional rows only). */
  imageEmbeddings: tf.Tensor2D;
  /** CLIP text_embeds, [2B, D] with CFG (unconditional rows first), else [B, D]. */
  promptEmbeds: tf.Tensor2D;
  /** CLIP last_hidden_state, [2B, 77, D] with CFG. */
  textEncoderHiddenStates: tf.Tensor3D;
  doClassifierFreeGuidance: boolean;
}

export interface TextProjOutputs {
  /** [batch, extra + 77, cross_attention_dim]: the decoder's encoder_hidden_states. */
  textEncoderHiddenStates: tf.Tensor3D;
  /** [batch, time_embed_dim]: added to the decoder's time embedding (class_labels). */
  additiveClipTimeEmbeddings: tf.Tensor2D;
}

export class UnCLIPTextProjModel extends Module {
  readonly learned_classifier_free_guidance_embeddings: Parameter;
  readonly embedding_proj: Linear;
  readonly clip_image_embeddings_project_to_time_embeddings: Linear;
  readonly clip_extra_context_tokens_proj: Linear;
  readonly encoder_hidden_states_proj: Linear;
  readonly text_encoder_hidden_states_norm: LayerNorm;

  constructor(readonly config: UnCLIPTextProjConfig) {
    super();
    const { clip_embeddings_dim: d, time_embed_dim: t, clip_extra_context_tokens: n, cross_attention_dim: x } = config;
    this.learned_classifier_free_guidance_embeddings = this.param('learned_classifier_free_guidance_embeddings', [d]);
    this.embedding_proj = this.module('embedding_proj', new Linear(d, t));
    this.clip_image_embeddings_project_to_time_embeddings = this.module('clip_image_embeddings_project_to_time_embeddings', new Linear(d, t));
    this.clip_extra_context_tokens_proj = this.module('clip_extra_context_tokens_proj', new Linear(d, n * x));
    this.encoder_hidden_states_proj = this.module('encoder_hidden_states_proj', new Linear(d, x));
    this.text_encoder_hidden_states_norm = this.module('text_encoder_hidden_states_norm', new LayerNorm(x));
  }

  forward(inp: TextProjInputs): TextProjOutputs {
    const { clip_embeddings_dim: d, clip_extra_context_tokens: n, cross_attention_dim: x } = this.config;
    const name = this.path || 'UnCLIPTextProjModel';
    const check = (what: string, t: tf.Tensor, rank: number, last: number) => {
      if (t.rank !== rank || t.shape[rank - 1] !== last) throw new Error(`${name}: ${what} has shape [${t.shape}], rank ${rank} with last dim ${last} expected`);
    };
    check('imageEmbeddings', inp.imageEmbeddings, 2, d);
    check('promptEmbeds', inp.promptEmbeds, 2, d);
    check('textEncoderHiddenStates', inp.textEncoderHiddenStates, 3, d);
    const out = tf.tidy(() => {
      let image: tf.Tensor2D = inp.imageEmbeddings;
      if (inp.doClassifierFreeGuidance) {
        // The learned "null" image embedding serves the unconditional rows, which come first.
        const b = image.shape[0];
        const cfg = tf.tile(tf.reshape(this.learned_classifier_free_guidance_embeddings.value, [1, d]), [b, 1]);
        image = tf.concat([cfg, image], 0) as tf.Tensor2D;
      }
      const batch = inp.promptEmbeds.shape[0];
      if (image.shape[0] !== batch || inp.textEncoderHiddenStates.shape[0] !== batch) {
        throw new Error(`${name}: batch sizes differ: image embeddings ${image.shape[0]}${inp.doClassifierFreeGuidance ? ' (after prepending the CFG rows)' : ''}, promptEmbeds ${batch}, textEncoderHiddenStates ${inp.textEncoderHiddenStates.shape[0]}`);
      }
      const additive = tf.add(
        this.clip_image_embeddings_project_to_time_embeddings.forward(image),
        this.embedding_proj.forward(inp.promptEmbeds),
      ) as tf.Tensor2D;
      // diffusers reshapes the projection to [B, cross_dim, extra] and permutes: token i takes every extra-th entry.
      const extra = tf.transpose(tf.reshape(this.clip_extra_context_tokens_proj.forward(image), [batch, x, n]), [0, 2, 1]);
      const text = this.text_encoder_hidden_states_norm.forward(this.encoder_hidden_states_proj.forward(inp.textEncoderHiddenStates));
      const seq = tf.concat([extra, text], 1) as tf.Tensor3D;
      return { textEncoderHiddenStates: seq, additiveClipTimeEmbeddings: additive };
    });
    return {
      textEncoderHiddenStates: this.emit(out.textEncoderHiddenStates, 'text_encoder_hidden_states'),
      additiveClipTimeEmbeddings: this.emit(out.additiveClipTimeEmbeddings, 'additive_clip_time_embeddings'),
    };
  }
}
