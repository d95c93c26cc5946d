// Issue 18 item 10 (terminal injection): escape sequences, C1 controls, bidi overrides and line breaks in tensor
// names, component names, pickle globals and added tokens reach neither stdout (inspect, tokenize) nor stderr
// (errors) raw: they are printed escaped; --json output escapes them too and still parses back to the names.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { saveSafetensors } from '../src/io/safetensors.js';
import { PickleWriter, writeZip } from '../src/io/torch/index.js';
import { printable, jsonText } from '../src/io/files.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hard-esc-'));
// eslint-disable-next-line no-control-regex
const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const EVIL = ['red\x1b[31mX\x1b[0m', 'two\nlines', 'csi\u009b2J', 'bidi\u202etxt.exe', 'bell\x07', 'cr\rover'];

function karlo(args: string[]) {
  return spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { cwd: tmp, encoding: 'utf8', timeout: 60_000 });
}

test('printable / jsonText escape what a terminal would act on, and nothing else', () => {
  assert.is(printable('down_blocks.0.resnets.1.conv1.weight'), 'down_blocks.0.resnets.1.conv1.weight');
  assert.is(printable('a\x1b[2Jb'), 'a\\x1b[2Jb');
  assert.is(printable('a\nb\\c'), 'a\\nb\\\\c');
  assert.is(printable('x\u009by'), 'x\\x9by');
  assert.is(printable('x\u202ey'), 'x\\u{202e}y');
  assert.is(printable('héllo wörld ✓'), 'héllo wörld ✓');
  for (const s of EVIL) {
    assert.not.match(printable(s), RAW, s);
    assert.not.match(jsonText({ s }), RAW, s);
    assert.is(JSON.parse(jsonText({ s })).s, s);
  }
});

test('inspect: hostile tensor names print escaped (listing and --json); errors too', () => {
  const f = path.join(tmp, 'evil.safetensors');
  saveSafetensors(f, Object.fromEntries(EVIL.map((n, i) => [n, { dtype: 'F32', shape: [1], data: Float32Array.from([i]) }])));
  const r = karlo(['inspect', f]);
  assert.is(r.status, 0, r.stderr);
  assert.not.match(r.stdout.replace(/\n/g, ''), RAW);
  assert.ok(r.stdout.includes('red\\x1b[31mX\\x1b[0m'), r.stdout);
  assert.ok(r.stdout.includes('two\\nlines'));
  assert.is(r.stdout.split('\n').filter((l) => l.includes('lines')).length, 1, 'the name stays on one line');
  const j = karlo(['inspect', f, '--json']);
  assert.is(j.status, 0, j.stderr);
  assert.not.match(j.stdout.trimEnd(), RAW);
  assert.equal(JSON.parse(j.stdout).components[0].tensors.map((t: { name: string }) => t.name).sort(), [...EVIL].sort());

  // an error naming a hostile tensor: one escaped line
  const bad = path.join(tmp, 'bad.safetensors');
  const h = Buffer.from(JSON.stringify({ 'x\x1b]0;pwned\x07\ny': { dtype: 'F99', shape: [1], data_offsets: [0, 4] } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  fs.writeFileSync(bad, Buffer.concat([len, h, Buffer.alloc(4)]));
  const e = karlo(['inspect', bad]);
  assert.is(e.status, 2, e.stderr);
  assert.is(e.stderr.trimEnd().split('\n').length, 1, e.stderr);
  assert.not.match(e.stderr.trimEnd(), RAW);
  assert.match(e.stderr, /x\\x1b\]0;pwned\\x07\\ny/);
});

test('convert: a pickle global and a key with escape sequences are printed escaped in the error', () => {
  const rel = path.join(tmp, 'rel');
  fs.mkdirSync(rel);
  const w = new PickleWriter().proto(2).global('evil\x1b[2J', 'name\u009b').emptyTuple().reduce().stop();
  writeZip(path.join(rel, 'ViT-L-14.pt'), [{ name: 'archive/data.pkl', data: w.bytes() }, { name: 'archive/version', data: Buffer.from('3\n') }]);
  const r = karlo(['convert', '--from-original', rel, '--only', 'text_encoder', '--out', path.join(tmp, 'o')]);
  assert.is(r.status, 2, r.stderr);
  assert.is(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  assert.not.match(r.stderr.trimEnd(), RAW);
  assert.match(r.stderr, /evil\\x1b\[2J\.name\\x9b/);
});

test('tokenize: an added token holding an escape sequence is printed escaped', () => {
  const dir = path.join(tmp, 'tok');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ added_tokens_decoder: { 49408: { content: '\x1b[5m' } } }));
  const r = karlo(['tokenize', 'a \x1b[5m frog', '--model', dir]);
  assert.is(r.status, 0, r.stderr);
  assert.not.match(r.stdout.replace(/\n/g, ''), RAW);
  assert.ok(r.stdout.includes('\\x1b[5m'), r.stdout);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
