// CLIPVisionModelWithProjection vs transformers on fixtures/clip_vision (image_embeds, last_hidden_state,
// pooler_output, every hidden state within 1e-4, on native, cpu and wasm), and CLIP image preprocessing vs
// CLIPImageProcessor + PIL 9.4: every resize bit-exact, pixel_values within 1e-6 at S = 32 and S = 224.
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors } from '../src/io/safetensors.js';
import { readJson } from '../src/io/weights.js';
import { readImage } from '../src/io/image.js';
import { decodePng } from '../src/io/png.js';
import * as fs from 'node:fs';
import { clipPreprocess, clipProcessorConfig, pilResizeBicubic, readClipProcessorConfig, shortestEdgeSize } from '../src/io/clip_preprocess.js';
import { clipVisionConfig } from '../src/models/clip_vision.js';
import { PARITY_KINDS } from '../src/parity/registry.js';
import { assertClose, fixture, parityBackends, useBackend } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

const dir = fixture('clip_vision');
const io = loadSafetensors(path.join(dir, 'io.safetensors'));
const pre = loadSafetensors(path.join(dir, 'preprocess.safetensors'));
const backends = await parityBackends();

for (const b of backends) {
  test(`[${b}] clip_vision: image_embeds, last_hidden_state, pooler_output, hidden_states.* within 1e-4; no leak`, async () => {
    await useBackend(b);
    const model = loadComponent(dir, 'CLIPVisionModelWithProjection');
    const base = tf.memory().numTensors;
    const pv = io.get('pixel_values')!;
    const x = tf.tensor4d(pv.data as Float32Array, pv.shape as [number, number, number, number]);
    const hooked = new Map<string, Float32Array>();
    model.setOutputHook((p, t) => { if (/^vision_model\.encoder\.layers\.\d+$/.test(p)) hooked.set(p, t.dataSync() as Float32Array); });
    const out = model.forward(x);
    model.setOutputHook(null);
    assertClose('image_embeds', out.imageEmbeds, io.get('image_embeds')!);
    assertClose('last_hidden_state', out.lastHiddenState, io.get('last_hidden_state')!);
    assertClose('pooler_output', out.poolerOutput, io.get('pooler_output')!);
    assert.is(out.hiddenStates.length, 3);
    out.hiddenStates.forEach((h, i) => assertClose(`hidden_states.${i}`, h, io.get(`hidden_states.${i}`)!));
    for (let i = 0; i < 2; i++) assertClose(`hook layers.${i}`, hooked.get(`vision_model.encoder.layers.${i}`)!, io.get(`hidden_states.${i + 1}`)!.data as Float32Array);
    tf.dispose([out.imageEmbeds, out.lastHiddenState, out.poolerOutput, ...out.hiddenStates, x]);
    assert.is(tf.memory().numTensors, base, 'numTensors back to baseline');
    model.dispose();
  });
}

test('clip_vision: state-dict keys are transformers\' keys; bad inputs and configs are clear errors', async () => {
  await useBackend(backends[0]);
  const model = loadComponent(dir, 'CLIPVisionModelWithProjection');
  const keys = model.namedParameters().map(([k]) => k);
  assert.ok(keys.includes('vision_model.embeddings.class_embedding'));
  assert.ok(keys.includes('vision_model.pre_layrnorm.weight'));
  assert.ok(keys.includes('visual_projection.weight'));
  assert.is(keys.length, 40); // 3 embeddings + 16 per layer × 2 + pre/post LayerNorm 4 + projection
  const bad = tf.zeros([1, 3, 16, 16]) as tf.Tensor4D;
  assert.throws(() => model.forward(bad), /pixel_values must be \[batch, 3, 32, 32\] \(NCHW\), got \[1,3,16,16\]/);
  bad.dispose();
  model.dispose();
  assert.throws(() => clipVisionConfig({ image_size: 30, patch_size: 8 }, 'c.json'), /c\.json: image_size = 30 is not supported by CLIPVisionModelWithProjection \(not a multiple of patch_size 8\)/);
  assert.throws(() => clipVisionConfig({ model_type: 'clip_text_model' }, 'c.json'), /not a CLIP vision model/);
  // a CLIPConfig's vision_config with the top-level projection_dim
  const c = clipVisionConfig({ model_type: 'clip', projection_dim: 768, vision_config: { hidden_size: 1024, patch_size: 14, num_hidden_layers: 24, num_attention_heads: 16, intermediate_size: 4096 } });
  assert.equal([c.hidden_size, c.projection_dim, c.patch_size, c.image_size], [1024, 768, 14, 224]);
});

test('PIL BICUBIC restated: every resize of the fixture folder bit-exact (shrink, grow, mixed, 32 and 224)', async () => {
  const src = await readImage(path.join(dir, 'synthetic.png'));
  const u8 = pre.get('image.synthetic.u8_HWC')!;
  assert.equal(Array.from(src.data), Array.from(u8.data, Number), 'decoded synthetic.png = the recorded pixels');
  const index = readJson<{ pil_resize: { width: number; height: number; file: string }[] }>(path.join(dir, 'index.json'));
  const cases = [
    ...index.pil_resize.map((r) => ({ w: r.width, h: r.height, file: r.file })),
    { w: 50, h: 32, file: 'preprocess_tiny.synthetic.resized.png' },
    { w: 356, h: 224, file: 'preprocess_s224.synthetic.resized.png' },
  ];
  for (const c of cases) {
    const ours = pilResizeBicubic(src, c.w, c.h);
    const ref = decodePng(fs.readFileSync(path.join(dir, c.file)));
    assert.equal([ref.width, ref.height, ref.channels], [c.w, c.h, 3]);
    let diff = 0;
    for (let i = 0; i < ref.data.length; i++) if (ours.data[i] !== ref.data[i]) diff++;
    assert.is(diff, 0, `${c.file}: ${diff} bytes differ from PIL`);
  }
  const tiny = pilResizeBicubic(src, 50, 32);
  assert.equal(Array.from(tiny.data), Array.from(pre.get('tiny.synthetic.resized_u8_HWC')!.data, Number));
  assert.equal(shortestEdgeSize(97, 61, 224), { width: 356, height: 224 });
  assert.equal(shortestEdgeSize(61, 97, 32), { width: 32, height: 50 });
});

test('CLIPImageProcessor restated: pixel_values within 1e-6 at S = 32 and S = 224; crop offsets as recorded', async () => {
  const src = await readImage(path.join(dir, 'synthetic.png'));
  for (const [name, folder, top, left] of [['tiny.synthetic.pixel_values', 'preprocessor_32', 0, 9], ['s224.synthetic.pixel_values', 'preprocessor_224', 0, 66]] as const) {
    const cfg = readClipProcessorConfig(path.join(dir, folder));
    const out = clipPreprocess(src, cfg, 'clip');
    const ref = pre.get(name)!;
    assert.equal(out.shape, ref.shape);
    assert.equal([out.top, out.left], [top, left]);
    assertClose(name, out.pixelValues, ref.data as Float32Array, { atol: 1e-6, scaleByMax: false });
  }
  // the model fixture's row 0 is that same preprocessed image
  const row0 = (io.get('pixel_values')!.data as Float32Array).subarray(0, 3 * 32 * 32);
  assertClose('io pixel_values[0]', clipPreprocess(src, readClipProcessorConfig(path.join(dir, 'preprocessor_32'))).pixelValues, row0, { atol: 1e-6, scaleByMax: false });
});

test('karlo mode: PIL BICUBIC straight to the crop size (no crop, aspect not kept), u8/255 in float32', async () => {
  const src = await readImage(path.join(dir, 'synthetic.png'));
  const cfg = readClipProcessorConfig(path.join(dir, 'preprocessor_32'));
  const out = clipPreprocess(src, cfg, 'karlo');
  assert.equal(out.shape, [1, 3, 32, 32]);
  const sq = pilResizeBicubic(src, 32, 32);
  assert.equal(Array.from(out.resized.data), Array.from(sq.data));
  // independent check of the arithmetic on a few pixels: (float32(u/255) - mean) / std in float32
  for (const [c, i] of [[0, 0], [1, 517], [2, 1023]]) {
    const u = sq.data[i * 3 + c];
    const f = Math.fround;
    assert.is(out.pixelValues[c * 1024 + i], f(f(f(u / 255) - f(cfg.imageMean[c])) / f(cfg.imageStd[c])));
  }
});

test('preprocessor_config.json: unsupported settings are errors naming the file', () => {
  assert.throws(() => clipProcessorConfig({ resample: 2 }, 'p.json'), /p\.json: resample 2 is not supported/);
  assert.throws(() => clipProcessorConfig({ size: { height: 3, width: 4 } }, 'p.json'), /p\.json: size .* only \{"shortest_edge": N\}/);
  assert.throws(() => clipProcessorConfig({ image_mean: [1, 2] }, 'p.json'), /p\.json: image_mean must be 3 numbers/);
  assert.throws(() => clipProcessorConfig({ image_processor_type: 'ViTImageProcessor' }, 'p.json'), /CLIPImageProcessor expected/);
  const c = clipProcessorConfig({ size: 48 });
  assert.equal([c.shortestEdge, c.cropHeight, c.cropWidth], [48, 48, 48]);
});

test('karlo parity detects a clip_vision folder and passes', async () => {
  const kind = PARITY_KINDS.find((k) => k.detect(dir));
  assert.is(kind?.name, 'clip_vision');
  const res = await kind!.run(dir, {});
  assert.ok(res.length >= 9, `${res.length} comparisons`);
  for (const c of res) assert.ok(c.ok, `${c.name}: ${c.maxAbs}`);
});

test.run();
