// eval-nano (src/nano/eval.ts): the held-out evaluation scenes are the data set's held-out split; the verdicts are
// all right on the world's own renderings (the analyser's ceiling) and wrong where the picture is wrong; the
// evaluation runs end to end through the pipeline on the bundled random-weight model (the floor) without leaks.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { analyseImage } from '../src/nano/analyse.js';
import { evalScenes, evaluateNano, judge, reportTable } from '../src/nano/eval.js';
import { renderScene } from '../src/nano/render.js';
import { heldOutTriples, tripleKey } from '../src/nano/world.js';
import { BUNDLED_MODEL_DIR } from '../src/package_root.js';
import { writeNanoInitFolder } from '../src/nano/init.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { useBackend } from './helpers.js';

await useBackend('native').catch(() => useBackend('cpu'));

test('evaluation scenes: one-shape then two-shape held-out scenes, each holding a held-out triple', () => {
  const scenes = evalScenes(0, 30, 20);
  const held = heldOutTriples(0);
  assert.is(scenes.length, 50);
  scenes.forEach((s, i) => {
    assert.is(s.shapes.length, i < 30 ? 1 : 2);
    assert.ok(s.shapes.some((sh) => held.has(tripleKey(sh.colour, sh.shape, s.background))), s.caption);
  });
  assert.equal(evalScenes(0, 30, 20).map((s) => s.caption), scenes.map((s) => s.caption));
});

test('verdicts on the ground-truth renderings are all right (the ceiling); a wrong picture is judged wrong', () => {
  for (const s of evalScenes(0, 60, 40)) {
    const v = judge(s, analyseImage(renderScene(s, 128)));
    assert.equal(v, { colour: true, shape: true, count: true, content: true }, s.caption);
  }
  const [a, b] = evalScenes(0, 2, 0);
  const other = { background: a.background, shapes: [{ ...a.shapes[0], colour: a.shapes[0].colour === 'red' ? 'blue' as const : 'red' as const }] };
  const v = judge(a, analyseImage(renderScene(other, 64)));
  assert.is(v.colour, false);
  assert.is(v.shape, true);
  const two = judge({ shapes: [a.shapes[0], b.shapes[0]] }, analyseImage(renderScene(a, 64)));
  assert.is(two.count, false);
});

test('end to end on the random-weight tiny model (the floor): rates in range, a table, tensors freed', async () => {
  const before = tf.memory().numTensors;
  const r = await evaluateNano({ model: BUNDLED_MODEL_DIR, single: 2, double: 1, batch: 2, priorSteps: 2, decoderSteps: 2, superResSteps: 2 });
  assert.is(tf.memory().numTensors, before);
  assert.is(r.single.colour.n, 2);
  assert.is(r.double.count.n, 1);
  for (const x of [r.single.colour, r.single.shape, r.single.both, r.double.count]) assert.ok(x.rate >= 0 && x.rate <= 1);
  assert.is(r.clipScore, null); // karlo-tiny has no image_encoder
  const table = reportTable(r, r, ['nano', 'floor']);
  assert.match(table, /\| one shape: colour accuracy \(bar >= 90%\) \| .* \| .* \|/);
  assert.match(table, /CLIP-score matched vs shuffled \| n\/a \| n\/a/);
});

test('ground-truth mode scores the renderings: every verdict right; CLIP-score from the folder\'s own towers', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-nano-eval-'));
  try {
    writeNanoInitFolder(dir, { seed: 0 });
    const r = await evaluateNano({ model: dir, single: 6, double: 4, source: 'render' });
    assert.is(r.source, 'render');
    assert.is(r.imageSize, 128);
    for (const x of [r.single.colour, r.single.shape, r.single.count, r.double.count, r.double.content]) assert.is(x.rate, 1);
    assert.ok(r.clipScore && r.clipScore.n === 10 && Math.abs(r.clipScore.matched) <= 1 && Math.abs(r.clipScore.shuffled) <= 1, JSON.stringify(r.clipScore));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
