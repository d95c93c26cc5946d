// diffusers' PriorTransformer (0.25.1), Karlo's 1B text→CLIP-image-embedding prior: a causal pre-LN transformer
// over [77 text tokens, text embedding, time embedding, noisy image embedding, learned prd token], reading the
// prediction off the last (prd) token. Module/parameter names are diffusers' state-dict keys.
import * as tf from '@tensorflow/tfjs-core';
import { Module, ModuleList, type Parameter } from '../layers/module.js';
import { Linear, LayerNorm, gelu } from '../layers/basic.js';
import { TimestepEmbedding, timestepEmbedding, broadcastTimesteps } from '../layers/embeddings.js';
import { isPosInt, modelConfigParser } from './config.js';

/** config.json of a PriorTransformer (diffusers field names and defaults = Karlo's prior). */
export interface PriorTransformerConfig {
  num_attention_heads: number;
  attention_head_dim: number;
  num_layers: number;
  embedding_dim: number;
  num_embeddings: number;
  additional_embeddings: number;
  dropout: number;
  time_embed_act_fn: 'silu';
  norm_in_type: 'layer' | null;
  embedding_proj_norm_type: 'layer' | null;
  encoder_hid_proj_type: 'linear' | null;
  added_emb_type: 'prd' | null;
  time_embed_dim: number | null;
  embedding_proj_dim: number | null;
  clip_embed_dim: number | null;
}

export const PRIOR_TRANSFORMER_DEFAULTS: PriorTransformerConfig = {
  num_attention_heads: 32,
  attention_head_dim: 64,
  num_layers: 20,
  embedding_dim: 768,
  num_embeddings: 77,
  additional_embeddings: 4,
  dropout: 0.0,
  time_embed_act_fn: 'silu',
  norm_in_type: null,
  embedding_proj_norm_type: null,
  encoder_hid_proj_type: 'linear',
  added_emb_type: 'prd',
  time_embed_dim: null,
  embedding_proj_dim: null,
  clip_embed_dim: null,
};

/** Typed config from a parsed config.json: defaults filled, unknown fields and unsupported values rejected by name. */
export const priorTransformerConfig = modelConfigParser<PriorTransformerConfig>({
  className: 'PriorTransformer',
  defaults: PRIOR_TRANSFORMER_DEFAULTS,
  check: (c, bad) => {
    for (const k of ['num_attention_heads', 'attention_head_dim', 'num_layers', 'embedding_dim', 'num_embeddings'] as const) {
      if (!isPosInt(c[k])) bad(k, 'a positive integer');
    }
    if (!Number.isInteger(c.additional_embeddings) || c.additional_embeddings < 0) bad('additional_embeddings', 'an integer ≥ 0');
    for (const k of ['time_embed_dim', 'embedding_proj_dim', 'clip_embed_dim'] as const) {
      if (c[k] !== null && !isPosInt(c[k])) bad(k, 'null or a positive integer');
    }
    if (c.time_embed_act_fn !== 'silu') bad('time_embed_act_fn', "'silu'");
    if (c.norm_in_type !== null && c.norm_in_type !== 'layer') bad('norm_in_type', "null or 'layer'");
    if (c.embedding_proj_norm_type !== null && c.embedding_proj_norm_type !== 'layer') bad('embedding_proj_norm_type', "null or 'layer'");
    if (c.encoder_hid_proj_type !== null && c.encoder_hid_proj_type !== 'linear') bad('encoder_hid_proj_type', "null or 'linear'");
    if (c.added_emb_type !== null && c.added_emb_type !== 'prd') bad('added_emb_type', "null or 'prd'");
    if (typeof c.dropout !== 'number' || c.dropout < 0 || c.dropout >= 1) bad('dropout', 'a number in [0, 1) (inference: unused)');
  },
});

// Batched products with one shared weight matrix, broadcast over the batch without copying it. tfjs 4.22's
// BatchMatMul gradient does not reduce over a broadcast batch dimension, so these carry their own gradients.
type GradFn = Parameters<typeof tf.customGrad>[0];

/** [M, K] · x_bᵀ for x [B, N, K] → [B, M, N]. */
function weightTimesXT(w: tf.Tensor2D, x: tf.Tensor3D): tf.Tensor3D {
  const f = tf.customGrad(((w: tf.Tensor, x: tf.Tensor, save: tf.GradSaveFunc) => {
    save([w, x]);
    const w3 = tf.expandDims(w, 0) as tf.Tensor3D;
    return {
      value: tf.matMul(w3, x as tf.Tensor3D, false, true),
      gradFunc: (dy: tf.Tensor, [w, x]: tf.Tensor[]) => [
        tf.sum(tf.matMul(dy as tf.Tensor3D, x as tf.Tensor3D), 0), // Σ_b dy_b · x_b
        tf.matMul(dy as tf.Tensor3D, tf.expandDims(w, 0) as tf.Tensor3D, true, false), // dy_bᵀ · W
      ],
    };
  }) as unknown as GradFn);
  return f(w, x) as tf.Tensor3D;
}

/** a_bᵀ · Wᵀ for a [B, K, N], W [M, K] → [B, N, M]. */
function xTTimesWT(a: tf.Tensor3D, w: tf.Tensor2D): tf.Tensor3D {
  const f = tf.customGrad(((a: tf.Tensor, w: tf.Tensor, save: tf.GradSaveFunc) => {
    save([a, w]);
    return {
      value: tf.matMul(a as tf.Tensor3D, tf.expandDims(w, 0) as tf.Tensor3D, true, true),
      gradFunc: (dy: tf.Tensor, [a, w]: tf.Tensor[]) => [
        tf.matMul(tf.expandDims(w, 0) as tf.Tensor3D, dy as tf.Tensor3D, true, true), // Wᵀ · dy_bᵀ
        tf.sum(tf.matMul(dy as tf.Tensor3D, a as tf.Tensor3D, true, true), 0), // Σ_b dy_bᵀ · a_bᵀ
      ],
    };
  }) as unknown as GradFn);
  return f(a, w) as tf.Tensor3D;
}

/** diffusers Attention with AttnProcessor, self-attention only: softmax(bias + scale·q·kᵀ)·v, per head. */
export class SelfAttention extends Module {
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: ModuleList<Linear>;
  readonly innerDim: number;
  readonly scale: number;

  /** `dropout`: diffusers' to_out.1 (after the output projection), training mode only. */
  constructor(readonly dim: number, readonly heads: number, readonly dimHead: number, readonly dropoutP = 0) {
    super();
    this.innerDim = heads * dimHead;
    this.scale = dimHead ** -0.5;
    this.to_q = this.module('to_q', new Linear(dim, this.innerDim, true));
    this.to_k = this.module('to_k', new Linear(dim, this.innerDim, true));
    this.to_v = this.module('to_v', new Linear(dim, this.innerDim, true));
    this.to_out = this.module('to_out', new ModuleList([new Linear(this.innerDim, dim, true)]));
  }

  /** W·xᵀ + b for every batch row: [B, S, dim] → [B, inner, S] (rows = heads × head_dim, so heads split for free). */
  private projectT(lin: Linear, x: tf.Tensor3D): tf.Tensor3D {
    // With an adapter on the projection (LoRA), the plain Linear path, transposed.
    if (lin.delta) return tf.transpose(lin.forward(x), [0, 2, 1]) as tf.Tensor3D;
    return tf.add(weightTimesXT(lin.weight.value as tf.Tensor2D, x), tf.reshape(lin.bias!.value, [this.innerDim, 1])) as tf.Tensor3D;
  }

  /**
   * x [B, S, dim]; bias [B, S, S] additive (shared by every head) or null.
   * Attention probabilities go to hooks that ask for `<path>.probs` as [B, heads, S queries, S keys]; in the
   * prior S = 81 tokens: 77 text tokens, the text embedding, the time embedding, the noisy image embedding, the
   * prd token (causal: query i sees keys ≤ i; padded text tokens get ≈ 0).
   * Works on transposed projections ([B·heads, head_dim, S]) so that splitting and merging heads are reshapes and
   * every matmul reads its operands through transpose flags: no Transpose kernel runs (the cpu/native Transpose
   * is a slow generic copy). Same dot products as diffusers' AttnProcessor.
   */
  forward(x: tf.Tensor3D, bias: tf.Tensor3D | null): tf.Tensor3D {
    return this.emit(tf.tidy(() => {
      const [b, s] = x.shape;
      const bh = b * this.heads;
      const qT = tf.reshape(this.projectT(this.to_q, x), [bh, this.dimHead, s]);
      const kT = tf.reshape(this.projectT(this.to_k, x), [bh, this.dimHead, s]);
      const vT = tf.reshape(this.projectT(this.to_v, x), [bh, this.dimHead, s]);
      // baddbmm(bias, q, kᵀ, beta=1, alpha=scale): the scale applies to the product (head_dim may not be 4^n).
      let scores: tf.Tensor = tf.mul(tf.matMul(qT, kT, true, false), this.scale); // [B·H, S, S]
      if (bias) scores = tf.add(tf.reshape(scores, [b, this.heads, s, s]), tf.reshape(bias, [b, 1, s, s]));
      let probs: tf.Tensor = tf.softmax(scores, -1);
      // `<path>.probs` [B, heads, S, S] (opt-in; a hook may replace them, e.g. to ablate heads).
      if (this.wantsOutput('probs')) probs = this.emit(tf.reshape(probs, [b, this.heads, s, s]), 'probs');
      probs = tf.reshape(probs, [bh, s, s]);
      const outT = tf.reshape(tf.matMul(vT, probs, false, true), [b, this.innerDim, s]) as tf.Tensor3D; // [B, H·d, S]
      const out = this.to_out.items[0];
      if (out.delta) return this.dropout(out.forward(tf.transpose(outT, [0, 2, 1])) as tf.Tensor3D, this.dropoutP);
      // Plain matMul + add: tfjs-backend-wasm 4.22's _FusedMatMul gives wrong results with transposeA.
      return this.dropout(tf.add(xTTimesWT(outT, out.weight.value as tf.Tensor2D), out.bias!.value) as tf.Tensor3D, this.dropoutP);
    }));
  }
}

/** diffusers FeedForward(activation_fn="gelu"): net.0 = GELU (Linear `proj` + exact erf GELU), net.2 = Linear. */
export class GeluProj extends Module {
  readonly proj: Linear;
  constructor(dimIn: number, dimOut: number) {
    super();
    this.proj = this.module('proj', new Linear(dimIn, dimOut, true));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return this.emit(tf.tidy(() => gelu(this.proj.forward(x))));
  }
}

/** FeedForward's `net` list: 0 = GELU projection, 1 = Dropout (no parameters, index kept free), 2 = Linear. */
class FeedForwardNet extends Module {
  constructor(readonly act: GeluProj, readonly out: Linear) {
    super();
    this.module('0', act);
    this.module('2', out);
  }
}

export class FeedForward extends Module {
  readonly net: FeedForwardNet;
  /** `dropout`: net.1, after the GELU projection (training mode only). */
  constructor(dim: number, mult = 4, readonly dropoutP = 0) {
    super();
    this.net = this.module('net', new FeedForwardNet(new GeluProj(dim, dim * mult), new Linear(dim * mult, dim, true)));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return this.emit(tf.tidy(() => this.net.out.forward(this.dropout(this.net.act.forward(x), this.dropoutP))));
  }
}

/** diffusers BasicTransformerBlock as the prior builds it: pre-LN self-attention (norm1/attn1) and MLP (norm3/ff). */
export class BasicTransformerBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn1: SelfAttention;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;
  constructor(dim: number, heads: number, dimHead: number, dropout = 0) {
    super();
    this.norm1 = this.module('norm1', new LayerNorm(dim, 1e-5));
    this.attn1 = this.module('attn1', new SelfAttention(dim, heads, dimHead, dropout));
    this.norm3 = this.module('norm3', new LayerNorm(dim, 1e-5));
    this.ff = this.module('ff', new FeedForward(dim, 4, dropout));
  }
  forward(x: tf.Tensor3D, bias: tf.Tensor3D | null): tf.Tensor3D {
    return this.emit(tf.tidy(() => {
      const h = tf.add(this.attn1.forward(this.norm1.forward(x) as tf.Tensor3D, bias), x);
      return tf.add(this.ff.forward(this.norm3.forward(h)), h) as tf.Tensor3D;
    }));
  }
}

export class PriorTransformer extends Module {
  readonly innerDim: number;
  readonly clipEmbedDim: number;
  readonly positional_embedding: Parameter;
  readonly prd_embedding: Parameter | null;
  readonly clip_mean: Parameter;
  readonly clip_std: Parameter;
  readonly time_embedding: TimestepEmbedding;
  readonly proj_in: Linear;
  readonly embedding_proj_norm: LayerNorm | null;
  readonly embedding_proj: Linear;
  readonly encoder_hidden_states_proj: Linear | null;
  readonly transformer_blocks: BasicTransformerBlock[];
  readonly norm_in: LayerNorm | null;
  readonly norm_out: LayerNorm;
  readonly proj_to_clip_embeddings: Linear;

  constructor(readonly config: PriorTransformerConfig) {
    super();
    const c = config;
    const inner = (this.innerDim = c.num_attention_heads * c.attention_head_dim);
    const timeEmbedDim = c.time_embed_dim ?? inner;
    const embeddingProjDim = c.embedding_proj_dim ?? c.embedding_dim;
    this.clipEmbedDim = c.clip_embed_dim ?? c.embedding_dim;
    // Registration order = diffusers' named_parameters(): own parameters first, then children in creation order.
    this.positional_embedding = this.param('positional_embedding', [1, c.num_embeddings + c.additional_embeddings, inner]);
    this.prd_embedding = c.added_emb_type === 'prd' ? this.param('prd_embedding', [1, 1, inner]) : null;
    this.clip_mean = this.param('clip_mean', [1, this.clipEmbedDim]);
    this.clip_std = this.param('clip_std', [1, this.clipEmbedDim]);
    this.time_embedding = this.module('time_embedding', new TimestepEmbedding(inner, timeEmbedDim, inner));
    this.proj_in = this.module('proj_in', new Linear(c.embedding_dim, inner));
    this.embedding_proj_norm = c.embedding_proj_norm_type === 'layer' ? this.module('embedding_proj_norm', new LayerNorm(embeddingProjDim)) : null;
    this.embedding_proj = this.module('embedding_proj', new Linear(embeddingProjDim, inner));
    this.encoder_hidden_states_proj = c.encoder_hid_proj_type === 'linear' ? this.module('encoder_hidden_states_proj', new Linear(c.embedding_dim, inner)) : null;
    this.transformer_blocks = this.moduleList('transformer_blocks',
      Array.from({ length: c.num_layers }, () => new BasicTransformerBlock(inner, c.num_attention_heads, c.attention_head_dim, c.dropout)));
    this.norm_in = c.norm_in_type === 'layer' ? this.module('norm_in', new LayerNorm(inner)) : null;
    this.norm_out = this.module('norm_out', new LayerNorm(inner));
    this.proj_to_clip_embeddings = this.module('proj_to_clip_embeddings', new Linear(inner, this.clipEmbedDim));
  }

  /**
   * hiddenStates: noisy image embedding [B, embedding_dim] (or [B, n, embedding_dim]); timestep: number or
   * 0-d/1-d tensor; projEmbedding: CLIP text_embeds [B, embedding_proj_dim]; encoderHiddenStates: CLIP
   * last_hidden_state [B, L, embedding_dim]; attentionMask: tokenizer mask [B, L] (1 = token, 0 = padding).
   * Mask semantics (diffusers): bias = (1 − mask)·−10000 padded with `additional_embeddings` zeros, plus the
   * causal −10000 upper triangle; diffusers applies NEITHER when attentionMask is null (no causal mask then).
   * Returns predicted_image_embedding [B, clip_embed_dim].
   */
  forward(
    hiddenStates: tf.Tensor,
    timestep: number | tf.Tensor,
    projEmbedding: tf.Tensor,
    encoderHiddenStates: tf.Tensor3D | null = null,
    attentionMask: tf.Tensor | null = null,
  ): tf.Tensor2D {
    const name = this.path || 'PriorTransformer';
    const c = this.config;
    const b = hiddenStates.shape[0];
    const check = (ok: boolean, msg: string) => { if (!ok) throw new Error(`${name}: ${msg}`); };
    check(hiddenStates.rank === 2 || hiddenStates.rank === 3, `hidden_states must be [B, ${c.embedding_dim}], got [${hiddenStates.shape}]`);
    check(hiddenStates.shape[hiddenStates.rank - 1] === c.embedding_dim, `hidden_states has width ${hiddenStates.shape[hiddenStates.rank - 1]}, ${c.embedding_dim} expected`);
    check((projEmbedding.rank === 2 || projEmbedding.rank === 3) && projEmbedding.shape[0] === b, `proj_embedding has shape [${projEmbedding.shape}], [${b}, D] expected`);
    if (this.encoder_hidden_states_proj) check(encoderHiddenStates !== null, 'encoder_hidden_states is required (encoder_hid_proj_type is "linear")');
    if (encoderHiddenStates) check(encoderHiddenStates.rank === 3 && encoderHiddenStates.shape[0] === b, `encoder_hidden_states has shape [${encoderHiddenStates.shape}], [${b}, L, D] expected`);

    return tf.tidy(() => {
      const t = broadcastTimesteps(timestep, b, `${name}: timestep`);
      const tEmb = timestepEmbedding(t, this.innerDim, { flipSinToCos: true, freqShift: 0 });
      const timeEmbeddings = this.time_embedding.forward(tEmb);

      let pe = projEmbedding;
      if (this.embedding_proj_norm) pe = this.embedding_proj_norm.forward(pe);
      let projEmbeddings = this.embedding_proj.forward(pe);
      let enc: tf.Tensor | null = encoderHiddenStates;
      if (enc && this.encoder_hidden_states_proj) enc = this.encoder_hidden_states_proj.forward(enc);
      let h = this.proj_in.forward(hiddenStates);

      const parts: tf.Tensor[] = [];
      let additionalLen = 0;
      if (enc) { parts.push(enc); additionalLen += enc.shape[1]!; }
      if (projEmbeddings.rank === 2) projEmbeddings = tf.expandDims(projEmbeddings, 1);
      if (h.rank === 2) h = tf.expandDims(h, 1);
      parts.push(projEmbeddings, tf.expandDims(timeEmbeddings, 1), h);
      if (this.prd_embedding) parts.push(tf.tile(this.prd_embedding.value, [b, 1, 1]));
      let x = tf.concat(parts, 1) as tf.Tensor3D;
      const seq = x.shape[1];
      additionalLen += projEmbeddings.shape[1]! + 1;

      let pos: tf.Tensor = this.positional_embedding.value;
      if (pos.shape[1]! < seq) {
        // diffusers pads a short positional table with zeros for the extra tokens (text + time, and prd).
        pos = tf.pad(pos, [[0, 0], [additionalLen, this.prd_embedding ? 1 : 0], [0, 0]]);
      }
      check(pos.shape[1] === seq, `${seq} tokens do not fit the positional embedding of ${this.positional_embedding.torchShape[1]} positions`);
      x = tf.add(x, pos) as tf.Tensor3D;

      let bias: tf.Tensor3D | null = null;
      if (attentionMask) {
        check(attentionMask.rank === 2 && attentionMask.shape[0] === b && attentionMask.shape[1]! + c.additional_embeddings === seq,
          `attention_mask has shape [${attentionMask.shape}], [${b}, ${seq - c.additional_embeddings}] expected`);
        const padBias = tf.pad(tf.mul(tf.sub(1, tf.cast(attentionMask, 'float32')), -10000), [[0, 0], [0, c.additional_embeddings]]);
        bias = tf.add(tf.expandDims(padBias, 1), causalBias(seq)) as tf.Tensor3D;
      }

      if (this.norm_in) x = this.norm_in.forward(x) as tf.Tensor3D;
      for (const block of this.transformer_blocks) x = block.forward(x, bias);
      x = this.norm_out.forward(x) as tf.Tensor3D;
      const picked = this.prd_embedding
        ? tf.reshape(tf.slice(x, [0, seq - 1, 0], [b, 1, this.innerDim]), [b, this.innerDim])
        : tf.slice(x, [0, additionalLen, 0], [b, seq - additionalLen, this.innerDim]);
      return this.emit(this.proj_to_clip_embeddings.forward(picked) as tf.Tensor2D, 'predicted_image_embedding');
    });
  }

  /** De-normalises sampled latents into CLIP image embeddings: latents·clip_std + clip_mean. */
  postProcessLatents(latents: tf.Tensor): tf.Tensor2D {
    return tf.tidy(() => tf.add(tf.mul(latents, this.clip_std.value), this.clip_mean.value) as tf.Tensor2D);
  }
}

/** The [1, S, S] causal bias: −10000 above the diagonal, 0 elsewhere (diffusers' causal_attention_mask buffer). */
function causalBias(s: number): tf.Tensor3D {
  const m = new Float32Array(s * s);
  for (let i = 0; i < s; i++) for (let j = i + 1; j < s; j++) m[i * s + j] = -10000;
  return tf.tensor3d(m, [1, s, s]);
}
