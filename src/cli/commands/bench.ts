// `karlo bench [name ...] [--list] [--timeout S]`: the benchmark suite (bench/index.ts), i.e. `npm run bench`, with
// the global --backend passed through.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../../package_root.js';
import type { CommandModule } from 'yargs';
import { UsageError } from '../errors.js';

interface Args { names?: string[]; list?: boolean; timeout?: number; backend?: string }

const ROOT = PACKAGE_ROOT;

const command: CommandModule<object, Args> = {
  command: 'bench [names..]',
  describe: 'list the benchmarks, or run those named (`all`: every one), each in its own process',
  builder: (y) => y
    .positional('names', { type: 'string', array: true, describe: 'benchmark names or regexes; `all` for every one (none: list them)' })
    .option('list', { type: 'boolean', default: false, describe: 'list the benchmarks' })
    .option('timeout', { type: 'number', describe: 'seconds allowed per benchmark' })
    // Options the benchmarks themselves take (e.g. `karlo bench pipeline --sr-steps 7`) are passed on to them.
    .strict(false)
    .epilog('Other options are passed to the benchmark scripts, e.g.: karlo bench pipeline --prior-steps 25 --decoder-steps 25 --sr-steps 7') as never,
  handler: (argv) => {
    const index = path.join(ROOT, 'bench', 'index.ts');
    if (!fs.existsSync(index)) throw new UsageError(`${index}: missing (benchmarks ship with the source checkout, not the package)`);
    // Without names: the list (running everything takes hours and 13.7 GB at real size); `all` runs every one.
    const names = (argv.names ?? []).map(String);
    const listOnly = argv.list || names.length === 0;
    if (names.length === 0 && !argv.list) {
      process.stderr.write('benchmarks (run one with `karlo bench NAME [options]`, every one with `karlo bench all`; real sizes need GBs of RAM):\n');
    }
    const args = ['--import', 'tsx', index, ...(names.includes('all') ? [] : names), ...(listOnly ? ['--list'] : [])];
    if (argv.timeout !== undefined) args.push('--timeout', String(argv.timeout));
    if (argv.backend) args.push('--backend', argv.backend);
    args.push(...passThrough(argv as unknown as Record<string, unknown>));
    const r = spawnSync(process.execPath, args, { cwd: ROOT, stdio: 'inherit' });
    process.exitCode = r.status ?? 1;
  },
};

const OWN = new Set(['_', '$0', 'names', 'list', 'timeout', 'backend', 'verbose', 'help', 'version']);

/** Unknown options as `--name=value` (the form bench/index.ts forwards unambiguously). */
function passThrough(argv: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(argv)) {
    // yargs adds camelCase aliases of dashed names: keep the dashed spelling only
    if (OWN.has(k) || (/[A-Z]/.test(k) && k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`) in argv)) continue;
    for (const one of Array.isArray(v) ? v : [v]) out.push(one === true ? `--${k}` : one === false ? `--no-${k}` : `--${k}=${one}`);
  }
  return out;
}

export default command;
