// diffusers' `Attention` as the SimpleCrossAttn blocks of Karlo's decoder build it (added_kv_proj_dim set,
// AttnAddedKVProcessor): GroupNorm on the spatial stream, queries from the spatial tokens, keys/values = the
// projected encoder tokens (add_k_proj/add_v_proj, un-normed) followed by the spatial tokens (to_k/to_v),
// an additive mask bias right-padded with zeros for the spatial keys, scale head_dim^-0.5, to_out.0, residual.
import * as tf from '@tensorflow/tfjs-core';
import { Module, ModuleList } from './module.js';
import { GroupNorm, Linear } from './basic.js';

export interface AddedKVAttentionOptions {
  /** Channels of the spatial stream (query_dim; also diffusers' cross_attention_dim for to_k/to_v here). */
  queryDim: number;
  heads: number;
  dimHead: number;
  /** Width of encoder_hidden_states (added_kv_proj_dim). */
  addedKvProjDim: number;
  /** Groups of the spatial GroupNorm (norm_num_groups). */
  normNumGroups: number;
  /** GroupNorm eps (diffusers Attention's `eps`, default 1e-5). */
  eps?: number;
  /** Bias on to_q/to_k/to_v (`bias`; the SimpleCrossAttn blocks pass True). */
  bias?: boolean;
  /** Keys/values from the encoder tokens only (no to_k/to_v). False in Karlo. */
  onlyCrossAttention?: boolean;
}

export class AddedKVAttention extends Module {
  readonly heads: number;
  readonly dimHead: number;
  readonly innerDim: number;
  readonly scale: number;
  readonly onlyCrossAttention: boolean;
  readonly group_norm: GroupNorm;
  readonly to_q: Linear;
  readonly to_k: Linear | null;
  readonly to_v: Linear | null;
  readonly add_k_proj: Linear;
  readonly add_v_proj: Linear;
  readonly to_out: ModuleList<Linear>;

  constructor(readonly opts: AddedKVAttentionOptions) {
    super();
    const { queryDim, heads, dimHead, addedKvProjDim } = opts;
    if (!(heads > 0 && Number.isInteger(heads))) throw new Error(`Attention: heads must be a positive integer, got ${heads}`);
    this.heads = heads;
    this.dimHead = dimHead;
    this.innerDim = heads * dimHead;
    this.scale = dimHead ** -0.5;
    this.onlyCrossAttention = opts.onlyCrossAttention ?? false;
    const bias = opts.bias ?? false;
    this.group_norm = this.module('group_norm', new GroupNorm(opts.normNumGroups, queryDim, opts.eps ?? 1e-5));
    this.to_q = this.module('to_q', new Linear(queryDim, this.innerDim, bias));
    this.to_k = this.onlyCrossAttention ? null : this.module('to_k', new Linear(queryDim, this.innerDim, bias));
    this.to_v = this.onlyCrossAttention ? null : this.module('to_v', new Linear(queryDim, this.innerDim, bias));
    // diffusers creates the added projections with the default bias=True regardless of `bias`.
    this.add_k_proj = this.module('add_k_proj', new Linear(addedKvProjDim, this.innerDim, true));
    this.add_v_proj = this.module('add_v_proj', new Linear(addedKvProjDim, this.innerDim, true));
    this.to_out = this.module('to_out', new ModuleList([new Linear(this.innerDim, queryDim, true)]));
  }

  /** [B, L, heads·d] → [B, heads, L, d] */
  private splitHeads(x: tf.Tensor): tf.Tensor4D {
    const [b, l] = x.shape;
    return tf.transpose(tf.reshape(x, [b, l, this.heads, this.dimHead]), [0, 2, 1, 3]) as tf.Tensor4D;
  }

  /**
   * x: NHWC spatial stream [B, H, W, C]; encoderHiddenStates: [B, L, addedKvProjDim];
   * attentionBias: additive bias over the encoder tokens, [B, 1, L] or [B, L] (0 = keep, -10000 = masked), or null.
   * Returns NHWC [B, H, W, C] (attention output + x).
   * Attention probabilities are reported (to hooks that ask for them) as `<path>.probs`, [B, heads, H·W, keys]:
   * query i = spatial position (y, x) at i = y·W + x; keys = the encoder tokens (in the decoder: text_proj's extra
   * CLIP tokens, then the 77 text tokens), then (unless only_cross_attention) the H·W spatial positions in the
   * same order. Rows sum to 1; masked encoder tokens get ≈ 0.
   */
  forward(x: tf.Tensor4D, encoderHiddenStates: tf.Tensor3D, attentionBias: tf.Tensor | null = null): tf.Tensor4D {
    return this.emit(tf.tidy(() => {
      const [b, h, w, c] = x.shape;
      const name = this.path || 'Attention';
      if (c !== this.opts.queryDim) throw new Error(`${name}: input has ${c} channels, ${this.opts.queryDim} expected`);
      if (encoderHiddenStates.rank !== 3 || encoderHiddenStates.shape[0] !== b || encoderHiddenStates.shape[2] !== this.opts.addedKvProjDim) {
        throw new Error(`${name}: encoder_hidden_states has shape [${encoderHiddenStates.shape}], [${b}, L, ${this.opts.addedKvProjDim}] expected`);
      }
      const hw = h * w;
      const nEnc = encoderHiddenStates.shape[1];
      const tokens = tf.reshape(x, [b, hw, c]);
      const normed = this.group_norm.forward(tokens);

      // Scaling q instead of q·kᵀ: head_dim^-0.5 is a power of two for Karlo's head sizes (64, 16), so this is
      // bit-identical to baddbmm's alpha and touches fewer elements.
      const q = this.splitHeads(tf.mul(this.to_q.forward(normed), this.scale));
      let k = this.splitHeads(this.add_k_proj.forward(encoderHiddenStates));
      let v = this.splitHeads(this.add_v_proj.forward(encoderHiddenStates));
      if (!this.onlyCrossAttention) {
        k = tf.concat([k, this.splitHeads(this.to_k!.forward(normed))], 2);
        v = tf.concat([v, this.splitHeads(this.to_v!.forward(normed))], 2);
      }
      let scores: tf.Tensor = tf.matMul(q, k, false, true); // [B, heads, HW, nKeys]
      if (attentionBias) {
        const bias = attentionBias.rank === 2 ? tf.expandDims(attentionBias, 1) : attentionBias;
        if (bias.rank !== 3 || bias.shape[1] !== 1 || bias.shape[2] !== nEnc || (bias.shape[0] !== b && bias.shape[0] !== 1)) {
          throw new Error(`${name}: attention mask has shape [${attentionBias.shape}], [${b}, 1, ${nEnc}] expected (one entry per encoder token)`);
        }
        // The spatial keys are never masked: pad the bias with zeros on the right (prepare_attention_mask).
        const padded = this.onlyCrossAttention ? bias : tf.pad(bias, [[0, 0], [0, 0], [0, hw]]);
        scores = tf.add(scores, tf.reshape(padded, [bias.shape[0], 1, 1, -1]));
      }
      // `<path>.probs` [B, heads, H·W, keys] (opt-in; a hook may replace them, e.g. to ablate heads).
      const probs = this.emit(tf.softmax(scores, -1), 'probs');
      const out = tf.reshape(tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3]), [b, hw, this.innerDim]);
      const projected = this.to_out.items[0].forward(out);
      return tf.add(tf.reshape(projected, [b, h, w, c]), x) as tf.Tensor4D;
    }));
  }
}
