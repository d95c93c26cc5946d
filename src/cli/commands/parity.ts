// `karlo parity DIR [--json] [--atol X] [--kind K]`: runs a reference folder (the fixtures README format, or a user's
// own PyTorch dump in that format) through our implementation and prints, per compared tensor, the max abs error,
// the max relative error and OK/FAIL. Exit code 1 when any comparison exceeds its tolerance, 2 for bad input.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CommandModule } from 'yargs';
import { initBackend } from '../../backend/index.js';
import { PARITY_KINDS, type ParityKind } from '../../parity/registry.js';
import type { Comparison } from '../../parity/compare.js';
import { UsageError } from '../errors.js';
import { SafetensorsFile } from '../../io/safetensors.js';
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

/** One parity row with its labels split off and its reference shape (the `--json` record). */
export interface ParityRow {
  /** The reference tensor's key as it stands in the fixture. */
  name: string;
  shape: number[];
  maxAbsErr: number;
  maxRelErr: number;
  allowed: number;
  pass: boolean;
  step?: number;
  case?: string | number;
  run?: string;
}

/**
 * Splits the labels the parity kinds add to a row name: `run_seed_only: step.003...` (a run of the folder),
 * `case12.input_ids` (a case of a cases file), a trailing `(generator)`-style variant; a step number inside the
 * key (`step.003.`, `.step5.`) is reported as `step` and left in the name, which is the fixture's key.
 */
export function splitLabels(label: string): { name: string; step?: number; case?: string | number; run?: string } {
  let name = label;
  const out: { name: string; step?: number; case?: string | number; run?: string } = { name };
  const run = /^([\w.-]+): (.*)$/s.exec(name);
  if (run) { out.run = run[1]; name = run[2]; }
  const variant = /^(.*\S) \(([^()]*(?:\([^()]*\)[^()]*)*)\)$/s.exec(name);
  if (variant) { out.case = variant[2]; name = variant[1]; }
  const cs = /^case(\d+)\.(.+)$/s.exec(name);
  if (cs) { out.case = Number(cs[1]); name = cs[2]; }
  const st = /(?:^|\.)step\.?(\d+)\./.exec(name);
  if (st) out.step = Number(st[1]);
  out.name = name;
  return out;
}

/** Shapes of the reference tensors: every .safetensors header in the folder, by file stem then key (headers only). */
export function referenceShapes(dir: string): Map<string, Map<string, number[]>> {
  const out = new Map<string, Map<string, number[]>>();
  let files: string[] = [];
  try {
    files = fs.statSync(dir).isDirectory() ? fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors')).map((n) => path.join(dir, n)) : [dir];
  } catch {
    return out;
  }
  for (const file of files) {
    try {
      const f = SafetensorsFile.open(file);
      try {
        out.set(path.basename(file, '.safetensors'), new Map(f.names().map((n) => [n, [...f.info(n).shape]])));
      } finally {
        f.close();
      }
    } catch {
      /* not ours to judge here: the kind reads what it needs */
    }
  }
  return out;
}

/** Rows for printing and --json: labels split, shapes from the reference files (else the element count). */
export function parityRows(rows: Comparison[], shapes: Map<string, Map<string, number[]>>): ParityRow[] {
  return rows.map((r) => {
    const l = splitLabels(r.name);
    let shape = r.shape;
    if (!shape) {
      const files = l.run && shapes.has(l.run) ? [shapes.get(l.run)!] : [...shapes.values()];
      shape = files.map((m) => m.get(l.name)).find((x) => x !== undefined);
    }
    const row: ParityRow = {
      name: l.name, shape: shape ?? (r.size !== undefined ? [r.size] : []),
      maxAbsErr: r.maxAbs, maxRelErr: r.maxRel, allowed: r.allowed, pass: r.ok,
    };
    if (l.step !== undefined) row.step = l.step;
    if (l.case !== undefined) row.case = l.case;
    if (l.run !== undefined) row.run = l.run;
    return row;
  });
}

/** allowed / max abs: how far under the tolerance a row is (∞ for exact, < 1 for a failure). */
function headroom(r: { maxAbs: number; allowed: number }): string {
  if (r.maxAbs === 0) return 'exact';
  if (!Number.isFinite(r.maxAbs)) return '-';
  const h = r.allowed / r.maxAbs;
  return `${h < 10 ? h.toFixed(1) : Math.round(h)}x`;
}

/** The multi-index of flat element `i` in `shape` ([i] when the shape does not account for it). */
export function unravel(i: number, shape: number[]): number[] {
  const n = shape.reduce((a, b) => a * b, 1);
  if (!(i >= 0 && i < n) || shape.length === 0) return [i];
  const idx: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) { idx.unshift(i % shape[d]); i = Math.floor(i / shape[d]); }
  return idx;
}

/** The table, in the order the kind produced the rows (execution order where the kind runs a model). */
export function formatComparisons(rows: Comparison[], shapes: Map<string, Map<string, number[]>> = new Map()): string[] {
  const pr = parityRows(rows, shapes);
  const w = Math.max(6, ...rows.map((r) => r.name.length));
  const sw = Math.max(5, ...pr.map((r) => `[${r.shape.join(',')}]`.length));
  const lines = [`${'tensor'.padEnd(w)}  ${'shape'.padEnd(sw)}  ${'max abs'.padStart(9)}  ${'max rel'.padStart(9)}  ${'allowed'.padStart(9)}  ${'headroom'.padStart(8)}  result`];
  rows.forEach((r, i) => {
    const where = r.ok || r.argmax < 0 ? '' : `  worst at [${unravel(r.argmax, pr[i].shape).join(',')}]`;
    lines.push(`${r.name.padEnd(w)}  ${`[${pr[i].shape.join(',')}]`.padEnd(sw)}  ${fmt(r.maxAbs).padStart(9)}  ${fmt(r.maxRel).padStart(9)}  ${fmt(r.allowed).padStart(9)}  ${headroom(r).padStart(8)}  ${r.ok ? 'OK' : 'FAIL'}${where}`);
  });
  const first = rows.findIndex((r) => !r.ok);
  if (first >= 0) {
    const r = rows[first];
    lines.push(`first failure (execution order): ${r.name} [${pr[first].shape.join(',')}]: max abs ${fmt(r.maxAbs)} > allowed ${fmt(r.allowed)}${r.argmax >= 0 ? ` at element [${unravel(r.argmax, pr[first].shape).join(',')}]` : ''}`);
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
    const shapes = referenceShapes(argv.other ?? dir);
    if (argv.json) {
      // Exactly {"kind", "pass", "tensors": [{name, shape, maxAbsErr, maxRelErr, allowed, pass, (step, case, run)}]};
      // a non-finite error (a tensor not produced, a length mismatch) is written as the largest double.
      console.log(JSON.stringify({ kind: kind.name, pass: failed.length === 0 && rows.length > 0, tensors: parityRows(rows, shapes) },
        (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? Number.MAX_VALUE : v)));
    } else {
      for (const l of formatComparisons(rows, shapes)) console.log(l);
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
