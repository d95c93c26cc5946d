// `karlo parity` kind "rng": a folder like test/fixtures/rng (index.json: [{name, fn: rand|randn, seed, shape,
// sequence_index?}] + rng.safetensors). Entries without sequence_index use a fresh generator each; entries with one
// share a generator per name prefix ("seq", "mixseq"), drawn in sequence order, so carried state is tested too.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile } from '../io/safetensors.js';
import { readJson } from '../io/weights.js';
import { TorchGenerator, type VectorMath } from '../random/generator.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';

export interface RngEntry {
  name: string;
  fn: string;
  seed: number | string;
  shape: number[];
  sequence_index?: number;
}

/** The fixtures README's tolerance for torch.randn/rand reproduction. */
export const RNG_ATOL = 1e-6;

export function readRngIndex(dir: string): RngEntry[] {
  const file = path.join(dir, 'index.json');
  const idx = readJson<unknown>(file);
  if (!Array.isArray(idx)) throw new Error(`${file}: expected a list of {name, fn, seed, shape} entries`);
  for (const [i, e] of idx.entries()) {
    const ok = e && typeof e.name === 'string' && typeof e.fn === 'string' && /^rand/.test(e.fn)
      && (Number.isInteger(e.seed) || (typeof e.seed === 'string' && /^-?\d+$/.test(e.seed)))
      && Array.isArray(e.shape) && e.shape.every((d: unknown) => Number.isInteger(d) && (d as number) >= 0);
    if (!ok) throw new Error(`${file}: entry ${i} is not {name, fn: "rand"|"randn", seed: int, shape: [int]}: ${JSON.stringify(e).slice(0, 200)}`);
  }
  return idx as RngEntry[];
}

/** Draws every entry as torch would: [entry, our values] in the index's order. */
export function replayRng(entries: RngEntry[], vectorMath: VectorMath = 'avx2'): [RngEntry, Float32Array][] {
  const sequences = new Map<string, TorchGenerator>();
  const drawn = new Map<RngEntry, Float32Array>();
  const order = entries.map((e, i) => [e, i] as const)
    .sort(([a, ia], [b, ib]) => (a.sequence_index ?? -1) - (b.sequence_index ?? -1) || ia - ib);
  for (const [e] of order) {
    const seed = BigInt(e.seed);
    let g: TorchGenerator;
    if (e.sequence_index !== undefined) {
      const key = `${e.name.split('.')[0]}/${seed}`;
      if (!sequences.has(key)) sequences.set(key, new TorchGenerator(seed, { vectorMath }));
      g = sequences.get(key)!;
    } else {
      g = new TorchGenerator(seed, { vectorMath });
    }
    drawn.set(e, e.fn.startsWith('randn') ? g.randn(e.shape) : g.rand(e.shape));
  }
  return entries.map((e) => [e, drawn.get(e)!]);
}

export async function runRngParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const file = path.join(dir, 'rng.safetensors');
  const st = SafetensorsFile.open(file);
  try {
    const atol = opts.atol ?? RNG_ATOL;
    let exact = 0;
    let total = 0;
    const out: Comparison[] = [];
    for (const [e, ours] of replayRng(readRngIndex(dir))) {
      if (!st.has(e.name)) throw new Error(`${file}: tensor "${e.name}" (listed in index.json) is missing`);
      const ref = st.read(e.name);
      const c = compareArrays(`${e.name}`, ours, ref.data, { atol, scaleByMax: false });
      if (ref.shape.join(',') !== e.shape.join(',')) c.ok = false;
      for (let i = 0; i < ref.data.length; i++) if (ours[i] === ref.data[i]) exact++;
      total += ref.data.length;
      out.push(c);
    }
    opts.log?.(`rng: ${exact}/${total} elements bit-identical`);
    return out;
  } finally {
    st.close();
  }
}

export const rngParity: ParityKind = {
  name: 'rng',
  detect: (dir) => {
    if (!fs.existsSync(path.join(dir, 'rng.safetensors')) || !fs.existsSync(path.join(dir, 'index.json'))) return false;
    try { return readRngIndex(dir).length > 0; } catch { return false; }
  },
  run: runRngParity,
};
