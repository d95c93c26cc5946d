// Issue 18 fuzz families (test/fuzz/hostile.ts, run in a child process each): shared-reference and deeply nested
// pickles, copy bombs, JavaScript property names as dtypes / storages / keys, non-regular files in the place of
// every file a reader opens, mutated tokenizer files and configs; and hostile CLI arguments. Every input (all
// under 1 MB) ends in a clear error or a correct read within 2 s, with RSS growth under 256 MB, checked per case;
// a case that never ends is named by the child's last "start" line.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MS = 2000;
const MB = 256;

interface CaseResult { case: string; ms: number; growthMB: number | null; outcome: string; message: string }

const FAMILIES = ['sharedReferences', 'copyBombs', 'deepNesting', 'propertyNames', 'nonRegularFiles', 'tokenizerFiles'];
let all: CaseResult[] | null = null;

/** Runs every family once in one child (one start-up), then hands out each family's cases. */
function runAll(): CaseResult[] {
  if (all) return all;
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(ROOT, 'test', 'fuzz', 'hostile.ts'), FAMILIES.join(','), '18'], {
    cwd: ROOT, encoding: 'utf8', timeout: 180_000, maxBuffer: 64 << 20,
  });
  const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as CaseResult & { start?: string });
  const started = lines.filter((l) => l.start !== undefined);
  const done = lines.filter((l) => l.start === undefined);
  if (r.status !== 0 || done.length !== started.length) {
    const last = started[started.length - 1]?.start;
    assert.unreachable(`the child ended with ${r.status ?? r.signal}${last && done.length < started.length ? ` during case "${last}" (it never ended)` : ''}: ${r.stderr.slice(-2000)}`);
  }
  all = done;
  return done;
}

function family(name: string, fileNamed = true): CaseResult[] {
  const done = runAll().filter((c) => c.case.startsWith(`${name}: `));
  assert.ok(done.length > 0, `${name}: cases ran`);
  for (const c of done) {
    const what = `${c.case}: ${c.outcome} ${c.message}`;
    assert.not.ok(['TypeError', 'RangeError', 'ReferenceError', 'StackOverflow', 'SyntaxError'].includes(c.outcome), `not a clear error: ${what}`);
    assert.ok(c.ms < MS, `${what}: ${c.ms.toFixed(0)} ms`);
    assert.ok(c.growthMB === null || c.growthMB < MB, `${what}: RSS grew ${c.growthMB?.toFixed(0)} MB`);
    if (c.outcome !== 'ok') {
      assert.not.match(c.message, /[\n\x1b]/, `one line: ${what}`);
      if (fileNamed) assert.match(c.message, /karlo-hostile-/, `names the file: ${what}`);
    }
  }
  const slowest = Math.max(...done.map((c) => c.ms));
  const peak = Math.max(0, ...done.map((c) => c.growthMB ?? 0));
  const refused = done.filter((c) => c.outcome !== 'ok').length;
  console.log(`  ${name}: ${done.length} cases, ${refused} refused, ${done.length - refused} read; slowest ${slowest.toFixed(0)} ms; largest RSS growth ${peak.toFixed(0)} MB`);
  return done;
}

test('shared references: random DAGs of lists, tuples, dicts, OrderedDicts, sets, modules (up to 6^60 paths)', () => {
  const cs = family('sharedReferences');
  assert.ok(cs.some((c) => c.outcome === 'ok'), 'some are read fully (sharing kept)');
});

test('copy bombs: OrderedDict / set / frozenset / torch.Size / _codecs.encode over one shared object, repeated', () => {
  const cs = family('copyBombs');
  assert.ok(cs.filter((c) => /copy more than/.test(c.message)).length >= cs.length / 2, 'the work budget stops most');
});

test('deep nesting: lists, tuples, dicts, modules, BUILD states, _rebuild_from_type_v2, parameters up to 150,000 deep', () => {
  const cs = family('deepNesting');
  assert.ok(cs.some((c) => /nested more than/.test(c.message)), 'the depth limit speaks');
});

test('property names (constructor, toString, __proto__, ...) as storage types, dtypes, tensor names, config/YAML/tokenizer/model_index keys', () => {
  const cs = family('propertyNames', false);
  for (const c of cs.filter((x) => /: (storage|dtype) torch\./.test(x.case))) assert.match(c.message, /unsupported (storage type|dtype)/, c.case);
  for (const c of cs.filter((x) => /: safetensors dtype/.test(x.case))) assert.match(c.message, /unsupported dtype/, c.case);
  for (const c of cs.filter((x) => /: safetensors tensor named/.test(x.case))) assert.is(c.outcome, 'ok', `${c.case}: an ordinary tensor name (${c.message})`);
});

test('non-regular files: FIFO, /dev/zero and /dev/urandom links, folders for every reader', () => {
  const cs = family('nonRegularFiles');
  for (const c of cs) assert.match(c.message, /not a regular file|not a file or folder|no weights file/, `${c.case}: ${c.message}`);
});

test('tokenizer files and configs: 70 mutated vocab / merges / tokenizer_config / special_tokens_map', () => {
  family('tokenizerFiles');
});

test('CLI arguments: hostile values for generate and convert end in one line, exit 2, quickly', async () => {
  const out = path.join(ROOT, 'node_modules', '.karlo-fuzz-none', 'x.png');
  const cases: string[][] = [
    ['generate', 'a', '--num-images', '1e300'], ['generate', 'a', '--num-images', 'NaN'], ['generate', 'a', '--prior-steps', '1e9'],
    ['generate', 'a', '--prior-guidance', '1e309'], ['generate', 'a', '--preset', '__proto__'], ['generate', 'a', '--seed', '1e30'],
    ['generate', 'a', '--max-memory', 'toString'], ['generate', 'a', '--out', `${'x'.repeat(5000)}.png`],
    ['convert', '--from-original', '/dev/null', '--out', out], ['convert', '--from-original', ROOT, '--only', 'constructor', '--out', out],
    ['inspect', '/dev/zero'], ['tokenize', 'a', '--max-length', '1e9'],
  ];
  const runOne = (args: string[]) => new Promise<{ args: string[]; code: number | null; stderr: string; ms: number }>((res) => {
    const t0 = performance.now();
    const c = spawn(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args, ...(args.includes('--out') || args[0] !== 'generate' ? [] : ['--out', out])], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => c.kill('SIGKILL'), 60_000);
    c.on('exit', (code) => { clearTimeout(timer); res({ args, code, stderr, ms: performance.now() - t0 }); });
  });
  const results: Awaited<ReturnType<typeof runOne>>[] = [];
  for (let i = 0; i < cases.length; i += 4) results.push(...await Promise.all(cases.slice(i, i + 4).map(runOne)));
  for (const r of results) {
    const what = `karlo ${r.args.join(' ').slice(0, 120)}: ${r.stderr}`;
    assert.is(r.code, 2, what);
    // one error line (informational lines such as "note: ..." or "seed: N" may come before it), no stack trace
    const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('karlo: '));
    assert.is(lines.length, 1, what);
    assert.not.match(r.stderr, /internal error|^\s+at /m, what);
  }
  console.log(`  CLI: ${results.length} hostile argument sets, all one line and exit 2; slowest ${Math.max(...results.map((r) => r.ms)).toFixed(0)} ms (process start included)`);
});

test.run();
