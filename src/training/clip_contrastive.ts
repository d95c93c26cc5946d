// CLIP's contrastive objective for training a text tower (CLIPTextModelWithProjection) and an image tower
// (CLIPVisionModelWithProjection) together, as transformers' CLIPModel computes it (clip_loss):
//   t = text_embeds / |text_embeds|,  v = image_embeds / |image_embeds|
//   logits_per_text = scale · t vᵀ   [B, B],  logits_per_image = its transpose
//   loss = (CE(logits_per_text, targets) + CE(logits_per_image, targetsᵀ)) / 2
// CLIPModel learns scale = exp(logit_scale) (initialised to 1/0.07); the two separate *WithProjection classes have
// no such parameter, so the scale here is a fixed hyper-parameter (default 1/0.07).
// Targets: the identity, except that rows whose captions are identical token for token share their probability
// (a caption that occurs twice in a batch is not a negative of its twin): targets[i][j] = same(i, j) / Σ_j same(i, j).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { componentDir } from '../io/model_folder.js';
import { Module } from '../layers/module.js';
import type { CLIPTextModelWithProjection } from '../models/clip_text.js';
import type { CLIPVisionModelWithProjection } from '../models/clip_vision.js';
import { CLIP_MEAN, CLIP_STD } from '../io/clip_preprocess.js';
import { loadComponent } from '../loading/load_component.js';

export const CLIP_DEFAULT_LOGIT_SCALE = 1 / 0.07;

export interface ClipContrastiveBatch {
  /** Token ids [B, L] (int32), as the tokenizer pads them (no attention mask, as in the pipeline). */
  inputIds: tf.Tensor2D;
  /** CLIP-normalised pixels [B, 3, S, S] (S = the vision config's image_size). */
  pixelValues: tf.Tensor4D;
  /** Fixed logit scale (default 1/0.07). */
  logitScale?: number;
}

/** Targets for a batch from its token ids: rows of identical captions share probability (identity otherwise). */
export function contrastiveTargets(ids: ArrayLike<number>, B: number, L: number): Float32Array {
  const key = (i: number) => Array.prototype.slice.call(ids, i * L, (i + 1) * L).join(',');
  const keys = Array.from({ length: B }, (_, i) => key(i));
  const t = new Float32Array(B * B);
  for (let i = 0; i < B; i++) {
    const same = keys.map((k) => (k === keys[i] ? 1 : 0));
    const n = same.reduce((a: number, b: number) => a + b, 0);
    for (let j = 0; j < B; j++) t[i * B + j] = same[j] / n;
  }
  return t;
}

/** Pixels in [-1, 1] (the training data's range, NCHW) → CLIP-normalised pixel values: ((x + 1)/2 − mean)/std. */
export function clipNormalise(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const mean = tf.tensor4d([...CLIP_MEAN], [1, 3, 1, 1]);
    const std = tf.tensor4d([...CLIP_STD], [1, 3, 1, 1]);
    return tf.div(tf.sub(tf.mul(tf.add(x, 1), 0.5), mean), std) as tf.Tensor4D;
  });
}

/** Cross-entropy of row-wise softmax(logits) against row-stochastic targets, mean over rows. */
function softCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  return tf.neg(tf.mean(tf.sum(tf.mul(targets, tf.logSoftmax(logits, 1)), 1))) as tf.Scalar;
}

/** The symmetric contrastive loss of a batch of (caption, image) pairs (differentiable in both towers). */
export function clipContrastiveLoss(text: CLIPTextModelWithProjection, vision: CLIPVisionModelWithProjection, b: ClipContrastiveBatch): tf.Scalar {
  const [B, L] = b.inputIds.shape;
  if (b.pixelValues.shape[0] !== B) throw new Error(`clip contrastive loss: ${B} captions but ${b.pixelValues.shape[0]} images`);
  if (B < 2) throw new Error('clip contrastive loss: a batch needs at least 2 pairs (the other pairs are the negatives)');
  if (text.config.projection_dim !== vision.config.projection_dim) {
    throw new Error(`clip contrastive loss: text projection_dim ${text.config.projection_dim} differs from vision projection_dim ${vision.config.projection_dim}`);
  }
  const scale = b.logitScale ?? CLIP_DEFAULT_LOGIT_SCALE;
  const targets = contrastiveTargets(b.inputIds.dataSync(), B, L);
  return tf.tidy(() => {
    const t = text.forward(b.inputIds).textEmbeds;
    const v = vision.forward(b.pixelValues).imageEmbeds;
    const tn = tf.div(t, tf.norm(t, 2, 1, true));
    const vn = tf.div(v, tf.norm(v, 2, 1, true));
    const logitsPerText = tf.mul(tf.matMul(tn, vn, false, true), scale) as tf.Tensor2D;
    const tgt = tf.tensor2d(targets, [B, B]);
    const captionLoss = softCrossEntropy(logitsPerText, tgt);
    const imageLoss = softCrossEntropy(tf.transpose(logitsPerText) as tf.Tensor2D, tf.transpose(tgt) as tf.Tensor2D);
    return tf.div(tf.add(captionLoss, imageLoss), 2) as tf.Scalar;
  });
}

/**
 * The two CLIP towers as one trainable module (`karlo train --component clip`): parameters are named
 * `text_encoder.<transformers key>` and `image_encoder.<transformers key>`; each tower is saved to its own folder.
 */
export class ClipPair extends Module {
  readonly text_encoder: CLIPTextModelWithProjection;
  readonly image_encoder: CLIPVisionModelWithProjection;
  constructor(text: CLIPTextModelWithProjection, vision: CLIPVisionModelWithProjection) {
    super();
    this.text_encoder = this.module('text_encoder', text);
    this.image_encoder = this.module('image_encoder', vision);
  }
}

/** Loads both towers (trainable) from their component folders; refuses towers of different projection widths. */
export function loadClipPair(textDir: string, imageDir: string): ClipPair {
  const text = loadComponent(textDir, 'CLIPTextModelWithProjection', { trainable: true });
  let vision: CLIPVisionModelWithProjection;
  try {
    vision = loadComponent(imageDir, 'CLIPVisionModelWithProjection', { trainable: true });
  } catch (e) {
    text.dispose();
    throw e;
  }
  if (text.config.projection_dim !== vision.config.projection_dim) {
    text.dispose();
    vision.dispose();
    throw new Error(`clip: ${textDir} projects to ${text.config.projection_dim} but ${imageDir} to ${vision.config.projection_dim}; contrastive training needs one width`);
  }
  return new ClipPair(text, vision);
}

/** The image_encoder/ folder of a model folder (`karlo train --component clip` needs one). */
export function clipImageDir(root: string): string {
  const d = componentDir(root, 'image_encoder');
  if (!d || !fs.existsSync(path.join(d, 'config.json'))) {
    throw new Error(`${root}: --component clip trains the text and image towers together and needs image_encoder/ (CLIPVisionModelWithProjection) in the model folder`);
  }
  return d;
}

/** The vision tower's input size (its config's image_size): the resolution clip training prepares images at. */
export function clipImageSize(root: string): number {
  const dir = clipImageDir(root);
  const v = (JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as { image_size?: unknown }).image_size;
  if (!Number.isInteger(v) || (v as number) < 1) throw new Error(`${path.join(dir, 'config.json')}: image_size ${JSON.stringify(v)} is not a positive integer`);
  return v as number;
}
