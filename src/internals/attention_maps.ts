// Attention maps of a run (`karlo attention`, the run report):
//
// Decoder (DAAM-style): every AddedKV attention layer reports its probabilities [rows, heads, H·W, keys]. For each
// generated image (the conditional rows; with guidance the unconditional rows come first and are skipped) we take
// the probability mass each spatial query puts on each encoder key (text_proj's extra CLIP tokens, then the 77
// text tokens), average it over heads, upsample the layer's H×W map bilinearly to the decoder's output size, and
// average over all attention layers (every resolution counts equally) and all denoising steps. A value is thus
// "the mean attention probability a pixel's query gives that token", between 0 and 1; the maps of one image
// over all keys (spatial keys included) sum to ≤ 1 per pixel. DAAM sums where we average; the pictures differ only
// by a constant, and averages stay comparable across models with other layer counts.
//
// Prior: the prd token (the last of the 81 tokens, whose output becomes the image embedding) attends over the
// 77 text tokens, the text embedding, the time embedding and the noisy image embedding (and itself); we average
// its probability row over heads, layers and steps (conditional rows only).
import * as tf from '@tensorflow/tfjs-core';
import type { OutputHook } from '../layers/module.js';
import type { RawImage } from '../io/png.js';
import { createImage, drawText, fillRect, strokeRect, drawLine, textWidth, type RGB } from '../io/raster.js';
import type { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';

export interface AttentionResult {
  /** Images (conditional rows) in pipeline order: prompt-major. */
  n: number;
  decoder: {
    /** [n, size, size, keys] mean attention mass per pixel and encoder key (extra tokens first), or null if none ran. */
    maps: Float32Array | null;
    size: number;
    keys: number;
    /** Attention calls averaged (layers × steps). */
    calls: number;
  };
  prior: {
    /** [n, 81] mean probability of the prd query over every key, or null. */
    mass: Float32Array | null;
    keys: number;
    calls: number;
  };
}

/**
 * Collects the decoder's and the prior's attention during a pipeline run: install `outputHooks` (prior, decoder)
 * in UnCLIPPipeline.generate, then read result(). `images` = prompts × images per prompt (conditional rows).
 */
export class AttentionCollector {
  private decSum: tf.Tensor | null = null;
  private decCalls = 0;
  private decKeys = 0;
  private priorSum: tf.Tensor | null = null;
  private priorCalls = 0;
  private priorKeys = 0;
  readonly outputHooks: { prior: OutputHook; decoder: OutputHook };

  constructor(readonly images: number, readonly decoderSize: number, readonly encoderTokens: number) {
    const conditional = (t: tf.Tensor) => {
      const b = t.shape[0];
      if (b === 2 * images) return tf.slice(t, [images], [images]);
      if (b === images) return t;
      throw new Error(`attention maps: ${b} rows for ${images} images`);
    };
    const decoder: OutputHook = (_p, probs) => {
      const [, , hw, k] = probs.shape;
      const side = Math.round(Math.sqrt(hw));
      if (side * side !== hw) throw new Error(`attention maps: ${hw} spatial queries are not a square map`);
      const next = tf.tidy(() => {
        const enc = tf.slice(conditional(probs), [0, 0, 0, 0], [-1, -1, -1, this.encoderTokens]);
        const m = tf.reshape(tf.mean(enc, 1), [images, side, side, this.encoderTokens]);
        const up = side === this.decoderSize ? m : tf.image.resizeBilinear(m as tf.Tensor4D, [this.decoderSize, this.decoderSize], false, true);
        return this.decSum ? tf.add(this.decSum, up) : up.clone();
      });
      this.decSum?.dispose();
      this.decSum = tf.keep(next);
      this.decCalls++;
      this.decKeys = k;
    };
    decoder.wants = (p) => /(^|\.)attentions\.\d+\.probs$/.test(p);
    const prior: OutputHook = (_p, probs) => {
      const [, , s] = probs.shape;
      const next = tf.tidy(() => {
        const row = tf.reshape(tf.mean(tf.slice(conditional(probs), [0, 0, s - 1, 0], [-1, -1, 1, -1]), 1), [images, s]);
        return this.priorSum ? tf.add(this.priorSum, row) : row.clone();
      });
      this.priorSum?.dispose();
      this.priorSum = tf.keep(next);
      this.priorCalls++;
      this.priorKeys = s;
    };
    prior.wants = (p) => /^transformer_blocks\.\d+\.attn1\.probs$/.test(p);
    this.outputHooks = { prior, decoder };
  }

  result(): AttentionResult {
    const avg = (t: tf.Tensor | null, n: number) => (t && n ? Float32Array.from(t.dataSync() as Float32Array, (v) => v / n) : null);
    return {
      n: this.images,
      decoder: { maps: avg(this.decSum, this.decCalls), size: this.decoderSize, keys: this.encoderTokens, calls: this.decCalls },
      prior: { mass: avg(this.priorSum, this.priorCalls), keys: this.priorKeys, calls: this.priorCalls },
    };
  }

  dispose(): void {
    this.decSum?.dispose();
    this.priorSum?.dispose();
    this.decSum = this.priorSum = null;
  }
}

/** Printable-ASCII label of one token id ("<start>", "<end>", words without the "</w>" end marker). */
export function tokenLabel(tok: CLIPTokenizer, id: number): string {
  const special: Record<number, string> = { 49406: '<start>', 49407: '<end>' };
  if (special[id]) return special[id];
  const s = tok.decode([id]).trim();
  return s.replace(/[^\x20-\x7e]/g, '?') || `#${id}`;
}

/** The real (unpadded) tokens of a prompt as the pipeline feeds them: ids and labels, BOS…EOS, at most 77. */
export function promptTokens(tok: CLIPTokenizer, prompt: string): { ids: number[]; labels: string[] } {
  const enc = tok.encode([prompt], { maxLength: tok.modelMaxLength, padding: 'max_length', truncation: true });
  const ids = enc.inputIds[0].filter((_, i) => enc.attentionMask[0][i] === 1);
  return { ids, labels: ids.map((id) => tokenLabel(tok, id)) };
}

// ---------- drawing ----------

const VIRIDIS: RGB[] = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

/** v in [0, 1] → a viridis-like colour. */
export function colormap(v: number): RGB {
  const x = Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = VIRIDIS[i], b = VIRIDIS[i + 1];
  return [Math.round(a[0] + f * (b[0] - a[0])), Math.round(a[1] + f * (b[1] - a[1])), Math.round(a[2] + f * (b[2] - a[2]))];
}

/** Bilinear sample (half-pixel centres) of a [h, w, c] array at output size [H, W]. */
function resample(src: ArrayLike<number>, h: number, w: number, c: number, H: number, W: number): Float32Array {
  const out = new Float32Array(H * W * c);
  for (let y = 0; y < H; y++) {
    const sy = Math.min(h - 1, Math.max(0, ((y + 0.5) * h) / H - 0.5));
    const y0 = Math.floor(sy), y1 = Math.min(h - 1, y0 + 1), fy = sy - y0;
    for (let x = 0; x < W; x++) {
      const sx = Math.min(w - 1, Math.max(0, ((x + 0.5) * w) / W - 0.5));
      const x0 = Math.floor(sx), x1 = Math.min(w - 1, x0 + 1), fx = sx - x0;
      for (let k = 0; k < c; k++) {
        const v = (1 - fy) * ((1 - fx) * src[(y0 * w + x0) * c + k] + fx * src[(y0 * w + x1) * c + k])
          + fy * ((1 - fx) * src[(y1 * w + x0) * c + k] + fx * src[(y1 * w + x1) * c + k]);
        out[(y * W + x) * c + k] = v;
      }
    }
  }
  return out;
}

function fit(label: string, px: number): string {
  const max = Math.max(1, Math.floor((px + 1) / 6));
  return label.length <= max ? label : `${label.slice(0, max - 1)}~`;
}

/** Formats a mass for labels: 0.123, 4.5e-3. */
export function fmtMass(v: number): string {
  return v === 0 ? '0' : v >= 0.01 ? v.toFixed(3) : v.toExponential(1);
}

export interface MapsPicture {
  /** The generated image, RGB u8. */
  image: RawImage;
  /** [size, size, keys] maps for this image, keys = labels.length (decoder keys: extra tokens, then text tokens). */
  maps: Float32Array | null;
  size: number;
  /** Labels of the decoder keys to draw, with their index into the maps' key axis. */
  decoderKeys: { index: number; label: string }[];
  /** Prior bars: label and mass. */
  priorBars: { label: string; mass: number }[] | null;
  title: string;
}

const INK: RGB = [20, 20, 20];
const GREY: RGB = [110, 110, 110];

/**
 * One PNG: the generated image and one heat map per decoder key over it (grey image under the colour map,
 * each map scaled to its own maximum, the value printed under it), a colour bar, and the prior's prd-token
 * attention as a bar chart. Cells are 128 px; text at scale 1 (6 px per character).
 */
export function drawAttentionMaps(p: MapsPicture): RawImage {
  const cell = 128, pad = 10, labelH = 24, cols = 6;
  const cells = 1 + (p.maps ? p.decoderKeys.length : 0);
  const rows = Math.ceil(cells / cols);
  const gridW = Math.min(cells, cols) * (cell + pad);
  const barW = 70;
  const top = 40;
  const gridH = rows * (cell + labelH + pad);
  const bars = p.priorBars ?? [];
  const chartH = bars.length ? 230 : 0;
  const W = Math.max(pad + gridW + barW, pad * 2 + 60 + bars.length * 14, 520);
  const H = top + gridH + chartH + pad;
  const img = createImage(W, H);
  drawText(img, pad, 8, fit(p.title, W - 2 * pad), INK);
  drawText(img, pad, 22, fit('decoder: mean attention mass per pixel on each token (heads, layers, steps); each map scaled to its max', W - 2 * pad), GREY);

  const rgb = resample(Array.from(p.image.data), p.image.height, p.image.width, p.image.channels, cell, cell);
  const grey = new Float32Array(cell * cell);
  for (let i = 0; i < grey.length; i++) grey[i] = 0.299 * rgb[i * p.image.channels] + 0.587 * rgb[i * p.image.channels + 1] + 0.114 * rgb[i * p.image.channels + 2];
  const at = (k: number) => [pad + (k % cols) * (cell + pad), top + Math.floor(k / cols) * (cell + labelH + pad)] as const;
  // Cell 0: the image itself.
  {
    const [x0, y0] = at(0);
    for (let y = 0; y < cell; y++) for (let x = 0; x < cell; x++) {
      const i = (y * cell + x) * p.image.channels;
      fillRect(img, x0 + x, y0 + y, 1, 1, [rgb[i], rgb[i + 1], rgb[i + 2]].map((v) => Math.round(Math.min(255, Math.max(0, v)))) as unknown as RGB);
    }
    strokeRect(img, x0 - 1, y0 - 1, cell + 2, cell + 2, GREY);
    drawText(img, x0, y0 + cell + 4, 'image', INK);
  }
  if (p.maps) {
    const K = p.maps.length / (p.size * p.size);
    p.decoderKeys.forEach(({ index, label }, n) => {
      const one = new Float32Array(p.size * p.size);
      for (let i = 0; i < one.length; i++) one[i] = p.maps![i * K + index];
      const up = resample(one, p.size, p.size, 1, cell, cell);
      let max = 0;
      for (const v of one) max = Math.max(max, v);
      const [x0, y0] = at(n + 1);
      for (let y = 0; y < cell; y++) for (let x = 0; x < cell; x++) {
        const i = y * cell + x;
        const c = colormap(max > 0 ? up[i] / max : 0);
        const g = grey[i];
        fillRect(img, x0 + x, y0 + y, 1, 1, [0, 1, 2].map((j) => Math.round(0.3 * g + 0.7 * c[j])) as unknown as RGB);
      }
      strokeRect(img, x0 - 1, y0 - 1, cell + 2, cell + 2, GREY);
      drawText(img, x0, y0 + cell + 3, fit(label, cell), INK);
      drawText(img, x0, y0 + cell + 13, fit(`max ${fmtMass(max)}`, cell), GREY);
    });
    // Colour bar.
    const bx = pad + gridW + 8, by = top, bh = Math.min(gridH - pad, 200);
    for (let y = 0; y < bh; y++) fillRect(img, bx, by + y, 14, 1, colormap(1 - y / (bh - 1)));
    strokeRect(img, bx - 1, by - 1, 16, bh + 2, GREY);
    drawText(img, bx + 18, by, 'max', INK);
    drawText(img, bx + 18, by + Math.floor(bh / 2) - 4, '1/2', INK);
    drawText(img, bx + 18, by + bh - 8, '0', INK);
  }
  if (bars.length) {
    const y0 = top + gridH + 4;
    drawText(img, pad, y0, fit('prior: attention of the prd token over its keys (mean over heads, layers, steps)', W - 2 * pad), INK);
    const axisX = pad + 44, plotTop = y0 + 18, plotH = 120, bw = 14;
    const max = Math.max(...bars.map((b) => b.mass), 1e-12);
    drawLine(img, axisX, plotTop, axisX, plotTop + plotH, INK);
    drawLine(img, axisX, plotTop + plotH, axisX + bars.length * bw + 4, plotTop + plotH, INK);
    for (const f of [0, 0.5, 1]) {
      const y = plotTop + plotH - Math.round(f * plotH);
      drawLine(img, axisX - 3, y, axisX, y, INK);
      drawText(img, axisX - 5, y - 4, fmtMass(f * max), INK, { align: 'right' });
    }
    bars.forEach((b, i) => {
      const h = Math.round((b.mass / max) * plotH);
      const x = axisX + 3 + i * bw;
      fillRect(img, x, plotTop + plotH - h, bw - 3, h, b.label.startsWith('[') ? [200, 120, 40] : [59, 82, 139]);
      drawText(img, x + 2, plotTop + plotH + 4 + textWidth(fit(b.label, 80)), fit(b.label, 80), INK, { rotate: 'ccw' });
    });
  }
  return img;
}

/** Key labels of the decoder's encoder tokens and the prior's tokens for one prompt. */
export function pictureKeys(tok: CLIPTokenizer, prompt: string, extraTokens: number): { decoderKeys: MapsPicture['decoderKeys']; priorLabels: { index: number; label: string }[] } {
  const { labels } = promptTokens(tok, prompt);
  const decoderKeys = [
    ...Array.from({ length: extraTokens }, (_, i) => ({ index: i, label: `[clip ${i}]` })),
    ...labels.map((label, j) => ({ index: extraTokens + j, label })),
  ];
  const priorLabels = [
    ...labels.map((label, j) => ({ index: j, label })),
    { index: 77, label: '[text emb]' }, { index: 78, label: '[time]' }, { index: 79, label: '[x_t]' }, { index: 80, label: '[prd]' },
  ];
  return { decoderKeys, priorLabels };
}

/**
 * The pictures of a collected run: one per image (prompt-major, `perPrompt` images per prompt). images: NHWC float
 * in [0, 1] [n, H, W, 3] (the pipeline's output).
 */
export function attentionPictures(
  tok: CLIPTokenizer, prompts: string[], perPrompt: number, extraTokens: number, r: AttentionResult,
  images: Float32Array, shape: [number, number, number, number],
): MapsPicture[] {
  const [n, h, w, c] = shape;
  if (n !== r.n) throw new Error(`attention pictures: ${n} images for ${r.n} collected rows`);
  const out: MapsPicture[] = [];
  for (let i = 0; i < n; i++) {
    const prompt = prompts[Math.floor(i / perPrompt)];
    const { decoderKeys, priorLabels } = pictureKeys(tok, prompt, extraTokens);
    const data = new Uint8Array(h * w * 3);
    for (let j = 0; j < h * w; j++) for (let k = 0; k < 3; k++) data[j * 3 + k] = Math.round(Math.min(1, Math.max(0, images[(i * h * w + j) * c + k])) * 255);
    const S = r.decoder.size, K = r.decoder.keys;
    const maps = r.decoder.maps ? r.decoder.maps.subarray(i * S * S * K, (i + 1) * S * S * K) : null;
    const mass = r.prior.mass ? r.prior.mass.subarray(i * r.prior.keys, (i + 1) * r.prior.keys) : null;
    out.push({
      image: { width: w, height: h, channels: 3, data },
      maps, size: S, decoderKeys,
      priorBars: mass ? priorLabels.filter((l) => l.index < mass.length).map((l) => ({ label: l.label, mass: mass[l.index] })) : null,
      title: `"${prompt}"${perPrompt > 1 ? ` (image ${i % perPrompt})` : ''}`,
    });
  }
  return out;
}
