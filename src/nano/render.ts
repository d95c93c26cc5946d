// Rendering a nano-world scene to 8-bit RGB: each pixel's colour is the background blended with each shape (in
// order) by the fraction of an ss x ss grid of sample points inside it (anti-aliasing by supersampling).
import { BACKGROUNDS, COLOURS, RING_INNER, STAR_INNER, type RGB, type Scene, type ShapeSpec } from './world.js';

export interface RgbU8 {
  width: number;
  height: number;
  /** Row-major RGB, length width·height·3. */
  data: Uint8Array;
}

/** Point-in-shape test in image-fraction coordinates. */
export function insideTest(s: ShapeSpec): (x: number, y: number) => boolean {
  const { cx, cy, r, angle } = s;
  const cos = Math.cos(angle), sin = Math.sin(angle);
  // Rotate a point into the shape's own frame (about its centre).
  const local = (x: number, y: number): [number, number] => {
    const dx = x - cx, dy = y - cy;
    return [cos * dx + sin * dy, -sin * dx + cos * dy];
  };
  switch (s.shape) {
    case 'circle':
      return (x, y) => (x - cx) ** 2 + (y - cy) ** 2 <= r * r;
    case 'ring': {
      const ri = RING_INNER * r;
      return (x, y) => {
        const d2 = (x - cx) ** 2 + (y - cy) ** 2;
        return d2 <= r * r && d2 >= ri * ri;
      };
    }
    case 'square': {
      const h = r / Math.SQRT2;
      return (x, y) => {
        const [u, v] = local(x, y);
        return Math.abs(u) <= h && Math.abs(v) <= h;
      };
    }
    case 'triangle':
      return polygonTest(regularPolygon(3, r, 1, -Math.PI / 2), local);
    case 'star':
      return polygonTest(regularPolygon(5, r, STAR_INNER, -Math.PI / 2), local);
  }
}

/** Vertices (about the origin) of a regular n-gon (inner = 1) or an n-pointed star (inner < 1: 2n vertices). */
export function regularPolygon(n: number, r: number, inner: number, start: number): [number, number][] {
  const pts: [number, number][] = [];
  const k = inner < 1 ? 2 * n : n;
  for (let i = 0; i < k; i++) {
    const a = start + (2 * Math.PI * i) / k;
    const rr = inner < 1 && i % 2 === 1 ? r * inner : r;
    pts.push([rr * Math.cos(a), rr * Math.sin(a)]);
  }
  return pts;
}

function polygonTest(poly: [number, number][], local: (x: number, y: number) => [number, number]): (x: number, y: number) => boolean {
  return (x, y) => {
    const [u, v] = local(x, y);
    let inside = false;
    for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
      const [xi, yi] = poly[i], [xj, yj] = poly[j];
      if (yi > v !== yj > v && u < ((xj - xi) * (v - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  };
}

/** Renders a scene at size x size with ss x ss samples per pixel (default: enough for smooth edges). */
export function renderScene(scene: Pick<Scene, 'background' | 'shapes'>, size: number, ss = size <= 64 ? 8 : 4): RgbU8 {
  const bg = BACKGROUNDS[scene.background];
  const acc = new Float64Array(size * size * 3);
  for (let i = 0; i < size * size; i++) {
    acc[3 * i] = bg[0]; acc[3 * i + 1] = bg[1]; acc[3 * i + 2] = bg[2];
  }
  const inv = 1 / (size * ss);
  for (const s of scene.shapes) {
    const test = insideTest(s);
    const col: RGB = COLOURS[s.colour];
    // Only pixels within the circumcircle's box can be covered.
    const x0 = Math.max(0, Math.floor((s.cx - s.r) * size) - 1), x1 = Math.min(size - 1, Math.ceil((s.cx + s.r) * size) + 1);
    const y0 = Math.max(0, Math.floor((s.cy - s.r) * size) - 1), y1 = Math.min(size - 1, Math.ceil((s.cy + s.r) * size) + 1);
    for (let py = y0; py <= y1; py++) {
      for (let px = x0; px <= x1; px++) {
        let hits = 0;
        for (let sy = 0; sy < ss; sy++) {
          const y = (py * ss + sy + 0.5) * inv;
          for (let sx = 0; sx < ss; sx++) if (test((px * ss + sx + 0.5) * inv, y)) hits++;
        }
        if (!hits) continue;
        const a = hits / (ss * ss);
        const o = 3 * (py * size + px);
        for (let c = 0; c < 3; c++) acc[o + c] = (1 - a) * acc[o + c] + a * col[c];
      }
    }
  }
  const data = new Uint8Array(size * size * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.round(acc[i]);
  return { width: size, height: size, data };
}
