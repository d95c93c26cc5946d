// Helpers shared by the train_* tests: a small data folder of drawings with captions, and a copy of the bundled
// tiny model with small UNet sample sizes (fully convolutional; keeps backprop on the cpu backend fast).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodePng } from '../src/io/png.js';
import { createImage, drawLine, fillRect, type RGB } from '../src/io/raster.js';
import * as assert from 'uvu/assert';
import { BUNDLED_MODEL_DIR } from '../src/package_root.js';
import { TrainArgumentError, train, type TrainOptions } from '../src/training/trainer.js';

/** A data folder of n small drawings (PNG) with captions (.txt). */
export function makeDataFolder(dir: string, n = 3): string {
  fs.mkdirSync(dir, { recursive: true });
  const colours: RGB[] = [[255, 255, 255], [20, 40, 200], [0, 150, 0], [90, 0, 0]];
  for (let i = 0; i < n; i++) {
    const im = createImage(24 + 4 * i, 20, colours[i % 4]);
    fillRect(im, 4, 4, 8 + i, 6, [255 - 60 * i, 200, 40 * i]);
    drawLine(im, 0, 19, 23, 0, [0, 0, 0]);
    fs.writeFileSync(path.join(dir, `img${i}.png`), encodePng(im));
    fs.writeFileSync(path.join(dir, `img${i}.txt`), ['a white card with a red box', 'a blue card', 'green field with a square', 'dark red'][i % 4]);
  }
  return dir;
}

/** The bundled tiny model copied to dir (links resolved, recorded runs dropped) with the given sample sizes. */
export function tinyModelCopy(dir: string, sizes: Partial<Record<'decoder' | 'super_res_first' | 'super_res_last', number>> = { decoder: 8 }): string {
  fs.cpSync(BUNDLED_MODEL_DIR, dir, { recursive: true, dereference: true });
  for (const f of fs.readdirSync(dir)) if (/^run/.test(f)) fs.rmSync(path.join(dir, f));
  for (const [c, size] of Object.entries(sizes)) {
    const f = path.join(dir, c, 'config.json');
    fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, 'utf8')), sample_size: size }));
  }
  return dir;
}

/** Asserts that train() refuses each option set with a TrainArgumentError whose message matches. */
export async function expectRefused(base: (o: Partial<TrainOptions>) => TrainOptions, cases: [Partial<TrainOptions>, RegExp][]): Promise<void> {
  for (const [o, re] of cases) {
    try {
      await train(base(o));
      assert.unreachable(`${JSON.stringify(o)} was accepted`);
    } catch (e) {
      assert.instance(e, TrainArgumentError);
      assert.match((e as Error).message, re);
    }
  }
}

/** Deterministic pseudo-random floats in [lo, hi) (a 32-bit LCG from the seed), in float64. */
export function lcgFloats(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  let s = seed >>> 0;
  return Float64Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + ((hi - lo) * s) / 2 ** 32;
  });
}
