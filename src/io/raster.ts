// Tiny RGB drawing on 8-bit images (the RawImage of png.ts): filled rectangles, lines, pasting one image into
// another, and text in a built-in 5×7 bitmap font (printable ASCII, lower case with descenders in an 8th row),
// scaled by whole pixels and optionally turned 90° (axis labels). Enough for loss plots and contact-sheet labels.
import type { RawImage } from './png.js';

export type RGB = readonly [number, number, number];

export const WHITE: RGB = [255, 255, 255];
export const BLACK: RGB = [0, 0, 0];

/** A new RGB image filled with one colour. */
export function createImage(width: number, height: number, background: RGB = WHITE): RawImage {
  if (!(Number.isInteger(width) && width > 0 && Number.isInteger(height) && height > 0)) {
    throw new Error(`createImage: size must be positive integers, got ${width}x${height}`);
  }
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i += 3) {
    data[i] = background[0];
    data[i + 1] = background[1];
    data[i + 2] = background[2];
  }
  return { width, height, channels: 3, data };
}

function checkRgb(img: RawImage, what: string): void {
  if (img.channels !== 3) throw new Error(`${what}: an RGB image (3 channels) is needed, got ${img.channels}`);
}

/** Sets one pixel; coordinates outside the image are ignored (everything here clips). */
export function setPixel(img: RawImage, x: number, y: number, c: RGB): void {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  const i = (y * img.width + x) * 3;
  img.data[i] = c[0];
  img.data[i + 1] = c[1];
  img.data[i + 2] = c[2];
}

/** The colour at (x, y). */
export function getPixel(img: RawImage, x: number, y: number): RGB {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) throw new Error(`getPixel: (${x}, ${y}) outside ${img.width}x${img.height}`);
  const i = (y * img.width + x) * img.channels;
  return img.channels === 1 ? [img.data[i], img.data[i], img.data[i]] : [img.data[i], img.data[i + 1], img.data[i + 2]];
}

/** Fills the rectangle [x, x+w) × [y, y+h), clipped to the image. */
export function fillRect(img: RawImage, x: number, y: number, w: number, h: number, c: RGB): void {
  checkRgb(img, 'fillRect');
  const x0 = Math.max(0, Math.round(x)), y0 = Math.max(0, Math.round(y));
  const x1 = Math.min(img.width, Math.round(x + w)), y1 = Math.min(img.height, Math.round(y + h));
  for (let yy = y0; yy < y1; yy++) {
    for (let xx = x0; xx < x1; xx++) {
      const i = (yy * img.width + xx) * 3;
      img.data[i] = c[0];
      img.data[i + 1] = c[1];
      img.data[i + 2] = c[2];
    }
  }
}

/** A 1-pixel rectangle outline. */
export function strokeRect(img: RawImage, x: number, y: number, w: number, h: number, c: RGB): void {
  fillRect(img, x, y, w, 1, c);
  fillRect(img, x, y + h - 1, w, 1, c);
  fillRect(img, x, y, 1, h, c);
  fillRect(img, x + w - 1, y, 1, h, c);
}

export interface LineOptions {
  /** Pen width in pixels (a square pen; default 1). */
  width?: number;
  /** Dash pattern [on, off] in pixels along the line (default solid). */
  dash?: [number, number];
}

/** A straight line from (x0, y0) to (x1, y1) (Bresenham on rounded end points), clipped to the image. */
export function drawLine(img: RawImage, x0: number, y0: number, x1: number, y1: number, c: RGB, opts: LineOptions = {}): void {
  checkRgb(img, 'drawLine');
  const pen = Math.max(1, Math.round(opts.width ?? 1));
  const off = Math.floor((pen - 1) / 2);
  let x = Math.round(x0), y = Math.round(y0);
  const xe = Math.round(x1), ye = Math.round(y1);
  if (![x, y, xe, ye].every(Number.isFinite)) return;
  const dx = Math.abs(xe - x), dy = -Math.abs(ye - y);
  const sx = x < xe ? 1 : -1, sy = y < ye ? 1 : -1;
  let err = dx + dy;
  const [on, offLen] = opts.dash ?? [1, 0];
  let n = 0;
  for (;;) {
    if (offLen === 0 || n % (on + offLen) < on) {
      if (pen === 1) setPixel(img, x, y, c);
      else fillRect(img, x - off, y - off, pen, pen, c);
    }
    n++;
    if (x === xe && y === ye) break;
    const e2 = 2 * err;
    if (e2 >= dy) { err += dy; x += sx; }
    if (e2 <= dx) { err += dx; y += sy; }
  }
}

/** Connected line segments through the points. */
export function drawPolyline(img: RawImage, points: readonly (readonly [number, number])[], c: RGB, opts: LineOptions = {}): void {
  for (let i = 1; i < points.length; i++) drawLine(img, points[i - 1][0], points[i - 1][1], points[i][0], points[i][1], c, opts);
  if (points.length === 1) drawLine(img, points[0][0], points[0][1], points[0][0], points[0][1], c, opts);
}

/** Copies src (grey, RGB or RGBA: alpha ignored) into dst with its top-left corner at (x, y), clipped. */
export function blit(dst: RawImage, src: RawImage, x: number, y: number): void {
  checkRgb(dst, 'blit');
  for (let sy = 0; sy < src.height; sy++) {
    const dy = y + sy;
    if (dy < 0 || dy >= dst.height) continue;
    for (let sx = 0; sx < src.width; sx++) {
      const dx = x + sx;
      if (dx < 0 || dx >= dst.width) continue;
      const si = (sy * src.width + sx) * src.channels;
      const di = (dy * dst.width + dx) * 3;
      if (src.channels === 1) {
        dst.data[di] = dst.data[di + 1] = dst.data[di + 2] = src.data[si];
      } else {
        dst.data[di] = src.data[si];
        dst.data[di + 1] = src.data[si + 1];
        dst.data[di + 2] = src.data[si + 2];
      }
    }
  }
}

// ---------- text ----------

/** Glyph cell: 5 columns, 7 rows above the baseline plus one descender row; 1 column of spacing. */
export const GLYPH_WIDTH = 5;
export const GLYPH_HEIGHT = 8;
const ADVANCE = GLYPH_WIDTH + 1;

// Each glyph: 8 rows as 2 hex digits each (bit 4 = leftmost column); 7-row glyphs get an empty 8th row.
const FONT_SRC: Record<string, string> = {
  ' ': '00000000000000', '!': '04040404040004', '"': '0A0A0A00000000', '#': '0A0A1F0A1F0A0A',
  '$': '040F140E051E04', '%': '18190204081303', '&': '0C12140815120D', "'": '04040800000000',
  '(': '02040808080402', ')': '08040202020408', '*': '0004150E150400', '+': '0004041F040400',
  ',': '00000000000C0408', '-': '0000001F000000', '.': '00000000000C0C', '/': '00010204081000',
  '0': '0E11131519110E', '1': '040C040404040E', '2': '0E11010204081F',
  '3': '1F02040201110E', '4': '02060A121F0202', '5': '1F101E0101110E', '6': '0608101E11110E',
  '7': '1F010204080808', '8': '0E11110E11110E', '9': '0E11110F01020C', ':': '000C0C000C0C00',
  ';': '000C0C000C0408', '<': '02040810080402', '=': '00001F001F0000', '>': '08040201020408',
  '?': '0E110102040004', '@': '0E11010D15150E',
  A: '0E1111111F1111', B: '1E11111E11111E', C: '0E11101010110E', D: '1C12111111121C', E: '1F10101E10101F',
  F: '1F10101E101010', G: '0E11101711110F', H: '1111111F111111', I: '0E04040404040E', J: '0702020202120C',
  K: '11121418141211', L: '1010101010101F', M: '111B1515111111', N: '11111915131111', O: '0E11111111110E',
  P: '1E11111E101010', Q: '0E11111115120D', R: '1E11111E141211', S: '0F10100E01011E', T: '1F040404040404',
  U: '1111111111110E', V: '11111111110A04', W: '1111111515150A', X: '11110A040A1111', Y: '1111110A040404',
  Z: '1F01020408101F',
  '[': '0E08080808080E', '\\': '00100804020100', ']': '0E02020202020E', '^': '040A1100000000', '_': '0000000000001F',
  '`': '08040200000000',
  a: '00000E010F110F00', b: '1010161911111E00', c: '00000E1010110E00', d: '01010D1311110F00', e: '00000E111F100E00',
  f: '0609081C08080800', g: '00000F11110F010E', h: '1010161911111100', i: '04000C0404040E00', j: '020006020202120C',
  k: '1010121418141200', l: '0C04040404040E00', m: '00001A1515111100', n: '0000161911111100', o: '00000E1111110E00',
  p: '00001E11111E1010', q: '00000F11110F0101', r: '0000161910101000', s: '00000E100E011E00', t: '08081C0808090600',
  u: '0000111111130D00', v: '00001111110A0400', w:'0000111115150A00', x: '0000110A040A1100', y: '00001111110F010E',
  z: '00001F0204081F00',
  '{': '02040408040402', '|': '04040404040404', '}': '08040402040408', '~': '00000815020000',
};

/** Unknown characters are drawn as a hollow box. */
const MISSING = [0x1f, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1f, 0];

const FONT: Map<string, number[]> = (() => {
  const m = new Map<string, number[]>();
  for (const [ch, hex] of Object.entries(FONT_SRC)) {
    if (!/^[0-9A-F]+$/.test(hex) || (hex.length !== 14 && hex.length !== 16)) throw new Error(`raster font: bad glyph "${ch}": ${hex}`);
    const rows: number[] = [];
    for (let i = 0; i < hex.length; i += 2) rows.push(parseInt(hex.slice(i, i + 2), 16));
    if (rows.length === 7) rows.push(0);
    m.set(ch, rows);
  }
  return m;
})();

/** The 8 row bit masks of a character's glyph (bit 4 = leftmost column). */
export function glyph(ch: string): readonly number[] {
  return FONT.get(ch) ?? MISSING;
}

export interface TextOptions {
  /** Whole-pixel scale of the 5×8 glyph cell (default 1). */
  scale?: number;
  /** 'ccw': turned 90° anticlockwise, reading bottom to top (a y-axis label); (x, y) is then the bottom-left corner. */
  rotate?: 'none' | 'ccw';
  /** Horizontal anchor of (x, y) along the reading direction (default 'left'). */
  align?: 'left' | 'center' | 'right';
}

/** Width in pixels of a line of text (along its reading direction). */
export function textWidth(text: string, scale = 1): number {
  return text.length === 0 ? 0 : (text.length * ADVANCE - 1) * scale;
}

/** Height in pixels of a line of text (the glyph cell with its descender row). */
export function textHeight(scale = 1): number {
  return GLYPH_HEIGHT * scale;
}

/**
 * Draws one line of text with its top-left corner at (x, y) (for 'ccw': the glyph cells' left side is the
 * bottom, so (x, y) is the bottom-left corner of the turned text). Newlines are not interpreted.
 */
export function drawText(img: RawImage, x: number, y: number, text: string, c: RGB, opts: TextOptions = {}): void {
  checkRgb(img, 'drawText');
  const s = Math.max(1, Math.round(opts.scale ?? 1));
  const rot = opts.rotate ?? 'none';
  const w = textWidth(text, s);
  const shift = opts.align === 'center' ? Math.floor(w / 2) : opts.align === 'right' ? w : 0;
  x = Math.round(x);
  y = Math.round(y);
  [...text].forEach((ch, k) => {
    const rows = glyph(ch);
    for (let r = 0; r < GLYPH_HEIGHT; r++) {
      const bits = rows[r];
      if (!bits) continue;
      for (let col = 0; col < GLYPH_WIDTH; col++) {
        if (!(bits & (1 << (GLYPH_WIDTH - 1 - col)))) continue;
        const u = k * ADVANCE * s + col * s - shift; // along the reading direction
        const v = r * s; // down the glyph
        if (rot === 'none') fillRect(img, x + u, y + v, s, s, c);
        else fillRect(img, x + v, y - u - s + 1, s, s, c);
      }
    }
  });
}
