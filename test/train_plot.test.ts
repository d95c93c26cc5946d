// src/training/plot.ts: the loss CSV round-trips exactly, ticks are 1/2/2.5/5 × 10^k covering the data, the EMA
// is bias-corrected, and the PNG has the curve inside the axes (pixels of the curve colour only in the plot box).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatTick, lossCsv, niceTicks, parseLossCsv, readLossCsv, renderLossPlot, smooth, writeLossFiles } from '../src/training/plot.js';
import { readPng } from '../src/io/png.js';

const points = Array.from({ length: 40 }, (_, i) => ({ step: i + 1, loss: 1 / (i + 1) + 0.1, lr: 1e-4 * (1 - i / 40) }));

test('loss CSV round-trips bit for bit; malformed lines name the file and line', () => {
  const text = lossCsv(points);
  assert.ok(text.startsWith('step,loss,lr\n1,1.1,0.0001\n'));
  assert.equal(parseLossCsv(text), points);
  assert.equal(parseLossCsv(lossCsv([])), []);
  assert.throws(() => parseLossCsv('a,b\n'), /not a loss CSV/);
  assert.throws(() => parseLossCsv('step,loss,lr\n1,2\n', 'x.csv'), /x\.csv: line 2/);
});

test('niceTicks cover the range with 1/2/2.5/5 × 10^k steps; formatTick uses the digits the step needs', () => {
  for (const [lo, hi] of [[0, 1], [0.08, 1.1], [1, 300], [3e-6, 9e-6], [5, 5], [-2, 3]]) {
    const { ticks, step } = niceTicks(lo, hi, 6);
    assert.ok(ticks[0] <= Math.min(lo, hi) && ticks[ticks.length - 1] >= Math.max(lo, hi), `[${lo}, ${hi}] → ${ticks}`);
    const m = step / 10 ** Math.floor(Math.log10(step) + 1e-12);
    assert.ok([1, 2, 2.5, 5].some((x) => Math.abs(m - x) < 1e-9), `step ${step}`);
  }
  assert.equal(niceTicks(0, 1).ticks, [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.is(formatTick(0.25, 0.25), '0.25');
  assert.is(formatTick(100, 50), '100');
  assert.is(formatTick(4e-6, 2e-6), '4e-6');
});

test('smooth: bias-corrected EMA (first value kept, constant series unchanged)', () => {
  for (const v of smooth([3, 3, 3], 0.9)) assert.ok(Math.abs(v - 3) < 1e-12);
  const s = smooth([1, 0], 0.5);
  assert.is(s[0], 1);
  assert.ok(Math.abs(s[1] - 1 / 3) < 1e-12); // (0.25·1 + 0.5·0) / 0.75
});

test('renderLossPlot: the curve colour appears only inside the axes box', () => {
  const img = renderLossPlot(points, { width: 400, height: 300 });
  assert.is(img.width, 400);
  assert.is(img.height, 300);
  let curve = 0;
  let xmin = Infinity, xmax = -Infinity;
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const i = (y * img.width + x) * 3;
      if (img.data[i] === 20 && img.data[i + 1] === 70 && img.data[i + 2] === 170) { curve++; xmin = Math.min(xmin, x); xmax = Math.max(xmax, x); }
    }
  }
  assert.ok(curve > 100, `EMA curve pixels: ${curve}`);
  assert.ok(xmax - xmin > 200, 'the curve spans the plot width');
});

test('writeLossFiles writes a decodable PNG and the CSV; readLossCsv reads it back', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-plot-'));
  try {
    const { csv, png } = writeLossFiles(path.join(dir, 'loss'), points);
    assert.is(readPng(png).width, 720);
    assert.equal(readLossCsv(csv), points);
    assert.equal(readLossCsv(path.join(dir, 'none.csv')), []);
    writeLossFiles(path.join(dir, 'empty'), []);
    assert.ok(fs.existsSync(path.join(dir, 'empty.png')));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
