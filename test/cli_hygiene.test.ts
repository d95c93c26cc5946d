// CLI hygiene (issue 17 item 5): a closed stdout ends quietly with exit 0; expected errors are one line and exit 2;
// internal errors say "internal error" (stack only under --verbose) and exit 1; `--` ends the options; bare `karlo`
// prints help; typos get "did you mean"; --backend is validated everywhere and refused where it does not apply;
// `karlo bench` without names lists; benchmark scripts refuse unknown flags.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeError, UsageError } from '../src/cli/errors.js';
import { BackendUnavailableError } from '../src/backend/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin', 'karlo.js');
const TINY = path.join(ROOT, 'models', 'karlo-tiny');

function karlo(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs `karlo ARGS | head -c 1` in bash; returns karlo's exit status and its stderr. */
function karloIntoHead(args: string[]) {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const script = `"${process.execPath}" ${q(BIN)} ${args.map(q).join(' ')} 2>"$ERRFILE" | head -c 1 >/dev/null; echo "\${PIPESTATUS[0]}"; cat "$ERRFILE"`;
  const r = spawnSync('bash', ['-c', script], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, ERRFILE: path.join(ROOT, '.scratch-epipe.err') } });
  spawnSync('rm', ['-f', path.join(ROOT, '.scratch-epipe.err')]);
  const [status, ...err] = r.stdout.split('\n');
  return { code: Number(status), stderr: err.join('\n') };
}

const oneErrorLine = (s: string) => s.trim().split('\n').length === 1 && /^karlo: /.test(s) && !/\n\s+at /.test(s);

test('a reader that closes the pipe (| head): exit 0, no EPIPE stack (tokenize, inspect)', () => {
  const many = Array.from({ length: 3000 }, (_, i) => `prompt number ${i}`);
  const tok = karloIntoHead(['tokenize', ...many]);
  assert.is(tok.code, 0, tok.stderr);
  assert.not.match(tok.stderr, /EPIPE|Error/);
  const ins = karloIntoHead(['inspect', TINY]);
  assert.is(ins.code, 0, ins.stderr);
  assert.not.match(ins.stderr, /EPIPE|Error/);
});

test('bare `karlo` prints the help (commands listed), exit 0', () => {
  const r = karlo([]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /Commands:/);
  assert.match(r.stdout, /karlo generate/);
});

test('`--` ends the options: prompts starting with - are prompts (tokenize --json -- "-a prompt" --json)', () => {
  const r = karlo(['tokenize', '--json', '--', '-a prompt', '--json']);
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { text: string }[];
  assert.equal(out.map((x) => x.text), ['-a prompt', '--json']);
});

test('typos: "did you mean" for options and commands, one line, exit 2', () => {
  const opt = karlo(['tokenize', '--jsn', 'a frog']);
  assert.is(opt.code, 2);
  assert.ok(oneErrorLine(opt.stderr), opt.stderr);
  assert.match(opt.stderr, /--jsn \(did you mean --json\?\)/);
  const gen = karlo(['generate', 'a frog', '--sed', '3']);
  assert.is(gen.code, 2);
  assert.match(gen.stderr, /did you mean --seed\?/);
  const cmd = karlo(['tokenze', 'a']);
  assert.is(cmd.code, 2);
  assert.ok(oneErrorLine(cmd.stderr), cmd.stderr);
  assert.match(cmd.stderr, /did you mean tokenize\?/);
  const none = karlo(['frobnicate']);
  assert.is(none.code, 2);
  assert.match(none.stderr, /unknown command "frobnicate"/);
});

test('--backend: a bogus name is refused by every command, one line, exit 2; refused where no model runs', () => {
  for (const args of [['tokenize', 'a'], ['inspect', TINY], ['generate', 'a'], ['parity', TINY]]) {
    const r = karlo([...args, '--backend', 'bogus']);
    assert.is(r.code, 2, `${args[0]}: ${r.stderr}`);
    assert.ok(oneErrorLine(r.stderr), r.stderr);
    assert.match(r.stderr, /--backend must be one of auto, tensorflow, native, wasm, cpu; got "?bogus/);
  }
  for (const c of [['tokenize', 'a'], ['inspect', TINY]]) {
    const r = karlo([...c, '--backend', 'cpu']);
    assert.is(r.code, 2);
    assert.match(r.stderr, new RegExp(`--backend does not apply to \`karlo ${c[0]}\``));
  }
  const env = karlo(['parity', TINY], { KARLO_BACKEND: 'bogus' });
  assert.is(env.code, 2);
  assert.ok(oneErrorLine(env.stderr), env.stderr);
  assert.match(env.stderr, /unknown backend "bogus" \(from KARLO_BACKEND\)/);
});

test('expected errors: one line naming the input, exit 2 (missing path)', () => {
  const r = karlo(['inspect', path.join(ROOT, 'no-such-model-folder')]);
  assert.is(r.code, 2);
  assert.ok(oneErrorLine(r.stderr), r.stderr);
  assert.match(r.stderr, /no-such-model-folder/);
});

test('describeError: internal errors are "internal error: ..." exit 1, stack only with --verbose; user errors one line exit 2', () => {
  const bug = describeError(new TypeError("Cannot read properties of undefined (reading 'shape')"));
  assert.is(bug.code, 1);
  assert.match(bug.lines[0], /^karlo: internal error: Cannot read properties/);
  assert.not.match(bug.lines.join('\n'), /\n\s+at /);
  const verbose = describeError(new TypeError('x'), true);
  assert.match(verbose.lines.join('\n'), /\n\s+at /);
  for (const e of [new UsageError('bad\nargument'), new BackendUnavailableError('native', 'not built'),
    Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }),
    Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' })]) {
    const d = describeError(e, true);
    assert.is(d.code, 2, e.message);
    assert.is(d.lines.length, 1);
    assert.not.match(d.lines[0], /\n/);
  }
  assert.is(describeError(new UsageError('a\x1b[31mred')).lines[0], 'karlo: a\\x1b[31mred');
});

test('`karlo bench` without names lists the benchmarks and runs nothing; bench scripts refuse unknown flags', () => {
  const r = karlo(['bench']);
  assert.is(r.code, 0, r.stderr);
  const names = r.stdout.trim().split('\n');
  assert.ok(names.includes('pipeline') && names.includes('decoder'), r.stdout);
  assert.not.match(r.stdout, /===/);
  for (const [script, flag] of [['pipeline', '--sr-step'], ['decoder', '--sizes'], ['matmul', '--second']]) {
    const b = spawnSync(process.execPath, ['--import', 'tsx', path.join('bench', `${script}.bench.ts`), flag, '7'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    assert.is(b.status, 2, `${script}: ${b.stderr}`);
    assert.match(b.stderr, new RegExp(`bench ${script}: Unknown option '${flag}'`));
  }
});

test.run();
