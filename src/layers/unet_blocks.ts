// The attention-free UNet blocks of diffusers (ResnetDownsampleBlock2D, ResnetUpsampleBlock2D, UNetMidBlock2D
// without attention): lists of ResnetBlock2D whose 2x resampling is itself a ResnetBlock2D (up/down). NHWC.
import * as tf from '@tensorflow/tfjs-core';
import { Module } from './module.js';
import { ResnetBlock2D, type TimeEmbeddingNorm } from './resnet.js';

/** What every resnet of a block shares (the UNet's norm/time settings). */
export interface ResnetSettings {
  tembChannels: number | null;
  groups: number;
  eps: number;
  timeEmbeddingNorm: TimeEmbeddingNorm;
  outputScaleFactor?: number;
  skipTimeAct?: boolean;
  /** Dropout in every resnet (training mode only). */
  dropout?: number;
}

/** diffusers ResnetDownsampleBlock2D: `resnets.{i}`, then (unless last level) `downsamplers.0` = ResnetBlock2D(down). */
export class ResnetDownsampleBlock2D extends Module {
  readonly resnets: ResnetBlock2D[];
  readonly downsamplers: ResnetBlock2D[] | null;
  constructor(inChannels: number, outChannels: number, numLayers: number, addDownsample: boolean, s: ResnetSettings) {
    super();
    this.resnets = this.moduleList('resnets', Array.from({ length: numLayers }, (_, i) =>
      new ResnetBlock2D({ ...s, inChannels: i === 0 ? inChannels : outChannels, outChannels })));
    this.downsamplers = addDownsample
      ? this.moduleList('downsamplers', [new ResnetBlock2D({ ...s, inChannels: outChannels, outChannels, down: true })])
      : null;
  }

  /**
   * Returns the block output and its skip tensors (every resnet output, then the downsampler output), as
   * diffusers' `(hidden_states, output_states)`. The last skip tensor IS the output (the same tensor).
   */
  forward(x: tf.Tensor4D, temb: tf.Tensor2D | null): { out: tf.Tensor4D; resSamples: tf.Tensor4D[] } {
    const resSamples: tf.Tensor4D[] = [];
    let h = x;
    for (const r of this.resnets) { h = r.forward(h, temb); resSamples.push(h); }
    for (const d of this.downsamplers ?? []) { h = d.forward(h, temb); resSamples.push(h); }
    // Skip tensors (all but the last, which is the block output), then the block output; a hook's replacement
    // takes their place (the output's also as the last skip).
    const skips = resSamples.map((t, j) => (j < resSamples.length - 1 ? this.emit(t, `res_samples.${j}`) : t));
    const out = this.emit(h);
    skips[skips.length - 1] = out;
    return { out, resSamples: skips };
  }
}

/**
 * diffusers ResnetUpsampleBlock2D: numLayers resnets, each on cat([h, skip], channels) (skips consumed from the
 * end), then (unless last level) `upsamplers.0` = ResnetBlock2D(up).
 */
export class ResnetUpsampleBlock2D extends Module {
  readonly resnets: ResnetBlock2D[];
  readonly upsamplers: ResnetBlock2D[] | null;
  constructor(inChannels: number, prevOutputChannels: number, outChannels: number, numLayers: number, addUpsample: boolean, s: ResnetSettings) {
    super();
    this.resnets = this.moduleList('resnets', Array.from({ length: numLayers }, (_, i) => {
      const skip = i === numLayers - 1 ? inChannels : outChannels;
      const resIn = i === 0 ? prevOutputChannels : outChannels;
      return new ResnetBlock2D({ ...s, inChannels: resIn + skip, outChannels });
    }));
    this.upsamplers = addUpsample
      ? this.moduleList('upsamplers', [new ResnetBlock2D({ ...s, inChannels: outChannels, outChannels, up: true })])
      : null;
  }

  /** skips: exactly resnets.length tensors, in the order the down path produced them (the last is used first). */
  forward(x: tf.Tensor4D, skips: tf.Tensor4D[], temb: tf.Tensor2D | null): tf.Tensor4D {
    if (skips.length !== this.resnets.length) {
      throw new Error(`${this.path || 'ResnetUpsampleBlock2D'}: ${skips.length} skip tensors for ${this.resnets.length} resnets`);
    }
    const h = tf.tidy(() => {
      // Concats and intermediate outputs are freed as soon as they are consumed (at 256×256 a 960-channel concat
      // is 240 MB); x and the skips belong to the caller.
      let h = x;
      const advance = (next: tf.Tensor4D) => { if (h !== x) h.dispose(); h = next; };
      this.resnets.forEach((r, i) => {
        const cat = tf.concat([h, skips[skips.length - 1 - i]], 3) as tf.Tensor4D;
        advance(r.forward(cat, temb));
        cat.dispose();
      });
      for (const u of this.upsamplers ?? []) advance(u.forward(h, temb));
      return h;
    });
    return this.emit(h);
  }
}

/** diffusers UNetMidBlock2D with add_attention=False: `resnets.0`, `resnets.1` (one per layer + 1). */
export class UNetMidBlock2D extends Module {
  readonly resnets: ResnetBlock2D[];
  constructor(channels: number, numLayers: number, s: ResnetSettings) {
    super();
    this.resnets = this.moduleList('resnets', Array.from({ length: numLayers + 1 }, () =>
      new ResnetBlock2D({ ...s, inChannels: channels, outChannels: channels })));
  }

  forward(x: tf.Tensor4D, temb: tf.Tensor2D | null): tf.Tensor4D {
    const h = tf.tidy(() => this.resnets.reduce((h, r) => r.forward(h, temb), x));
    return this.emit(h);
  }
}
