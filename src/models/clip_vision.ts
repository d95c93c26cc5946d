// CLIP vision encoder with projection, equal to transformers' CLIPVisionModelWithProjection (≈4.36): patches by a
// bias-free strided convolution (row-major), a learned class token in front, learned positions, pre-LayerNorm
// ("pre_layrnorm", transformers' spelling), the same pre-LN encoder layers as the text tower (shared classes from
// clip_text.ts, no attention mask at all), post-LayerNorm on the class token, bias-free projection.
// Parameter names are transformers' keys (vision_model.embeddings.patch_embedding.weight, visual_projection.weight).
import * as tf from '@tensorflow/tfjs-core';
import { Module, type Parameter } from '../layers/module.js';
import { Conv2d, Embedding, LayerNorm, Linear } from '../layers/basic.js';
import { CLIPEncoder, CLIP_IGNORED_FIELDS, checkClipTower, clipTowerFields, type ClipHiddenAct } from './clip_text.js';
import { modelConfigParser } from './config.js';

/** transformers' CLIPVisionConfig fields (with its defaults). */
export interface CLIPVisionConfig {
  hidden_size: number;
  intermediate_size: number;
  projection_dim: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_channels: number;
  image_size: number;
  patch_size: number;
  hidden_act: ClipHiddenAct;
  layer_norm_eps: number;
  /** Dropout on the attention probabilities (training mode only). */
  attention_dropout: number;
}

export const CLIP_VISION_DEFAULTS: CLIPVisionConfig = {
  hidden_size: 768,
  intermediate_size: 3072,
  projection_dim: 512,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  num_channels: 3,
  image_size: 224,
  patch_size: 32,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  attention_dropout: 0,
};

/** Typed config from a parsed config.json (flat CLIPVisionConfig, or a CLIPConfig's `vision_config`). */
export const clipVisionConfig = modelConfigParser<CLIPVisionConfig>({
  className: 'CLIPVisionModelWithProjection',
  defaults: CLIP_VISION_DEFAULTS,
  ignored: CLIP_IGNORED_FIELDS,
  prepare: (raw, fail) => clipTowerFields(raw, 'vision', fail),
  check: (c, bad) => {
    checkClipTower(c, ['hidden_size', 'intermediate_size', 'projection_dim', 'num_hidden_layers', 'num_attention_heads', 'num_channels', 'image_size', 'patch_size'], bad);
    if (c.image_size % c.patch_size !== 0) bad('image_size', `not a multiple of patch_size ${c.patch_size}`);
  },
});

export class CLIPVisionEmbeddings extends Module {
  readonly class_embedding: Parameter;
  readonly patch_embedding: Conv2d;
  readonly position_embedding: Embedding;
  /** (image_size / patch_size)² patches + the class token. */
  readonly numPositions: number;
  constructor(readonly config: CLIPVisionConfig) {
    super();
    const D = config.hidden_size;
    this.class_embedding = this.param('class_embedding', [D]);
    this.patch_embedding = this.module('patch_embedding', new Conv2d(config.num_channels, D, config.patch_size, { stride: config.patch_size, bias: false }));
    this.numPositions = (config.image_size / config.patch_size) ** 2 + 1;
    this.position_embedding = this.module('position_embedding', new Embedding(this.numPositions, D));
  }

  /** pixels NHWC [B, S, S, C] → [B, 1 + (S/P)², D]: class token, then the patches in row-major order. */
  forward(pixelsNHWC: tf.Tensor4D): tf.Tensor3D {
    return this.emit(tf.tidy(() => {
      const B = pixelsNHWC.shape[0];
      const D = this.config.hidden_size;
      // NHWC conv output [B, h, w, D] reshaped to [B, h·w, D] = torch's flatten(2).transpose(1, 2).
      const patches = tf.reshape(this.patch_embedding.forward(pixelsNHWC), [B, -1, D]);
      const cls = tf.tile(tf.reshape(this.class_embedding.value, [1, 1, D]), [B, 1, 1]);
      const pos = this.position_embedding.forward(tf.range(0, this.numPositions, 1, 'int32'));
      return tf.add(tf.concat([cls, patches], 1), pos) as tf.Tensor3D;
    }));
  }
}

export class CLIPVisionTransformer extends Module {
  readonly embeddings: CLIPVisionEmbeddings;
  readonly pre_layrnorm: LayerNorm;
  readonly encoder: CLIPEncoder;
  readonly post_layernorm: LayerNorm;
  constructor(readonly config: CLIPVisionConfig) {
    super();
    this.embeddings = this.module('embeddings', new CLIPVisionEmbeddings(config));
    this.pre_layrnorm = this.module('pre_layrnorm', new LayerNorm(config.hidden_size, config.layer_norm_eps));
    this.encoder = this.module('encoder', new CLIPEncoder(config));
    this.post_layernorm = this.module('post_layernorm', new LayerNorm(config.hidden_size, config.layer_norm_eps));
  }
}

export interface CLIPVisionOutput {
  /** visual_projection(pooler_output): [B, projection_dim]. What unCLIP calls the CLIP image embedding. */
  imageEmbeds: tf.Tensor2D;
  /** Output of the last encoder layer, NOT post-layer-normed (as transformers): [B, T, D]. */
  lastHiddenState: tf.Tensor3D;
  /** post_layernorm(last_hidden_state[:, 0]): [B, D]. */
  poolerOutput: tf.Tensor2D;
  /** After pre_layrnorm, then after every layer: num_hidden_layers + 1 tensors [B, T, D]. */
  hiddenStates: tf.Tensor3D[];
}

export class CLIPVisionModelWithProjection extends Module {
  readonly vision_model: CLIPVisionTransformer;
  readonly visual_projection: Linear;
  constructor(readonly config: CLIPVisionConfig) {
    super();
    this.vision_model = this.module('vision_model', new CLIPVisionTransformer(config));
    this.visual_projection = this.module('visual_projection', new Linear(config.hidden_size, config.projection_dim, false));
  }

  /**
   * pixelValues NCHW [B, C, S, S] (S = image_size; the CLIP-normalised output of the image processor). Hooks report
   * `vision_model.embeddings`, `vision_model.pre_layrnorm`, `vision_model.encoder.layers.{i}` (and their
   * sub-modules), `vision_model.post_layernorm`, `visual_projection`. The returned tensors belong to the caller.
   */
  forward(pixelValues: tf.Tensor4D): CLIPVisionOutput {
    const cfg = this.config;
    const s = pixelValues.shape;
    if (pixelValues.rank !== 4 || s[1] !== cfg.num_channels || s[2] !== cfg.image_size || s[3] !== cfg.image_size) {
      throw new Error(`CLIPVisionModelWithProjection: pixel_values must be [batch, ${cfg.num_channels}, ${cfg.image_size}, ${cfg.image_size}] (NCHW), got [${s}]`);
    }
    return tf.tidy(() => {
      const vm = this.vision_model;
      const x = tf.transpose(tf.cast(pixelValues, 'float32'), [0, 2, 3, 1]) as tf.Tensor4D;
      let h = vm.pre_layrnorm.forward(vm.embeddings.forward(x)) as tf.Tensor3D;
      const hiddenStates: tf.Tensor3D[] = [h];
      for (const layer of vm.encoder.layers) {
        h = layer.forward(h);
        hiddenStates.push(h);
      }
      const [B, , D] = h.shape;
      const poolerOutput = vm.post_layernorm.forward(tf.reshape(tf.slice(h, [0, 0, 0], [B, 1, D]), [B, D])) as tf.Tensor2D;
      const imageEmbeds = this.visual_projection.forward(poolerOutput) as tf.Tensor2D;
      return { imageEmbeds, lastHiddenState: h, poolerOutput, hiddenStates };
    });
  }
}
