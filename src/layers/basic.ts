// Basic layers with PyTorch parameter names: Linear, Conv2d (NHWC activations), LayerNorm, GroupNorm (NHWC),
// Embedding, and the activations Karlo uses.
import * as tf from '@tensorflow/tfjs-core';
import { Module, Parameter } from './module.js';
import { groupNorm } from '../ops/group_norm.js';
import { linear } from '../ops/linear.js';

export class Linear extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;
  /**
   * An extra term added to the output, or null: x [rows, in] → [rows, out]. LoRA adapters (src/training/lora.ts)
   * attach here; a layer that reads `weight` directly instead of calling forward() must honour it too.
   */
  delta: ((x: tf.Tensor2D) => tf.Tensor) | null = null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, bias = true) {
    super();
    // PyTorch layout [out, in]; forward multiplies with transposeB, so no conversion is needed.
    this.weight = this.param('weight', [outFeatures, inFeatures]);
    this.bias = bias ? this.param('bias', [outFeatures]) : null;
  }

  /** x: [..., in] → [..., out] */
  forward(x: tf.Tensor): tf.Tensor {
    return this.emit(tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const last = x.shape[x.shape.length - 1];
      if (last !== this.inFeatures) throw new Error(`${this.path || 'Linear'}: input has ${last} features, ${this.inFeatures} expected`);
      const x2 = tf.reshape(x, [-1, this.inFeatures]) as tf.Tensor2D;
      const y = linear(x2, this.weight.value as tf.Tensor2D, this.bias?.value);
      return tf.reshape(this.delta ? tf.add(y, this.delta(x2)) : y, [...lead, this.outFeatures]);
    }));
  }
}

export class Conv2d extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;
  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    readonly opts: { stride?: number; padding?: number; bias?: boolean } = {},
  ) {
    super();
    this.weight = this.param('weight', [outChannels, inChannels, kernelSize, kernelSize], 'conv2d');
    this.bias = opts.bias === false ? null : this.param('bias', [outChannels]);
  }

  /** x: NHWC */
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return this.emit(tf.tidy(() => {
      if (x.shape[3] !== this.inChannels) throw new Error(`${this.path || 'Conv2d'}: input has ${x.shape[3]} channels, ${this.inChannels} expected`);
      const stride = this.opts.stride ?? 1;
      const pad = this.opts.padding ?? 0;
      return tf.fused.conv2d({
        x,
        filter: this.weight.value as tf.Tensor4D,
        strides: stride,
        pad,
        dataFormat: 'NHWC',
        bias: this.bias?.value,
      });
    }));
  }
}

export class LayerNorm extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;
  constructor(readonly dim: number, readonly eps = 1e-5) {
    super();
    this.weight = this.param('weight', [dim]);
    this.bias = this.param('bias', [dim]);
  }

  forward(x: tf.Tensor): tf.Tensor {
    const c = x.shape[x.shape.length - 1];
    if (c !== this.dim) throw new Error(`${this.path || 'LayerNorm'}: input has ${c} features, ${this.dim} expected`);
    // LayerNorm over the last axis = GroupNorm with one group over [tokens, 1, C]: the fused native kernel
    // (one pass, statistics in double) instead of five elementwise kernels; tfjs ops on other backends.
    return this.emit(tf.tidy(() => tf.reshape(groupNorm(tf.reshape(x, [-1, 1, c]), this.weight.value, this.bias.value, 1, this.eps), x.shape)));
  }
}

/** GroupNorm over NHWC activations (PyTorch's nn.GroupNorm: biased variance, per-channel affine). */
export class GroupNorm extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;
  constructor(readonly numGroups: number, readonly numChannels: number, readonly eps = 1e-5) {
    super();
    if (numChannels % numGroups !== 0) throw new Error(`GroupNorm: ${numChannels} channels are not divisible into ${numGroups} groups`);
    this.weight = this.param('weight', [numChannels]);
    this.bias = this.param('bias', [numChannels]);
  }

  /** x: [N, H, W, C] or [N, L, C] (channels last). */
  forward(x: tf.Tensor): tf.Tensor {
    this.checkChannels(x);
    // One fused kernel on the native backend (statistics in double), tfjs ops elsewhere; same math as torch.
    return this.emit(groupNorm(x, this.weight.value, this.bias.value, this.numGroups, this.eps));
  }

  /**
   * SiLU(GroupNorm(x)), the pair every UNet block runs: fused into one pass on the native backend. With an
   * output hook installed the GroupNorm output is reported first (so hooks see what torch's norm module returns).
   */
  forwardSilu(x: tf.Tensor): tf.Tensor {
    if (this.wantsOutput()) return tf.tidy(() => silu(this.forward(x)));
    this.checkChannels(x);
    return groupNorm(x, this.weight.value, this.bias.value, this.numGroups, this.eps, { silu: true });
  }

  private checkChannels(x: tf.Tensor): void {
    const c = x.shape[x.shape.length - 1];
    if (c !== this.numChannels) throw new Error(`${this.path || 'GroupNorm'}: input has ${c} channels, ${this.numChannels} expected`);
  }
}

export class Embedding extends Module {
  readonly weight: Parameter;
  constructor(readonly numEmbeddings: number, readonly dim: number) {
    super();
    this.weight = this.param('weight', [numEmbeddings, dim]);
  }

  forward(ids: tf.Tensor): tf.Tensor {
    return this.emit(tf.tidy(() => embeddingLookup(this.weight.value, tf.cast(ids, 'int32'))));
  }
}

/**
 * weight[ids] whose gradient with respect to weight is one scatter-add of dy's rows (torch's dense embedding
 * backward). tf.gather's own gradient goes through UnsortedSegmentSum, which tfjs-backend-cpu runs as one masked
 * sum per table row: ~50 s for CLIP's 49408-token table, against milliseconds here.
 */
export function embeddingLookup(weight: tf.Tensor, ids: tf.Tensor): tf.Tensor {
  const [V, D] = weight.shape;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const w = args[0] as tf.Tensor;
    (args[1] as tf.GradSaveFunc)([ids]);
    return {
      value: tf.gather(w, ids),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.scatterND(tf.reshape(saved[0], [-1, 1]), tf.reshape(dy, [-1, D]), [V, D]),
    };
  });
  return f(weight);
}

// ---------- activations ----------

export function silu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(x)));
}

/** Exact GELU, 0.5·x·(1 + erf(x/√2)) (torch's default approximate='none'). */
export function gelu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))));
}

/** OpenAI CLIP's QuickGELU: x·σ(1.702x). */
export function quickGelu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702))));
}
