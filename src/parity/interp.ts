// `karlo parity` for bicubic interpolation fixtures (fixtures README i): index.json (cases with input_shape and
// size) + interp.safetensors (case{k}.input, case{k}.bicubic_aa, case{k}.bicubic_noaa).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { FixtureTensors } from './fixture.js';
import { readJson } from '../io/weights.js';
import { bicubicResize } from '../layers/interpolate.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';

/** Interpolation tolerance of the fixtures README (abs ≤ 1e-5). */
export const INTERP_ATOL = 1e-5;

export async function runInterpParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const file = path.join(dir, 'interp.safetensors');
  const cases = readJson<{ input_shape: number[]; size: [number, number] }[]>(path.join(dir, 'index.json'));
  if (!Array.isArray(cases)) throw new Error(`${path.join(dir, 'index.json')}: expected a list of cases`);
  const io = FixtureTensors.open(file);
  const atol = opts.atol ?? INTERP_ATOL;
  const res: Comparison[] = [];
  cases.forEach((c, k) => {
    const input = io.need(`case${k}.input`);
    for (const [variant, antialias] of [['bicubic_aa', true], ['bicubic_noaa', false]] as const) {
      const ref = io.get(`case${k}.${variant}`);
      if (!ref) continue;
      const out = tf.tidy(() => bicubicResize(tf.tensor4d(input.data as Float32Array, input.shape as [number, number, number, number]), c.size, { antialias }));
      const name = `case${k}.${variant} [${input.shape}]→${c.size.join('×')}`;
      res.push(out.shape.join() === ref.shape.join()
        ? compareArrays(name, out.dataSync(), ref.data, { atol, scaleByMax: false })
        : { name: `${name}: shape [${out.shape}] vs reference [${ref.shape}]`, maxAbs: Infinity, maxRel: Infinity, maxRef: NaN, allowed: 0, argmax: -1, ok: false });
      out.dispose();
    }
  });
  return res;
}

export const interpParity: ParityKind = {
  name: 'interp',
  detect: (dir) => fs.existsSync(path.join(dir, 'interp.safetensors')) && fs.existsSync(path.join(dir, 'index.json')),
  run: runInterpParity,
};
