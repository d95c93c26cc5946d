// Writing a nano-world data set: folders of PNG images with same-stem .txt captions (what `karlo train --data`
// reads), the same scenes at two sizes, and a manifest with every scene's content, so that evaluation and tests
// know what each caption says without parsing it.
//
//   <out>/manifest.json           settings, held-out triples, per item: stem, split, caption, background, shapes
//   <out>/train/                  training pairs at the super-res output size (super-res training, CLIP)
//   <out>/train-<decoder size>/   the same scenes rendered at the decoder's size (prior, decoder, text_proj)
//   <out>/heldout/ , heldout-<decoder size>/   held-out pairs (captions never seen in training), for evaluation
//
// The images of one size are a pure function of (seed, split, index, size): the same seed gives the same bytes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodePng, writeFileAtomic } from '../io/png.js';
import { renderScene } from './render.js';
import { heldOutTriples, makeScene, type Scene, type Split } from './world.js';

export const NANO_DATA_VERSION = 1;

export interface NanoDataOptions {
  out: string;
  seed?: number;
  /** Training scenes (mixed 1-3 shapes). */
  train?: number;
  /** Held-out scenes with one shape, and with two shapes. */
  heldoutSingle?: number;
  heldoutDouble?: number;
  /** Image sizes: the super-res output and the decoder's. */
  size?: number;
  decoderSize?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface ManifestItem {
  stem: string;
  split: Split;
  caption: string;
  background: Scene['background'];
  shapes: Scene['shapes'];
}

export interface NanoManifest {
  format: 'karlo-nano-data';
  version: number;
  seed: number;
  size: number;
  decoderSize: number;
  folders: { train: string; trainDecoder: string; heldout: string; heldoutDecoder: string };
  heldOutTriples: string[];
  counts: { train: number; heldoutSingle: number; heldoutDouble: number };
  items: ManifestItem[];
}

export const NANO_DATA_DEFAULTS = { seed: 0, train: 3000, heldoutSingle: 200, heldoutDouble: 100, size: 128, decoderSize: 32 } as const;

function writePair(dir: string, stem: string, scene: Scene, size: number): void {
  const img = renderScene(scene, size);
  writeFileAtomic(path.join(dir, `${stem}.png`), encodePng({ width: img.width, height: img.height, channels: 3, data: img.data }));
  writeFileAtomic(path.join(dir, `${stem}.txt`), Buffer.from(`${scene.caption}\n`));
}

/** Writes (or completes: existing files of the same scene are rewritten identically) a nano data set. */
export function writeNanoDataset(o: NanoDataOptions): NanoManifest {
  const seed = o.seed ?? NANO_DATA_DEFAULTS.seed;
  const nTrain = o.train ?? NANO_DATA_DEFAULTS.train;
  const nSingle = o.heldoutSingle ?? NANO_DATA_DEFAULTS.heldoutSingle;
  const nDouble = o.heldoutDouble ?? NANO_DATA_DEFAULTS.heldoutDouble;
  const size = o.size ?? NANO_DATA_DEFAULTS.size;
  const decoderSize = o.decoderSize ?? NANO_DATA_DEFAULTS.decoderSize;
  for (const [k, v] of Object.entries({ seed, train: nTrain, heldoutSingle: nSingle, heldoutDouble: nDouble })) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`nano data: ${k} must be an integer >= 0, got ${v}`);
  }
  for (const [k, v] of Object.entries({ size, decoderSize })) {
    if (!Number.isInteger(v) || v < 8 || v > 1024) throw new Error(`nano data: ${k} must be an integer in [8, 1024], got ${v}`);
  }
  const folders = { train: 'train', trainDecoder: `train-${decoderSize}`, heldout: 'heldout', heldoutDecoder: `heldout-${decoderSize}` };
  if (decoderSize === size) { folders.trainDecoder = folders.train; folders.heldoutDecoder = folders.heldout; }
  for (const f of new Set(Object.values(folders))) fs.mkdirSync(path.join(o.out, f), { recursive: true });
  const held = heldOutTriples(seed);
  const items: ManifestItem[] = [];
  const total = nTrain + nSingle + nDouble;
  const digits = String(Math.max(nTrain, nSingle + nDouble)).length;
  const emit = (split: Split, index: number, stem: string, scene: Scene) => {
    const [big, small] = split === 'train' ? [folders.train, folders.trainDecoder] : [folders.heldout, folders.heldoutDecoder];
    writePair(path.join(o.out, big), stem, scene, size);
    if (small !== big) writePair(path.join(o.out, small), stem, scene, decoderSize);
    items.push({ stem, split, caption: scene.caption, background: scene.background, shapes: scene.shapes });
    o.onProgress?.(items.length, total);
  };
  for (let i = 0; i < nTrain; i++) emit('train', i, `train_${String(i).padStart(digits, '0')}`, makeScene(seed, 'train', i, { held }));
  for (let i = 0; i < nSingle; i++) emit('heldout', i, `single_${String(i).padStart(digits, '0')}`, makeScene(seed, 'heldout', i, { held, count: 1 }));
  for (let i = 0; i < nDouble; i++) emit('heldout', nSingle + i, `double_${String(i).padStart(digits, '0')}`, makeScene(seed, 'heldout', nSingle + i, { held, count: 2 }));
  const manifest: NanoManifest = {
    format: 'karlo-nano-data', version: NANO_DATA_VERSION, seed, size, decoderSize, folders,
    heldOutTriples: [...held].sort(), counts: { train: nTrain, heldoutSingle: nSingle, heldoutDouble: nDouble }, items,
  };
  writeFileAtomic(path.join(o.out, 'manifest.json'), Buffer.from(`${JSON.stringify(manifest)}\n`));
  return manifest;
}

/** Reads a manifest written by writeNanoDataset. */
export function readNanoManifest(dir: string): NanoManifest {
  const file = path.join(dir, 'manifest.json');
  let m: NanoManifest;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8')) as NanoManifest;
  } catch (e) {
    throw new Error(`${file}: cannot read the nano data manifest (${(e as Error).message.split('\n')[0]}); write one with tools/nano-data/generate.ts`);
  }
  if (m.format !== 'karlo-nano-data' || !Array.isArray(m.items)) throw new Error(`${file}: not a karlo-nano data manifest`);
  return m;
}
