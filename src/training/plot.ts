// The loss curve of a training run: a CSV (step, loss, lr) and a PNG plot with axes, ticks, grid, labels, the
// per-step loss (light) and its exponential moving average (dark). Written atomically, rewritten as the run goes.
import * as fs from 'node:fs';
import type { RawImage } from '../io/png.js';
import { encodePng, writeFileAtomic } from '../io/png.js';
import { createImage, drawLine, drawPolyline, drawText, fillRect, strokeRect, textHeight, textWidth, type RGB } from '../io/raster.js';

export interface LossPoint {
  /** Optimizer step (1-based: the loss of the batch that step was computed on). */
  step: number;
  loss: number;
  /** Learning rate used at that step. */
  lr: number;
}

const CSV_HEADER = 'step,loss,lr';

/** CSV text: a header line, then one line per point (numbers with full float64 precision). */
export function lossCsv(points: readonly LossPoint[]): string {
  return `${CSV_HEADER}\n${points.map((p) => `${p.step},${p.loss},${p.lr}`).join('\n')}${points.length ? '\n' : ''}`;
}

/** Parses what lossCsv wrote (used when a run resumes); a malformed line is an error naming the file and line. */
export function parseLossCsv(text: string, file = 'loss.csv'): LossPoint[] {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (!lines.length || lines[0].trim() !== CSV_HEADER) throw new Error(`${file}: not a loss CSV (first line must be "${CSV_HEADER}")`);
  return lines.slice(1).map((l, i) => {
    const f = l.split(',');
    const [step, loss, lr] = f.map(Number);
    if (f.length !== 3 || !Number.isInteger(step) || Number.isNaN(loss) || Number.isNaN(lr)) throw new Error(`${file}: line ${i + 2} is not "step,loss,lr": ${JSON.stringify(l)}`);
    return { step, loss, lr };
  });
}

/** "Nice" tick values (1, 2, 5 × 10^k) covering [lo, hi], about `target` of them. */
export function niceTicks(lo: number, hi: number, target = 6): { ticks: number[]; step: number } {
  if (!(Number.isFinite(lo) && Number.isFinite(hi))) throw new Error(`niceTicks: bounds must be finite, got [${lo}, ${hi}]`);
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const d = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= d;
    hi += d;
  }
  const raw = (hi - lo) / Math.max(1, target - 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw * 0.999) ?? 10 * mag;
  const first = Math.floor(lo / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let v = first, i = 0; v <= hi + step * 1e-9 && i < 1000; i++, v = first + i * step) ticks.push(roundTo(v, step));
  if (ticks[ticks.length - 1] < hi - step * 1e-9) ticks.push(roundTo(first + ticks.length * step, step));
  return { ticks, step };
}

function roundTo(v: number, step: number): number {
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + 2);
  return Number(v.toFixed(Math.min(20, digits)));
}

/** A tick label: as few digits as the tick spacing needs; exponent form for very large or small values. */
export function formatTick(v: number, step: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) {
    const [m, e] = v.toExponential(Math.max(0, Math.min(6, Math.floor(Math.log10(a)) - Math.floor(Math.log10(step))))).split('e');
    return `${m.replace(/\.?0+$/, '')}e${Number(e)}`;
  }
  const decimals = Math.max(0, Math.min(10, -Math.floor(Math.log10(step) + 1e-9)));
  const s = v.toFixed(decimals + (step / 10 ** Math.floor(Math.log10(step) + 1e-9) === 2.5 ? 1 : 0));
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

function fmt(v: number, digits: number): string {
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(digits - 1) : String(Number(v.toPrecision(digits)));
}

/** Exponential moving average with bias correction (TensorBoard-style smoothing). */
export function smooth(values: readonly number[], weight = 0.9): number[] {
  const out: number[] = [];
  let acc = 0;
  let norm = 0;
  for (const v of values) {
    acc = weight * acc + (1 - weight) * v;
    norm = weight * norm + (1 - weight);
    out.push(acc / norm);
  }
  return out;
}

export interface PlotOptions {
  width?: number;
  height?: number;
  title?: string;
  /** EMA weight of the smoothed curve (0 = no smoothed curve). Default 0.9. */
  smoothing?: number;
}

const AXIS: RGB = [40, 40, 40];
const GRID: RGB = [225, 225, 225];
const RAW: RGB = [160, 190, 235];
const SMOOTH: RGB = [20, 70, 170];

/** Renders the loss curve as an RGB image. Non-finite losses are left out of the scaling and the curves. */
export function renderLossPlot(points: readonly LossPoint[], opts: PlotOptions = {}): RawImage {
  const W = opts.width ?? 720, H = opts.height ?? 420;
  const img = createImage(W, H);
  const s = 1; // text scale
  const th = textHeight(s);
  const finite = points.filter((p) => Number.isFinite(p.loss));
  const title = opts.title ?? 'training loss';
  drawText(img, W / 2, 6, title, AXIS, { scale: 2, align: 'center' });

  let x0 = finite.length ? finite[0].step : 0;
  let x1 = finite.length ? finite[finite.length - 1].step : 1;
  if (x1 <= x0) { x0 = Math.max(0, x0 - 1); x1 = x0 + 2; }
  let y0 = finite.length ? Math.min(...finite.map((p) => p.loss)) : 0;
  let y1 = finite.length ? Math.max(...finite.map((p) => p.loss)) : 1;
  if (y0 > 0 && y0 < 0.25 * (y1 - y0)) y0 = 0; // start at zero when that costs little
  const yt = niceTicks(y0, y1, 6);
  let xt = niceTicks(x0, x1, 7);
  if (xt.step < 1) xt = { ticks: xt.ticks.filter((v) => Number.isInteger(v)), step: 1 }; // steps are whole numbers
  y0 = Math.min(y0, yt.ticks[0]);
  y1 = Math.max(y1, yt.ticks[yt.ticks.length - 1]);
  x0 = Math.min(x0, xt.ticks[0]);
  x1 = Math.max(x1, xt.ticks[xt.ticks.length - 1]);

  const yLabels = yt.ticks.map((v) => formatTick(v, yt.step));
  const left = 16 + th + 8 + Math.max(...yLabels.map((l) => textWidth(l, s))) + 8;
  const right = W - 20, top = 44, bottom = H - (th * 2 + 26);
  const px = (x: number) => left + ((x - x0) / (x1 - x0)) * (right - left);
  const py = (y: number) => bottom - ((y - y0) / (y1 - y0)) * (bottom - top);

  // grid and ticks
  yt.ticks.forEach((v, i) => {
    const y = Math.round(py(v));
    drawLine(img, left + 1, y, right, y, GRID);
    drawLine(img, left - 4, y, left, y, AXIS);
    drawText(img, left - 7, y - Math.floor(th / 2) + 1, yLabels[i], AXIS, { scale: s, align: 'right' });
  });
  for (const v of xt.ticks) {
    const x = Math.round(px(v));
    drawLine(img, x, top, x, bottom - 1, GRID);
    drawLine(img, x, bottom, x, bottom + 4, AXIS);
    drawText(img, x, bottom + 8, formatTick(v, xt.step), AXIS, { scale: s, align: 'center' });
  }
  // axis labels
  drawText(img, (left + right) / 2, H - th - 8, 'step', AXIS, { scale: s, align: 'center' });
  drawText(img, 12, (top + bottom) / 2, 'loss', AXIS, { scale: s, rotate: 'ccw', align: 'center' });

  // curves (clipped to the plot area by construction: every point lies within the axes' ranges)
  const weight = opts.smoothing ?? 0.9;
  if (finite.length) {
    const pts = finite.map((p) => [px(p.step), py(p.loss)] as [number, number]);
    drawPolyline(img, pts, RAW);
    if (pts.length <= 60) for (const [x, y] of pts) fillRect(img, Math.round(x) - 2, Math.round(y) - 2, 5, 5, RAW); // few points: markers
    if (weight > 0 && finite.length > 1) {
      const sm = smooth(finite.map((p) => p.loss), weight);
      drawPolyline(img, finite.map((p, i) => [px(p.step), py(sm[i])] as [number, number]), SMOOTH, { width: 2 });
    }
  } else {
    drawText(img, (left + right) / 2, (top + bottom) / 2, 'no finite loss values yet', AXIS, { align: 'center' });
  }
  strokeRect(img, left, top, right - left + 1, bottom - top + 1, AXIS);

  // legend, top right inside the plot
  const items: [string, RGB][] = [['loss', RAW]];
  if (weight > 0 && finite.length > 1) items.push([`EMA ${weight}`, SMOOTH]);
  const lw = Math.max(...items.map(([t]) => textWidth(t, s))) + 30;
  const lx = right - lw - 8, ly = top + 8;
  fillRect(img, lx, ly, lw, items.length * (th + 6) + 6, [255, 255, 255]);
  strokeRect(img, lx, ly, lw, items.length * (th + 6) + 6, GRID);
  items.forEach(([t, c], i) => {
    const y = ly + 6 + i * (th + 6);
    fillRect(img, lx + 6, y + th / 2 - 1, 14, 3, c);
    drawText(img, lx + 24, y, t, AXIS, { scale: s });
  });
  const last = finite[finite.length - 1];
  if (last) drawText(img, (left + right) / 2, 28, `step ${last.step}: loss ${fmt(last.loss, 4)}, lr ${fmt(last.lr, 3)}`, AXIS, { scale: s, align: 'center' });
  return img;
}

/** Writes `<stem>.csv` and `<stem>.png` atomically. */
export function writeLossFiles(stem: string, points: readonly LossPoint[], opts: PlotOptions = {}): { csv: string; png: string } {
  const csv = `${stem}.csv`, png = `${stem}.png`;
  writeFileAtomic(csv, Buffer.from(lossCsv(points)));
  writeFileAtomic(png, encodePng(renderLossPlot(points, opts)));
  return { csv, png };
}

/** The points of an existing CSV, or [] when there is none. */
export function readLossCsv(file: string): LossPoint[] {
  if (!fs.existsSync(file)) return [];
  return parseLossCsv(fs.readFileSync(file, 'utf8'), file);
}
