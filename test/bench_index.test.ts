// bench/index.ts (npm run bench): finds every bench/*.bench.ts, selects by name or regex, refuses unknown names.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bench = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'bench/index.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });

test('--list names every bench/*.bench.ts; a name selects one; an unknown name is exit 2 listing the available ones', () => {
  const all = fs.readdirSync(path.join(ROOT, 'bench')).filter((n) => n.endsWith('.bench.ts')).map((n) => n.replace(/\.bench\.ts$/, '')).sort();
  assert.ok(all.includes('matmul'));
  const r = bench('--list');
  assert.is(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n'), all);
  assert.equal(bench('matmul', '--list').stdout.trim().split('\n'), ['matmul']);
  const bad = bench('no_such_bench');
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /no benchmark "no_such_bench"; available: .*matmul/);
  const badBackend = bench('matmul', '--backend', 'gpu');
  assert.is(badBackend.status, 2);
  assert.match(badBackend.stderr, /unknown --backend "gpu"/);
});

test.run();
