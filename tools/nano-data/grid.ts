// `tsx tools/nano-data/grid.ts [--model models/karlo-nano] [--out docs/karlo-nano-grid.png] [--seed 0] [PROMPT ...]`:
// the README's picture: one image per prompt from the pipeline's defaults (what `karlo generate PROMPT --seed S`
// writes), side by side in one PNG, 2 px apart; the prompts are printed in order as a Markdown list.
import * as fs from 'node:fs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { initBackend } from '../../src/backend/index.js';
import { floatToRgb8, writePng } from '../../src/io/png.js';
import { UnCLIPPipeline } from '../../src/pipeline/unclip_pipeline.js';

const PROMPTS = [
  'a red star on a black background',
  'a blue circle on a white background',
  'two yellow squares on gray',
  'a green triangle on a brown background',
  'a white ring against a blue background',
  'a pink star and an orange circle on black',
];

const argv = yargs(hideBin(process.argv))
  .scriptName('nano-grid')
  .usage('$0 [PROMPT ...]')
  .option('model', { type: 'string', default: 'models/karlo-nano' })
  .option('out', { type: 'string', default: 'docs/karlo-nano-grid.png' })
  .option('seed', { type: 'number', default: 0 })
  .option('backend', { type: 'string' })
  .strict()
  .parseSync();
const prompts = argv._.length ? argv._.map(String) : PROMPTS;

try {
  process.stderr.write(`${(await initBackend(argv.backend)).message}\n`);
  const pipe = await UnCLIPPipeline.load(argv.model, { keepLoaded: true });
  const tiles = [];
  try {
    for (const p of prompts) {
      const r = await pipe.generate([p], { seed: argv.seed });
      tiles.push(floatToRgb8(r.images, r.shape, 0));
    }
  } finally {
    pipe.dispose();
  }
  const s = tiles[0].width, gap = 2;
  const W = tiles.length * s + (tiles.length - 1) * gap;
  const data = new Uint8Array(W * s * 3).fill(255);
  tiles.forEach((t, k) => {
    for (let y = 0; y < s; y++) data.set(t.data.subarray(3 * y * s, 3 * (y + 1) * s), 3 * (y * W + k * (s + gap)));
  });
  writePng(argv.out, { width: W, height: s, channels: 3, data });
  process.stdout.write(`${argv.out} (${W}x${s}), left to right, seed ${argv.seed}:\n${prompts.map((p, i) => `${i + 1}. "${p}"`).join('\n')}\n`);
} catch (e) {
  process.stderr.write(`nano-grid: ${(e as Error).message}\n`);
  process.exit(2);
}
