// Issue 18 items 1, 7 and 12 (generate): --out --force replaces only regular files (a device, FIFO or symlink at
// the path is refused, /dev/null stays a device); the memory a call needs is estimated from configs and arguments
// before anything is allocated and refused with the estimate (--num-images 1e9 / 1e300, a decoder config with
// sample_size 8192), --max-memory moves the bound; NaN weights give a load warning and an image warning.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { availableBackends } from '../src/backend/index.js';
import { writeFileAtomic } from '../src/io/png.js';
import { whyNotReplaceable } from '../src/io/files.js';
import { estimateGenerateMemory, memoryRefusal, parseBytes } from '../src/pipeline/memory_estimate.js';
import { SafetensorsFile, saveSafetensors } from '../src/io/safetensors.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The fastest backend here (these tests are about files and processes, not numerics).
const BACKEND = (await availableBackends(['native'])).length ? 'native' : (await availableBackends(['wasm'])).length ? 'wasm' : 'cpu';
const TINY = path.join(ROOT, 'models', 'karlo-tiny');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hard-gen-'));
const FAST = ['--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2', '--backend', BACKEND];

function karlo(args: string[]) {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { cwd: tmp, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: performance.now() - t0 };
}

function oneLine(r: { code: number | null; stderr: string }, re: RegExp, what: string): void {
  assert.is(r.code, 2, `${what}: ${r.stderr}`);
  assert.is(r.stderr.trim().split('\n').filter((l) => l.startsWith('karlo: ')).length, 1, `${what}: ${r.stderr}`);
  assert.not.match(r.stderr, /internal error|^\s+at /m, `${what}: ${r.stderr}`);
  assert.match(r.stderr, re, what);
}

test('--out --force: a char device, a FIFO, a symlink are refused and stay as they were', () => {
  const fifo = path.join(tmp, 'fifo.png');
  execFileSync('mkfifo', [fifo]);
  const link = path.join(tmp, 'link.png');
  fs.writeFileSync(path.join(tmp, 'target.png'), 'keep');
  fs.symlinkSync(path.join(tmp, 'target.png'), link);
  const targets: [string, RegExp][] = [[fifo, /is a FIFO/], [link, /is a symbolic link/]];
  let dev: string | null = path.join(tmp, 'null.png');
  try { execFileSync('mknod', [dev, 'c', '1', '3'], { stdio: 'ignore' }); targets.push([dev, /is a character device/]); } catch { dev = null; }
  const devLink = path.join(tmp, 'devnull.png');
  fs.symlinkSync('/dev/null', devLink);
  targets.push([devLink, /is a symbolic link/]);
  for (const [f, re] of targets) {
    const r = karlo(['generate', 'a frog', '--out', f, '--force', ...FAST]);
    oneLine(r, re, f);
    assert.ok(r.ms < 15_000, `${f}: refused before the pipeline runs (${r.ms.toFixed(0)} ms)`);
    assert.match(r.stderr, /only regular files are ever replaced/);
  }
  // /dev/null itself (no .png name: refused for that, or as a device; never replaced)
  assert.is(karlo(['generate', 'a frog', '--out', '/dev/null', '--force', ...FAST]).code, 2);
  assert.ok(fs.lstatSync(fifo).isFIFO());
  assert.ok(fs.lstatSync(link).isSymbolicLink());
  assert.is(fs.readFileSync(path.join(tmp, 'target.png'), 'utf8'), 'keep');
  if (dev) assert.ok(fs.lstatSync(dev).isCharacterDevice());
  assert.ok(fs.statSync('/dev/null').isCharacterDevice());
  // the writer itself refuses too (defence in depth: other commands write through it)
  assert.throws(() => writeFileAtomic(fifo, Buffer.from('x')), /is a FIFO \(named pipe\); only regular files are ever replaced/);
  assert.is(whyNotReplaceable(path.join(tmp, 'absent.png')), null);
  fs.writeFileSync(path.join(tmp, 'regular.png'), 'old');
  writeFileAtomic(path.join(tmp, 'regular.png'), Buffer.from('new'));
  assert.is(fs.readFileSync(path.join(tmp, 'regular.png'), 'utf8'), 'new');
});

test('memory: --num-images 1e9 / 1e300 refused at once with the estimate; --max-memory moves the bound', () => {
  for (const n of ['1e9', '1e300']) {
    const r = karlo(['generate', 'a frog', '--num-images', n, '--out', path.join(tmp, 'm.png'), ...FAST]);
    oneLine(r, /this call would need about .* of memory .* more than the .* allowed; .*--max-memory/, `--num-images ${n}`);
    assert.ok(r.ms < 15_000, `--num-images ${n}: ${r.ms.toFixed(0)} ms`);
  }
  const r = karlo(['generate', 'a frog', '--num-images', '2', '--max-memory', '1M', '--out', path.join(tmp, 'm.png'), ...FAST]);
  oneLine(r, /more than the 1\.0 MB allowed/, '--max-memory 1M');
  oneLine(karlo(['generate', 'a frog', '--max-memory', 'lots', ...FAST]), /--max-memory must be an amount of bytes/, 'bad --max-memory');
  assert.is(parseBytes('64G'), 64e9);
  assert.is(parseBytes('1.5GiB'), 1.5 * 2 ** 30);
  assert.is(parseBytes('-1'), null);
  // in-process: the estimate grows with the batch; the bound decides
  const one = estimateGenerateMemory(TINY, { prompts: 1, numImagesPerPrompt: 1 });
  const many = estimateGenerateMemory(TINY, { prompts: 1, numImagesPerPrompt: 1000 });
  assert.ok(many.bytes > 100 * (one.bytes - 0.5e9), `${one.bytes} → ${many.bytes}`);
  assert.is(memoryRefusal(many, 1e15), null);
  assert.ok(memoryRefusal(many, 1e6));
});

test('memory, library: UnCLIPPipeline.generate refuses before allocating (MemoryEstimateError), maxMemoryBytes moves the bound', async () => {
  const { UnCLIPPipeline } = await import('../src/pipeline/unclip_pipeline.js');
  const { MemoryEstimateError } = await import('../src/pipeline/memory_estimate.js');
  const tf = await import('@tensorflow/tfjs-core');
  const pipe = await UnCLIPPipeline.load(TINY, { backend: BACKEND, log: () => {} } as never);
  const before = tf.memory().numTensors;
  for (const [opts, re] of [[{ numImagesPerPrompt: 1e9 }, /1000000000 images/], [{ maxMemoryBytes: 1000 }, /more than the 1\.0 KB allowed; .*maxMemoryBytes/]] as const) {
    try {
      await pipe.generate(['a frog'], { ...opts, priorSteps: 2, decoderSteps: 2, superResSteps: 2 });
      assert.unreachable('accepted');
    } catch (e) {
      assert.instance(e, MemoryEstimateError, (e as Error).stack);
      assert.match((e as Error).message, re);
    }
  }
  assert.is(tf.memory().numTensors, before, 'nothing allocated');
});

test('vary: --num-images 1e9 / 1e300 refused with the estimate; a FIFO --out refused even with --force', () => {
  const png = path.join(ROOT, 'models', 'karlo-tiny', 'run.png');
  for (const n of ['1e9', '1e300']) {
    oneLine(karlo(['vary', png, '--num-images', n, '--out', path.join(tmp, 'v.png'), '--backend', BACKEND]), /this call would need about .* of memory/, `vary --num-images ${n}`);
  }
  const fifo = path.join(tmp, 'vfifo.png');
  execFileSync('mkfifo', [fifo]);
  oneLine(karlo(['vary', png, '--out', fifo, '--force', '--backend', BACKEND]), /is a FIFO \(named pipe\); only regular files are ever replaced/, 'vary FIFO');
  assert.ok(fs.lstatSync(fifo).isFIFO());
});

test('memory: configs asking for 10^9 layers (prior, text encoder, UNet) are refused before any model is built', () => {
  for (const [comp, field] of [['prior', 'num_layers'], ['text_encoder', 'num_hidden_layers'], ['decoder', 'layers_per_block'], ['super_res_last', 'layers_per_block']] as const) {
    const m = path.join(tmp, `layers-${comp}`);
    fs.cpSync(TINY, m, { recursive: true, dereference: true });
    const f = path.join(m, comp, 'config.json');
    fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, 'utf8')), [field]: 1e9 }));
    const why = memoryRefusal(estimateGenerateMemory(m, { prompts: 1, numImagesPerPrompt: 1 }));
    assert.ok(why, `${comp}.${field} = 1e9 refused`);
    assert.match(why!, /check the model's configs/);
    if (comp === 'prior') {
      const r = karlo(['generate', 'a frog', '--model', m, '--out', path.join(tmp, 'l.png'), ...FAST]);
      oneLine(r, /largest stage prior: .* weights/, 'prior num_layers 1e9 (the build looped before)');
      assert.ok(r.ms < 15_000, `${r.ms.toFixed(0)} ms`);
    }
  }
});

test('memory: a decoder config with sample_size 8192 is refused before loading (it grew to GBs before)', () => {
  const m = path.join(tmp, 'big-decoder');
  fs.cpSync(TINY, m, { recursive: true, dereference: true });
  const f = path.join(m, 'decoder', 'config.json');
  fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, 'utf8')), sample_size: 8192 }));
  const r = karlo(['generate', 'a frog', '--model', m, '--out', path.join(tmp, 'b.png'), ...FAST]);
  oneLine(r, /largest stage decoder: .* activations\), more than/, 'sample_size 8192');
  assert.ok(r.ms < 15_000, `${r.ms.toFixed(0)} ms`);
});

test('NaN weights: one load warning for the component, and generate says the image is not finite', () => {
  const m = path.join(tmp, 'nan-model');
  fs.cpSync(TINY, m, { recursive: true, dereference: true });
  const wf = path.join(m, 'decoder', 'diffusion_pytorch_model.safetensors');
  const src = SafetensorsFile.open(wf);
  const tensors = new Map(src.names().map((n) => [n, { dtype: src.info(n).dtype, shape: src.info(n).shape, data: src.readBytes(n) }]));
  src.close();
  const name = 'conv_out.bias';
  const t = tensors.get(name)!;
  assert.ok(t, 'conv_out.bias exists');
  const f = new Float32Array(t.shape.reduce((a, b) => a * b, 1)).fill(NaN);
  tensors.set(name, { ...t, dtype: 'F32', data: new Uint8Array(f.buffer) });
  saveSafetensors(wf, tensors);
  const r = karlo(['generate', 'a frog', '--model', m, '--out', path.join(tmp, 'nan.png'), '--seed', '1', ...FAST]);
  assert.is(r.code, 0, r.stderr);
  const warnings = r.stderr.split('\n').filter((l) => /NaN or infinite/.test(l));
  assert.is(warnings.filter((l) => /decoder: \d+ weight values are NaN or infinite, in 1 tensor \(first: "conv_out\.bias"\)/.test(l)).length, 1, r.stderr);
  assert.ok(warnings.some((l) => /image 0 \(.*nan\.png\): \d+ of \d+ values are NaN or infinite/.test(l)), r.stderr);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
