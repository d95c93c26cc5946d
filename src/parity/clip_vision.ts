// `karlo parity` kind "clip_vision": a folder like test/fixtures/clip_vision (fixtures README section l):
// config.json (CLIPVisionModelWithProjection) + model.safetensors + io.safetensors holding `pixel_values`
// [B,C,S,S] and any of `image_embeds`, `last_hidden_state`, `pooler_output`, `hidden_states.{i}` (tolerance
// 1e-4·max(1, max|ref|)). When the folder also has preprocessing references they are checked too:
// preprocess.safetensors `<case>.pixel_values` for each case of index.json "preprocess" (its processor config,
// input image `image.<name>.u8_HWC` or the PNG of index.json "images"; abs ≤ 1e-6), the resized uint8 images
// (`<case>.resized_u8_HWC`, resized PNGs, and index.json "pil_resize": exact, reported as the count of differing bytes).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors, type TensorData } from '../io/safetensors.js';
import { FixtureTensors, compareToFixture, namesClass } from './fixture.js';
import { readImage, type RgbImage } from '../io/image.js';
import { decodePng } from '../io/png.js';
import { clipPreprocess, pilResizeBicubic, readClipProcessorConfig } from '../io/clip_preprocess.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';

const ATOL = 1e-4;
/** Fixtures README: pixel_values abs ≤ 1e-6 (one uint8 step is 0.0146 after normalisation). */
const PIXEL_ATOL = 1e-6;

/** Exact uint8 comparison, reported as a Comparison whose maxAbs is the largest byte difference. */
function compareBytes(name: string, ours: Uint8Array, ref: ArrayLike<number>, shape: number[]): Comparison {
  const c = compareArrays(name, ours, ref, { atol: 0, scaleByMax: false });
  c.shape = shape;
  return c;
}

interface Index {
  images?: Record<string, { file: string }>;
  preprocess?: Record<string, { processor: string; resized_wh?: [number, number]; crop_top_left?: [number, number]; resized_png?: string }>;
  pil_resize?: { input: string; width: number; height: number; filter?: string; file: string }[];
}

async function preprocessParity(dir: string, log: (l: string) => void): Promise<Comparison[]> {
  const out: Comparison[] = [];
  const indexFile = path.join(dir, 'index.json');
  if (!fs.existsSync(indexFile)) return out;
  const index = JSON.parse(fs.readFileSync(indexFile, 'utf8')) as Index;
  const preFile = path.join(dir, 'preprocess.safetensors');
  const pre = fs.existsSync(preFile) ? loadSafetensors(preFile) : new Map<string, TensorData>();
  const images = new Map<string, RgbImage>();
  const image = async (name: string): Promise<RgbImage> => {
    if (!images.has(name)) {
      const entry = index.images?.[name];
      if (!entry) throw new Error(`${indexFile}: image "${name}" is not listed under "images"`);
      const img = await readImage(path.join(dir, entry.file));
      const rec = pre.get(`image.${name}.u8_HWC`);
      if (rec) out.push(compareBytes(`image.${name}.u8_HWC (decoded ${entry.file})`, img.data, rec.data as ArrayLike<number>, rec.shape));
      images.set(name, img);
    }
    return images.get(name)!;
  };
  const push = (c: Comparison) => {
    out.push(c);
    log(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name} max abs ${c.maxAbs.toExponential(2)}`);
  };
  for (const [key, spec] of Object.entries(index.preprocess ?? {})) {
    const imgName = key.split('.').slice(1).join('.');
    const img = await image(imgName);
    const cfg = readClipProcessorConfig(path.dirname(path.join(dir, spec.processor)));
    const res = clipPreprocess(img, cfg, 'clip');
    const pv = pre.get(`${key}.pixel_values`);
    if (pv) {
      const c = compareArrays(`${key}.pixel_values`, res.pixelValues, pv.data as Float32Array, { atol: PIXEL_ATOL, scaleByMax: false });
      c.shape = pv.shape;
      if (pv.shape.join(',') !== res.shape.join(',')) c.ok = false;
      push(c);
    }
    const ru8 = pre.get(`${key}.resized_u8_HWC`);
    if (ru8) push(compareBytes(`${key}.resized_u8_HWC`, res.resized.data, ru8.data as ArrayLike<number>, ru8.shape));
    if (spec.resized_png) {
      const ref = decodePng(fs.readFileSync(path.join(dir, spec.resized_png)), spec.resized_png);
      push(compareBytes(`${spec.resized_png}`, res.resized.data, ref.data, [ref.height, ref.width, ref.channels]));
    }
    if (spec.crop_top_left) {
      const ok = spec.crop_top_left[0] === res.top && spec.crop_top_left[1] === res.left;
      out.push({ name: `${key}.crop_top_left [${res.top},${res.left}]`, maxAbs: ok ? 0 : Infinity, maxRel: 0, maxRef: 0, allowed: 0, argmax: 0, ok });
    }
  }
  for (const r of index.pil_resize ?? []) {
    if (r.filter && r.filter !== 'BICUBIC') { log(`note: ${r.file}: filter ${r.filter} not implemented, skipped`); continue; }
    const name = Object.entries(index.images ?? {}).find(([, v]) => v.file === r.input)?.[0];
    const src = name ? await image(name) : await readImage(path.join(dir, r.input));
    const ref = decodePng(fs.readFileSync(path.join(dir, r.file)), r.file);
    const ours = pilResizeBicubic(src, r.width, r.height);
    push(compareBytes(r.file, ours.data, ref.data, [ref.height, ref.width, ref.channels]));
  }
  return out;
}

export async function runClipVisionParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const log = opts.log ?? (() => {});
  const out: Comparison[] = [];
  const ioFile = path.join(dir, 'io.safetensors');
  if (fs.existsSync(ioFile)) {
    const io = FixtureTensors.open(ioFile);
    const pv = io.need('pixel_values');
    if (pv.shape.length !== 4) throw new Error(`${ioFile}: "pixel_values" must be [batch, channels, size, size], got [${pv.shape}]`);
    const model = loadComponent(dir, 'CLIPVisionModelWithProjection');
    const x = tf.tensor4d(Float32Array.from(pv.data as Float32Array), pv.shape as [number, number, number, number]);
    const atol = opts.atol ?? ATOL;
    try {
      const res = model.forward(x);
      const produced = new Map<string, tf.Tensor>([
        ['image_embeds', res.imageEmbeds], ['last_hidden_state', res.lastHiddenState], ['pooler_output', res.poolerOutput],
        ...res.hiddenStates.map((h, i) => [`hidden_states.${i}`, h] as [string, tf.Tensor]),
      ]);
      out.push(...compareToFixture(io, produced, atol, log));
      tf.dispose([...produced.values()]);
      const unmatched = [...io.keys()].filter((k) => k !== 'pixel_values' && !produced.has(k));
      if (unmatched.length) log(`note: not compared (no counterpart): ${unmatched.join(', ')}`);
    } finally {
      x.dispose();
      model.dispose();
    }
  }
  out.push(...await preprocessParity(dir, log));
  if (!out.length) throw new Error(`${dir}: nothing to compare (no io.safetensors references, no preprocessing cases in index.json)`);
  return out;
}

export const clipVisionParity: ParityKind = {
  name: 'clip_vision',
  detect: (dir) => namesClass(dir, 'CLIPVisionModelWithProjection', { modelType: 'clip_vision_model' }) && (fs.existsSync(path.join(dir, 'io.safetensors')) || fs.existsSync(path.join(dir, 'index.json'))),
  run: runClipVisionParity,
};
