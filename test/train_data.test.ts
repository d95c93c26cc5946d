// Training data folders (src/training/data.ts): same-stem pairs of PNG/JPEG + .txt, every unusable file skipped
// with its reason, a folder with no usable pair is one DataError, and images are centre-cropped and resized to
// [-1, 1] NCHW exactly as the geometry says.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { encodePng } from '../src/io/png.js';
import { createImage, fillRect } from '../src/io/raster.js';
import { DataError, loadImageFolder, prepareImage, scanDataFolder, sha256Hex } from '../src/training/data.js';
import { fixture, useBackend } from './helpers.js';

await useBackend('cpu');

/** The error an async call rejects with (fails the test when it resolves). */
async function rejection(fn: () => Promise<unknown>): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    return e as Error;
  }
  throw new assert.Assertion({ message: 'expected a rejection', operator: 'rejects', expects: 'rejection', actual: 'resolved', generated: false });
}
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-data-'));
const png = (w: number, h: number, c: [number, number, number]) => { const im = createImage(w, h, c); return encodePng(im); };

function folder(name: string, files: Record<string, string | Uint8Array | null>): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d);
  for (const [f, v] of Object.entries(files)) {
    if (v === null) fs.mkdirSync(path.join(d, f));
    else fs.writeFileSync(path.join(d, f), v);
  }
  return d;
}

test('pairs by stem; every other file skipped with its reason', async () => {
  const d = folder('mixed', {
    'a.png': png(8, 8, [255, 0, 0]), 'a.txt': '  a red square \n',
    'b.jpg': fs.readFileSync(fixture('images', 'q90_420.jpg')), 'b.txt': 'a photo',
    'c.png': png(4, 4, [0, 0, 0]),
    'd.txt': 'caption without image',
    'e.png': png(4, 4, [0, 0, 0]), 'e.txt': '   \n',
    'f.png': new Uint8Array([1, 2, 3, 4]), 'f.txt': 'broken',
    'g.png': png(4, 4, [0, 255, 0]), 'g.jpg': fs.readFileSync(fixture('images', 'q90_420.jpg')), 'g.txt': 'green',
    'h.jpg': fs.readFileSync(fixture('images', 'cmyk.jpg')), 'h.txt': 'cmyk',
    'notes.md': 'hello', sub: null, '.hidden.png': png(2, 2, [0, 0, 0]),
  });
  const r = await scanDataFolder(d);
  assert.equal(r.items.map((i) => i.stem), ['a', 'b', 'g']);
  assert.is(r.items[0].caption, 'a red square');
  assert.is(r.items[0].captionHash, sha256Hex('a red square'));
  assert.is(r.items[0].imageHash, sha256Hex(fs.readFileSync(path.join(d, 'a.png'))));
  assert.is(path.basename(r.items[2].imageFile), 'g.jpg'); // 'g.jpg' sorts before 'g.png'
  const reasons = Object.fromEntries(r.skipped.map((s) => [s.file, s.reason]));
  assert.equal(Object.keys(reasons).sort(), ['c.png', 'd.txt', 'e.png', 'f.png', 'g.png', 'h.jpg', 'notes.md', 'sub']);
  assert.match(reasons['c.png'], /no caption file c\.txt/);
  assert.match(reasons['d.txt'], /no image d\.png/);
  assert.match(reasons['e.png'], /caption e\.txt is empty/);
  assert.match(reasons['f.png'], /cannot decode/);
  assert.match(reasons['g.png'], /same stem \(g\.jpg\)/);
  assert.match(reasons['h.jpg'], /cannot decode: .*CMYK/);
  assert.match(reasons['notes.md'], /not an image/);
  assert.match(reasons.sub, /folder/);
});

test('no usable pair is one DataError naming the folder and the reasons; a missing folder too', async () => {
  const empty = folder('empty', {});
  const e1 = await rejection(() => scanDataFolder(empty));
  assert.instance(e1, DataError);
  assert.match(e1.message, /no usable image\/caption pair.*empty/);
  const bad = folder('bad', { 'x.png': png(2, 2, [0, 0, 0]), 'y.txt': 'lonely' });
  const e2 = await rejection(() => scanDataFolder(bad));
  assert.instance(e2, DataError);
  assert.ok(e2.message.startsWith(bad));
  assert.match(e2.message, /x\.png \(no caption file x\.txt\)/);
  assert.match(e2.message, /y\.txt \(no image/);
  assert.not.match(e2.message, /\n/);
  assert.match((await rejection(() => scanDataFolder(path.join(tmp, 'nope')))).message, /data folder does not exist/);
  const file = path.join(tmp, 'file.txt');
  fs.writeFileSync(file, 'x');
  assert.match((await rejection(() => scanDataFolder(file))).message, /not a folder/);
});

test('prepareImage: centre square crop, [-1, 1], NCHW; resize to the requested size', () => {
  // 6×4 image whose red channel is 40·x: the centre 4×4 crop keeps columns 1..4.
  const im = createImage(6, 4, [0, 0, 0]);
  for (let x = 0; x < 6; x++) fillRect(im, x, 0, 1, 4, [40 * x, 255, 0]);
  const t = prepareImage({ width: 6, height: 4, data: im.data }, 4);
  assert.equal(t.shape, [1, 3, 4, 4]);
  const v = t.arraySync()[0];
  assert.equal(v[0][2].map((x) => Math.round((x + 1) * 127.5)), [40, 80, 120, 160]);
  assert.ok(v[1].flat().every((x) => x === 1));
  assert.ok(v[2].flat().every((x) => x === -1));
  t.dispose();
  const before = tf.memory().numTensors;
  const small = prepareImage({ width: 6, height: 4, data: im.data }, 2);
  assert.equal(small.shape, [1, 3, 2, 2]);
  const s = small.arraySync()[0];
  assert.ok(s[1].flat().every((x) => Math.abs(x - 1) < 1e-6)); // a constant channel stays constant
  assert.ok(s[0][0][0] < s[0][0][1]); // the red ramp survives the resize
  small.dispose();
  assert.is(tf.memory().numTensors, before);
});

test('loadImageFolder: one [3, S, S] array per pair', async () => {
  const d = folder('two', { 'a.png': png(10, 20, [255, 255, 255]), 'a.txt': 'white', 'b.png': png(3, 3, [0, 0, 0]), 'b.txt': 'black' });
  const r = await loadImageFolder(d, 8);
  assert.is(r.pixels.length, 2);
  assert.is(r.pixels[0].length, 3 * 8 * 8);
  assert.ok(r.pixels[0].every((x) => Math.abs(x - 1) < 1e-6));
  assert.ok(r.pixels[1].every((x) => Math.abs(x + 1) < 1e-6)); // upscaled constant image
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
