// CLIP text encoder with projection, equal to transformers' CLIPTextModelWithProjection (≈4.36): token +
// position embeddings, pre-LayerNorm transformer layers under a causal mask (plus an optional padding mask),
// final LayerNorm, pooling at the EOS token, bias-free projection. Parameter names are transformers' keys.
import * as tf from '@tensorflow/tfjs-core';
import { Module } from '../layers/module.js';
import { Embedding, LayerNorm, Linear, embeddingLookup, gelu, quickGelu } from '../layers/basic.js';
import { loadWeights, readConfig } from '../io/weights.js';
import * as path from 'node:path';

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

const ACTS: ClipHiddenAct[] = ['quick_gelu', 'gelu', 'gelu_new', 'gelu_pytorch_tanh'];

/**
 * Typed config from a parsed config.json (flat CLIPTextConfig, or a CLIPConfig's `text_config`). Unsupported or
 * malformed values are errors naming the field and `source`.
 */
export function clipTextConfig(raw: Record<string, unknown>, source = 'config.json'): CLIPTextConfig {
  let r = raw;
  if (raw.model_type === 'clip' && raw.text_config && typeof raw.text_config === 'object') {
    r = { ...(raw.text_config as Record<string, unknown>) };
    if (r.projection_dim === undefined && raw.projection_dim !== undefined) r.projection_dim = raw.projection_dim;
  }
  if (r.model_type !== undefined && r.model_type !== 'clip_text_model') {
    throw new Error(`${source}: model_type "${String(r.model_type)}" is not a CLIP text model (clip_text_model expected)`);
  }
  const cfg = { ...CLIP_TEXT_DEFAULTS };
  for (const k of Object.keys(CLIP_TEXT_DEFAULTS) as (keyof CLIPTextConfig)[]) {
    const v = r[k];
    if (v === undefined || v === null) continue;
    if (k === 'hidden_act') {
      if (!ACTS.includes(v as ClipHiddenAct)) throw new Error(`${source}: hidden_act "${String(v)}" is not supported (${ACTS.join(', ')})`);
      cfg.hidden_act = v as ClipHiddenAct;
    } else {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${source}: ${k} must be a number, got ${JSON.stringify(v)}`);
      (cfg as Record<string, unknown>)[k] = v;
    }
  }
  for (const k of ['vocab_size', 'hidden_size', 'intermediate_size', 'projection_dim', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings'] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) throw new Error(`${source}: ${k} must be a positive integer, got ${cfg[k]}`);
  }
  if (cfg.hidden_size % cfg.num_attention_heads !== 0) {
    throw new Error(`${source}: hidden_size ${cfg.hidden_size} is not divisible by num_attention_heads ${cfg.num_attention_heads}`);
  }
  return cfg;
}

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

/** Loads a text_encoder folder (config.json + model.safetensors), strict key/shape check. */
export function loadClipTextModel(dir: string, opts: { trainable?: boolean } = {}): CLIPTextModelWithProjection {
  const cfgFile = path.join(dir, 'config.json');
  const raw = readConfig(dir);
  if (typeof raw._class_name === 'string') throw new Error(`${cfgFile}: a diffusers ${raw._class_name} config, not a CLIPTextModelWithProjection`);
  const archs = raw.architectures as string[] | undefined;
  if (archs && !archs.includes('CLIPTextModelWithProjection')) {
    throw new Error(`${cfgFile}: architectures ${JSON.stringify(archs)}: CLIPTextModelWithProjection expected`);
  }
  const model = new CLIPTextModelWithProjection(clipTextConfig(raw, cfgFile));
  loadWeights(model, dir, { strict: true, trainable: opts.trainable ?? false });
  return model;
}
