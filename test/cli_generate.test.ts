// `karlo generate` on the default model (karlo-nano) and the bundled tiny model: writes a valid PNG equal to the pipeline's output (decoded and
// compared pixel by pixel), --json, refuses to overwrite without --force, bad arguments → one line, exit 2.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodePng, encodePng, floatToRgb8, readPng } from '../src/io/png.js';
import { UnCLIPPipeline } from '../src/pipeline/unclip_pipeline.js';
import { BUNDLED_MODEL_DIR, outputPaths } from '../src/cli/commands/generate.js';
import { DEFAULT_MODEL_DIR } from '../src/package_root.js';
import { backendsUnderTest, useBackend } from './helpers.js';
import { availableBackends } from '../src/backend/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The fastest backend here: these tests are about the command, not numerics (those are in pipeline.test.ts).
const backend = !process.env.KARLO_TEST_BACKENDS && (await availableBackends(['wasm'])).length ? 'wasm' : (await backendsUnderTest())[0];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-gen-'));
const FAST = ['--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2'];

// The bundled tiny model with decoder 8×8 and super-res 32×32 (same weights; the UNets are fully convolutional).
const MINI = path.join(tmp, 'mini');
fs.cpSync(BUNDLED_MODEL_DIR, MINI, { recursive: true });
for (const [c, size] of [['decoder', 8], ['super_res_first', 32], ['super_res_last', 32]] as const) {
  const f = path.join(MINI, c, 'config.json');
  fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, 'utf8')), sample_size: size }));
}

function karlo(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { cwd: tmp, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('png: encode → decode round trip (grey, RGB, RGBA), filters of other writers, bad files named', () => {
  for (const channels of [1, 3, 4] as const) {
    const data = Uint8Array.from({ length: 5 * 3 * channels }, (_, i) => (i * 37) % 256);
    const img = decodePng(encodePng({ width: 5, height: 3, channels, data }));
    assert.equal([img.width, img.height, img.channels], [5, 3, channels]);
    assert.equal(Array.from(img.data), Array.from(data));
  }
  // the fixture PNG (written by PIL, which uses adaptive filters): 2 images side by side, 128×64 RGB
  const ref = readPng(path.join(ROOT, 'test/fixtures/pipeline_tiny/run.png'));
  assert.equal([ref.width, ref.height, ref.channels], [128, 64, 3]);
  assert.throws(() => decodePng(Buffer.from('not a png'), 'x.png'), /x\.png: not a PNG file/);
  // float → 8 bit like diffusers' numpy_to_pil: round half to even of x·255 in float32
  const rgb = floatToRgb8(Float32Array.from([0, 0.5, 1, -3, 7, NaN]), [1, 1, 2, 3]);
  assert.equal(Array.from(rgb.data), [0, 128, 255, 0, 255, 0]);
});

test('generate: writes a PNG equal to the pipeline output (same seed and settings), --json lists it with timings', async () => {
  const out = path.join(tmp, 'frog.png');
  const r = karlo(['generate', 'a red frog', '--out', out, '--seed', '3', ...FAST, '--backend', backend, '--json']);
  assert.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.images, [out]);
  for (const s of ['text', 'prior', 'decoder', 'super_res']) assert.ok(j.timings.stages[s].totalSeconds > 0, s);
  assert.ok(j.timings.peakRssMB > 0);
  assert.match(r.stderr, /no --model given, using the bundled karlo-nano/, 'names the default model');
  assert.match(r.stderr, /^decoder: 2\/2 steps/m, 'a progress line per stage');
  const png = readPng(out);
  const size = JSON.parse(fs.readFileSync(path.join(DEFAULT_MODEL_DIR, 'super_res_first', 'config.json'), 'utf8')).sample_size;
  assert.equal([png.width, png.height, png.channels], [size, size, 3]);
  await useBackend(backend);
  const res = await (await UnCLIPPipeline.load(DEFAULT_MODEL_DIR)).generate(['a red frog'], { seed: 3, priorSteps: 2, decoderSteps: 2, superResSteps: 2 });
  assert.equal(Array.from(png.data), Array.from(floatToRgb8(res.images, res.shape, 0).data));
  assert.equal(fs.readdirSync(tmp).filter((n) => n.endsWith('.tmp')), [], 'no temporary files left');
});

test('generate: refuses to overwrite without --force (file untouched), overwrites with it; timing table without --json', () => {
  const out = path.join(tmp, 'keep.png');
  fs.writeFileSync(out, 'precious');
  const r = karlo(['generate', 'a frog', '--out', out, '--model', MINI, ...FAST, '--backend', backend]);
  assert.is(r.code, 2);
  assert.is(r.stderr.trim().split('\n').filter((l) => !/^seed: /.test(l)).length, 1, r.stderr);
  assert.match(r.stderr, /keep\.png exists; pass --force/);
  assert.is(fs.readFileSync(out, 'utf8'), 'precious');
  const f = karlo(['generate', 'a frog', '--out', out, '--model', MINI, ...FAST, '--backend', backend, '--force', '--num-images', '2']);
  assert.is(f.code, 0, f.stderr);
  assert.equal(outputPaths(out, 2), [path.join(tmp, 'keep-0.png'), path.join(tmp, 'keep-1.png')]);
  for (const p of outputPaths(out, 2)) assert.is(readPng(p).width, 32);
  assert.match(f.stdout, /super-res\s+[\d.]+\s+2\s+[\d.]+\s+[\d.]+/, 'timing table row');
  assert.match(f.stdout, /peak RSS \d+ MB/);
});

test('generate: bad input → one line on stderr, exit 2', () => {
  const cases: [string[], RegExp][] = [
    [['generate', 'a frog', '--prior-steps', '1'], /--prior-steps must be an integer in \[2, 1000\]/],
    [['generate', 'a frog', '--decoder-guidance', 'lots'], /--decoder-guidance must be a number/],
    [['generate', 'a frog', '--num-images', '0'], /--num-images must be a positive integer/],
    [['generate', 'a frog', '--seed=-4'], /--seed must be a non-negative integer/],
    [['generate', 'a frog', '--preset', 'slow'], /--preset must be one of fast, default/],
    [['generate', 'a frog', '--model', path.join(tmp, 'nope')], /nope: model folder does not exist/],
    [['generate', 'a frog', '--model', tmp], /model_index\.json: missing/],
    [['generate', 'a frog', '--backend', 'quantum'], /--backend must be one of .*; got "quantum"/],
    [['generate', 'a frog', '--out', path.join(tmp, 'no', 'such', 'dir', 'x.png')], /folder .* does not exist/],
    [['generate', ''], /prompts must not be empty/],
  ];
  for (const [args, re] of cases) {
    const r = karlo([...args, ...(args.includes('--model') ? [] : ['--model', MINI]), ...(args.includes('--backend') ? [] : ['--backend', backend])]);
    assert.is(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    const lines = r.stderr.trim().split('\n').filter((l) => !/^note: |^backend: |^seed: |^warning: /.test(l));
    assert.is(lines.length, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(lines[0], re);
  }
});

test('generate --save-intermediates: decoder and super-res previews as PNGs next to the output', () => {
  const out = path.join(tmp, 'inter.png');
  const r = karlo(['generate', 'a frog', '--out', out, '--model', MINI, ...FAST, '--backend', backend, '--save-intermediates', '--json']);
  assert.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  const names = j.intermediates.map((p: string) => path.basename(p));
  assert.ok(names.includes('decoder-step000-t999-img0.png'), names.join(' '));
  assert.ok(names.includes('decoder-final-img0.png'));
  assert.ok(names.some((n: string) => n.startsWith('super_res-step001')));
  assert.is(readPng(path.join(tmp, 'inter.intermediates', 'decoder-final-img0.png')).width, 8);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
