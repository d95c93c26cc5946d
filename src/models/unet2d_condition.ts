// diffusers' UNet2DConditionModel, restricted to what Karlo's decoder uses (and checked: anything else in the
// config is an error naming the field): positional timestep embedding, identity class embedding (text_proj's
// additive CLIP embedding), Resnet*sample / SimpleCrossAttn blocks, scale-shift resnets, learned-range output.
// NHWC inside; forward() takes and returns NCHW like PyTorch.
import * as tf from '@tensorflow/tfjs-core';
import { Module, nchwHook, type OutputHook } from '../layers/module.js';
import { Conv2d, GroupNorm, silu } from '../layers/basic.js';
import { TimestepEmbedding, broadcastTimesteps, timestepEmbedding } from '../layers/embeddings.js';
import type { TimeEmbeddingNorm } from '../layers/resnet.js';
import { ResnetDownsampleBlock2D, ResnetUpsampleBlock2D, type ResnetSettings } from '../layers/unet_blocks.js';
import {
  SimpleCrossAttnDownBlock2D, SimpleCrossAttnUpBlock2D, UNetMidBlock2DSimpleCrossAttn,
  type CrossAttnContext, type CrossAttnSettings,
} from '../layers/cross_attn_blocks.js';
import { isPosInt, modelConfigParser, type BadField } from './config.js';

export type DownBlockType = 'ResnetDownsampleBlock2D' | 'SimpleCrossAttnDownBlock2D';
export type UpBlockType = 'ResnetUpsampleBlock2D' | 'SimpleCrossAttnUpBlock2D';

/** config.json of UNet2DConditionModel (diffusers 0.25.1 field names and defaults). */
export interface UNet2DConditionConfig {
  sample_size: number | null;
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: DownBlockType[];
  mid_block_type: 'UNetMidBlock2DSimpleCrossAttn' | null;
  up_block_types: UpBlockType[];
  only_cross_attention: boolean | boolean[];
  block_out_channels: number[];
  layers_per_block: number | number[];
  downsample_padding: number;
  mid_block_scale_factor: number;
  dropout: number;
  act_fn: 'silu' | 'swish';
  norm_num_groups: number;
  norm_eps: number;
  cross_attention_dim: number | number[];
  transformer_layers_per_block: number | number[];
  reverse_transformer_layers_per_block: null;
  encoder_hid_dim: null;
  encoder_hid_dim_type: null;
  attention_head_dim: number | number[];
  num_attention_heads: null;
  dual_cross_attention: boolean;
  use_linear_projection: boolean;
  class_embed_type: 'identity' | null;
  addition_embed_type: null;
  addition_time_embed_dim: number | null;
  num_class_embeds: null;
  upcast_attention: boolean;
  resnet_time_scale_shift: TimeEmbeddingNorm;
  resnet_skip_time_act: boolean;
  resnet_out_scale_factor: number;
  time_embedding_type: 'positional';
  time_embedding_dim: number | null;
  time_embedding_act_fn: null;
  timestep_post_act: null;
  time_cond_proj_dim: null;
  conv_in_kernel: number;
  conv_out_kernel: number;
  projection_class_embeddings_input_dim: number | null;
  attention_type: 'default';
  class_embeddings_concat: boolean;
  mid_block_only_cross_attention: boolean | null;
  cross_attention_norm: null;
  addition_embed_type_num_heads: number;
}

export const UNET2D_CONDITION_DEFAULTS: UNet2DConditionConfig = {
  sample_size: null,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'] as unknown as DownBlockType[],
  mid_block_type: 'UNetMidBlock2DCrossAttn' as unknown as 'UNetMidBlock2DSimpleCrossAttn',
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'] as unknown as UpBlockType[],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  dropout: 0,
  act_fn: 'silu',
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  reverse_transformer_layers_per_block: null,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  attention_head_dim: 8,
  num_attention_heads: null,
  dual_cross_attention: false,
  use_linear_projection: false,
  class_embed_type: null,
  addition_embed_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  upcast_attention: false,
  resnet_time_scale_shift: 'default',
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1.0,
  time_embedding_type: 'positional',
  time_embedding_dim: null,
  time_embedding_act_fn: null,
  timestep_post_act: null,
  time_cond_proj_dim: null,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  projection_class_embeddings_input_dim: null,
  attention_type: 'default',
  class_embeddings_concat: false,
  mid_block_only_cross_attention: null,
  cross_attention_norm: null,
  addition_embed_type_num_heads: 64,
};

const DOWN_TYPES = ['ResnetDownsampleBlock2D', 'SimpleCrossAttnDownBlock2D'];
const UP_TYPES = ['ResnetUpsampleBlock2D', 'SimpleCrossAttnUpBlock2D'];

/** Typed config from a parsed config.json: diffusers' defaults filled, what is not implemented rejected by name. */
export const unet2dConditionConfig = modelConfigParser<UNet2DConditionConfig>({
  className: 'UNet2DConditionModel',
  defaults: UNET2D_CONDITION_DEFAULTS,
  check: (typed, bad) => checkUNet2DCondition(typed as unknown as Record<string, unknown>, bad),
});

function checkUNet2DCondition(cfg: Record<string, unknown>, bad: BadField): void {
  const posInt = isPosInt;
  const intOrList = (field: string, n: number) => {
    const v = cfg[field];
    if (posInt(v)) return;
    if (Array.isArray(v) && v.length === n && v.every(posInt)) return;
    bad(field, `a positive integer or a list of ${n} of them`);
  };
  const mustBe = (field: string, allowed: unknown[], why: string) => {
    if (!allowed.includes(cfg[field] as never)) bad(field, why);
  };

  const blocks = cfg.block_out_channels as unknown;
  if (!Array.isArray(blocks) || blocks.length === 0 || !blocks.every(posInt)) bad('block_out_channels', 'a non-empty list of positive integers');
  const n = (blocks as number[]).length;
  const down = cfg.down_block_types as unknown;
  const up = cfg.up_block_types as unknown;
  if (!Array.isArray(down) || down.length !== n) bad('down_block_types', `one per block_out_channels entry (${n})`);
  if (!Array.isArray(up) || up.length !== n) bad('up_block_types', `one per block_out_channels entry (${n})`);
  (down as string[]).forEach((t) => { if (!DOWN_TYPES.includes(t)) bad('down_block_types', `block type "${t}"; supported: ${DOWN_TYPES.join(', ')}`); });
  (up as string[]).forEach((t) => { if (!UP_TYPES.includes(t)) bad('up_block_types', `block type "${t}"; supported: ${UP_TYPES.join(', ')}`); });
  mustBe('mid_block_type', ['UNetMidBlock2DSimpleCrossAttn', null], 'supported: UNetMidBlock2DSimpleCrossAttn or null');
  for (const f of ['in_channels', 'out_channels', 'norm_num_groups']) if (!posInt(cfg[f])) bad(f, 'a positive integer');
  intOrList('layers_per_block', n);
  intOrList('attention_head_dim', n);
  intOrList('cross_attention_dim', n);
  const oca = cfg.only_cross_attention;
  if (!(typeof oca === 'boolean' || (Array.isArray(oca) && oca.length === n && oca.every((b) => typeof b === 'boolean')))) bad('only_cross_attention', `a boolean or a list of ${n}`);
  mustBe('mid_block_only_cross_attention', [null, true, false], 'a boolean or null');
  for (const f of ['conv_in_kernel', 'conv_out_kernel']) if (!posInt(cfg[f]) || (cfg[f] as number) % 2 === 0) bad(f, 'an odd positive integer');
  for (const f of ['norm_eps', 'mid_block_scale_factor', 'resnet_out_scale_factor']) if (typeof cfg[f] !== 'number' || !((cfg[f] as number) > 0)) bad(f, 'a positive number');
  if (typeof cfg.freq_shift !== 'number') bad('freq_shift', 'a number');
  for (const f of ['flip_sin_to_cos', 'center_input_sample', 'resnet_skip_time_act', 'upcast_attention', 'use_linear_projection']) {
    if (typeof cfg[f] !== 'boolean') bad(f, 'a boolean');
  }
  if (typeof cfg.dropout !== 'number') bad('dropout', 'a number (unused at inference)');
  mustBe('act_fn', ['silu', 'swish'], 'only silu');
  mustBe('resnet_time_scale_shift', ['default', 'scale_shift'], 'default or scale_shift');
  mustBe('class_embed_type', ['identity', null], 'identity or null');
  mustBe('num_class_embeds', [null], 'class embedding tables are not implemented');
  mustBe('class_embeddings_concat', [false], 'the class embedding is added to the time embedding');
  mustBe('time_embedding_type', ['positional'], 'only positional');
  if (!(cfg.time_embedding_dim === null || posInt(cfg.time_embedding_dim))) bad('time_embedding_dim', 'a positive integer or null');
  mustBe('time_embedding_act_fn', [null], 'not implemented');
  mustBe('timestep_post_act', [null], 'not implemented');
  mustBe('time_cond_proj_dim', [null], 'not implemented');
  mustBe('addition_embed_type', [null], 'not implemented');
  mustBe('encoder_hid_dim', [null], 'not implemented');
  mustBe('encoder_hid_dim_type', [null], 'not implemented');
  mustBe('num_attention_heads', [null], 'diffusers does not support it either; use attention_head_dim');
  mustBe('cross_attention_norm', [null], 'not implemented');
  mustBe('attention_type', ['default'], 'only default');
  mustBe('dual_cross_attention', [false], 'not implemented');
}

const perBlock = <T>(v: T | T[], n: number): T[] => (Array.isArray(v) ? [...v] : Array(n).fill(v));

export interface UNetForwardOptions {
  /** [B, time_embed_dim]: with class_embed_type identity, added to the time embedding (text_proj's output). */
  classLabels?: tf.Tensor2D | null;
  /** [B, L] 0/1 (bool or int) over the encoder tokens; converted to the bias (1 − mask)·−10000. */
  attentionMask?: tf.Tensor2D | null;
}

export type DownBlock = ResnetDownsampleBlock2D | SimpleCrossAttnDownBlock2D;
export type UpBlock = ResnetUpsampleBlock2D | SimpleCrossAttnUpBlock2D;

export class UNet2DConditionModel extends Module {
  readonly conv_in: Conv2d;
  readonly time_embedding: TimestepEmbedding;
  readonly down_blocks: DownBlock[];
  readonly mid_block: UNetMidBlock2DSimpleCrossAttn | null;
  readonly up_blocks: UpBlock[];
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  readonly timeEmbedDim: number;

  constructor(readonly config: UNet2DConditionConfig) {
    super();
    const c = config;
    const ch = c.block_out_channels;
    const n = ch.length;
    this.conv_in = this.module('conv_in', new Conv2d(c.in_channels, ch[0], c.conv_in_kernel, { padding: (c.conv_in_kernel - 1) / 2 }));
    this.timeEmbedDim = c.time_embedding_dim ?? ch[0] * 4;
    this.time_embedding = this.module('time_embedding', new TimestepEmbedding(ch[0], this.timeEmbedDim));

    const resnetWith = (outputScaleFactor: number): ResnetSettings => ({
      tembChannels: this.timeEmbedDim,
      eps: c.norm_eps,
      groups: c.norm_num_groups,
      timeEmbeddingNorm: c.resnet_time_scale_shift,
      skipTimeAct: c.resnet_skip_time_act,
      outputScaleFactor,
      dropout: c.dropout,
    });
    const rs = resnetWith(c.resnet_out_scale_factor);
    const layers = perBlock(c.layers_per_block, n);
    const headDim = perBlock(c.attention_head_dim, n);
    const crossDim = perBlock(c.cross_attention_dim, n);
    const onlyCross = perBlock(c.only_cross_attention, n);
    const attn = (i: number, only: boolean): CrossAttnSettings => ({ crossAttentionDim: crossDim[i], attentionHeadDim: headDim[i], onlyCrossAttention: only });

    const downs: DownBlock[] = [];
    let out = ch[0];
    c.down_block_types.forEach((type, i) => {
      const inCh = out;
      out = ch[i];
      const last = i === n - 1;
      downs.push(type === 'ResnetDownsampleBlock2D'
        ? new ResnetDownsampleBlock2D(inCh, out, layers[i], !last, rs)
        : new SimpleCrossAttnDownBlock2D(inCh, out, layers[i], !last, rs, attn(i, onlyCross[i])));
    });
    this.down_blocks = this.moduleList('down_blocks', downs);

    const midOnly = c.mid_block_only_cross_attention ?? (typeof c.only_cross_attention === 'boolean' ? c.only_cross_attention : false);
    this.mid_block = c.mid_block_type === null ? null
      : this.module('mid_block', new UNetMidBlock2DSimpleCrossAttn(ch[n - 1], 1, resnetWith(c.mid_block_scale_factor), attn(n - 1, midOnly)));

    const rch = [...ch].reverse();
    const rLayers = [...layers].reverse();
    const rCross = [...crossDim].reverse();
    const rOnly = [...onlyCross].reverse();
    const ups: UpBlock[] = [];
    out = rch[0];
    c.up_block_types.forEach((type, i) => {
      const prev = out;
      out = rch[i];
      const inCh = rch[Math.min(i + 1, n - 1)];
      const last = i === n - 1;
      // diffusers indexes attention_head_dim un-reversed for the up blocks (cross dim and the rest reversed).
      ups.push(type === 'ResnetUpsampleBlock2D'
        ? new ResnetUpsampleBlock2D(inCh, prev, out, rLayers[i] + 1, !last, rs)
        : new SimpleCrossAttnUpBlock2D(inCh, prev, out, rLayers[i] + 1, !last, rs, { crossAttentionDim: rCross[i], attentionHeadDim: headDim[i], onlyCrossAttention: rOnly[i] }));
    });
    this.up_blocks = this.moduleList('up_blocks', ups);

    this.conv_norm_out = this.module('conv_norm_out', new GroupNorm(c.norm_num_groups, ch[0], c.norm_eps));
    this.conv_out = this.module('conv_out', new Conv2d(ch[0], c.out_channels, c.conv_out_kernel, { padding: (c.conv_out_kernel - 1) / 2 }));
  }

  /**
   * Installs a hook on every submodule (as UNet2DModel): feature maps are handed over NCHW like PyTorch (transposed
   * only while a hook is installed), other tensors as they are ([B, L, C] token sequences, [B, C] embeddings).
   * The tensor lives only during the call: copy it to keep it. Paths: conv_in, time_embedding (before the class
   * embedding is added), down_blocks.{i}, down_blocks.{i}.res_samples.{j} (skips other than the block output),
   * mid_block, up_blocks.{i}, conv_norm_out (before SiLU), conv_out, and every inner module by its state-dict
   * path (e.g. down_blocks.1.attentions.0). A tensor the hook returns (NCHW for feature maps) replaces the output;
   * hooks whose `wants` asks for them also get `<attention path>.probs` [B, heads, H·W, keys] (AddedKVAttention).
   */
  override setOutputHook(fn: OutputHook | null): void {
    super.setOutputHook(fn && nchwHook(fn));
  }

  /**
   * sample: NCHW [B, in_channels, H, W]; timestep: a number or a 0-d/1-d tensor (broadcast to B);
   * encoderHiddenStates: [B, L, cross_attention_dim]. Returns NCHW [B, out_channels, H, W].
   */
  forward(sample: tf.Tensor4D, timestep: number | tf.Tensor, encoderHiddenStates: tf.Tensor3D, opts: UNetForwardOptions = {}): tf.Tensor4D {
    const c = this.config;
    const name = this.path || 'UNet2DConditionModel';
    if (sample.rank !== 4 || sample.shape[1] !== c.in_channels) throw new Error(`${name}: sample has shape [${sample.shape}], NCHW with ${c.in_channels} channels expected`);
    const [b, , hgt, wid] = sample.shape;
    const factor = 2 ** (this.down_blocks.length - 1);
    if (hgt % factor !== 0 || wid % factor !== 0) throw new Error(`${name}: sample is ${hgt}x${wid}; height and width must be divisible by ${factor} (the number of 2x resamplings)`);
    const needsContext = this.mid_block !== null || this.down_blocks.some((d) => d instanceof SimpleCrossAttnDownBlock2D);
    if (needsContext && (encoderHiddenStates?.rank !== 3 || encoderHiddenStates.shape[0] !== b)) {
      throw new Error(`${name}: encoder_hidden_states has shape [${encoderHiddenStates?.shape}], [${b}, L, ${JSON.stringify(c.cross_attention_dim)}] expected`);
    }
    const classLabels = opts.classLabels ?? null;
    if (c.class_embed_type === 'identity') {
      if (!classLabels) throw new Error(`${name}: class_labels are required (class_embed_type "identity")`);
      if (classLabels.rank !== 2 || classLabels.shape[0] !== b || classLabels.shape[1] !== this.timeEmbedDim) {
        throw new Error(`${name}: class_labels has shape [${classLabels.shape}], [${b}, ${this.timeEmbedDim}] expected`);
      }
    }
    const mask = opts.attentionMask ?? null;
    if (mask && (mask.rank !== 2 || mask.shape[0] !== b || mask.shape[1] !== encoderHiddenStates.shape[1])) {
      throw new Error(`${name}: attention_mask has shape [${mask.shape}], [${b}, ${encoderHiddenStates.shape[1]}] expected (one entry per encoder token)`);
    }

    return tf.tidy(() => {
      let x = tf.transpose(sample, [0, 2, 3, 1]) as tf.Tensor4D;
      if (c.center_input_sample) x = tf.sub(tf.mul(x, 2), 1) as tf.Tensor4D;

      const tEmb = timestepEmbedding(broadcastTimesteps(timestep, b, `${name}: timestep`), c.block_out_channels[0], {
        flipSinToCos: c.flip_sin_to_cos, freqShift: c.freq_shift,
      });
      let emb: tf.Tensor2D = this.time_embedding.forward(tEmb);
      if (classLabels) emb = tf.add(emb, classLabels) as tf.Tensor2D;

      const bias = mask ? tf.expandDims(tf.mul(tf.sub(1, tf.cast(mask, 'float32')), -10000), 1) as tf.Tensor3D : null;
      const ctx: CrossAttnContext = { encoderHiddenStates, attentionBias: bias };

      x = this.conv_in.forward(x);
      const skips: tf.Tensor4D[] = [x];
      for (const d of this.down_blocks) {
        const r = d instanceof SimpleCrossAttnDownBlock2D ? d.forward(x, emb, ctx) : d.forward(x, emb);
        x = r.out;
        skips.push(...r.resSamples);
      }
      if (this.mid_block) x = this.mid_block.forward(x, emb, ctx);
      for (const u of this.up_blocks) {
        const k = u.resnets.length;
        const mine = skips.splice(skips.length - k, k);
        x = u instanceof SimpleCrossAttnUpBlock2D ? u.forward(x, mine, emb, ctx) : u.forward(x, mine, emb);
      }
      x = this.conv_norm_out.forwardSilu(x) as tf.Tensor4D;
      x = this.conv_out.forward(x);
      return tf.transpose(x, [0, 3, 1, 2]) as tf.Tensor4D;
    });
  }
}
