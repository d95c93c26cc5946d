// CLIP score of images against their prompts, as torchmetrics' CLIPScore computes it: image features =
// visual_projection(pooled vision output) of CLIPImageProcessor's pixel_values, text features =
// text_projection(pooled text output) of the tokenizer's ids padded to the longest prompt (no truncation by the
// tokenizer; ids and mask then cut to max_position_embeddings, as torchmetrics does), both L2-normalised;
// per image 100·cos. torchmetrics reports max(mean of 100·cos, 0); per image we report max(100·cos, 0) too.
//
// A CLIP folder is either a transformers CLIPModel folder (config.json with model_type "clip", one weights file
// with both towers, tokenizer files and preprocessor_config.json beside it, e.g. openai/clip-vit-base-patch16),
// or a diffusers-style folder with text_encoder/ (CLIPTextModelWithProjection), image_encoder/
// (CLIPVisionModelWithProjection), tokenizer/ and feature_extractor/ (e.g. an image-variation Karlo folder).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { CLIPTextModelWithProjection, clipTextConfig } from '../models/clip_text.js';
import { CLIPVisionModelWithProjection, clipVisionConfig } from '../models/clip_vision.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { clipPreprocess, readClipProcessorConfig, type ClipProcessorConfig } from '../io/clip_preprocess.js';
import type { RgbImage } from '../io/image.js';
import { findWeightsFile, readConfig, safetensorsSource } from '../io/weights.js';
import type { TensorSource } from '../layers/module.js';
import { loadComponent } from '../loading/load_component.js';

export class ClipFolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClipFolderError';
  }
}

export interface ClipScorer {
  tokenizer: CLIPTokenizer;
  text: CLIPTextModelWithProjection;
  vision: CLIPVisionModelWithProjection;
  processor: ClipProcessorConfig;
  /** Which layout the folder had. */
  layout: 'clip-model' | 'subfolders';
  dispose(): void;
}

/** The tensors of `src` under the given prefixes (minus buffers transformers ignores), for one tower of a CLIPModel. */
function tower(src: TensorSource, prefixes: string[]): TensorSource {
  const ignored = /^(text_model|vision_model)\.embeddings\.position_ids$/;
  return { ...src, names: () => src.names().filter((n) => prefixes.some((p) => n.startsWith(p)) && !ignored.test(n)) };
}

function need(file: string, what: string): void {
  if (!fs.existsSync(file)) throw new ClipFolderError(`${file}: missing (${what})`);
}

/** Loads a CLIP folder (either layout); errors name the file at fault. */
export function loadClipScorer(dir: string): ClipScorer {
  const root = path.resolve(dir);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new ClipFolderError(`${dir}: CLIP folder does not exist`);
  const sub = (n: string) => path.join(root, n);
  let text: CLIPTextModelWithProjection | undefined;
  let vision: CLIPVisionModelWithProjection | undefined;
  try {
    if (fs.existsSync(sub('text_encoder')) && fs.existsSync(sub('image_encoder'))) {
      const fe = ['feature_extractor', 'image_processor'].map(sub).find((d) => fs.existsSync(path.join(d, 'preprocessor_config.json')));
      if (!fe) throw new ClipFolderError(`${sub('feature_extractor')}: missing preprocessor_config.json (CLIPImageProcessor settings)`);
      need(sub('tokenizer'), 'the CLIP tokenizer folder');
      const tokenizer = CLIPTokenizer.fromDir(sub('tokenizer'));
      text = loadComponent(sub('text_encoder'), 'CLIPTextModelWithProjection');
      vision = loadComponent(sub('image_encoder'), 'CLIPVisionModelWithProjection');
      return finish(tokenizer, text, vision, readClipProcessorConfig(fe), 'subfolders');
    }
    const cfgFile = path.join(root, 'config.json');
    need(cfgFile, 'a transformers CLIPModel config, or text_encoder/ + image_encoder/ subfolders');
    const raw = readConfig(root);
    if (raw.model_type !== 'clip') {
      throw new ClipFolderError(`${cfgFile}: model_type ${JSON.stringify(raw.model_type)} is not "clip" (a CLIPModel folder such as openai/clip-vit-base-patch16 is needed)`);
    }
    need(path.join(root, 'preprocessor_config.json'), 'CLIPImageProcessor settings');
    const tokenizer = CLIPTokenizer.fromDir(root);
    const src = safetensorsSource(findWeightsFile(root));
    try {
      text = new CLIPTextModelWithProjection(clipTextConfig(raw, cfgFile));
      text.loadStateDict(tower(src, ['text_model.', 'text_projection.']), { strict: true });
      vision = new CLIPVisionModelWithProjection(clipVisionConfig(raw, cfgFile));
      vision.loadStateDict(tower(src, ['vision_model.', 'visual_projection.']), { strict: true });
    } finally {
      src.close();
    }
    return finish(tokenizer, text, vision, readClipProcessorConfig(root), 'clip-model');
  } catch (e) {
    text?.dispose();
    vision?.dispose();
    if (e instanceof ClipFolderError) throw e;
    throw new ClipFolderError((e as Error).message);
  }
}

function finish(tokenizer: CLIPTokenizer, text: CLIPTextModelWithProjection, vision: CLIPVisionModelWithProjection, processor: ClipProcessorConfig, layout: ClipScorer['layout']): ClipScorer {
  if (text.config.projection_dim !== vision.config.projection_dim) {
    text.dispose();
    vision.dispose();
    throw new ClipFolderError(`text projection_dim ${text.config.projection_dim} differs from the vision projection_dim ${vision.config.projection_dim}: not one CLIP model`);
  }
  if (processor.cropHeight !== vision.config.image_size || processor.cropWidth !== vision.config.image_size) {
    text.dispose();
    vision.dispose();
    throw new ClipFolderError(`the image processor crops to ${processor.cropWidth}x${processor.cropHeight}, the vision encoder takes ${vision.config.image_size}x${vision.config.image_size}`);
  }
  return { tokenizer, text, vision, processor, layout, dispose: () => { text.dispose(); vision.dispose(); } };
}

/** L2-normalised rows. */
function normalise(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.norm(x, 2, -1, true));
}

/** 100·cos(image, prompt) for each pair (not clamped), in batches of `batchSize`. */
export function clipCosines(scorer: ClipScorer, pairs: { image: RgbImage; prompt: string }[], batchSize = 16): number[] {
  const out: number[] = [];
  const maxPos = scorer.text.config.max_position_embeddings;
  for (let i = 0; i < pairs.length; i += batchSize) {
    const part = pairs.slice(i, i + batchSize);
    const pix = part.map((p) => clipPreprocess(p.image, scorer.processor, 'clip'));
    const [h, w] = [pix[0].shape[2], pix[0].shape[3]];
    const data = new Float32Array(part.length * 3 * h * w);
    pix.forEach((p, k) => data.set(p.pixelValues, k * 3 * h * w));
    const enc = scorer.tokenizer.encode(part.map((p) => p.prompt), { padding: 'longest', truncation: false });
    const ids = enc.inputIds.map((r) => r.slice(0, maxPos));
    const mask = enc.attentionMask.map((r) => r.slice(0, maxPos));
    const scores = tf.tidy(() => {
      const img = scorer.vision.forward(tf.tensor4d(data, [part.length, 3, h, w]));
      const txt = scorer.text.forward(tf.tensor2d(ids, undefined, 'int32'), tf.tensor2d(mask, undefined, 'int32'));
      return tf.mul(tf.sum(tf.mul(normalise(img.imageEmbeds), normalise(txt.textEmbeds)), -1), 100);
    });
    try {
      out.push(...scores.dataSync());
    } finally {
      scores.dispose();
    }
  }
  return out;
}

export interface ClipScoreSummary {
  /** torchmetrics CLIPScore: max(mean over images of 100·cos, 0). */
  score: number;
  /** Mean of the per-image max(100·cos, 0). */
  meanClamped: number;
  min: number;
  max: number;
  count: number;
}

export function summarise(cosines: number[]): ClipScoreSummary {
  const n = cosines.length;
  const mean = cosines.reduce((s, x) => s + x, 0) / n;
  const clamped = cosines.map((x) => Math.max(x, 0));
  return {
    score: Math.max(mean, 0),
    meanClamped: clamped.reduce((s, x) => s + x, 0) / n,
    min: Math.min(...clamped),
    max: Math.max(...clamped),
    count: n,
  };
}
