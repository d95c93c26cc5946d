// Strict command-line check shared by the benchmark scripts: util.parseArgs with strict: true, so an unknown or
// misspelt flag (`--sr-step 7`) is one line and exit 2 instead of a silently ignored option on a run that may take
// an hour. Scripts keep reading their values as before; this only refuses what they do not know.
import { parseArgs } from 'node:util';

export interface BenchFlags {
  /** Flags that take a value (`--size 64` or `--size=64`). */
  string?: string[];
  /** Flags without a value. */
  boolean?: string[];
  /** Whether bare arguments (backend names) are accepted. Default true. */
  positionals?: boolean;
}

/** Exits 2 with one line when argv holds a flag the script does not take. `--child ...` (internal) is not checked. */
export function checkBenchArgs(script: string, flags: BenchFlags, argv = process.argv.slice(2)): void {
  if (argv.includes('--child') || argv.includes('--probe')) return;
  const options: Record<string, { type: 'string' | 'boolean' }> = { backend: { type: 'string' } };
  for (const f of flags.string ?? []) options[f] = { type: 'string' };
  for (const f of flags.boolean ?? []) options[f] = { type: 'boolean' };
  try {
    parseArgs({ args: argv, options, strict: true, allowPositionals: flags.positionals ?? true });
  } catch (e) {
    const known = Object.entries(options).map(([k, o]) => `--${k}${o.type === 'string' ? ' V' : ''}`).join(', ');
    console.error(`bench ${script}: ${(e as Error).message.split('\n')[0].replace(/\. To specify a positional.*$/, '')} (accepted: ${known})`);
    process.exit(2);
  }
}
