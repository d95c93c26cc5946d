// `karlo parity DIR [--json] [--atol X] [--kind K]`: runs a reference folder (the fixtures README format, or a user's
// own PyTorch dump in that format) through our implementation and prints, per compared tensor, the max abs error,
// the max relative error and OK/FAIL. Exit code 1 when any comparison exceeds its tolerance, 2 for bad input.
import * as fs from 'node:fs';
import type { CommandModule } from 'yargs';
import { initBackend } from '../../backend/index.js';
import { PARITY_KINDS, type ParityKind } from '../../parity/registry.js';
import type { Comparison } from '../../parity/compare.js';
import { UsageError } from '../errors.js';
import { compareTraceFiles } from '../../parity/trace.js';

interface Args {
  dir: string;
  /** A second .safetensors file: compare two traces (dir is then the first file). */
  other?: string;
  json?: boolean;
  atol?: number;
  kind?: string;
  verbose?: boolean;
  backend?: string;
}

/** `karlo parity OURS.safetensors REF.safetensors`: the tensors the two files share (src/parity/trace.ts). */
function traceKind(ref: string): ParityKind {
  return { name: 'trace', detect: () => true, run: async (ours, o) => compareTraceFiles(ours, ref, o) };
}

export function detectKind(dir: string, forced?: string): ParityKind {
  if (!fs.existsSync(dir)) throw new UsageError(`${dir}: no such folder`);
  if (!fs.statSync(dir).isDirectory()) throw new UsageError(`${dir}: not a folder (parity takes a reference folder)`);
  const known = PARITY_KINDS.map((k) => k.name).join(', ');
  if (forced) {
    const k = PARITY_KINDS.find((x) => x.name === forced);
    if (!k) throw new UsageError(`unknown parity kind "${forced}"; known kinds: ${known}`);
    return k;
  }
  const k = PARITY_KINDS.find((x) => {
    try { return x.detect(dir); } catch { return false; }
  });
  if (!k) throw new UsageError(`${dir}: not a folder any parity kind recognises; known kinds: ${known}`);
  return k;
}

const fmt = (x: number) => (Number.isFinite(x) ? x.toExponential(2) : String(x));

export function formatComparisons(rows: Comparison[]): string[] {
  const w = Math.max(6, ...rows.map((r) => r.name.length));
  const lines = [`${'tensor'.padEnd(w)}  ${'max abs'.padStart(9)}  ${'max rel'.padStart(9)}  ${'allowed'.padStart(9)}  result`];
  for (const r of rows) {
    lines.push(`${r.name.padEnd(w)}  ${fmt(r.maxAbs).padStart(9)}  ${fmt(r.maxRel).padStart(9)}  ${fmt(r.allowed).padStart(9)}  ${r.ok ? 'OK' : 'FAIL'}`);
  }
  return lines;
}

const command: CommandModule<object, Args> = {
  command: 'parity <dir> [other]',
  describe: 'compare our outputs with a PyTorch reference folder, or two trace files (per-tensor max abs/rel error, OK/FAIL)',
  builder: (y) => y
    .positional('dir', { type: 'string', demandOption: true, describe: 'reference folder (see test/fixtures/README.md), or our trace .safetensors' })
    .positional('other', { type: 'string', describe: 'with a trace as the first argument: the reference .safetensors to compare it with (same tensor names)' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' })
    .option('atol', { type: 'number', describe: "override the kind's absolute tolerance (scaled by max(1, max|ref|) where the kind does)" })
    .option('verbose', { type: 'boolean', default: false, describe: "also print the kind's progress notes (stderr)" })
    .option('kind', { type: 'string', describe: `force a folder kind (${PARITY_KINDS.map((k) => k.name).join(', ')})` }) as never,
  handler: async (argv) => {
    const dir = argv.dir;
    if (argv.atol !== undefined && !(Number.isFinite(argv.atol) && argv.atol >= 0)) throw new UsageError(`--atol must be a non-negative number, got ${argv.atol}`);
    const kind = argv.other !== undefined ? traceKind(argv.other) : detectKind(dir, argv.kind);
    const backend = await initBackend(argv.backend, { log: (l) => console.error(l) });
    const notes: string[] = [];
    const t0 = performance.now();
    let rows: Comparison[];
    try {
      rows = await kind.run(dir, { atol: argv.atol, log: (l) => { notes.push(l); if (argv.verbose) console.error(l); } });
    } catch (e) {
      // A malformed reference folder is the user's to fix: one line, exit 2.
      throw new UsageError(`parity (${kind.name}) on ${dir}: ${(e as Error).message.split('\n').join(' ')}`);
    }
    const seconds = (performance.now() - t0) / 1000;
    const failed = rows.filter((r) => !r.ok);
    if (argv.json) {
      console.log(JSON.stringify({
        dir, kind: kind.name, backend: backend.name, ok: failed.length === 0 && rows.length > 0, seconds,
        compared: rows.length, failed: failed.length, notes,
        comparisons: rows.map((r) => ({ name: r.name, maxAbs: r.maxAbs, maxRel: r.maxRel, maxRef: r.maxRef, allowed: r.allowed, ok: r.ok })),
      }, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v)));
    } else {
      for (const l of formatComparisons(rows)) console.log(l);
      if (!argv.verbose) for (const n of notes.filter((x) => !/^(ok|FAIL)\b/i.test(x)).slice(0, 20)) console.log(n);
      console.log(`${kind.name}: ${rows.length - failed.length}/${rows.length} OK${failed.length ? `, ${failed.length} FAIL` : ''} (backend ${backend.name}, ${seconds.toFixed(2)} s)`);
    }
    if (rows.length === 0) {
      console.error(`karlo: parity (${kind.name}) on ${dir}: nothing was compared`);
      process.exitCode = 1;
    } else if (failed.length) {
      process.exitCode = 1;
    }
  },
};

export default command;
