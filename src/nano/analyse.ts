// The deterministic nano-world analyser: what an RGB image of the world shows, measured with no learned part.
//   background  the per-channel median of the 2-pixel frame, named by the nearest background colour
//   foreground  pixels farther than FG_DISTANCE (RGB Euclidean) from that background colour
//   count       8-connected foreground components of at least MIN_AREA of the image (specks are noise)
//   colour      mean of a component's core pixels (those at least 60% as far from the background as its farthest)
//               named by the nearest of the 8 shape colours
//   shape       ring   when the component encloses background holes of >= 8% of its filled area;
//               star   when solidity (filled area / convex-hull area, hull over pixel corners) < 0.83;
//               else by the fill of the circumcircle about the centroid, filled area / (pi R^2):
//               circle > 0.84 (ideal 1), square > 0.605 (ideal 2/pi = 0.64), triangle below (ideal 0.41).
// Images under 96 pixels a side are first upscaled (bilinear) so that contours keep sub-pixel detail.
// The thresholds sit between the ideal values of the shapes; test/nano_world.test.ts checks the analyser on the
// world's own rendered images at the decoder and super-res sizes.
import { BACKGROUNDS, BACKGROUND_NAMES, COLOURS, COLOUR_NAMES, type BackgroundName, type ColourName, type ShapeName } from './world.js';
import type { RgbU8 } from './render.js';

export const FG_DISTANCE = 48;
export const MIN_AREA = 0.006;
const HOLE_FRACTION = 0.08;
const STAR_SOLIDITY = 0.83;
const CIRCLE_FILL = 0.84;
const SQUARE_FILL = 0.605;

export interface FoundShape {
  shape: ShapeName;
  colour: ColourName;
  /** Pixels in the component (holes not counted). */
  area: number;
  /** Centroid, image fractions. */
  cx: number;
  cy: number;
  solidity: number;
  circleFill: number;
  holeFraction: number;
  meanRgb: [number, number, number];
}

export interface Analysis {
  background: BackgroundName;
  backgroundRgb: [number, number, number];
  /** Largest first. */
  shapes: FoundShape[];
  count: number;
}

function nearest<T extends string>(rgb: readonly number[], table: Record<string, readonly number[]>, names: readonly T[]): T {
  let best = names[0], bestD = Infinity;
  for (const n of names) {
    const c = table[n];
    const d = (rgb[0] - c[0]) ** 2 + (rgb[1] - c[1]) ** 2 + (rgb[2] - c[2]) ** 2;
    if (d < bestD) { bestD = d; best = n; }
  }
  return best;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** Convex hull area (monotone chain) of integer points given as x,y pairs. */
function hullArea(xs: Int32Array, ys: Int32Array, n: number): number {
  const idx = Array.from({ length: n }, (_, i) => i).sort((a, b) => xs[a] - xs[b] || ys[a] - ys[b]);
  const cross = (o: number, a: number, b: number) => (xs[a] - xs[o]) * (ys[b] - ys[o]) - (ys[a] - ys[o]) * (xs[b] - xs[o]);
  const lower: number[] = [], upper: number[] = [];
  for (const i of idx) {
    while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], i) <= 0) lower.pop();
    lower.push(i);
  }
  for (let k = idx.length - 1; k >= 0; k--) {
    const i = idx[k];
    while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], i) <= 0) upper.pop();
    upper.push(i);
  }
  const hull = lower.slice(0, -1).concat(upper.slice(0, -1));
  let a = 0;
  for (let i = 0; i < hull.length; i++) {
    const p = hull[i], q = hull[(i + 1) % hull.length];
    a += xs[p] * ys[q] - xs[q] * ys[p];
  }
  return Math.abs(a) / 2;
}

/** Bilinear upscale by an integer factor (pixel centres aligned, edges clamped), as 8-bit RGB. */
export function upscaleBilinear(img: RgbU8, f: number): RgbU8 {
  const { width: W, height: H, data } = img;
  const w = W * f, h = H * f;
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(H - 1, Math.max(0, (y + 0.5) / f - 0.5));
    const ya = Math.floor(sy), yb = Math.min(H - 1, ya + 1), ty = sy - ya;
    for (let x = 0; x < w; x++) {
      const sx = Math.min(W - 1, Math.max(0, (x + 0.5) / f - 0.5));
      const xa = Math.floor(sx), xb = Math.min(W - 1, xa + 1), tx = sx - xa;
      for (let c = 0; c < 3; c++) {
        const v = (1 - ty) * ((1 - tx) * data[3 * (ya * W + xa) + c] + tx * data[3 * (ya * W + xb) + c])
          + ty * ((1 - tx) * data[3 * (yb * W + xa) + c] + tx * data[3 * (yb * W + xb) + c]);
        out[3 * (y * w + x) + c] = Math.round(v);
      }
    }
  }
  return { width: w, height: h, data: out };
}

/** Images smaller than this on a side are first upscaled (bilinear) so that contours have sub-pixel detail. */
export const ANALYSIS_MIN_SIZE = 96;

/** Analyses one image of the nano world. */
export function analyseImage(input: RgbU8): Analysis {
  if (input.data.length !== input.width * input.height * 3) throw new Error(`analyseImage: ${input.data.length} bytes for ${input.width}x${input.height} RGB`);
  const small = Math.min(input.width, input.height);
  const img = small < ANALYSIS_MIN_SIZE ? upscaleBilinear(input, Math.ceil(ANALYSIS_MIN_SIZE / small)) : input;
  const { width: W, height: H, data } = img;
  // Background from the frame.
  const frame: number[][] = [[], [], []];
  const band = Math.max(1, Math.round(Math.min(W, H) / 64));
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      if (x >= band && x < W - band && y >= band && y < H - band) continue;
      for (let c = 0; c < 3; c++) frame[c].push(data[3 * (y * W + x) + c]);
    }
  }
  const bg: [number, number, number] = [median(frame[0]), median(frame[1]), median(frame[2])];
  const dist = new Float32Array(W * H);
  const fg = new Uint8Array(W * H);
  for (let i = 0; i < W * H; i++) {
    const d = Math.hypot(data[3 * i] - bg[0], data[3 * i + 1] - bg[1], data[3 * i + 2] - bg[2]);
    dist[i] = d;
    fg[i] = d > FG_DISTANCE ? 1 : 0;
  }
  // 8-connected components (iterative flood fill).
  const label = new Int32Array(W * H).fill(-1);
  const comps: number[][] = [];
  const stack: number[] = [];
  for (let i = 0; i < W * H; i++) {
    if (!fg[i] || label[i] >= 0) continue;
    const id = comps.length;
    const px: number[] = [];
    label[i] = id;
    stack.push(i);
    while (stack.length) {
      const p = stack.pop()!;
      px.push(p);
      const x = p % W, y = (p - x) / W;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx, ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= W || ny >= H) continue;
          const q = ny * W + nx;
          if (fg[q] && label[q] < 0) { label[q] = id; stack.push(q); }
        }
      }
    }
    comps.push(px);
  }
  const minArea = MIN_AREA * W * H;
  const shapes: FoundShape[] = [];
  for (let id = 0; id < comps.length; id++) {
    const px = comps[id];
    if (px.length < minArea) continue;
    shapes.push(describe(px, id, label, dist, data, W, H));
  }
  shapes.sort((a, b) => b.area - a.area);
  return { background: nearest(bg, BACKGROUNDS, BACKGROUND_NAMES), backgroundRgb: bg, shapes, count: shapes.length };
}

function describe(px: number[], id: number, label: Int32Array, dist: Float32Array, data: Uint8Array, W: number, H: number): FoundShape {
  let x0 = W, x1 = -1, y0 = H, y1 = -1, sx = 0, sy = 0, maxD = 0;
  for (const p of px) {
    const x = p % W, y = (p - x) / W;
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    sx += x + 0.5; sy += y + 0.5;
    if (dist[p] > maxD) maxD = dist[p];
  }
  const area = px.length;
  // Holes: cells of the padded bounding box not in this component and not reachable from the box's border.
  const bw = x1 - x0 + 3, bh = y1 - y0 + 3;
  const outside = new Uint8Array(bw * bh);
  const inComp = (bx: number, by: number) => {
    const x = bx + x0 - 1, y = by + y0 - 1;
    return x >= 0 && y >= 0 && x < W && y < H && label[y * W + x] === id;
  };
  const st: number[] = [0];
  outside[0] = 1;
  while (st.length) {
    const q = st.pop()!;
    const bx = q % bw, by = (q - bx) / bw;
    for (const [dx, dy] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      const nx = bx + dx, ny = by + dy;
      if (nx < 0 || ny < 0 || nx >= bw || ny >= bh) continue;
      const n = ny * bw + nx;
      if (!outside[n] && !inComp(nx, ny)) { outside[n] = 1; st.push(n); }
    }
  }
  let holes = 0;
  const hx: number[] = [], hy: number[] = [];
  for (let by = 0; by < bh; by++) {
    for (let bx = 0; bx < bw; bx++) {
      if (!outside[by * bw + bx] && !inComp(bx, by)) { holes++; hx.push(bx + x0 - 1 + 0.5); hy.push(by + y0 - 1 + 0.5); }
    }
  }
  const filled = area + holes;
  const cx = (sx + hx.reduce((a, b) => a + b, 0)) / filled;
  const cy = (sy + hy.reduce((a, b) => a + b, 0)) / filled;
  // Circumradius about the centroid, over pixel corners; hull over pixel corners.
  let R2 = 0;
  const xs = new Int32Array(4 * area), ys = new Int32Array(4 * area);
  let k = 0;
  for (const p of px) {
    const x = p % W, y = (p - x) / W;
    for (const [ox, oy] of [[0, 0], [1, 0], [0, 1], [1, 1]]) {
      xs[k] = x + ox; ys[k] = y + oy; k++;
      const d2 = (x + ox - cx) ** 2 + (y + oy - cy) ** 2;
      if (d2 > R2) R2 = d2;
    }
  }
  // A component's pixels are whole squares: the corner circumradius overstates R by about half a pixel's diagonal.
  const R = Math.max(0.5, Math.sqrt(R2) - 0.35);
  const solidity = filled / Math.max(1, hullArea(xs, ys, k));
  const circleFill = filled / (Math.PI * R * R);
  const holeFraction = holes / filled;
  let shape: ShapeName;
  if (holeFraction >= HOLE_FRACTION) shape = 'ring';
  else if (solidity < STAR_SOLIDITY) shape = 'star';
  else if (circleFill > CIRCLE_FILL) shape = 'circle';
  else if (circleFill > SQUARE_FILL) shape = 'square';
  else shape = 'triangle';
  // Colour from the core pixels.
  const rgb = [0, 0, 0];
  let n = 0;
  for (const p of px) {
    if (dist[p] < 0.6 * maxD) continue;
    rgb[0] += data[3 * p]; rgb[1] += data[3 * p + 1]; rgb[2] += data[3 * p + 2];
    n++;
  }
  const meanRgb: [number, number, number] = [rgb[0] / n, rgb[1] / n, rgb[2] / n];
  return {
    shape, colour: nearest(meanRgb, COLOURS, COLOUR_NAMES), area, cx: cx / W, cy: cy / H,
    solidity, circleFill, holeFraction, meanRgb,
  };
}
