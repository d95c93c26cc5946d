// Issue 18 item 6 (non-regular files): every reader opens only regular files. A FIFO (which blocked forever), a
// symlink to /dev/zero (which grew to gigabytes), a folder or an oversized text file in the place of a weights
// file, config.json, tokenizer file, Karlo YAML or release checkpoint is refused with one line naming the file,
// quickly, without quoting content. The CLI cases run in a child with a timeout (on the old code they hung).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { TorchCheckpoint } from '../src/io/torch/index.js';
import { readJson } from '../src/io/weights.js';
import { readJsonFile, readTextFile, openRegularFile, FileRefusedError } from '../src/io/files.js';
import { CLIPTokenizer } from '../src/tokenizer/clip_tokenizer.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { readKarloConfigs, CONFIG_FILES } from '../tools/convert/hparams.js';
import { inspectPath } from '../src/io/inspect.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hard-files-'));

/** The hostile objects a path can be, made at `p`. */
const KINDS: Record<string, (p: string) => void> = {
  fifo: (p) => execFileSync('mkfifo', [p]),
  'symlink to /dev/zero': (p) => fs.symlinkSync('/dev/zero', p),
  folder: (p) => fs.mkdirSync(p),
  'symlink to a folder': (p) => fs.symlinkSync(tmp, p),
};
const KIND_RE = /(a FIFO \(named pipe\)|a character device|a folder), not a regular file; refused/;

function expectRefused(what: string, fn: () => unknown, re: RegExp = KIND_RE): void {
  const t0 = performance.now();
  try {
    fn();
  } catch (e) {
    assert.ok(performance.now() - t0 < 2000, `${what}: ${(performance.now() - t0).toFixed(0)} ms`);
    assert.match((e as Error).message, re, `${what}: ${(e as Error).message}`);
    assert.not.match((e as Error).message, /\n/);
    return;
  }
  assert.unreachable(`${what}: accepted`);
}

let n = 0;
function each(name: string, fn: (p: string, kind: string) => void): void {
  for (const [kind, make] of Object.entries(KINDS)) {
    const dir = path.join(tmp, `c${n++}`);
    fs.mkdirSync(dir);
    const p = path.join(dir, name);
    make(p);
    fn(p, kind);
  }
}

test('files.ts: regular files only, non-blocking (a FIFO without writer does not block), bounded text', () => {
  each('x', (p, kind) => {
    expectRefused(`openRegularFile ${kind}`, () => openRegularFile(p));
    expectRefused(`readTextFile ${kind}`, () => readTextFile(p));
  });
  const big = path.join(tmp, 'big.json');
  fs.writeFileSync(big, '');
  fs.truncateSync(big, 65 * 2 ** 20); // sparse: 65 MB of zeros, no disk used
  expectRefused('oversized text', () => readJsonFile(big), /is 68157440 bytes, more than the 67108864 bytes allowed/);
  expectRefused('small bound', () => readTextFile(big, { maxBytes: 10, what: 'config' }), /config is 68157440 bytes, more than the 10 bytes allowed/);
  assert.instance((() => { try { readTextFile(big, { maxBytes: 1 }); } catch (e) { return e; } })(), FileRefusedError);
});

test('weights, checkpoints, configs, schedulers: FIFO / /dev/zero / folder refused by each reader', () => {
  each('model.safetensors', (p, kind) => expectRefused(`safetensors ${kind}`, () => SafetensorsFile.open(p)));
  each('ViT-L-14.pt', (p, kind) => expectRefused(`torch ${kind}`, () => TorchCheckpoint.open(p)));
  each('config.json', (p, kind) => expectRefused(`config.json ${kind}`, () => readJson(p)));
  each('scheduler_config.json', (p, kind) => expectRefused(`scheduler ${kind}`, () => UnCLIPScheduler.fromDir(path.dirname(p))));
});

test('tokenizer files and Karlo YAML configs: FIFO / /dev/zero / folder refused', () => {
  const src = path.join(ROOT, 'models', 'karlo-tiny', 'tokenizer');
  for (const f of ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json']) {
    each(f, (p, kind) => {
      for (const other of ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json']) {
        if (other !== f) fs.copyFileSync(path.join(src, other), path.join(path.dirname(p), other));
      }
      expectRefused(`tokenizer ${f} ${kind}`, () => CLIPTokenizer.fromDir(path.dirname(p)));
    });
  }
  each(CONFIG_FILES.prior, (p, kind) => {
    for (const f of Object.values(CONFIG_FILES)) if (f !== CONFIG_FILES.prior) fs.writeFileSync(path.join(path.dirname(p), f), 'model:\n  hparams:\n    a: 1\n');
    expectRefused(`yaml ${kind}`, () => readKarloConfigs(path.dirname(p)));
  });
});

test('inspect: a FIFO or /dev/zero link as the weights file of a component folder is refused', () => {
  each('model.safetensors', (p, kind) => {
    if (kind.includes('folder')) return; // a folder named *.safetensors: not a weights file at all
    fs.writeFileSync(path.join(path.dirname(p), 'config.json'), '{}');
    expectRefused(`inspect ${kind}`, () => inspectPath(path.dirname(p)));
  });
});

function karlo(args: string[]) {
  return spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { encoding: 'utf8', timeout: 30_000 });
}

test('CLI: inspect, convert and generate on a FIFO end in one line, exit 2 (they blocked forever before)', () => {
  const comp = path.join(tmp, 'cli-comp');
  fs.mkdirSync(comp);
  execFileSync('mkfifo', [path.join(comp, 'model.safetensors')]);
  let r = karlo(['inspect', comp]);
  assert.is(r.status, 2, `inspect: ${r.stderr} (signal ${r.signal})`);
  assert.match(r.stderr, /model\.safetensors: safetensors file is a FIFO/);
  assert.is(r.stderr.trim().split('\n').length, 1);

  const rel = path.join(tmp, 'cli-rel');
  fs.mkdirSync(rel);
  execFileSync('mkfifo', [path.join(rel, 'ViT-L-14.pt')]);
  r = karlo(['convert', '--from-original', rel, '--only', 'text_encoder', '--out', path.join(tmp, 'cli-out')]);
  assert.is(r.status, 2, `convert: ${r.stderr} (signal ${r.signal})`);
  assert.match(r.stderr, /ViT-L-14\.pt: checkpoint is a FIFO/);

  const model = path.join(tmp, 'cli-model');
  fs.cpSync(path.join(ROOT, 'models', 'karlo-tiny'), model, { recursive: true, dereference: true });
  fs.rmSync(path.join(model, 'decoder', 'config.json'));
  fs.symlinkSync('/dev/zero', path.join(model, 'decoder', 'config.json'));
  r = karlo(['generate', 'a frog', '--model', model, '--out', path.join(tmp, 'f.png'), '--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2', '--backend', 'cpu']);
  assert.is(r.status, 2, `generate: ${r.stderr} (signal ${r.signal})`);
  assert.match(r.stderr, /config\.json: JSON file is a character device, not a regular file; refused/);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
