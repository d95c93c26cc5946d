// The cross-attention UNet blocks of Karlo's decoder (diffusers unet_2d_blocks): SimpleCrossAttnDownBlock2D,
// UNetMidBlock2DSimpleCrossAttn, SimpleCrossAttnUpBlock2D. Same layout and hook conventions as the attention-free
// blocks in unet_blocks.ts (which the decoder uses for its other levels); each resnet is followed by an
// AddedKVAttention over [encoder tokens, spatial tokens]. NHWC.
import * as tf from '@tensorflow/tfjs-core';
import { Module } from './module.js';
import { ResnetBlock2D } from './resnet.js';
import { AddedKVAttention } from './attention.js';
import type { ResnetSettings } from './unet_blocks.js';

/** The SimpleCrossAttn blocks' attention settings. */
export interface CrossAttnSettings {
  /** Width of encoder_hidden_states (added_kv_proj_dim). */
  crossAttentionDim: number;
  attentionHeadDim: number;
  onlyCrossAttention: boolean;
}

/** Conditioning that the cross-attention blocks read. */
export interface CrossAttnContext {
  encoderHiddenStates: tf.Tensor3D;
  /** Additive bias [B, 1, L] over the encoder tokens (0 keep, −10000 masked), or null. */
  attentionBias: tf.Tensor3D | null;
}

function resnet(s: ResnetSettings, inChannels: number, outChannels: number, extra: { up?: boolean; down?: boolean } = {}): ResnetBlock2D {
  return new ResnetBlock2D({ ...s, inChannels, outChannels, ...extra });
}

/** diffusers builds these with heads = channels / attention_head_dim, bias=True, GroupNorm(resnet_groups). */
function attention(s: ResnetSettings, a: CrossAttnSettings, channels: number, who: string): AddedKVAttention {
  if (channels % a.attentionHeadDim !== 0) throw new Error(`${who}: ${channels} channels are not divisible by attention_head_dim ${a.attentionHeadDim}`);
  return new AddedKVAttention({
    queryDim: channels,
    heads: channels / a.attentionHeadDim,
    dimHead: a.attentionHeadDim,
    addedKvProjDim: a.crossAttentionDim,
    normNumGroups: s.groups,
    bias: true,
    onlyCrossAttention: a.onlyCrossAttention,
  });
}

/** `resnets.{i}` + `attentions.{i}`, then (unless the last level) `downsamplers.0` = ResnetBlock2D(down). */
export class SimpleCrossAttnDownBlock2D extends Module {
  readonly attentions: AddedKVAttention[];
  readonly resnets: ResnetBlock2D[];
  readonly downsamplers: ResnetBlock2D[] | null;
  constructor(inChannels: number, outChannels: number, numLayers: number, addDownsample: boolean, s: ResnetSettings, a: CrossAttnSettings) {
    super();
    this.attentions = this.moduleList('attentions', Array.from({ length: numLayers }, () => attention(s, a, outChannels, 'SimpleCrossAttnDownBlock2D')));
    this.resnets = this.moduleList('resnets', Array.from({ length: numLayers }, (_, i) => resnet(s, i === 0 ? inChannels : outChannels, outChannels)));
    this.downsamplers = addDownsample ? this.moduleList('downsamplers', [resnet(s, outChannels, outChannels, { down: true })]) : null;
  }

  /** Like ResnetDownsampleBlock2D.forward: the output and the skip tensors (the last skip IS the output). */
  forward(x: tf.Tensor4D, temb: tf.Tensor2D | null, ctx: CrossAttnContext): { out: tf.Tensor4D; resSamples: tf.Tensor4D[] } {
    const r = tf.tidy(() => {
      const resSamples: tf.Tensor4D[] = [];
      let h = x;
      this.resnets.forEach((res, i) => {
        h = this.attentions[i].forward(res.forward(h, temb), ctx.encoderHiddenStates, ctx.attentionBias);
        resSamples.push(h);
      });
      for (const d of this.downsamplers ?? []) { h = d.forward(h, temb); resSamples.push(h); }
      return { out: h, resSamples };
    });
    // A hook's replacement takes the emitted tensor's place (the output's also as the last skip).
    const skips = r.resSamples.map((t, j) => (j < r.resSamples.length - 1 ? this.emit(t, `res_samples.${j}`) : t));
    const out = this.emit(r.out);
    skips[skips.length - 1] = out;
    return { out, resSamples: skips };
  }
}

/** `resnets.0`, then (`attentions.{i}`, `resnets.{i+1}`) per layer, at one resolution. */
export class UNetMidBlock2DSimpleCrossAttn extends Module {
  readonly attentions: AddedKVAttention[];
  readonly resnets: ResnetBlock2D[];
  constructor(channels: number, numLayers: number, s: ResnetSettings, a: CrossAttnSettings) {
    super();
    this.attentions = this.moduleList('attentions', Array.from({ length: numLayers }, () => attention(s, a, channels, 'UNetMidBlock2DSimpleCrossAttn')));
    this.resnets = this.moduleList('resnets', Array.from({ length: numLayers + 1 }, () => resnet(s, channels, channels)));
  }

  forward(x: tf.Tensor4D, temb: tf.Tensor2D | null, ctx: CrossAttnContext): tf.Tensor4D {
    return this.emit(tf.tidy(() => {
      let h = this.resnets[0].forward(x, temb);
      this.attentions.forEach((a, i) => {
        h = this.resnets[i + 1].forward(a.forward(h, ctx.encoderHiddenStates, ctx.attentionBias), temb);
      });
      return h;
    }));
  }
}

/**
 * numLayers × (concat the last remaining skip on channels, resnet, attention), then (unless the last level)
 * `upsamplers.0` = ResnetBlock2D(up). Constructor arguments as ResnetUpsampleBlock2D's.
 */
export class SimpleCrossAttnUpBlock2D extends Module {
  readonly attentions: AddedKVAttention[];
  readonly resnets: ResnetBlock2D[];
  readonly upsamplers: ResnetBlock2D[] | null;
  constructor(inChannels: number, prevOutputChannels: number, outChannels: number, numLayers: number, addUpsample: boolean, s: ResnetSettings, a: CrossAttnSettings) {
    super();
    this.attentions = this.moduleList('attentions', Array.from({ length: numLayers }, () => attention(s, a, outChannels, 'SimpleCrossAttnUpBlock2D')));
    this.resnets = this.moduleList('resnets', Array.from({ length: numLayers }, (_, i) => {
      const skip = i === numLayers - 1 ? inChannels : outChannels;
      return resnet(s, (i === 0 ? prevOutputChannels : outChannels) + skip, outChannels);
    }));
    this.upsamplers = addUpsample ? this.moduleList('upsamplers', [resnet(s, outChannels, outChannels, { up: true })]) : null;
  }

  /** skips: exactly resnets.length tensors, in the order the down path produced them (the last is used first). */
  forward(x: tf.Tensor4D, skips: tf.Tensor4D[], temb: tf.Tensor2D | null, ctx: CrossAttnContext): tf.Tensor4D {
    if (skips.length !== this.resnets.length) throw new Error(`${this.path || 'SimpleCrossAttnUpBlock2D'}: ${skips.length} skip tensors for ${this.resnets.length} resnets`);
    return this.emit(tf.tidy(() => {
      let h = x;
      this.resnets.forEach((r, i) => {
        const skip = skips[skips.length - 1 - i];
        h = this.attentions[i].forward(r.forward(tf.concat([h, skip], 3) as tf.Tensor4D, temb), ctx.encoderHiddenStates, ctx.attentionBias);
      });
      for (const u of this.upsamplers ?? []) h = u.forward(h, temb);
      return h;
    }));
  }
}
