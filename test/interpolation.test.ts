// Interpolation: the community text interpolation vs diffusers on fixtures/interpolation (slerp restated on the
// recorded inputs ≤ 1e-6, linspace exact, the whole run through the `karlo parity` kind), the proper slerp's
// properties (norm kept, great circle, exact ends), image → image (end frames = `vary` of each input with the same
// seed, embeddings' norm kept), and the `karlo vary` / `karlo interpolate` commands on the default model.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { availableBackends } from '../src/backend/index.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { readPng } from '../src/io/png.js';
import { PARITY_KINDS } from '../src/parity/registry.js';
import { interpolateImages, slerpDiffusers, slerpProper, torchLinspace } from '../src/pipeline/interpolation.js';
import { UnCLIPImageVariationPipeline } from '../src/pipeline/variation_pipeline.js';
import { contactSheet, frameLabels } from '../src/cli/commands/interpolate.js';
import { backendsUnderTest, fixture, useBackend } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const backends = await backendsUnderTest();
const fastBackend = !process.env.KARLO_TEST_BACKENDS && (await availableBackends(['wasm'])).length ? 'wasm' : backends[0];
const INTERP = fixture('interpolation');
const ref = loadSafetensors(path.join(INTERP, 'run.safetensors'));

test('torch.linspace restated: the recorded interp_vals exactly, and torch\'s two-sided fill', () => {
  assert.equal(Array.from(torchLinspace(3)), Array.from(ref.get('interp_vals')!.data as Float32Array));
  const f = Math.fround, s = f(1 / 6);
  const v = torchLinspace(7);
  assert.is(v[0], 0); assert.is(v[6], 1);
  assert.is(v[2], f(f(2 * s)));       // first half from the start
  assert.is(v[4], f(1 - f(2 * s)));   // second half from the end
});

test('diffusers slerp restated: interp.* from the recorded text encoder outputs within 1e-6', () => {
  const te = ref.get('text_encoder.text_embeds')!, lhs = ref.get('text_encoder.last_hidden_state')!;
  const vals = ref.get('interp_vals')!.data as Float32Array;
  const D = te.shape[1], n = lhs.shape[1] * lhs.shape[2];
  let worst = 0;
  for (let k = 0; k < 3; k++) {
    const e = slerpDiffusers(vals[k], (te.data as Float32Array).subarray(0, D), (te.data as Float32Array).subarray(D));
    const h = slerpDiffusers(vals[k], (lhs.data as Float32Array).subarray(0, n), (lhs.data as Float32Array).subarray(n));
    const re = (ref.get('interp.text_embeds')!.data as Float32Array).subarray(k * D, (k + 1) * D);
    const rh = (ref.get('interp.last_hidden_state')!.data as Float32Array).subarray(k * n, (k + 1) * n);
    e.forEach((x, i) => { worst = Math.max(worst, Math.abs(x - re[i])); });
    h.forEach((x, i) => { worst = Math.max(worst, Math.abs(x - rh[i])); });
  }
  assert.ok(worst <= 1e-6, `max abs err ${worst}`);
});

test('proper slerp: exact ends, norm interpolated linearly (kept when equal), angle to the start = t·Ω', () => {
  const a = Float64Array.from({ length: 16 }, (_, i) => Math.sin(i + 1));
  const b0 = Float64Array.from({ length: 16 }, (_, i) => Math.cos(3 * i));
  const norm = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((s, v) => s + v * v, 0));
  const b = b0.map((v) => (v * norm(a)) / norm(b0)); // same norm as a
  assert.equal(Array.from(slerpProper(0, a, b)), Array.from(Float32Array.from(a)));
  assert.equal(Array.from(slerpProper(1, a, b)), Array.from(Float32Array.from(b)));
  const dot = (x: ArrayLike<number>, y: ArrayLike<number>) => Array.from(x).reduce((s, v, i) => s + v * y[i], 0);
  const omega = Math.acos(dot(a, b) / (norm(a) * norm(b)));
  for (const t of [0.25, 0.5, 0.8]) {
    const r = slerpProper(t, a, b);
    assert.ok(Math.abs(norm(r) - norm(a)) < 1e-5 * norm(a), `norm at t=${t}: ${norm(r)} vs ${norm(a)}`);
    assert.ok(Math.abs(Math.acos(dot(r, a) / (norm(r) * norm(a))) - t * omega) < 1e-5, `angle at t=${t}`);
    // unequal norms: linear in t
    const r2 = slerpProper(t, a, b.map((v) => 3 * v));
    assert.ok(Math.abs(norm(r2) - ((1 - t) * norm(a) + t * 3 * norm(a))) < 1e-5 * norm(a));
  }
  // row-wise (tokens of last_hidden_state): each row keeps its own norm
  const r = slerpProper(0.5, [3, 4, 0, 1], [4, 3, 1, 0], 2);
  assert.ok(Math.abs(Math.hypot(r[0], r[1]) - 5) < 1e-6 && Math.abs(Math.hypot(r[2], r[3]) - 1) < 1e-6);
  // on the fixture's text embeddings (|a| ≈ |b| ≈ 3.41) the diffusers version leaves the sphere at t = 0.5
  // (norm ≈ 4.29), the proper one keeps it
  const te = ref.get('text_encoder.text_embeds')!.data as Float32Array;
  const [ta, tb] = [te.subarray(0, 16), te.subarray(16)];
  assert.ok(norm(slerpDiffusers(0.5, ta, tb)) > 1.2 * norm(ta), 'diffusers slerp leaves the sphere');
  assert.ok(Math.abs(norm(slerpProper(0.5, ta, tb)) - (norm(ta) + norm(tb)) / 2) < 1e-5 * norm(ta), 'proper slerp keeps the norm');
});

test(`[${fastBackend}] karlo parity on fixtures/interpolation: kind "interpolation", every tensor within tolerance`, async () => {
  await useBackend(fastBackend);
  const base = tf.memory().numTensors;
  const kind = PARITY_KINDS.find((k) => k.detect(INTERP));
  assert.is(kind?.name, 'interpolation');
  const cs = await kind!.run(INTERP, {});
  const bad = cs.filter((c) => !c.ok);
  const img = cs.find((c) => c.name.startsWith('output.images_np_NHWC'));
  console.log(`  ${cs.length} tensors compared; image max abs err ${img?.maxAbs.toExponential(2)}`);
  assert.ok(bad.length === 0, bad.map((c) => `${c.name}: ${c.maxAbs} > ${c.allowed}`).join('\n'));
  for (const re of [/^interp\.text_embeds$/, /^interp\.last_hidden_state$/, /^interp\.attention_mask$/, /^text_encoder\.input_ids$/, /^randn\.008\.unclip_text_interpolation$/, /^cap\.text_mask$/, /^output\.images_np_NHWC/]) {
    assert.ok(cs.some((c) => re.test(c.name)), `no comparison matching ${re}`);
  }
  assert.is(tf.memory().numTensors, base, 'numTensors back to baseline');
});

test(`[${fastBackend}] image interpolation: end frames = vary() of each input with the same seed; embeddings' norm kept; no leak`, async () => {
  await useBackend(fastBackend);
  const pipe = await UnCLIPImageVariationPipeline.load(fixture('variation_tiny'));
  const A = fixture('clip_vision', 'synthetic.png'), B = fixture('images', 'rgb.png');
  const base = tf.memory().numTensors;
  const opts = { decoderSteps: 3, superResSteps: 2, seed: 11 };
  let pair: Float32Array | undefined, path3: Float32Array | undefined;
  const res = await interpolateImages(pipe, A, B, {
    ...opts, steps: 3,
    onIntermediate: (name, t) => {
      if (name === 'image_encoder_image_embeds') pair = t.dataSync().slice() as Float32Array;
      if (name === 'interp.image_embeds') path3 = t.dataSync().slice() as Float32Array;
    },
  });
  assert.equal(res.shape, [3, 64, 64, 3]);
  assert.equal(res.t, [0, 0.5, 1]);
  const va = await pipe.vary([A], opts), vb = await pipe.vary([B], opts);
  const frame = (k: number) => res.images.subarray(k * 64 * 64 * 3, (k + 1) * 64 * 64 * 3);
  const maxDiff = (x: ArrayLike<number>, y: ArrayLike<number>) => { let m = 0; for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i])); return m; };
  const dA = maxDiff(frame(0), va.images), dB = maxDiff(frame(2), vb.images);
  console.log(`  end frames vs vary(): max abs ${dA.toExponential(2)}, ${dB.toExponential(2)}`);
  assert.ok(dA <= 1e-4 && dB <= 1e-4, `end frames differ from vary(): ${dA}, ${dB}`);
  assert.ok(maxDiff(frame(1), frame(0)) > 1e-3, 'the middle frame differs from the ends');
  // the slerped embeddings: ends exact, the middle norm = mean of the two norms
  const D = 16;
  const nrm = (x: Float32Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0));
  assert.equal(Array.from(path3!.subarray(0, D)), Array.from(pair!.subarray(0, D)));
  assert.equal(Array.from(path3!.subarray(2 * D)), Array.from(pair!.subarray(D)));
  const mid = nrm(path3!.subarray(D, 2 * D)), want = (nrm(pair!.subarray(0, D)) + nrm(pair!.subarray(D))) / 2;
  assert.ok(Math.abs(mid - want) < 1e-5 * want, `middle norm ${mid} vs ${want}`);
  assert.is(tf.memory().numTensors, base, 'numTensors back to baseline');
  pipe.dispose();
});

test('contact sheet: frames in a row, white background, a label under each; labels stay distinct', () => {
  const f = (v: number) => ({ width: 8, height: 6, channels: 3 as const, data: new Uint8Array(8 * 6 * 3).fill(v) });
  const sheet = contactSheet([f(10), f(200)], ['t=0.00', 't=1.00']);
  assert.is(sheet.height, 4 + 6 + 8 + 8);
  assert.is(sheet.data[(4 * sheet.width + 4) * 3], 10);
  assert.is(sheet.data[(4 * sheet.width + 4 + 8 + 4) * 3], 200);
  const labelRows = sheet.data.subarray((4 + 6 + 4) * sheet.width * 3, (4 + 6 + 4 + 8) * sheet.width * 3);
  assert.ok(labelRows.some((v) => v === 0), 'some label pixels are black');
  assert.equal(frameLabels([0, 0.5, 1]), ['t=0.00', 't=0.50', 't=1.00']);
  assert.equal(frameLabels([0, 0.001, 1]), ['t=0.000', 't=0.001', 't=1.000']);
});

test('karlo vary and karlo interpolate write their images on the default model (karlo-nano, one folder for both)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-interp-cli-'));
  const karlo = (args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { cwd: tmp, encoding: 'utf8', timeout: 180_000 });
  try {
    const img = fixture('clip_vision', 'synthetic.png');
    let r = karlo(['vary', img, '--out', 'v.png', '--decoder-steps', '2', '--sr-steps', '2', '--seed', '1', '--json']);
    assert.is(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.images, ['v.png']);
    assert.is(readPng(path.join(tmp, 'v.png')).width, 128);
    assert.match(r.stderr, /no --model given, using the bundled karlo-nano/);
    r = karlo(['interpolate', '--from', 'a frog', '--to', 'a fox', '--steps', '3', '--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2', '--out', 'i.png', '--seed', '2']);
    assert.is(r.status, 0, r.stderr);
    for (const f of ['i-0.png', 'i-1.png', 'i-2.png']) assert.is(readPng(path.join(tmp, f)).width, 128);
    const sheet = readPng(path.join(tmp, 'i-sheet.png'));
    assert.ok(sheet.width > 3 * 128 && sheet.height > 128);
    assert.match(r.stdout, /slerp proper · t = 0\.000, 0\.500, 1\.000/);
    // one line, exit 2: a text-to-image folder for vary, both modes at once, an existing output
    r = karlo(['vary', img, '--model', fixture('pipeline_tiny'), '--out', 'w.png']);
    assert.is(r.status, 2);
    assert.match(r.stderr, /text-to-image Karlo folder \(UnCLIPPipeline\): image variation needs kakaobrain\/karlo-v1-alpha-image-variations/);
    r = karlo(['interpolate', '--from', 'a', '--to-image', img]);
    assert.is(r.status, 2);
    assert.match(r.stderr, /either --from\/--to .* or --from-image\/--to-image/);
    r = karlo(['vary', img, '--out', 'v.png']);
    assert.is(r.status, 2);
    assert.match(r.stderr, /v\.png exists; pass --force/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
