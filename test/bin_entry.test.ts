// bin/karlo.js picks what to run: the built dist/ when it is at least as new as every source file (an installed
// package, or a clone after `npm run build`), else the TypeScript sources through tsx (a fresh clone, or sources
// edited since the build); KARLO_FROM_SOURCE=1 forces the sources; neither: one line, exit 2.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-bin-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const write = (rel: string, text: string, mtime: number) => {
  const f = path.join(tmp, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, text);
  fs.utimesSync(f, mtime, mtime);
};
fs.mkdirSync(path.join(tmp, 'bin'));
fs.writeFileSync(path.join(tmp, 'package.json'), JSON.stringify({ name: 'karlo-tfjs', type: 'module' }));
fs.copyFileSync(path.join(ROOT, 'bin', 'karlo.js'), path.join(tmp, 'bin', 'karlo.js'));
fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(tmp, 'node_modules'));
const T = Date.now() / 1000 - 1000;
write('src/cli/main.ts', "const from: string = 'source'; console.log(from);\n", T);
write('tools/convert/convert.ts', 'export {};\n', T);
write('dist/src/cli/main.js', "console.log('dist');\n", T + 10);
write('dist/BUILD', 'built\n', T + 10);

const run = (env: NodeJS.ProcessEnv = {}) => {
  const r = spawnSync(process.execPath, [path.join(tmp, 'bin', 'karlo.js')], { encoding: 'utf8', env: { ...process.env, KARLO_FROM_SOURCE: '', ...env }, timeout: 60_000 });
  return { code: r.status, out: r.stdout.trim(), err: r.stderr.trim() };
};

test('dist newer than every source: runs dist; KARLO_FROM_SOURCE=1: the sources', () => {
  assert.equal(run(), { code: 0, out: 'dist', err: '' });
  assert.is(run({ KARLO_FROM_SOURCE: '1' }).out, 'source');
});

test('a source edited after the build (src/ or tools/convert): runs the sources', () => {
  fs.utimesSync(path.join(tmp, 'tools/convert/convert.ts'), T + 20, T + 20);
  assert.is(run().out, 'source');
  fs.utimesSync(path.join(tmp, 'tools/convert/convert.ts'), T, T);
  fs.utimesSync(path.join(tmp, 'src/cli/main.ts'), T + 20, T + 20);
  assert.is(run().out, 'source');
});

test('no dist (fresh clone): the sources; no sources either: one line, exit 2', () => {
  fs.rmSync(path.join(tmp, 'dist'), { recursive: true });
  assert.is(run().out, 'source');
  fs.rmSync(path.join(tmp, 'src'), { recursive: true });
  const r = run();
  assert.is(r.code, 2);
  assert.match(r.err, /^karlo: .*dist[\\/]src[\\/]cli[\\/]main\.js is missing/);
});

test.run();
