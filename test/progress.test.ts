// The CLI's one progress reporter (src/cli/progress.ts): without a TTY a line when a stage begins, at least every
// 10 s while it runs and when it ends; on a TTY a bar redrawn in place; rates below 1 step/s as s/step; bytes as
// MB/s. `karlo generate` piped: the seed is the first line, each stage logs its loading bytes and its steps.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Progress, formatRate } from '../src/cli/progress.js';

function sink() {
  const chunks: string[] = [];
  const stream = new Writable({ write(c, _e, cb) { chunks.push(String(c)); cb(); } });
  return { stream, text: () => chunks.join('') };
}

test('rates: steps/s at or above 1 per second, s/step below (never "0.03 steps/s"); bytes as MB/s', () => {
  assert.is(formatRate(5, 2), '2.50 steps/s');
  assert.is(formatRate(1, 37.5), '37.5 s/step');
  assert.is(formatRate(3, 100), '33.3 s/step');
  assert.is(formatRate(500e6, 2, 'byte'), '250 MB/s');
});

test('no TTY: a line at begin, at least every 10 s while running (not per step), and at the end', () => {
  const out = sink();
  let t = 0;
  const p = new Progress({ stream: out.stream, tty: false, now: () => t });
  p.begin('super-res', 7);
  for (let i = 0; i < 3; i++) { t += 4; p.tick(); } // 4, 8, 12 s: one line at 12 s
  t += 30; p.tick();                                 // a 30 s step: a line
  p.end();
  const lines = out.text().trim().split('\n');
  assert.equal(lines, [
    'super-res: 0/7 steps',
    'super-res: 3/7 steps  4.0 s/step  ETA 16s',
    'super-res: 4/7 steps  10.5 s/step  ETA 32s',
    'super-res: 7/7 steps  6.0 s/step  took 42s',
  ]);
  assert.not.match(out.text(), /\r|\x1b/);
});

test('TTY: one bar redrawn in place (\\r + clear line), s/step when slow, a newline only at the end; log() keeps the bar', () => {
  const out = sink();
  let t = 0;
  const p = new Progress({ stream: out.stream, tty: true, now: () => t });
  p.begin('decoder', 4);
  t += 2; p.tick();
  p.log('note: something');
  t += 2; p.tick();
  p.end();
  const s = out.text();
  assert.match(s, /\r\x1b\[Kdecoder +\[######------------------\] 1\/4 steps  2\.0 s\/step  ETA 6\.0s/);
  assert.match(s, /\r\x1b\[Knote: something\n/);
  assert.match(s, /\r\x1b\[Kdecoder: 4\/4 steps  1\.00 steps\/s  took 4\.0s\n$/);
  assert.is(s.split('\n').length - 1, 2, 'only the note and the final line end with a newline');
});

test('bytes: loading progress in bytes with sizes and MB/s', () => {
  const out = sink();
  let t = 0;
  const p = new Progress({ stream: out.stream, tty: false, now: () => t });
  p.begin('decoder load', 3.5e9, 'byte');
  t += 11; p.tick(1.2e9);
  p.end();
  assert.equal(out.text().trim().split('\n'), [
    'decoder load: 0 B / 3.50 GB',
    'decoder load: 1.20 GB / 3.50 GB  109 MB/s  ETA 21s',
    'decoder load: 3.50 GB / 3.50 GB  318 MB/s  took 11s',
  ]);
});

test('karlo generate, piped: the seed first, then per stage a loading line (bytes) and step lines, ending lines with the time', () => {
  const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-progress-'));
  try {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), 'generate', 'a frog', '--out', path.join(tmp, 'f.png'),
      '--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2', '--seed', '7'], { cwd: tmp, encoding: 'utf8', timeout: 120_000 });
    assert.is(r.status, 0, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.is(lines[0], 'seed: 7');
    for (const stage of ['text encoder', 'prior', 'decoder', 'super-res']) {
      assert.ok(lines.some((l) => new RegExp(`^${stage} load: .* / [\\d.]+ [kMG]B  .*took`).test(l)), `${stage} load line\n${r.stderr}`);
      assert.ok(lines.some((l) => new RegExp(`^${stage}: \\d+/\\d+ steps  .*took`).test(l)), `${stage} end line\n${r.stderr}`);
    }
    assert.not.match(r.stderr, /\r/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
