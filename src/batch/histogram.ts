// A histogram of scores as an RGB image (io/raster.ts drawing): bars over equal-width bins, count and value axes,
// a dashed line at the mean, a title. Bins: width 2.5 from 0 up to the next multiple of 10 above the largest value
// (at least 0–40, CLIP scores of real models sit around 20–35).
import { BLACK, WHITE, createImage, drawLine, drawText, fillRect, textWidth, type RGB } from '../io/raster.js';
import type { RawImage } from '../io/png.js';

const BAR: RGB = [70, 110, 180];
const GRID: RGB = [220, 220, 220];
const MEAN: RGB = [200, 60, 40];

export interface Bins {
  edges: number[];
  counts: number[];
}

export function binScores(values: number[], width = 2.5): Bins {
  const top = Math.max(40, Math.ceil((Math.max(0, ...values) + 1e-9) / 10) * 10);
  const n = Math.round(top / width);
  const counts = new Array(n).fill(0);
  for (const v of values) counts[Math.min(n - 1, Math.max(0, Math.floor(v / width)))]++;
  return { edges: Array.from({ length: n + 1 }, (_, i) => i * width), counts };
}

export function histogramPng(values: number[], opts: { title?: string; width?: number; height?: number } = {}): RawImage {
  const W = opts.width ?? 640, H = opts.height ?? 360;
  const img = createImage(W, H, WHITE);
  const left = 56, right = 16, top = 36, bottom = 44;
  const pw = W - left - right, ph = H - top - bottom;
  const { edges, counts } = binScores(values);
  const maxCount = Math.max(1, ...counts);
  // y ticks: about 5, at whole counts
  const step = Math.max(1, Math.ceil(maxCount / 5));
  const yMax = Math.ceil(maxCount / step) * step;
  for (let c = 0; c <= yMax; c += step) {
    const y = top + ph - Math.round((c / yMax) * ph);
    drawLine(img, left, y, left + pw, y, GRID);
    drawText(img, left - 6, y - 4, String(c), BLACK, { align: 'right' });
  }
  const bw = pw / counts.length;
  counts.forEach((c, i) => {
    const h = Math.round((c / yMax) * ph);
    if (h > 0) fillRect(img, Math.round(left + i * bw) + 1, top + ph - h, Math.max(1, Math.round(bw) - 2), h, BAR);
  });
  drawLine(img, left, top + ph, left + pw, top + ph, BLACK);
  drawLine(img, left, top, left, top + ph, BLACK);
  const xMax = edges[edges.length - 1];
  for (let v = 0; v <= xMax; v += 10) {
    const x = left + Math.round((v / xMax) * pw);
    drawLine(img, x, top + ph, x, top + ph + 4, BLACK);
    drawText(img, x, top + ph + 8, String(v), BLACK, { align: 'center' });
  }
  if (values.length) {
    const mean = values.reduce((s, x) => s + x, 0) / values.length;
    const x = left + Math.round((Math.min(mean, xMax) / xMax) * pw);
    drawLine(img, x, top, x, top + ph, MEAN, { dash: [4, 3] });
  }
  drawText(img, left + pw / 2, H - 14, 'CLIP score (100 cos, clamped at 0)', BLACK, { align: 'center' });
  drawText(img, 14, top + ph / 2 + textWidth('images') / 2, 'images', BLACK, { rotate: 'ccw' });
  if (opts.title) drawText(img, W / 2, 12, opts.title, BLACK, { align: 'center' });
  return img;
}
