// diffusers ResnetBlock2D (the residual block of every Karlo UNet), with its up/down variants and the 2x
// resampling helpers, on NHWC activations.
import * as tf from '@tensorflow/tfjs-core';
import { Module } from './module.js';
import { Conv2d, GroupNorm, Linear, silu } from './basic.js';

export type TimeEmbeddingNorm = 'default' | 'scale_shift';

export interface ResnetBlock2DOptions {
  inChannels: number;
  /** Defaults to inChannels. */
  outChannels?: number;
  /** Width of the time embedding; null: no time_emb_proj (the block then takes temb = null). */
  tembChannels: number | null;
  /** GroupNorm groups of norm1 (and norm2 unless groupsOut). diffusers default 32. */
  groups?: number;
  groupsOut?: number;
  /** GroupNorm eps. diffusers' ResnetBlock2D default is 1e-6; the UNets pass norm_eps (1e-5). */
  eps?: number;
  /** 'default': h + proj(temb) before norm2; 'scale_shift': norm2(h)·(1 + scale) + shift. */
  timeEmbeddingNorm?: TimeEmbeddingNorm;
  /** Skip the SiLU on temb before time_emb_proj (diffusers `skip_time_act`). */
  skipTimeAct?: boolean;
  /** Output divided by this (diffusers `output_scale_factor`). */
  outputScaleFactor?: number;
  /** Nearest 2x upsample of both the hidden path (after norm1 + SiLU) and the input (ResnetUpsampleBlock2D). */
  up?: boolean;
  /** 2x2 average pool, stride 2, of both paths (ResnetDownsampleBlock2D). */
  down?: boolean;
  /** Dropout before conv2, active in training mode only (the UNets' `dropout`). Default 0. */
  dropout?: number;
}

/** nn.AvgPool2d(2, 2) on NHWC (odd sizes floor, as torch). */
export function avgPool2x(x: tf.Tensor4D): tf.Tensor4D {
  return tf.avgPool(x, 2, 2, 'valid');
}

/** F.interpolate(scale_factor=2, mode="nearest") on NHWC. */
export function nearestUpsample2x(x: tf.Tensor4D): tf.Tensor4D {
  return upsample2xOp(x) as tf.Tensor4D;
}

// Exact for a factor of 2 (source index floor(i/2)); ~25x faster than broadcasting through Tile on cpu/native.
// The gradient is the sum of each 2x2 block of dy: tfjs-backend-cpu 4.22's ResizeNearestNeighborGrad (which the
// native backend inherits) reads dy with the input's batch stride, so it is wrong for batch > 1, and wasm has none.
const upsample2xOp = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor;
  const [n, h, w, c] = x.shape;
  (args[1] as tf.GradSaveFunc)([]);
  return {
    value: tf.image.resizeNearestNeighbor(x as tf.Tensor4D, [2 * h, 2 * w], false, false),
    gradFunc: (dy: tf.Tensor) => tf.sum(tf.reshape(dy, [n, h, 2, w, 2, c]), [2, 4]),
  };
});

export class ResnetBlock2D extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly timeEmbeddingNorm: TimeEmbeddingNorm;
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly time_emb_proj: Linear | null;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut: Conv2d | null;

  constructor(readonly opts: ResnetBlock2DOptions) {
    super();
    const cin = opts.inChannels;
    const cout = opts.outChannels ?? cin;
    const groups = opts.groups ?? 32;
    const eps = opts.eps ?? 1e-6;
    const mode = opts.timeEmbeddingNorm ?? 'default';
    if (mode !== 'default' && mode !== 'scale_shift') {
      throw new Error(`ResnetBlock2D: time_embedding_norm "${mode}" is not supported (default, scale_shift)`);
    }
    if (opts.up && opts.down) throw new Error('ResnetBlock2D: up and down are exclusive');
    this.inChannels = cin;
    this.outChannels = cout;
    this.timeEmbeddingNorm = mode;
    this.norm1 = this.module('norm1', new GroupNorm(groups, cin, eps));
    this.conv1 = this.module('conv1', new Conv2d(cin, cout, 3, { padding: 1 }));
    this.time_emb_proj = opts.tembChannels != null
      ? this.module('time_emb_proj', new Linear(opts.tembChannels, mode === 'scale_shift' ? 2 * cout : cout))
      : null;
    this.norm2 = this.module('norm2', new GroupNorm(opts.groupsOut ?? groups, cout, eps));
    this.conv2 = this.module('conv2', new Conv2d(cout, cout, 3, { padding: 1 }));
    this.conv_shortcut = cin !== cout ? this.module('conv_shortcut', new Conv2d(cin, cout, 1)) : null;
  }

  /** x: NHWC [N, H, W, in]; temb: [N, tembChannels] (or null when the block has no time_emb_proj). */
  forward(x: tf.Tensor4D, temb: tf.Tensor2D | null): tf.Tensor4D {
    return this.emit(tf.tidy(() => {
      const name = this.path || 'ResnetBlock2D';
      if (x.rank !== 4 || x.shape[3] !== this.inChannels) {
        throw new Error(`${name}: input must be NHWC with ${this.inChannels} channels, got [${x.shape}]`);
      }
      // Each full-size intermediate is freed as soon as the next one exists (not at the end of the tidy): at
      // 256×256 one activation is 84-250 MB, and this keeps ~2 of them alive instead of ~10.
      const next = <T extends tf.Tensor>(prev: tf.Tensor, t: T): T => {
        if (prev !== x && prev !== t) prev.dispose();
        return t;
      };
      let input: tf.Tensor4D = x;
      let h: tf.Tensor4D = this.norm1.forwardSilu(x) as tf.Tensor4D;
      if (this.opts.up) {
        input = nearestUpsample2x(input);
        h = next(h, nearestUpsample2x(h));
      } else if (this.opts.down) {
        input = avgPool2x(input);
        h = next(h, avgPool2x(h));
      }
      h = next(h, this.conv1.forward(h));

      let t: tf.Tensor | null = null;
      if (this.time_emb_proj) {
        if (!temb) throw new Error(`${name}: a time embedding is required (time_emb_proj exists)`);
        t = this.time_emb_proj.forward(this.opts.skipTimeAct ? temb : silu(temb));
        t = tf.reshape(t, [t.shape[0], 1, 1, t.shape[t.rank - 1]]); // [N, 1, 1, C]: broadcast over H, W (NHWC)
      }
      if (this.timeEmbeddingNorm === 'scale_shift') {
        if (!t) throw new Error(`${name}: scale_shift needs a time embedding`);
        const [scale, shift] = tf.split(t, 2, 3);
        h = next(h, this.norm2.forward(h) as tf.Tensor4D);
        h = next(h, tf.mul(h, tf.add(scale, 1)));
        h = next(h, tf.add(h, shift));
      } else {
        if (t) h = next(h, tf.add(h, t));
        h = next(h, this.norm2.forwardSilu(h) as tf.Tensor4D);
      }
      if (this.timeEmbeddingNorm === 'scale_shift') h = next(h, silu(h) as tf.Tensor4D);
      h = next(h, this.dropout(h, this.opts.dropout ?? 0));
      h = next(h, this.conv2.forward(h));
      if (this.conv_shortcut) input = next(input, this.conv_shortcut.forward(input));
      let out = next(h, tf.add(input, h) as tf.Tensor4D);
      if (input !== x) input.dispose();
      const osf = this.opts.outputScaleFactor ?? 1;
      if (osf !== 1) out = next(out, tf.div(out, osf));
      return out;
    }));
  }
}
