// The karlo-nano synthetic world (src/nano/): the same seed writes the same bytes, every caption says what is
// drawn (read back by the caption parser and, independently, by the analyser on the rendered pixels), and the
// held-out captions never occur in training.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodePng } from '../src/io/png.js';
import { analyseImage } from '../src/nano/analyse.js';
import { readNanoManifest, writeNanoDataset } from '../src/nano/dataset.js';
import { renderScene } from '../src/nano/render.js';
import {
  BACKGROUND_NAMES, COLOUR_NAMES, SHAPES, allTriples, heldOutTriples, makeScene, parseCaption, sceneContent, shapesKey, tripleKey,
} from '../src/nano/world.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-nano-'));

function listBytes(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const n of fs.readdirSync(d).sort()) {
      const f = path.join(d, n);
      if (fs.statSync(f).isDirectory()) walk(f);
      else out.set(path.relative(dir, f), fs.readFileSync(f));
    }
  };
  walk(dir);
  return out;
}

test('same seed, same bytes (every image, caption and the manifest); another seed differs', () => {
  const opts = { train: 12, heldoutSingle: 4, heldoutDouble: 3, size: 64, decoderSize: 16 };
  writeNanoDataset({ out: path.join(tmp, 'a'), seed: 7, ...opts });
  writeNanoDataset({ out: path.join(tmp, 'b'), seed: 7, ...opts });
  writeNanoDataset({ out: path.join(tmp, 'c'), seed: 8, ...opts });
  const a = listBytes(path.join(tmp, 'a')), b = listBytes(path.join(tmp, 'b')), c = listBytes(path.join(tmp, 'c'));
  assert.is(a.size, 1 + 2 * 2 * (12 + 4 + 3)); // manifest + (png, txt) x 2 sizes x scenes
  assert.equal([...a.keys()], [...b.keys()]);
  for (const [k, v] of a) assert.ok(v.equals(b.get(k)!), `${k} differs between two runs with seed 7`);
  const differing = [...a.keys()].filter((k) => k.endsWith('.png') && !a.get(k)!.equals(c.get(k)!)).length;
  assert.ok(differing > 30, `seed 8 should draw other scenes (${differing} PNGs differ)`);
});

test('the data folders are what karlo train reads: same-stem PNG + caption at both sizes, listed in the manifest', () => {
  const dir = path.join(tmp, 'a');
  const m = readNanoManifest(dir);
  assert.is(m.items.length, 19);
  for (const it of m.items) {
    const [big, small] = it.split === 'train' ? [m.folders.train, m.folders.trainDecoder] : [m.folders.heldout, m.folders.heldoutDecoder];
    for (const [folder, size] of [[big, 64], [small, 16]] as const) {
      const img = decodePng(fs.readFileSync(path.join(dir, folder, `${it.stem}.png`)));
      assert.is(img.width, size);
      assert.is(img.height, size);
      assert.is(fs.readFileSync(path.join(dir, folder, `${it.stem}.txt`), 'utf8').trim(), it.caption);
    }
    // The PNG is the rendering of the manifest's scene.
    const want = renderScene(it, 64);
    const got = decodePng(fs.readFileSync(path.join(dir, big, `${it.stem}.png`)));
    assert.ok(Buffer.from(got.data).equals(Buffer.from(want.data)), `${it.stem}: PNG is not the manifest scene`);
  }
});

test('every caption says exactly the shapes drawn (and the background when it names one)', () => {
  const held = heldOutTriples(0);
  let relations = 0;
  for (let i = 0; i < 400; i++) {
    for (const s of [makeScene(0, 'train', i, { held }), makeScene(0, 'heldout', i, { held, count: 1 + (i % 2) })]) {
      const p = parseCaption(s.caption);
      assert.ok(p, `unparsed: ${s.caption}`);
      assert.is(shapesKey(p!), shapesKey(sceneContent(s)), s.caption);
      if (p!.background !== undefined) assert.is(p!.background, s.background, s.caption);
      else assert.ok(/ (left of|above) /.test(s.caption), `only relation captions may leave the background out: ${s.caption}`);
      if (/ left of /.test(s.caption)) { relations++; assert.ok(s.shapes[0].cx + 0.25 < s.shapes[1].cx, s.caption); }
      if (/ above /.test(s.caption)) { relations++; assert.ok(s.shapes[0].cy + 0.25 < s.shapes[1].cy, s.caption); }
      for (const sh of s.shapes) assert.ok(sh.colour !== s.background, `${sh.colour} on ${s.background}`);
    }
  }
  assert.ok(relations > 20);
  // Hand-written captions of the world, as users type them.
  assert.equal(parseCaption('a red star on a black background'), { background: 'black', shapes: [{ colour: 'red', shape: 'star' }] });
  assert.equal(parseCaption('Two small yellow stars on black.'), { background: 'black', shapes: [{ colour: 'yellow', shape: 'star' }, { colour: 'yellow', shape: 'star' }] });
  assert.equal(parseCaption('a green square left of a white ring'), { shapes: [{ colour: 'green', shape: 'square' }, { colour: 'white', shape: 'ring' }] });
  assert.equal(parseCaption('a blue background with a white ring'), { background: 'blue', shapes: [{ colour: 'white', shape: 'ring' }] });
  assert.is(parseCaption('a photo of a cat'), null);
});

test('the analyser reads the rendered images exactly: colours, shapes, count, background (decoder and super-res sizes)', () => {
  const held = heldOutTriples(0);
  for (const size of [32, 128]) {
    for (let i = 0; i < 120; i++) {
      const s = makeScene(3, 'train', i, { held });
      const a = analyseImage(renderScene(s, size));
      const got = a.shapes.map((f) => `${f.colour} ${f.shape}`).sort().join('|');
      assert.is(got, shapesKey(sceneContent(s)), `${size}px: "${s.caption}" read as ${got}`);
      assert.is(a.count, s.shapes.length);
      assert.is(a.background, s.background, s.caption);
    }
  }
  // A blank image has no shape.
  const blank = renderScene({ background: 'gray', shapes: [] }, 32);
  assert.is(analyseImage(blank).count, 0);
});

test('held-out split: training scenes never hold a held-out triple, held-out scenes always do; no caption in common', () => {
  const held = heldOutTriples(0);
  const all = allTriples();
  assert.ok(held.size >= 20 && held.size < all.length / 5, `held-out triples: ${held.size} of ${all.length}`);
  // Every colour, shape and background still occurs in training triples.
  const trainTriples = all.filter((t) => !held.has(t));
  for (const c of COLOUR_NAMES) assert.ok(trainTriples.some((t) => t.startsWith(`${c} `)), c);
  for (const s of SHAPES) assert.ok(trainTriples.some((t) => t.includes(` ${s} `)), s);
  for (const b of BACKGROUND_NAMES) assert.ok(trainTriples.some((t) => t.endsWith(` ${b}`)), b);
  const trainCaptions = new Set<string>();
  for (let i = 0; i < 1500; i++) {
    const s = makeScene(0, 'train', i, { held });
    for (const sh of s.shapes) assert.not.ok(held.has(tripleKey(sh.colour, sh.shape, s.background)), `train ${i}: ${s.caption}`);
    trainCaptions.add(s.caption);
  }
  for (let i = 0; i < 300; i++) {
    const s = makeScene(0, 'heldout', i, { held, count: 1 + (i % 2) });
    assert.ok(s.shapes.some((sh) => held.has(tripleKey(sh.colour, sh.shape, s.background))), `heldout ${i}: ${s.caption}`);
    assert.not.ok(trainCaptions.has(s.caption), `held-out caption in training: ${s.caption}`);
  }
  // The written data set obeys the same split.
  const m = readNanoManifest(path.join(tmp, 'a'));
  const h = new Set(m.heldOutTriples);
  for (const it of m.items) {
    const hits = it.shapes.filter((sh) => h.has(tripleKey(sh.colour, sh.shape, it.background))).length;
    assert.ok(it.split === 'train' ? hits === 0 : hits > 0, it.caption);
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
