// `npm run eval:nano -- [--model models/karlo-nano] [--floor models/karlo-tiny] [--single 200 --double 100]
//   [--json] [--out report.json] [--sheet sheet.png]`: the nano world's measured quality (src/nano/eval.ts) of a
// model, next to a floor model's (the random-weight tiny model by default).
import * as fs from 'node:fs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { initBackend } from '../../src/backend/index.js';
import { writeFileAtomic, writePng } from '../../src/io/png.js';
import { NANO_EVAL_DEFAULTS, evaluateNano, reportTable, type NanoEvalReport } from '../../src/nano/eval.js';
import type { RgbU8 } from '../../src/nano/render.js';

const d = NANO_EVAL_DEFAULTS;
const argv = yargs(hideBin(process.argv))
  .scriptName('eval-nano')
  .option('model', { type: 'string', default: fs.existsSync('models/karlo-nano/model_index.json') ? 'models/karlo-nano' : 'models/karlo-tiny' })
  .option('floor', { type: 'string', describe: 'a second model scored alike (the random-weight floor); "none" to skip', default: 'models/karlo-tiny' })
  .option('seed', { type: 'number', default: d.seed, describe: 'world seed (held-out split)' })
  .option('single', { type: 'number', default: d.single })
  .option('double', { type: 'number', default: d.double })
  .option('batch', { type: 'number', default: d.batch })
  .option('prior-steps', { type: 'number', default: d.priorSteps })
  .option('decoder-steps', { type: 'number', default: d.decoderSteps })
  .option('super-res-steps', { type: 'number', default: d.superResSteps })
  .option('prior-guidance', { type: 'number', default: d.priorGuidance })
  .option('decoder-guidance', { type: 'number', default: d.decoderGuidance })
  .option('ground-truth', { type: 'boolean', describe: "score the world's own renderings instead of generated images (the ceiling; CLIP-score of real images)" })
  .option('backend', { type: 'string' })
  .option('json', { type: 'boolean' })
  .option('out', { type: 'string', describe: 'write the report(s) as JSON here' })
  .option('sheet', { type: 'string', describe: 'write the first 32 images of the model as a contact sheet PNG' })
  .strict()
  .parseSync();

function sheet(imgs: RgbU8[], file: string): void {
  const s = imgs[0].width, cols = 8, rows = Math.ceil(imgs.length / cols);
  const data = new Uint8Array(cols * s * rows * s * 3);
  imgs.forEach((im, k) => {
    const ox = (k % cols) * s, oy = Math.floor(k / cols) * s;
    for (let y = 0; y < s; y++) data.set(im.data.subarray(3 * y * s, 3 * (y + 1) * s), 3 * ((oy + y) * cols * s + ox));
  });
  writePng(file, { width: cols * s, height: rows * s, channels: 3, data });
}

try {
  process.stderr.write(`${(await initBackend(argv.backend)).message}\n`);
  const run = async (model: string, keep: boolean): Promise<NanoEvalReport> => {
    const kept: RgbU8[] = [];
    const r = await evaluateNano({
      model, seed: argv.seed, source: argv['ground-truth'] ? 'render' : 'generate', single: argv.single, double: argv.double, batch: argv.batch,
      priorSteps: argv['prior-steps'], decoderSteps: argv['decoder-steps'], superResSteps: argv['super-res-steps'],
      priorGuidance: argv['prior-guidance'], decoderGuidance: argv['decoder-guidance'],
      onImage: (i, _sc, img) => { if (keep && kept.length < 32) kept.push(img); },
      log: (l) => process.stderr.write(`${model}: ${l}\n`),
    });
    if (keep && argv.sheet && kept.length) sheet(kept, argv.sheet);
    return r;
  };
  const main = await run(argv.model, true);
  const floor = argv.floor && argv.floor !== 'none' && argv.floor !== argv.model ? await run(argv.floor, false) : undefined;
  if (argv.out) writeFileAtomic(argv.out, Buffer.from(`${JSON.stringify({ model: main, floor }, null, 1)}\n`));
  if (argv.json) process.stdout.write(`${JSON.stringify({ model: main, floor })}\n`);
  else process.stdout.write(`${reportTable(main, floor, [argv.model, floor ? argv.floor : ''])}\n(${main.imageSize}px images, ${main.seconds.toFixed(0)} s${floor ? `; floor ${floor.seconds.toFixed(0)} s` : ''})\n`);
} catch (e) {
  process.stderr.write(`eval-nano: ${(e as Error).message}\n`);
  process.exit(2);
}
