// diffusers UNet2DModel, the unconditional UNet of Karlo's two super-resolution nets (64 → 256): ResnetDownsample /
// ResnetUpsample blocks, an attention-free mid block, additive time embedding. Public API NCHW, NHWC inside.
import * as tf from '@tensorflow/tfjs-core';
import { Module, nchwHook, type OutputHook } from '../layers/module.js';
import { Conv2d, GroupNorm, silu } from '../layers/basic.js';
import { TimestepEmbedding, broadcastTimesteps, timestepEmbedding } from '../layers/embeddings.js';
import { ResnetDownsampleBlock2D, ResnetUpsampleBlock2D, UNetMidBlock2D, type ResnetSettings } from '../layers/unet_blocks.js';
import { isPosInt, modelConfigParser } from './config.js';

/** config.json of a diffusers UNet2DModel (field names and defaults of diffusers 0.25.1). */
export interface UNet2DConfig {
  sample_size: number | [number, number] | null;
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  time_embedding_type: string;
  freq_shift: number;
  flip_sin_to_cos: boolean;
  down_block_types: string[];
  up_block_types: string[];
  block_out_channels: number[];
  layers_per_block: number;
  mid_block_scale_factor: number;
  downsample_padding: number;
  downsample_type: string;
  upsample_type: string;
  dropout: number;
  act_fn: string;
  attention_head_dim: number | null;
  norm_num_groups: number | null;
  attn_norm_num_groups: number | null;
  norm_eps: number;
  resnet_time_scale_shift: string;
  add_attention: boolean;
  class_embed_type: string | null;
  num_class_embeds: number | null;
  num_train_timesteps: number | null;
}

export const UNET2D_DEFAULTS: UNet2DConfig = {
  sample_size: null,
  in_channels: 3,
  out_channels: 3,
  center_input_sample: false,
  time_embedding_type: 'positional',
  freq_shift: 0,
  flip_sin_to_cos: true,
  down_block_types: ['DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'],
  up_block_types: ['AttnUpBlock2D', 'AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'],
  block_out_channels: [224, 448, 672, 896],
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  downsample_padding: 1,
  downsample_type: 'conv',
  upsample_type: 'conv',
  dropout: 0,
  act_fn: 'silu',
  attention_head_dim: 8,
  norm_num_groups: 32,
  attn_norm_num_groups: null,
  norm_eps: 1e-5,
  resnet_time_scale_shift: 'default',
  add_attention: true,
  class_embed_type: null,
  num_class_embeds: null,
  num_train_timesteps: null,
};

/** Typed config from a parsed config.json: diffusers' defaults filled, what is not implemented rejected by name. */
export const unet2dConfig = modelConfigParser<UNet2DConfig>({
  className: 'UNet2DModel',
  defaults: UNET2D_DEFAULTS,
  check: (cfg, bad) => {
    if (!Array.isArray(cfg.block_out_channels) || cfg.block_out_channels.length === 0) bad('block_out_channels', 'a non-empty list is required');
    const n = cfg.block_out_channels.length;
    if (cfg.down_block_types.length !== n) bad('down_block_types', `needs one entry per block_out_channels (${n})`);
    if (cfg.up_block_types.length !== n) bad('up_block_types', `needs one entry per block_out_channels (${n})`);
    cfg.down_block_types.forEach((t, i) => { if (t !== 'ResnetDownsampleBlock2D') bad('down_block_types', `entry ${i} "${t}": only ResnetDownsampleBlock2D is implemented`); });
    cfg.up_block_types.forEach((t, i) => { if (t !== 'ResnetUpsampleBlock2D') bad('up_block_types', `entry ${i} "${t}": only ResnetUpsampleBlock2D is implemented`); });
    if (cfg.add_attention) bad('add_attention', 'the mid-block attention is not implemented; Karlo SR uses false');
    if (cfg.time_embedding_type !== 'positional') bad('time_embedding_type', 'only "positional" is implemented');
    if (cfg.class_embed_type !== null) bad('class_embed_type', 'class embeddings are not implemented');
    if (cfg.num_class_embeds !== null) bad('num_class_embeds', 'class embeddings are not implemented');
    if (cfg.act_fn !== 'silu' && cfg.act_fn !== 'swish') bad('act_fn', 'only silu is implemented');
    if (cfg.resnet_time_scale_shift !== 'default' && cfg.resnet_time_scale_shift !== 'scale_shift') bad('resnet_time_scale_shift', 'default or scale_shift');
    if (typeof cfg.norm_num_groups !== 'number') bad('norm_num_groups', 'a number is required by the Resnet blocks');
    if (!isPosInt(cfg.layers_per_block)) bad('layers_per_block', 'a positive integer');
    if (!['conv', 'resnet', 'fir'].includes(cfg.downsample_type)) bad('downsample_type', 'conv or resnet');
    if (!['conv', 'resnet', 'fir'].includes(cfg.upsample_type)) bad('upsample_type', 'conv or resnet');
    for (const c of cfg.block_out_channels) if (c % cfg.norm_num_groups! !== 0) bad('block_out_channels', `${c} is not divisible by norm_num_groups ${cfg.norm_num_groups}`);
  },
});

export class UNet2DModel extends Module {
  readonly conv_in: Conv2d;
  readonly time_embedding: TimestepEmbedding;
  readonly down_blocks: ResnetDownsampleBlock2D[];
  readonly mid_block: UNetMidBlock2D;
  readonly up_blocks: ResnetUpsampleBlock2D[];
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(readonly config: UNet2DConfig) {
    super();
    const cfg = config;
    const ch = cfg.block_out_channels;
    const n = ch.length;
    const timeEmbedDim = ch[0] * 4;
    const s: ResnetSettings = {
      tembChannels: timeEmbedDim,
      groups: cfg.norm_num_groups!,
      eps: cfg.norm_eps,
      timeEmbeddingNorm: cfg.resnet_time_scale_shift as ResnetSettings['timeEmbeddingNorm'],
      dropout: cfg.dropout,
    };
    this.conv_in = this.module('conv_in', new Conv2d(cfg.in_channels, ch[0], 3, { padding: 1 }));
    this.time_embedding = this.module('time_embedding', new TimestepEmbedding(ch[0], timeEmbedDim));

    let out = ch[0];
    this.down_blocks = this.moduleList('down_blocks', ch.map((c, i) => {
      const inp = out;
      out = c;
      return new ResnetDownsampleBlock2D(inp, c, cfg.layers_per_block, i !== n - 1, s);
    }));
    this.mid_block = this.module('mid_block', new UNetMidBlock2D(ch[n - 1], 1, { ...s, outputScaleFactor: cfg.mid_block_scale_factor }));
    const rev = [...ch].reverse();
    out = rev[0];
    this.up_blocks = this.moduleList('up_blocks', rev.map((c, i) => {
      const prev = out;
      out = c;
      const inp = rev[Math.min(i + 1, n - 1)];
      return new ResnetUpsampleBlock2D(inp, prev, c, cfg.layers_per_block + 1, i !== n - 1, s);
    }));
    this.conv_norm_out = this.module('conv_norm_out', new GroupNorm(cfg.norm_num_groups!, ch[0], cfg.norm_eps));
    this.conv_out = this.module('conv_out', new Conv2d(ch[0], cfg.out_channels, 3, { padding: 1 }));
  }

  /**
   * Installs a hook on every submodule. Feature maps are handed over NCHW like PyTorch (transposed only while
   * a hook is installed); 2-D tensors (time embeddings) as they are. The tensor lives only during the call:
   * copy it (dataSync, or tf.keep(t.clone())) to keep it. Paths: conv_in, time_embedding, down_blocks.{i},
   * down_blocks.{i}.res_samples.{j} (skips other than the block output), mid_block, up_blocks.{i},
   * conv_norm_out, conv_out, plus every inner module (resnets, convs, norms, linears) by its state-dict path.
   * A tensor the hook returns (NCHW for feature maps) replaces the output.
   */
  override setOutputHook(fn: OutputHook | null): void {
    super.setOutputHook(fn && nchwHook(fn));
  }

  /**
   * sample: NCHW [N, in_channels, H, W]; timestep: a number, or a 0-d/1-d tensor ([1] or [N]).
   * Returns NCHW [N, out_channels, H, W] (diffusers `UNet2DModel(...).sample`). H and W must be divisible by
   * 2^(levels−1).
   */
  forward(sample: tf.Tensor4D, timestep: number | tf.Tensor): tf.Tensor4D {
    const cfg = this.config;
    if (sample.rank !== 4 || sample.shape[1] !== cfg.in_channels) {
      throw new Error(`UNet2DModel.forward: sample must be NCHW with ${cfg.in_channels} channels, got [${sample.shape}]`);
    }
    const f = 2 ** (cfg.block_out_channels.length - 1);
    if (sample.shape[2] % f || sample.shape[3] % f) {
      throw new Error(`UNet2DModel.forward: sample height and width must be divisible by ${f}, got ${sample.shape[2]}×${sample.shape[3]}`);
    }
    return tf.tidy(() => {
      let x = tf.transpose(sample, [0, 2, 3, 1]) as tf.Tensor4D;
      if (cfg.center_input_sample) x = tf.sub(tf.mul(x, 2), 1);
      const t = broadcastTimesteps(timestep, sample.shape[0], 'UNet2DModel.forward: timestep');
      const tEmb = timestepEmbedding(t, cfg.block_out_channels[0], { flipSinToCos: cfg.flip_sin_to_cos, freqShift: cfg.freq_shift });
      const emb = this.time_embedding.forward(tEmb);

      let h = this.conv_in.forward(x);
      const skips: tf.Tensor4D[] = [h];
      for (const block of this.down_blocks) {
        const r = block.forward(h, emb);
        h = r.out;
        skips.push(...r.resSamples);
      }
      h = this.mid_block.forward(h, emb);
      // Up path: each skip and each block input is freed once consumed (the tidy would keep them to the end).
      for (const block of this.up_blocks) {
        const k = block.resnets.length;
        const used = skips.splice(skips.length - k, k);
        const out = block.forward(h, used, emb);
        tf.dispose([h, ...used]);
        h = out;
      }
      h = this.conv_out.forward(this.conv_norm_out.forwardSilu(h) as tf.Tensor4D);
      return tf.transpose(h, [0, 3, 1, 2]) as tf.Tensor4D;
    });
  }
}
