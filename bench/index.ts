// `npm run bench [name ...] [-- --backend B ...]`: runs every bench/*.bench.ts, or those named (file name without
// .bench.ts, or a regex on it), each as a standalone script in its own child process (`node --import tsx`), so each
// gets a fresh heap and its own peak RSS. `--backend B` is passed to every script (and set as KARLO_BACKEND);
// arguments after `--` are passed through too. Prints each script's output, then a summary; exit 1 if any failed.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH_DIR, '..');

interface Options { names: string[]; backend?: string; timeout?: number; list: boolean; pass: string[] }

function parseArgs(argv: string[]): Options {
  const o: Options = { names: [], list: false, pass: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') { o.pass.push(...argv.slice(i + 1)); break; }
    if (a === '--backend' || a.startsWith('--backend=')) o.backend = a.includes('=') ? a.split('=')[1] : argv[++i];
    else if (a === '--timeout' || a.startsWith('--timeout=')) o.timeout = Number(a.includes('=') ? a.split('=')[1] : argv[++i]);
    else if (a === '--list') o.list = true;
    else if (a === '--help' || a === '-h') {
      console.log('usage: npm run bench [name|regex ...] [-- --backend auto|tensorflow|native|wasm|cpu] [--timeout SECONDS] [--list]');
      process.exit(0);
    } else if (a.startsWith('--')) o.pass.push(a);
    else o.names.push(a);
  }
  if (o.backend !== undefined && !/^(auto|tensorflow|native|wasm|cpu)$/.test(o.backend)) {
    console.error(`bench: unknown --backend "${o.backend}": choose one of auto, tensorflow, native, wasm, cpu`);
    process.exit(2);
  }
  return o;
}

export function benchFiles(): string[] {
  return fs.readdirSync(BENCH_DIR).filter((n) => n.endsWith('.bench.ts')).sort();
}

function select(all: string[], names: string[]): string[] {
  if (!names.length) return all;
  const out: string[] = [];
  for (const n of names) {
    const base = n.replace(/\.bench\.ts$/, '');
    const exact = all.filter((f) => f === `${base}.bench.ts`);
    let hits = exact;
    if (!hits.length) {
      try { hits = all.filter((f) => new RegExp(base).test(f.replace(/\.bench\.ts$/, ''))); } catch { hits = []; }
    }
    if (!hits.length) {
      console.error(`bench: no benchmark "${n}"; available: ${all.map((f) => f.replace(/\.bench\.ts$/, '')).join(', ')}`);
      process.exit(2);
    }
    for (const h of hits) if (!out.includes(h)) out.push(h);
  }
  return out;
}

const opts = parseArgs(process.argv.slice(2));
// With --json the benchmarks' stdout is the JSON document; our own banner and summary go to stderr.
const say = opts.pass.includes('--json') ? (line: string) => console.error(line) : (line: string) => console.log(line);
const files = select(benchFiles(), opts.names);
if (opts.list) {
  for (const f of files) console.log(f.replace(/\.bench\.ts$/, ''));
  process.exit(0);
}

const results: { name: string; code: number | null; signal: string | null; seconds: number }[] = [];
for (const f of files) {
  const name = f.replace(/\.bench\.ts$/, '');
  const args = ['--import', 'tsx', path.join('bench', f), ...(opts.backend ? ['--backend', opts.backend] : []), ...opts.pass];
  say(`\n=== bench ${name}: node ${args.join(' ')}`);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, {
    cwd: ROOT,
    stdio: 'inherit',
    env: { ...process.env, ...(opts.backend ? { KARLO_BACKEND: opts.backend } : {}) },
    timeout: opts.timeout ? opts.timeout * 1000 : undefined,
  });
  const seconds = (performance.now() - t0) / 1000;
  results.push({ name, code: r.status, signal: r.signal, seconds });
  if (r.error) console.error(`bench ${name}: ${r.error.message}`);
}

say('\n=== bench summary');
for (const r of results) {
  const status = r.code === 0 ? 'ok' : r.signal ? `killed (${r.signal})` : `FAILED (exit ${r.code})`;
  say(`${r.name.padEnd(24)} ${status.padEnd(18)} ${r.seconds.toFixed(1)} s`);
}
process.exit(results.every((r) => r.code === 0) ? 0 : 1);
