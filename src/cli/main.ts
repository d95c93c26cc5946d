// The `karlo` command line (yargs). Each command lives in src/cli/commands/<name>.ts and is listed in
// commands/index.ts. Errors users can fix print one line and exit 2.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { COMMANDS } from './commands/index.js';
import { UsageError } from './errors.js';

const cli = yargs(hideBin(process.argv))
  .scriptName('karlo')
  .usage('$0 <command> [options]\n\nKarlo v1 alpha (unCLIP) text-to-image on TensorFlow.js')
  .option('backend', {
    type: 'string',
    describe: 'tfjs backend: auto | tensorflow | native | wasm | cpu (default: $KARLO_BACKEND or auto)',
    global: true,
  })
  .wrap(process.stdout.isTTY ? Math.min(120, process.stdout.columns || 80) : null)
  .demandCommand(1, 'name a command (see --help)')
  .strict()
  .help()
  .fail((msg, err) => {
    if (err) throw err;
    console.error(`karlo: ${msg}`);
    process.exit(2);
  });
for (const c of COMMANDS) cli.command(c as never);

try {
  await cli.parseAsync();
} catch (e) {
  if (e instanceof UsageError) {
    console.error(`karlo: ${e.message}`);
    process.exit(2);
  }
  console.error(`karlo: ${(e as Error).stack ?? e}`);
  process.exit(1);
}
