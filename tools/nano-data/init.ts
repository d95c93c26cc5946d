// Writes a freshly initialised karlo-nano folder (src/nano/configs.ts sizes, src/nano/init.ts rules):
//   tsx tools/nano-data/init.ts --out runs/nano/init [--seed 0] [--dtype F32|F16]
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { writeNanoInitFolder } from '../../src/nano/init.js';

const argv = yargs(hideBin(process.argv))
  .scriptName('nano-init')
  .option('out', { type: 'string', demandOption: true })
  .option('seed', { type: 'number', default: 0 })
  .option('dtype', { choices: ['F32', 'F16'] as const, default: 'F32' as const })
  .strict()
  .parseSync();
try {
  const r = writeNanoInitFolder(argv.out, { seed: argv.seed, dtype: argv.dtype });
  const total = Object.values(r.params).reduce((a, b) => a + b, 0);
  process.stdout.write(`nano-init: ${argv.out}: ${Object.entries(r.params).map(([k, v]) => `${k} ${v.toLocaleString('en-US')}`).join(', ')}; ${total.toLocaleString('en-US')} parameters, ${(r.bytes / 2 ** 20).toFixed(1)} MiB of ${argv.dtype} weights\n`);
} catch (e) {
  process.stderr.write(`nano-init: ${(e as Error).message}\n`);
  process.exit(2);
}
