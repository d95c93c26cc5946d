// Failing before the first step (issue 17 items 2-3, issue 18 item 8): UnCLIPPipeline.load checks the whole folder
// (configs against their classes, weight headers against file sizes, tensor names and shapes against the model
// built from the config, the tokenizer against the text encoder, scheduler configs) and throws one line naming the
// file and the key; `karlo generate` on such a folder says that line and exits 2 within seconds, before any stage
// runs; output paths that cannot be written are refused before the pipeline starts. load() initialises a backend
// when the program chose none (never silently the pure-JS cpu one), and says when it runs on wasm/cpu.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ModelFolderError } from '../src/io/model_folder.js';
import { UnCLIPPipeline } from '../src/pipeline/unclip_pipeline.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TINY = path.join(ROOT, 'models', 'karlo-tiny');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-loadcheck-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of the tiny model (weights linked, not copied) with `edit` applied. */
function broken(name: string, edit: (dir: string) => void): string {
  const dir = path.join(tmp, name);
  fs.cpSync(TINY, dir, { recursive: true, filter: (src) => !/run[^/]*$/.test(path.basename(src)) });
  edit(dir);
  return dir;
}
const editJson = (file: string, fn: (j: Record<string, unknown>) => void) => {
  const j = JSON.parse(fs.readFileSync(file, 'utf8'));
  fn(j);
  fs.writeFileSync(file, JSON.stringify(j));
};

async function loadError(dir: string): Promise<Error> {
  const t0 = performance.now();
  try {
    await UnCLIPPipeline.load(dir, { backend: 'cpu', log: () => {} });
  } catch (e) {
    assert.ok(performance.now() - t0 < 20_000, 'the check must take seconds');
    return e as Error;
  }
  throw new Error(`${dir}: load accepted a broken folder`);
}

const TRUNCATED = broken('truncated', (d) => {
  const f = path.join(d, 'super_res_last', 'diffusion_pytorch_model.safetensors');
  fs.truncateSync(f, Math.floor(fs.statSync(f).size / 2));
});

test('load: a truncated super_res_last (interrupted git-lfs pull) fails at load, one line naming the file', async () => {
  const e = await loadError(TRUNCATED);
  assert.instance(e, ModelFolderError);
  assert.not.match(e.message, /\n/);
  assert.match(e.message, /super_res_last[\\/]diffusion_pytorch_model\.safetensors: .*past the end of the file/);
  assert.match(e.message, /component "super_res_last"/);
});

test('load: a decoder config that does not fit its weights names the weights file, the tensor and both shapes', async () => {
  const dir = broken('decoder_cfg', (d) => editJson(path.join(d, 'decoder', 'config.json'), (j) => { j.block_out_channels = [32, 32, 96]; }));
  const e = await loadError(dir);
  assert.instance(e, ModelFolderError);
  assert.not.match(e.message, /\n/);
  assert.match(e.message, /decoder[\\/]diffusion_pytorch_model\.safetensors: tensor "[^"]+" (has shape \[[\d,]+\], the model built from .*decoder[\\/]config\.json expects \[[\d,]+\]|is missing)/);
});

test('load: a config value the class refuses, a bad scheduler config, a tokenizer too big for the text encoder', async () => {
  const act = broken('act', (d) => editJson(path.join(d, 'text_encoder', 'config.json'), (j) => { j.hidden_act = 'swish42'; }));
  const e1 = await loadError(act);
  assert.instance(e1, ModelFolderError);
  assert.match(e1.message, /text_encoder[\\/]config\.json.*hidden_act/);
  assert.match(e1.message, /component "text_encoder"/);

  const sched = broken('sched', (d) => editJson(path.join(d, 'decoder_scheduler', 'scheduler_config.json'), (j) => { j.variance_type = 'bogus'; }));
  const e2 = await loadError(sched);
  assert.instance(e2, ModelFolderError);
  assert.match(e2.message, /decoder_scheduler[\\/]scheduler_config\.json.*variance_type/);

  const tok = broken('tok', (d) => editJson(path.join(d, 'tokenizer', 'vocab.json'), (j) => { j['zzfrog</w>'] = 60000; }));
  const e3 = await loadError(tok);
  assert.instance(e3, ModelFolderError);
  assert.match(e3.message, /tokenizer[\\/]vocab\.json: token id 60000 does not fit the text encoder's vocab_size 49408/);
});

test('load: an integer tensor where the model has a float parameter is refused at load, naming the tensor', async () => {
  const dir = broken('int_dtype', (d) => {
    const f = path.join(d, 'text_proj', 'diffusion_pytorch_model.safetensors');
    const b = fs.readFileSync(f);
    const n = Number(b.readBigUInt64LE(0));
    const header = b.subarray(8, 8 + n).toString('utf8');
    const patched = header.replace(/("clip_extra_context_tokens_proj\.bias":\{"dtype":")F32/, '$1I32');
    assert.is.not(patched, header);
    Buffer.from(patched, 'utf8').copy(b, 8);
    fs.writeFileSync(f, b);
  });
  const e = await loadError(dir);
  assert.instance(e, ModelFolderError);
  assert.match(e.message, /text_proj[\\/]diffusion_pytorch_model\.safetensors: tensor "clip_extra_context_tokens_proj\.bias" is I32/);
});

test('load: the intact tiny model passes the check', async () => {
  const pipe = await UnCLIPPipeline.load(TINY, { backend: 'cpu', log: () => {} });
  assert.ok(pipe.dims.embeddingDim > 0);
});

function karlo(args: string[], cwd = tmp) {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { cwd, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, seconds: (performance.now() - t0) / 1000 };
}

test('generate on a truncated folder: seed printed first, one error line naming the file, exit 2, no stage ran', () => {
  const r = karlo(['generate', 'a frog', '--model', TRUNCATED, '--out', path.join(tmp, 'frog.png'), '--backend', 'cpu']);
  assert.is(r.code, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.match(lines[0], /^seed: \d+$/);
  const errors = lines.filter((l) => /^karlo: /.test(l));
  assert.is(errors.length, 1, r.stderr);
  assert.match(errors[0], /super_res_last.*past the end of the file/);
  assert.not.match(r.stderr, /text encoder|prior|decoder +\[|\n\s+at /);
  assert.not.ok(fs.existsSync(path.join(tmp, 'frog.png')));
});

test('generate: output paths are checked before the pipeline runs (non-PNG name, a folder name, a missing folder)', () => {
  for (const [out, why] of [['frog.jpg', /karlo writes PNG images; use a \.png name \(not \.jpg\)/], ['pics/', /names a folder/], ['nowhere/frog.png', /does not exist/]] as const) {
    const r = karlo(['generate', 'a frog', '--out', out]);
    assert.is(r.code, 2, `${out}: ${r.stderr}`);
    const errors = r.stderr.trim().split('\n').filter((l) => /^karlo: /.test(l));
    assert.is(errors.length, 1, r.stderr);
    assert.match(errors[0], why);
    assert.not.match(r.stderr, /backend:|text encoder/);
  }
  assert.equal(fs.readdirSync(tmp).filter((n) => /frog/.test(n)), []);
});

test('load without a backend chosen initialises the best available (not the pure-JS cpu), one short line; cpu warns with the fix', () => {
  const script = (backend: string) => [
    "import * as tf from '@tensorflow/tfjs-core';",
    "import { UnCLIPPipeline } from './src/index.js';",
    `await UnCLIPPipeline.load(${JSON.stringify(TINY)}${backend ? `, { backend: ${JSON.stringify(backend)} }` : ''});`,
    'console.log(tf.getBackend());',
  ].join('\n');
  const run = (backend: string) => spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script(backend)],
    { cwd: ROOT, encoding: 'utf8', timeout: 60_000, env: { ...process.env, KARLO_BACKEND: '' } });
  const auto = run('');
  assert.is(auto.status, 0, auto.stderr);
  assert.is.not(auto.stdout.trim(), 'cpu');
  const line = auto.stderr.trim().split('\n').find((l) => l.startsWith('backend: '));
  assert.ok(line && line.length < 80, auto.stderr);
  assert.ok(line!.startsWith(`backend: ${auto.stdout.trim()}`), auto.stderr);
  const cpu = run('cpu');
  assert.is(cpu.status, 0, cpu.stderr);
  assert.is(cpu.stdout.trim(), 'cpu');
  const warn = cpu.stderr.split('\n').filter((l) => l.startsWith('warning: '));
  assert.is(warn.length, 1, cpu.stderr);
  assert.match(warn[0], /cpu backend .*300x slower.*npm rebuild karlo-tfjs/);
});

test('karlo convert warns when the folder it wrote would not pass the load check (the toy original release: a 320-token text encoder with the full CLIP tokenizer)', () => {
  const orig = path.join(ROOT, 'test', 'fixtures', 'original_ckpt', 'original');
  const out = path.join(tmp, 'converted');
  const r = karlo(['convert', '--from-original', orig, '--configs', path.join(orig, 'configs'), '--out', out]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /^warning: .*converted will not load: .*tokenizer[\\/]vocab\.json: token id 49407 does not fit the text encoder's vocab_size 320/m);
});

test.run();
