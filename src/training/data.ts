// Training data: a folder of images (PNG, JPEG) with captions in `.txt` files of the same stem
// (`frog.png` + `frog.txt`). Every file is checked up front; anything unusable is skipped with its reason (no
// caption, empty caption, undecodable image, two images with one stem, ...) and a folder without one usable
// pair is one clear error. Images are centre-cropped to a square and resized (bicubic, antialiased, as
// F.interpolate) to the component's resolution, as NCHW floats in [-1, 1]. Each pair carries the sha256 of its
// image and caption bytes: the conditioning cache is keyed by them.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { decodeImage, type RgbImage } from '../io/image.js';
import { bicubicResize } from '../layers/interpolate.js';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg'];
/** Captions longer than this are refused as not being captions (CLIP reads 77 tokens anyway). */
export const MAX_CAPTION_BYTES = 64 * 1024;
/** Names in the data folder that are ours (the conditioning cache) or hidden: never reported. */
export const CACHE_DIR_NAME = '.karlo_cache';

/** A data folder that cannot be used at all (missing, not a folder, no usable pair). */
export class DataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DataError';
  }
}

export interface DataItem {
  /** File name without extension (shared by image and caption). */
  stem: string;
  /** Absolute paths. */
  imageFile: string;
  captionFile: string;
  /** Caption text, trimmed. */
  caption: string;
  /** sha256 (hex) of the image file's bytes and of the caption text (UTF-8, trimmed). */
  imageHash: string;
  captionHash: string;
  /** Size of the original image. */
  width: number;
  height: number;
}

export interface SkippedFile {
  /** Path relative to the data folder. */
  file: string;
  reason: string;
}

export interface DataFolder {
  dir: string;
  items: DataItem[];
  skipped: SkippedFile[];
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Scans a data folder (not recursive: sub-folders are skipped with a reason, except our cache and hidden ones).
 * Decodes every image once to check it (handing it to onImage, e.g. to prepare the training pixels, so no more
 * than one decoded image is held); returns usable pairs in file-name order and the skipped files. Throws a
 * DataError when the folder is missing or has no usable pair.
 */
export async function scanDataFolder(dir: string, opts: { onImage?: (item: DataItem, image: RgbImage) => void } = {}): Promise<DataFolder> {
  const root = path.resolve(dir);
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
  } catch {
    throw new DataError(`${dir}: data folder does not exist`);
  }
  if (!st.isDirectory()) throw new DataError(`${dir}: not a folder (expected a folder of images with same-stem .txt captions)`);
  const names = fs.readdirSync(root).sort();
  const skipped: SkippedFile[] = [];
  const imagesByStem = new Map<string, string>();
  const captions = new Map<string, string>();
  for (const name of names) {
    if (name.startsWith('.')) continue; // hidden files and our cache
    const full = path.join(root, name);
    let s: fs.Stats;
    try {
      s = fs.statSync(full);
    } catch (e) {
      skipped.push({ file: name, reason: `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` });
      continue;
    }
    if (s.isDirectory()) { skipped.push({ file: name, reason: 'a folder (sub-folders are not read)' }); continue; }
    if (!s.isFile()) { skipped.push({ file: name, reason: 'not a regular file' }); continue; }
    const ext = path.extname(name).toLowerCase();
    const stem = name.slice(0, name.length - ext.length);
    if (ext === '.txt') {
      captions.set(stem, name);
    } else if (IMAGE_EXTENSIONS.includes(ext)) {
      const other = imagesByStem.get(stem);
      if (other) skipped.push({ file: name, reason: `another image has the same stem (${other}); one caption cannot serve both` });
      else imagesByStem.set(stem, name);
    } else {
      skipped.push({ file: name, reason: `not an image (${IMAGE_EXTENSIONS.join(', ')}) or a .txt caption` });
    }
  }

  const items: DataItem[] = [];
  for (const [stem, imageName] of imagesByStem) {
    const captionName = captions.get(stem);
    if (!captionName) { skipped.push({ file: imageName, reason: `no caption file ${stem}.txt` }); continue; }
    const captionFile = path.join(root, captionName);
    const imageFile = path.join(root, imageName);
    const capBytes = fs.readFileSync(captionFile);
    if (capBytes.length > MAX_CAPTION_BYTES) { skipped.push({ file: imageName, reason: `caption ${captionName} is ${capBytes.length} bytes (more than ${MAX_CAPTION_BYTES}): not a caption` }); continue; }
    let caption: string;
    try {
      caption = utf8.decode(capBytes).replace(/^\uFEFF/, '').trim();
    } catch {
      skipped.push({ file: imageName, reason: `caption ${captionName} is not UTF-8 text` });
      continue;
    }
    if (!caption) { skipped.push({ file: imageName, reason: `caption ${captionName} is empty` }); continue; }
    const bytes = fs.readFileSync(imageFile);
    let img: RgbImage;
    try {
      img = await decodeImage(bytes, imageName);
    } catch (e) {
      skipped.push({ file: imageName, reason: `cannot decode: ${(e as Error).message.replace(`${imageName}: `, '')}` });
      continue;
    }
    const item: DataItem = {
      stem, imageFile, captionFile, caption,
      imageHash: sha256Hex(bytes), captionHash: sha256Hex(caption),
      width: img.width, height: img.height,
    };
    items.push(item);
    opts.onImage?.(item, img);
  }
  for (const [stem, captionName] of captions) {
    if (!imagesByStem.has(stem)) skipped.push({ file: captionName, reason: `no image ${stem}${IMAGE_EXTENSIONS.join(`/${stem}`)}` });
  }
  skipped.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  if (!items.length) {
    const why = skipped.length
      ? `; skipped: ${skipped.slice(0, 5).map((s) => `${s.file} (${s.reason})`).join('; ')}${skipped.length > 5 ? `; … ${skipped.length - 5} more` : ''}`
      : ' (the folder is empty)';
    throw new DataError(`${dir}: no usable image/caption pair (an image ${IMAGE_EXTENSIONS.join('/')} with a same-stem .txt caption)${why}`);
  }
  return { dir: root, items, skipped };
}

/**
 * An RGB image → NCHW [1, 3, size, size] float32 in [-1, 1]: centre square crop (top = ⌊(H − m)/2⌋, left =
 * ⌊(W − m)/2⌋, m = min(H, W)), then bicubic resize (antialiased when shrinking), clamped.
 */
export function prepareImage(img: RgbImage, size: number): tf.Tensor4D {
  if (!Number.isInteger(size) || size < 1) throw new Error(`prepareImage: size must be a positive integer, got ${size}`);
  const m = Math.min(img.width, img.height);
  const top = Math.floor((img.height - m) / 2);
  const left = Math.floor((img.width - m) / 2);
  const crop = new Float32Array(3 * m * m);
  for (let y = 0; y < m; y++) {
    for (let x = 0; x < m; x++) {
      const s = ((top + y) * img.width + left + x) * 3;
      const d = y * m + x;
      for (let c = 0; c < 3; c++) crop[c * m * m + d] = img.data[s + c] / 127.5 - 1;
    }
  }
  return tf.tidy(() => {
    const t = tf.tensor4d(crop, [1, 3, m, m]);
    const r = m === size ? t : bicubicResize(t, [size, size], { antialias: size < m });
    return tf.clipByValue(r, -1, 1) as tf.Tensor4D;
  });
}

/** prepareImage as plain data (NCHW [3, size, size]). */
export function prepareImageData(img: RgbImage, size: number): Float32Array {
  const t = prepareImage(img, size);
  try {
    return t.dataSync() as Float32Array;
  } finally {
    t.dispose();
  }
}

/** Scans a folder and prepares every usable image at `size`: pixels[i] belongs to items[i]. */
export async function loadImageFolder(dir: string, size: number): Promise<DataFolder & { pixels: Float32Array[] }> {
  const pixels: Float32Array[] = [];
  const folder = await scanDataFolder(dir, { onImage: (_it, img) => pixels.push(prepareImageData(img, size)) });
  return { ...folder, pixels };
}

/** One line per skipped file, for the log. */
export function describeSkipped(skipped: readonly SkippedFile[]): string[] {
  return skipped.map((s) => `skipped ${s.file}: ${s.reason}`);
}
