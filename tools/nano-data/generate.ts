// Writes the karlo-nano synthetic data set (src/nano/dataset.ts):
//   tsx tools/nano-data/generate.ts --out data/nano [--seed 0 --train 3000 --heldout-single 200 --heldout-double 100
//                                   --size 128 --decoder-size 32]
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { NANO_DATA_DEFAULTS, writeNanoDataset } from '../../src/nano/dataset.js';

const argv = yargs(hideBin(process.argv))
  .scriptName('nano-data')
  .option('out', { type: 'string', demandOption: true, describe: 'output folder' })
  .option('seed', { type: 'number', default: NANO_DATA_DEFAULTS.seed })
  .option('train', { type: 'number', default: NANO_DATA_DEFAULTS.train, describe: 'training scenes' })
  .option('heldout-single', { type: 'number', default: NANO_DATA_DEFAULTS.heldoutSingle, describe: 'held-out scenes with one shape' })
  .option('heldout-double', { type: 'number', default: NANO_DATA_DEFAULTS.heldoutDouble, describe: 'held-out scenes with two shapes' })
  .option('size', { type: 'number', default: NANO_DATA_DEFAULTS.size, describe: 'image size (the super-res output)' })
  .option('decoder-size', { type: 'number', default: NANO_DATA_DEFAULTS.decoderSize, describe: 'image size of the decoder copies' })
  .strict()
  .parseSync();

const t0 = performance.now();
let last = 0;
try {
  const m = writeNanoDataset({
    out: argv.out, seed: argv.seed, train: argv.train, heldoutSingle: argv['heldout-single'], heldoutDouble: argv['heldout-double'],
    size: argv.size, decoderSize: argv['decoder-size'],
    onProgress: (d, n) => {
      const now = performance.now();
      if (now - last > 2000 || d === n) { last = now; process.stderr.write(`nano-data: ${d}/${n}\n`); }
    },
  });
  process.stdout.write(`nano-data: ${m.counts.train} training and ${m.counts.heldoutSingle + m.counts.heldoutDouble} held-out scenes at ${m.size}px and ${m.decoderSize}px in ${argv.out} (${((performance.now() - t0) / 1000).toFixed(1)} s); ${m.heldOutTriples.length} held-out (colour, shape, background) triples\n`);
} catch (e) {
  process.stderr.write(`nano-data: ${(e as Error).message}\n`);
  process.exit(2);
}
