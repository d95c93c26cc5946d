// CLIP image preprocessing: what transformers' CLIPImageProcessor (≈4.36, as configured for
// openai/clip-vit-large-patch14) does to an RGB uint8 image, restated exactly:
//   1. resize the shortest side to S (long side int(S·long/short)) with PIL's BICUBIC (antialiased when shrinking),
//   2. centre crop S×S, 3. rescale x·(1/255) (float64 product rounded to float32), 4. (x − mean)/std in float32,
//   HWC → NCHW.
// PIL's resampling (Pillow 9.4 libImaging/Resample.c) is restated in integers: per-axis weights from Keys' cubic
// (a = −0.5) over a support widened by the downscale factor, normalised to sum 1 and quantised to 22 fractional
// bits; horizontal pass first, the intermediate rounded to uint8, then vertical; a pass is skipped when its size
// is unchanged. This gives PIL's bytes exactly (checked on every resize in the clip_vision fixtures).
//
// `karlo` mode is what Kakao Brain's own variation sampler does (karlo/sampler/i2i.py, I2ISampler.preprocess):
// torchvision TVF.resize(pil_image, [224, 224], BICUBIC, antialias=True) — on a PIL image that is PIL's
// Image.resize((224, 224), BICUBIC): the aspect ratio is NOT kept and nothing is cropped — then TVF.to_tensor
// (float32 u8/255, a float32 division) and TVF.normalize with the same CLIP mean/std. Here the square side is the
// processor's crop size (224 for ViT-L/14).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RgbImage } from './image.js';

export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

/** The CLIPImageProcessor fields we honour (preprocessor_config.json), with transformers' defaults. */
export interface ClipProcessorConfig {
  doResize: boolean;
  /** size.shortest_edge */
  shortestEdge: number;
  /** PIL filter id; only 3 (BICUBIC), what every CLIP processor uses, is implemented. */
  resample: number;
  doCenterCrop: boolean;
  cropHeight: number;
  cropWidth: number;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: number[];
  imageStd: number[];
}

export const CLIP_PROCESSOR_DEFAULTS: ClipProcessorConfig = {
  doResize: true, shortestEdge: 224, resample: 3, doCenterCrop: true, cropHeight: 224, cropWidth: 224,
  doRescale: true, rescaleFactor: 1 / 255, doNormalize: true, imageMean: [...CLIP_MEAN], imageStd: [...CLIP_STD],
};

export type PreprocessMode = 'clip' | 'karlo';

/** Typed config from a parsed preprocessor_config.json; anything we cannot honour is an error naming `source`. */
export function clipProcessorConfig(raw: Record<string, unknown>, source = 'preprocessor_config.json'): ClipProcessorConfig {
  const cfg: ClipProcessorConfig = { ...CLIP_PROCESSOR_DEFAULTS, imageMean: [...CLIP_MEAN], imageStd: [...CLIP_STD] };
  const bool = (k: string, d: boolean) => {
    const v = raw[k];
    if (v === undefined || v === null) return d;
    if (typeof v !== 'boolean') throw new Error(`${source}: ${k} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const posInt = (v: unknown, what: string) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new Error(`${source}: ${what} must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const triple = (k: string, d: number[]) => {
    const v = raw[k];
    if (v === undefined || v === null) return d;
    if (typeof v === 'number') return [v, v, v];
    if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
      throw new Error(`${source}: ${k} must be 3 numbers, got ${JSON.stringify(v)}`);
    }
    return v as number[];
  };
  if (raw.image_processor_type !== undefined && raw.image_processor_type !== 'CLIPImageProcessor') {
    throw new Error(`${source}: image_processor_type ${JSON.stringify(raw.image_processor_type)}; CLIPImageProcessor expected`);
  }
  cfg.doResize = bool('do_resize', true);
  cfg.doCenterCrop = bool('do_center_crop', true);
  cfg.doRescale = bool('do_rescale', true);
  cfg.doNormalize = bool('do_normalize', true);
  if (raw.do_convert_rgb === false) throw new Error(`${source}: do_convert_rgb false is not supported (inputs are always converted to RGB)`);
  const size = raw.size;
  if (size !== undefined) {
    if (typeof size === 'number') cfg.shortestEdge = posInt(size, 'size');
    else if (size && typeof size === 'object' && 'shortest_edge' in size) cfg.shortestEdge = posInt((size as Record<string, unknown>).shortest_edge, 'size.shortest_edge');
    else throw new Error(`${source}: size ${JSON.stringify(size)}: only {"shortest_edge": N} is supported`);
  }
  const crop = raw.crop_size;
  if (crop !== undefined) {
    if (typeof crop === 'number') cfg.cropHeight = cfg.cropWidth = posInt(crop, 'crop_size');
    else if (crop && typeof crop === 'object') {
      cfg.cropHeight = posInt((crop as Record<string, unknown>).height, 'crop_size.height');
      cfg.cropWidth = posInt((crop as Record<string, unknown>).width, 'crop_size.width');
    } else throw new Error(`${source}: crop_size ${JSON.stringify(crop)} must be a number or {height, width}`);
  } else if (size !== undefined) {
    cfg.cropHeight = cfg.cropWidth = cfg.shortestEdge;
  }
  if (raw.resample !== undefined && raw.resample !== 3) throw new Error(`${source}: resample ${JSON.stringify(raw.resample)} is not supported (3 = PIL BICUBIC only)`);
  if (raw.rescale_factor !== undefined) {
    if (typeof raw.rescale_factor !== 'number' || !(raw.rescale_factor > 0)) throw new Error(`${source}: rescale_factor must be a positive number`);
    cfg.rescaleFactor = raw.rescale_factor;
  }
  cfg.imageMean = triple('image_mean', cfg.imageMean);
  cfg.imageStd = triple('image_std', cfg.imageStd);
  if (cfg.imageStd.some((s) => s === 0)) throw new Error(`${source}: image_std must not contain 0`);
  return cfg;
}

/** Reads `dir`/preprocessor_config.json (a feature_extractor folder). */
export function readClipProcessorConfig(dir: string): ClipProcessorConfig {
  const file = path.join(dir, 'preprocessor_config.json');
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : (e as Error).message}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${file}: not a JSON object`);
  return clipProcessorConfig(raw as Record<string, unknown>, file);
}

// ---- PIL BICUBIC resampling (Pillow 9.4, 8 bits per channel) ---------------------------------------------------

const PRECISION_BITS = 32 - 8 - 2;

/** Pillow's bicubic_filter, a = −0.5, evaluated in the same order (doubles). */
function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis: per output index, first input and weights. */
function coefficients(inSize: number, outSize: number): { start: Int32Array; count: Int32Array; ksize: number; k: Int32Array } {
  const support0 = 2; // bicubic
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = support0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize), count = new Int32Array(outSize), k = new Int32Array(outSize * ksize);
  const ss = 1 / filterscale;
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5); // C (int) cast: toward zero
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? w[x] / ww : w[x];
      k[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    start[xx] = xmin;
    count[xx] = xmax;
  }
  return { start, count, ksize, k };
}

/** (2^21 + Σ) >> 22 clipped to 0..255, as Pillow's clip8 (an arithmetic shift: floor). */
function clip8(ss: number): number {
  const v = Math.floor(ss / (1 << PRECISION_BITS));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** PIL Image.resize((width, height), BICUBIC) of an RGB image: the same bytes as Pillow 9.4. */
export function pilResizeBicubic(img: RgbImage, width: number, height: number): RgbImage {
  if (!(Number.isInteger(width) && width > 0 && Number.isInteger(height) && height > 0)) throw new Error(`pilResizeBicubic: bad size ${width}x${height}`);
  let src = img;
  if (width !== img.width) {
    const c = coefficients(img.width, width);
    const out = new Uint8Array(width * img.height * 3);
    for (let y = 0; y < img.height; y++) {
      const row = y * img.width * 3;
      for (let xx = 0; xx < width; xx++) {
        const s = c.start[xx], n = c.count[xx], ko = xx * c.ksize;
        for (let ch = 0; ch < 3; ch++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < n; x++) ss += img.data[row + (s + x) * 3 + ch] * c.k[ko + x];
          out[(y * width + xx) * 3 + ch] = clip8(ss);
        }
      }
    }
    src = { width, height: img.height, data: out };
  }
  if (height !== src.height) {
    const c = coefficients(src.height, height);
    const out = new Uint8Array(width * height * 3);
    const stride = width * 3;
    for (let yy = 0; yy < height; yy++) {
      const s = c.start[yy], n = c.count[yy], ko = yy * c.ksize;
      for (let i = 0; i < stride; i++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < n; y++) ss += src.data[(s + y) * stride + i] * c.k[ko + y];
        out[yy * stride + i] = clip8(ss);
      }
    }
    src = { width, height, data: out };
  }
  return src === img ? { width, height, data: Uint8Array.from(img.data) } : src;
}

/** transformers' get_resize_output_image_size(default_to_square=False): short side → S, long side int(S·long/short). */
export function shortestEdgeSize(width: number, height: number, s: number): { width: number; height: number } {
  const [short, long] = width <= height ? [width, height] : [height, width];
  const newLong = Math.trunc((s * long) / short); // python: int(size * long / short), float64
  return width <= height ? { width: s, height: newLong } : { width: newLong, height: s };
}

/** transformers' center_crop for an image at least as large as the crop: top = (H−h)//2, left = (W−w)//2. */
export function centerCrop(img: RgbImage, height: number, width: number): { image: RgbImage; top: number; left: number } {
  if (img.height < height || img.width < width) {
    throw new Error(`centerCrop: image ${img.width}x${img.height} is smaller than the crop ${width}x${height}`);
  }
  const top = Math.floor((img.height - height) / 2), left = Math.floor((img.width - width) / 2);
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    out.set(img.data.subarray(((top + y) * img.width + left) * 3, ((top + y) * img.width + left + width) * 3), y * width * 3);
  }
  return { image: { width, height, data: out }, top, left };
}

export interface Preprocessed {
  /** NCHW float32 [1, 3, H, W] */
  pixelValues: Float32Array;
  shape: [1, 3, number, number];
  /** The resized uint8 image before the crop (clip mode) or the final one (karlo mode). */
  resized: RgbImage;
  /** Crop offsets (clip mode; 0, 0 in karlo mode). */
  top: number;
  left: number;
}

/**
 * RGB uint8 → pixel_values as CLIPImageProcessor (mode 'clip') or Karlo's own sampler (mode 'karlo': PIL BICUBIC
 * straight to the crop size, no crop, x/255 in float32). Both normalise with the config's mean/std in float32.
 */
export function clipPreprocess(img: RgbImage, cfg: ClipProcessorConfig = CLIP_PROCESSOR_DEFAULTS, mode: PreprocessMode = 'clip'): Preprocessed {
  if (img.width <= 0 || img.height <= 0 || img.data.length !== img.width * img.height * 3) {
    throw new Error(`clipPreprocess: expected an RGB image, got ${img.width}x${img.height} with ${img.data.length} bytes`);
  }
  let resized: RgbImage, cropped: RgbImage, top = 0, left = 0;
  if (mode === 'karlo') {
    resized = cropped = pilResizeBicubic(img, cfg.cropWidth, cfg.cropHeight);
  } else if (mode === 'clip') {
    if (cfg.doResize) {
      const sz = shortestEdgeSize(img.width, img.height, cfg.shortestEdge);
      resized = pilResizeBicubic(img, sz.width, sz.height);
    } else {
      resized = img;
    }
    if (cfg.doCenterCrop) ({ image: cropped, top, left } = centerCrop(resized, cfg.cropHeight, cfg.cropWidth));
    else cropped = resized;
  } else {
    throw new Error(`clipPreprocess: mode must be 'clip' or 'karlo', got ${JSON.stringify(mode)}`);
  }
  const { width: W, height: H, data } = cropped;
  const mean = cfg.imageMean.map(Math.fround), std = cfg.imageStd.map(Math.fround);
  const out = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < H * W; i++) {
      const u = data[i * 3 + c];
      // clip: float32(u8 · factor) with the product in float64 (numpy); karlo: float32 u8 / 255 (torch).
      let x = mode === 'karlo' ? Math.fround(u / 255) : cfg.doRescale ? Math.fround(u * cfg.rescaleFactor) : u;
      if (cfg.doNormalize || mode === 'karlo') x = Math.fround(Math.fround(x - mean[c]) / std[c]);
      out[c * H * W + i] = x;
    }
  }
  return { pixelValues: out, shape: [1, 3, H, W], resized, top, left };
}
