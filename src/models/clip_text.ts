// CLIP text encoder with projection, equal to transformers' CLIPTextModelWithProjection (≈4.36): token +
// position embeddings, pre-LayerNorm transformer layers under a causal mask (plus an optional padding mask),
// final LayerNorm, pooling at the EOS token, bias-free projection. Parameter names are transformers' keys.
import * as tf from '@tensorflow/tfjs-core';
import { Module } from '../layers/module.js';
import { Embedding, LayerNorm, Linear, embeddingLookup, gelu, quickGelu } from '../layers/basic.js';
import { isPosInt, modelConfigParser, type BadField } from './config.js';

export type ClipHiddenAct = 'quick_gelu' | 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh';

/** transformers' CLIPTextConfig fields (with its defaults). */
export interface CLIPTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  projection_dim: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: ClipHiddenAct;
  layer_norm_eps: number;
  pad_token_id: number;
  bos_token_id: number;
  eos_token_id: number;
  /** Dropout on the attention probabilities (training mode only). */
  attention_dropout: number;
}

export const CLIP_TEXT_DEFAULTS: CLIPTextConfig = {
  vocab_size: 49408,
  hidden_size: 512,
  intermediate_size: 2048,
  projection_dim: 512,
  num_hidden_layers: 12,
  num_attention_heads: 8,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  pad_token_id: 1,
  bos_token_id: 49406,
  eos_token_id: 49407,
  attention_dropout: 0,
};

export const CLIP_ACTS: readonly ClipHiddenAct[] = ['quick_gelu', 'gelu', 'gelu_new', 'gelu_pytorch_tanh'];

/**
 * Fields of a transformers CLIP text/vision config that do not change the forward computation: PretrainedConfig's
 * generic attributes (older transformers write all of them, generation settings included), the initialisers, and
 * `dropout` (CLIP's modeling code never reads it).
 */
export const CLIP_IGNORED_FIELDS: ReadonlySet<string> = new Set([
  'model_type', 'architectures', 'transformers_version', 'torch_dtype', 'use_bfloat16', 'torchscript', 'return_dict',
  'output_hidden_states', 'output_attentions', 'output_scores', 'return_dict_in_generate', 'use_cache',
  'gradient_checkpointing', 'tf_legacy_loss', 'pruned_heads', 'tie_word_embeddings', 'tie_encoder_decoder',
  'chunk_size_feed_forward', 'is_encoder_decoder', 'is_decoder', 'cross_attention_hidden_size', 'add_cross_attention',
  'max_length', 'min_length', 'do_sample', 'early_stopping', 'num_beams', 'num_beam_groups', 'diversity_penalty',
  'temperature', 'top_k', 'top_p', 'typical_p', 'repetition_penalty', 'length_penalty', 'no_repeat_ngram_size',
  'encoder_no_repeat_ngram_size', 'bad_words_ids', 'num_return_sequences', 'forced_bos_token_id',
  'forced_eos_token_id', 'remove_invalid_values', 'exponential_decay_length_penalty', 'suppress_tokens',
  'begin_suppress_tokens', 'finetuning_task', 'id2label', 'label2id', 'num_labels', 'tokenizer_class', 'prefix',
  'sep_token_id', 'decoder_start_token_id', 'task_specific_params', 'problem_type',
  'initializer_range', 'initializer_factor', 'dropout',
]);

/**
 * The tower's own fields of a transformers config: a flat CLIP{Text,Vision}Config, or a CLIPConfig's
 * `text_config` / `vision_config` (projection_dim from the top level). Nulls mean "the default", as in transformers.
 */
export function clipTowerFields(raw: Record<string, unknown>, tower: 'text' | 'vision', fail: (msg: string) => never): Record<string, unknown> {
  const sub = raw[`${tower}_config`];
  let r = raw;
  if (raw.model_type === 'clip' && sub && typeof sub === 'object') {
    r = { ...(sub as Record<string, unknown>) };
    if (r.projection_dim === undefined && raw.projection_dim !== undefined) r.projection_dim = raw.projection_dim;
  }
  const want = `clip_${tower}_model`;
  if (r.model_type !== undefined && r.model_type !== want) fail(`model_type "${String(r.model_type)}" is not a CLIP ${tower} model (${want} expected)`);
  return Object.fromEntries(Object.entries(r).filter(([, v]) => v !== null));
}

/** Checks shared by both towers: a known activation, finite numbers, positive sizes, heads dividing the width. */
export function checkClipTower<T extends CLIPEncoderConfig>(c: T, posInts: readonly (keyof T & string)[], bad: BadField): void {
  if (!CLIP_ACTS.includes(c.hidden_act)) bad('hidden_act', CLIP_ACTS.join(', '));
  for (const [k, v] of Object.entries(c)) if (k !== 'hidden_act' && (typeof v !== 'number' || !Number.isFinite(v))) bad(k, 'a number');
  for (const k of posInts) if (!isPosInt(c[k])) bad(k, 'a positive integer');
  if (!(c.layer_norm_eps > 0)) bad('layer_norm_eps', 'a positive number');
  if (c.hidden_size % c.num_attention_heads !== 0) bad('hidden_size', `not divisible by num_attention_heads ${c.num_attention_heads}`);
}

/** Typed config from a parsed config.json (flat CLIPTextConfig, or a CLIPConfig's `text_config`). */
export const clipTextConfig = modelConfigParser<CLIPTextConfig>({
  className: 'CLIPTextModelWithProjection',
  defaults: CLIP_TEXT_DEFAULTS,
  ignored: CLIP_IGNORED_FIELDS,
  prepare: (raw, fail) => clipTowerFields(raw, 'text', fail),
  check: (c, bad) => checkClipTower(c, ['vocab_size', 'hidden_size', 'intermediate_size', 'projection_dim', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings'], bad),
});

/**
 * What the encoder layers need from a config: shared by the text and the vision tower (transformers'
 * CLIPEncoder is one class for both; src/models/clip_vision.ts builds its encoder from these same classes).
 */
export type CLIPEncoderConfig = Pick<CLIPTextConfig, 'hidden_size' | 'intermediate_size' | 'num_hidden_layers' | 'num_attention_heads' | 'hidden_act' | 'layer_norm_eps'>;

/** float32 min, what transformers fills masked attention logits with. */
const MASK_MIN = -3.4028234663852886e38;

function activation(name: ClipHiddenAct, x: tf.Tensor): tf.Tensor {
  switch (name) {
    case 'quick_gelu': return quickGelu(x);
    case 'gelu': return gelu(x);
    default: // tanh approximation (gelu_new, gelu_pytorch_tanh)
      return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3))))))));
  }
}

export class CLIPTextEmbeddings extends Module {
  readonly token_embedding: Embedding;
  readonly position_embedding: Embedding;
  constructor(readonly config: CLIPTextConfig) {
    super();
    this.token_embedding = this.module('token_embedding', new Embedding(config.vocab_size, config.hidden_size));
    this.position_embedding = this.module('position_embedding', new Embedding(config.max_position_embeddings, config.hidden_size));
  }

  /** ids [B, L] int32 → [B, L, D] */
  forward(inputIds: tf.Tensor2D): tf.Tensor3D {
    return this.emit(tf.tidy(() => {
      const L = inputIds.shape[1];
      const pos = this.position_embedding.forward(tf.range(0, L, 1, 'int32'));
      return tf.add(this.token_embedding.forward(inputIds), pos) as tf.Tensor3D;
    }));
  }
}

export class CLIPAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  readonly numHeads: number;
  readonly headDim: number;
  /** transformers' `attention_dropout` on the probabilities (training mode only). */
  readonly attentionDropout: number;
  constructor(config: CLIPEncoderConfig & { attention_dropout?: number }) {
    super();
    const D = config.hidden_size;
    this.attentionDropout = config.attention_dropout ?? 0;
    this.numHeads = config.num_attention_heads;
    this.headDim = D / this.numHeads;
    this.k_proj = this.module('k_proj', new Linear(D, D));
    this.v_proj = this.module('v_proj', new Linear(D, D));
    this.q_proj = this.module('q_proj', new Linear(D, D));
    this.out_proj = this.module('out_proj', new Linear(D, D));
  }

  /** x [B, L, D]; bias additive, broadcastable to [B, H, L, L] (none: every token sees every token) → [B, L, D] */
  forward(x: tf.Tensor3D, bias?: tf.Tensor4D): tf.Tensor3D {
    return this.emit(tf.tidy(() => {
      const [B, L, D] = x.shape;
      const H = this.numHeads, hd = this.headDim;
      const heads = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [B, L, H, hd]), [0, 2, 1, 3]);
      // transformers scales the query projection before QKᵀ.
      const q = heads(tf.mul(this.q_proj.forward(x), hd ** -0.5));
      const k = heads(this.k_proj.forward(x));
      const v = heads(this.v_proj.forward(x));
      const qk = tf.matMul(q, k, false, true);
      const scores = bias ? tf.add(qk, bias) : qk;
      // `<path>.probs` [B, heads, L queries, L keys] (opt-in; causal: query i sees keys ≤ i).
      const probs = this.dropout(this.emit(tf.softmax(scores, -1), 'probs'), this.attentionDropout);
      const ctx = tf.reshape(tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3]), [B, L, D]);
      return this.out_proj.forward(ctx) as tf.Tensor3D;
    }));
  }
}

export class CLIPMLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(readonly config: CLIPEncoderConfig) {
    super();
    this.fc1 = this.module('fc1', new Linear(config.hidden_size, config.intermediate_size));
    this.fc2 = this.module('fc2', new Linear(config.intermediate_size, config.hidden_size));
  }

  forward(x: tf.Tensor): tf.Tensor {
    return this.emit(tf.tidy(() => this.fc2.forward(activation(this.config.hidden_act, this.fc1.forward(x)))));
  }
}

export class CLIPEncoderLayer extends Module {
  readonly self_attn: CLIPAttention;
  readonly layer_norm1: LayerNorm;
  readonly mlp: CLIPMLP;
  readonly layer_norm2: LayerNorm;
  constructor(config: CLIPEncoderConfig) {
    super();
    this.self_attn = this.module('self_attn', new CLIPAttention(config));
    this.layer_norm1 = this.module('layer_norm1', new LayerNorm(config.hidden_size, config.layer_norm_eps));
    this.mlp = this.module('mlp', new CLIPMLP(config));
    this.layer_norm2 = this.module('layer_norm2', new LayerNorm(config.hidden_size, config.layer_norm_eps));
  }

  forward(x: tf.Tensor3D, bias?: tf.Tensor4D): tf.Tensor3D {
    return this.emit(tf.tidy(() => {
      const h = tf.add(x, this.self_attn.forward(this.layer_norm1.forward(x) as tf.Tensor3D, bias));
      return tf.add(h, this.mlp.forward(this.layer_norm2.forward(h))) as tf.Tensor3D;
    }));
  }
}

export class CLIPEncoder extends Module {
  readonly layers: CLIPEncoderLayer[];
  constructor(config: CLIPEncoderConfig) {
    super();
    this.layers = this.moduleList('layers', Array.from({ length: config.num_hidden_layers }, () => new CLIPEncoderLayer(config)));
  }
}

export interface CLIPTextOutput {
  /** After final_layer_norm: [B, L, D]. */
  lastHiddenState: tf.Tensor3D;
  /** Projected pooled output: [B, projection_dim]. */
  textEmbeds: tf.Tensor2D;
  /** Embedding output, then the output of every layer (the last one before final_layer_norm): L+1 tensors. */
  hiddenStates: tf.Tensor3D[];
}

export class CLIPTextTransformer extends Module {
  readonly embeddings: CLIPTextEmbeddings;
  readonly encoder: CLIPEncoder;
  readonly final_layer_norm: LayerNorm;
  constructor(readonly config: CLIPTextConfig) {
    super();
    this.embeddings = this.module('embeddings', new CLIPTextEmbeddings(config));
    this.encoder = this.module('encoder', new CLIPEncoder(config));
    this.final_layer_norm = this.module('final_layer_norm', new LayerNorm(config.hidden_size, config.layer_norm_eps));
  }
}

/**
 * Causal bias [1,1,L,L] (float32 min above the diagonal) plus, with a mask, (1 − mask)·min per key [B,1,1,L];
 * the sum saturates to −inf where both apply, exactly as transformers adds its two 4-d masks.
 */
export function clipAttentionBias(L: number, attentionMask?: tf.Tensor2D): tf.Tensor4D {
  return tf.tidy(() => {
    const c = new Float32Array(L * L);
    for (let i = 0; i < L; i++) c.fill(MASK_MIN, i * L + i + 1, (i + 1) * L);
    const causal = tf.tensor4d(c, [1, 1, L, L]);
    if (!attentionMask) return causal;
    const B = attentionMask.shape[0];
    const pad = tf.reshape(tf.mul(tf.sub(1, tf.cast(attentionMask, 'float32')), MASK_MIN), [B, 1, 1, L]);
    return tf.add(causal, pad) as tf.Tensor4D;
  });
}

export class CLIPTextModelWithProjection extends Module {
  readonly text_model: CLIPTextTransformer;
  readonly text_projection: Linear;
  constructor(readonly config: CLIPTextConfig) {
    super();
    this.text_model = this.module('text_model', new CLIPTextTransformer(config));
    this.text_projection = this.module('text_projection', new Linear(config.hidden_size, config.projection_dim, false));
  }

  /**
   * inputIds [B, L] (int32; L ≤ max_position_embeddings), optional attentionMask [B, L] of 0/1. Hooks report
   * `text_model.embeddings`, `text_model.encoder.layers.{i}` (and their sub-modules), `text_model.final_layer_norm`,
   * `text_projection`. The returned tensors belong to the caller.
   */
  forward(inputIds: tf.Tensor2D, attentionMask?: tf.Tensor2D): CLIPTextOutput {
    const cfg = this.config;
    if (inputIds.rank !== 2) throw new Error(`CLIPTextModelWithProjection: input_ids must be [batch, seq], got shape [${inputIds.shape}]`);
    const [B, L] = inputIds.shape;
    if (L > cfg.max_position_embeddings) throw new Error(`CLIPTextModelWithProjection: sequence length ${L} exceeds max_position_embeddings ${cfg.max_position_embeddings}`);
    if (attentionMask && (attentionMask.shape[0] !== B || attentionMask.shape[1] !== L)) {
      throw new Error(`CLIPTextModelWithProjection: attention_mask shape [${attentionMask.shape}] does not match input_ids [${inputIds.shape}]`);
    }
    return tf.tidy(() => {
      const ids = inputIds.dtype === 'int32' ? inputIds : (tf.cast(inputIds, 'int32') as tf.Tensor2D);
      const tm = this.text_model;
      // Broadcast the bias to [B, H, L, L] once, so each layer's add is a same-shape add (cheap on every backend).
      const bias4 = clipAttentionBias(L, attentionMask);
      const bias = tf.tile(bias4, [bias4.shape[0] === B ? 1 : B, cfg.num_attention_heads, 1, 1]) as tf.Tensor4D;
      let h = tm.embeddings.forward(ids);
      const hiddenStates: tf.Tensor3D[] = [h];
      for (const layer of tm.encoder.layers) {
        h = layer.forward(h, bias);
        hiddenStates.push(h);
      }
      const last = tm.final_layer_norm.forward(h) as tf.Tensor3D;
      // Pooling: legacy configs (eos_token_id == 2) take argmax(input_ids) (the EOT id is the largest); others the
      // first position holding eos_token_id. tf.argMax returns the first maximum, like torch.
      const pos = cfg.eos_token_id === 2 ? tf.argMax(ids, -1) : tf.argMax(tf.cast(tf.equal(ids, cfg.eos_token_id), 'int32'), -1);
      const flatIdx = tf.add(tf.mul(tf.range(0, B, 1, 'int32'), tf.scalar(L, 'int32')), tf.cast(pos, 'int32'));
      // (a row lookup whose gradient is a scatter-add: tf.gather's needs UnsortedSegmentSum, which wasm lacks)
      const pooled = embeddingLookup(tf.reshape(last, [B * L, cfg.hidden_size]), flatIdx);
      const textEmbeds = this.text_projection.forward(pooled) as tf.Tensor2D;
      return { lastHiddenState: last, textEmbeds, hiddenStates };
    });
  }
}
