// Folder steps of the karlo-nano recipe that are not training:
//   setPriorClipStats   the prior's clip_mean / clip_std (the normalisation of its target, PriorTransformer's
//                       post_process_latents) set to the per-dimension mean and standard deviation of the CLIP image
//                       embeddings of the training images, measured with the folder's own image_encoder (what Karlo
//                       ships for ViT-L/14; from scratch they must be measured)
//   packFolder          a pipeline folder (component links resolved) copied into a plain folder, weights converted
//                       to float16 or float32; run folders and caches are not copied
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { clipPreprocess, readClipProcessorConfig } from '../io/clip_preprocess.js';
import { readImage } from '../io/image.js';
import { componentDir } from '../io/model_folder.js';
import { loadSafetensors, saveSafetensors, type SafetensorsDType, type TensorToWrite } from '../io/safetensors.js';
import { findWeightsFile } from '../io/weights.js';
import { loadComponent } from '../loading/load_component.js';
import { IMAGE_EXTENSIONS } from '../training/data.js';

/** Per-dimension mean and std (population) of the image embeddings of every image in `imagesDir`. */
export async function imageEmbeddingStats(model: string, imagesDir: string, batch = 64): Promise<{ mean: Float32Array; std: Float32Array; n: number }> {
  const vision = loadComponent(path.join(model, 'image_encoder'), 'CLIPVisionModelWithProjection');
  const cfg = readClipProcessorConfig(path.join(model, 'feature_extractor'));
  const files = fs.readdirSync(imagesDir).filter((f) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase())).sort();
  if (!files.length) throw new Error(`${imagesDir}: no images`);
  const D = vision.config.projection_dim, S = vision.config.image_size;
  const sum = new Float64Array(D), sum2 = new Float64Array(D);
  try {
    for (let i = 0; i < files.length; i += batch) {
      const part = files.slice(i, i + batch);
      const px = new Float32Array(part.length * 3 * S * S);
      for (let k = 0; k < part.length; k++) px.set(clipPreprocess(await readImage(path.join(imagesDir, part[k])), cfg).pixelValues, k * 3 * S * S);
      const emb = tf.tidy(() => vision.forward(tf.tensor4d(px, [part.length, 3, S, S])).imageEmbeds);
      const e = (await emb.data()) as Float32Array;
      emb.dispose();
      for (let k = 0; k < part.length; k++) for (let d = 0; d < D; d++) { const v = e[k * D + d]; sum[d] += v; sum2[d] += v * v; }
    }
  } finally {
    vision.dispose();
  }
  const n = files.length;
  const mean = Float32Array.from(sum, (s) => s / n);
  const std = Float32Array.from(sum2, (s2, d) => Math.sqrt(Math.max(1e-12, s2 / n - (sum[d] / n) ** 2)));
  return { mean, std, n };
}

/** Rewrites the prior's weights with clip_mean / clip_std replaced (other tensors as they are). */
export function setPriorClipStats(priorDir: string, mean: Float32Array, std: Float32Array): void {
  const file = findWeightsFile(priorDir);
  const t = loadSafetensors(file);
  for (const [k, v] of [['clip_mean', mean], ['clip_std', std]] as const) {
    const cur = t.get(k);
    if (!cur || cur.shape.reduce((a, b) => a * b, 1) !== v.length) throw new Error(`${file}: ${k} missing or not of ${v.length} values`);
    t.set(k, { dtype: 'float32', shape: cur.shape, data: v });
  }
  const out: Record<string, TensorToWrite> = {};
  for (const [k, v] of t) out[k] = { dtype: v.dtype === 'int32' ? 'I32' : 'F32', shape: v.shape, data: v.data };
  const tmp = `${file}.tmp-${process.pid}`;
  saveSafetensors(tmp, out);
  fs.renameSync(tmp, file);
}

const MODEL_FILES = ['model.safetensors', 'diffusion_pytorch_model.safetensors'];

/**
 * Copies a pipeline folder (model_index.json components, plus image_encoder/feature_extractor when present) into
 * `out` as plain folders, converting float weights to `dtype`.
 */
export function packFolder(src: string, out: string, dtype: SafetensorsDType = 'F16'): number {
  const index = JSON.parse(fs.readFileSync(path.join(src, 'model_index.json'), 'utf8')) as Record<string, unknown>;
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'model_index.json'), `${JSON.stringify(index, null, 2)}\n`);
  let bytes = 0;
  for (const name of Object.keys(index).filter((k) => !k.startsWith('_'))) {
    const d = componentDir(src, name);
    if (!d) throw new Error(`${src}: component ${name} is missing`);
    const o = path.join(out, name);
    fs.mkdirSync(o, { recursive: true });
    for (const f of fs.readdirSync(d)) {
      const full = path.join(d, f);
      if (!fs.statSync(full).isFile()) continue;
      if (MODEL_FILES.includes(f)) {
        const t = loadSafetensors(full);
        const w: Record<string, TensorToWrite> = {};
        for (const [k, v] of t) w[k] = { dtype: v.dtype === 'int32' ? 'I32' : dtype, shape: v.shape, data: v.data };
        saveSafetensors(path.join(o, f), w);
      } else if (/\.(json|txt)$/.test(f)) {
        fs.copyFileSync(full, path.join(o, f));
      }
    }
    for (const f of fs.readdirSync(o)) bytes += fs.statSync(path.join(o, f)).size;
  }
  return bytes;
}
