// src/io/raster.ts: pixels land exactly where the geometry says (rectangles clip, Bresenham lines hit both end
// points, text glyph bits map to pixels at any scale and turned 90°), and the result survives a PNG round trip.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  BLACK, blit, createImage, drawLine, drawText, fillRect, getPixel, glyph, GLYPH_HEIGHT, GLYPH_WIDTH, strokeRect, textHeight, textWidth,
} from '../src/io/raster.js';
import { decodePng, encodePng } from '../src/io/png.js';

const RED = [255, 0, 0] as const;

function inked(img: ReturnType<typeof createImage>): [number, number][] {
  const out: [number, number][] = [];
  for (let y = 0; y < img.height; y++) for (let x = 0; x < img.width; x++) if (getPixel(img, x, y)[0] !== 255 || getPixel(img, x, y)[1] !== 255) out.push([x, y]);
  return out;
}

test('createImage fills the background; fillRect clips to the image', () => {
  const img = createImage(4, 3, [1, 2, 3]);
  assert.equal([...img.data.slice(0, 6)], [1, 2, 3, 1, 2, 3]);
  fillRect(img, 2, 1, 10, 10, RED);
  assert.equal(getPixel(img, 3, 2), [255, 0, 0]);
  assert.equal(getPixel(img, 1, 2), [1, 2, 3]);
  assert.equal(getPixel(img, 2, 0), [1, 2, 3]);
  fillRect(img, -5, -5, 2, 2, RED); // entirely outside: no effect, no error
  assert.equal(getPixel(img, 0, 0), [1, 2, 3]);
});

test('strokeRect draws only the border', () => {
  const img = createImage(5, 5);
  strokeRect(img, 0, 0, 5, 5, BLACK);
  assert.is(inked(img).length, 16);
  assert.equal(getPixel(img, 2, 2), [255, 255, 255]);
});

test('drawLine: both end points, one pixel per column on a shallow line, clipped outside', () => {
  const img = createImage(20, 10);
  drawLine(img, 1, 1, 18, 6, BLACK);
  const px = inked(img);
  assert.ok(px.some(([x, y]) => x === 1 && y === 1));
  assert.ok(px.some(([x, y]) => x === 18 && y === 6));
  assert.is(px.length, 18); // |dx| + 1 pixels for |dx| > |dy|
  for (let x = 1; x <= 18; x++) assert.is(px.filter(([xx]) => xx === x).length, 1);
  const img2 = createImage(10, 10);
  drawLine(img2, -5, 5, 15, 5, BLACK);
  assert.is(inked(img2).length, 10);
  const img3 = createImage(10, 10);
  drawLine(img3, 0, 5, 9, 5, BLACK, { dash: [2, 2] });
  assert.equal(inked(img3).map(([x]) => x), [0, 1, 4, 5, 8, 9]);
  const img4 = createImage(10, 10);
  drawLine(img4, 2, 5, 7, 5, BLACK, { width: 3 });
  assert.is(inked(img4).length, (6 + 2) * 3); // a 3×3 square pen: one extra pixel at each side
});

test('drawText: glyph bits map to pixels (scale 1 and 2), advance 6 per character', () => {
  const img = createImage(20, 10);
  drawText(img, 1, 1, 'L1', BLACK);
  const L = glyph('L');
  for (let r = 0; r < GLYPH_HEIGHT; r++) {
    for (let c = 0; c < GLYPH_WIDTH; c++) {
      const on = (L[r] >> (GLYPH_WIDTH - 1 - c)) & 1;
      assert.equal(getPixel(img, 1 + c, 1 + r), on ? [0, 0, 0] : [255, 255, 255], `L row ${r} col ${c}`);
    }
  }
  // 'L' is a vertical bar on the left and a full bottom row.
  assert.equal(L.slice(0, 7), [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f]);
  const one = glyph('1');
  assert.equal(getPixel(img, 1 + 6 + 2, 1), one[0] & 0b00100 ? [0, 0, 0] : [255, 255, 255]);
  assert.is(textWidth('L1'), 11);
  assert.is(textWidth('L1', 3), 33);
  assert.is(textHeight(2), 16);

  const big = createImage(20, 20);
  drawText(big, 0, 0, 'L', BLACK, { scale: 2 });
  assert.is(inked(big).length, 11 * 4); // 'L' has 11 lit cells, each 2×2
  assert.equal(getPixel(big, 1, 13), [0, 0, 0]); // bottom row of L at rows 12-13
  assert.equal(getPixel(big, 9, 13), [0, 0, 0]);
});

test('drawText: lower case descenders use the 8th row; unknown characters draw a box', () => {
  assert.ok(glyph('g')[7] !== 0);
  assert.ok(glyph('a')[7] === 0);
  const img = createImage(8, 10);
  drawText(img, 0, 0, '\u00e9', BLACK);
  assert.is(inked(img).length, 5 + 5 + 5 * 2); // a 5×7 hollow box
});

test("drawText rotate 'ccw': reading bottom to top from the bottom-left corner", () => {
  const flat = createImage(30, 12);
  drawText(flat, 0, 0, 'Ab', BLACK);
  const turned = createImage(12, 30);
  drawText(turned, 0, 29, 'Ab', BLACK, { rotate: 'ccw' });
  // flat (u, v) → turned (v, 29 - u)
  const a = inked(flat).map(([u, v]) => `${v},${29 - u}`).sort();
  const b = inked(turned).map(([x, y]) => `${x},${y}`).sort();
  assert.equal(b, a);
});

test('drawText align center / right', () => {
  const img = createImage(40, 10);
  drawText(img, 20, 0, 'AB', BLACK, { align: 'right' });
  const xs = inked(img).map(([x]) => x);
  assert.is(Math.max(...xs), 19);
  const img2 = createImage(40, 10);
  drawText(img2, 20, 0, 'AB', BLACK, { align: 'center' });
  const xs2 = inked(img2).map(([x]) => x);
  assert.is(Math.min(...xs2), 20 - 5);
});

test('blit copies RGB and grey images with clipping; PNG round trip keeps every pixel', () => {
  const dst = createImage(6, 6);
  const grey = { width: 3, height: 3, channels: 1 as const, data: new Uint8Array(9).fill(7) };
  blit(dst, grey, 4, 4);
  assert.equal(getPixel(dst, 5, 5), [7, 7, 7]);
  assert.equal(getPixel(dst, 3, 3), [255, 255, 255]);
  drawText(dst, 0, 0, 'x', RED);
  const back = decodePng(encodePng(dst));
  assert.equal([...back.data], [...dst.data]);
});

test('createImage rejects bad sizes', () => {
  assert.throws(() => createImage(0, 3), /positive integers/);
  assert.throws(() => createImage(2.5, 3), /positive integers/);
});

test.run();
