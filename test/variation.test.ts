// Image variation vs diffusers UnCLIPImageVariationPipeline on fixtures/variation_tiny: run.json (explicit
// latents, recorded noise) on every backend under test and run_seed_only.json (seed 0: every draw in diffusers'
// order): pixel_values, image embeddings, text rows, text_proj outputs, every scheduler step and the image within
// the fixtures README tolerances, through the `karlo parity` kind. Then the API: stage events and timings, memory
// back to baseline, precomputed embeddings = the image path, karlo preprocessing, clear errors, link stubs.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { availableBackends } from '../src/backend/index.js';
import { readImage } from '../src/io/image.js';
import { ModelFolderError } from '../src/io/model_folder.js';
import { PARITY_KINDS } from '../src/parity/registry.js';
import { runVariationRunParity } from '../src/parity/variation.js';
import { UnCLIPImageVariationPipeline, type VariationStage } from '../src/pipeline/variation_pipeline.js';
import type { Comparison } from '../src/parity/compare.js';
import { backendsUnderTest, fixture, useBackend } from './helpers.js';

const backends = await backendsUnderTest();
const VAR = fixture('variation_tiny');
const IMAGE = fixture('clip_vision', 'synthetic.png');
const fastBackend = !process.env.KARLO_TEST_BACKENDS && (await availableBackends(['wasm'])).length ? 'wasm' : backends[0];

function assertAllOk(label: string, cs: Comparison[], expected: RegExp[]): void {
  const bad = cs.filter((c) => !c.ok);
  const img = cs.filter((c) => c.name.includes('output.images_np_NHWC')).map((c) => c.maxAbs.toExponential(2));
  console.log(`  ${label}: ${cs.length} tensors compared; image max abs err ${img.join(', ')}`);
  assert.ok(bad.length === 0, `${label}: ${bad.map((c) => `${c.name}: ${c.maxAbs} > ${c.allowed}`).join('\n')}`);
  for (const re of expected) assert.ok(cs.some((c) => re.test(c.name)), `no comparison matching ${re}`);
}

for (const b of backends) {
  test(`[${b}] variation_tiny run.json (explicit latents, recorded noise): every cap.*, step.* and the image match diffusers`, async () => {
    await useBackend(b);
    const base = tf.memory().numTensors;
    const cs = await runVariationRunParity(path.join(VAR, 'run.json'));
    assertAllOk(`[${b}] run.json`, cs, [/cap\.pixel_values/, /cap\.image_encoder_image_embeds/, /cap\.text_mask/, /cap\.image_small/, /output\.images_np_NHWC/]);
    assert.is(tf.memory().numTensors, base, 'numTensors back to baseline');
  });
}

test(`[${fastBackend}] karlo parity on variation_tiny: kind "variation", both runs (seed only: every draw in order)`, async () => {
  await useBackend(fastBackend);
  const kind = PARITY_KINDS.find((k) => k.detect(VAR));
  assert.is(kind?.name, 'variation');
  const cs = await kind!.run(VAR, {});
  assertAllOk(`[${fastBackend}] karlo parity`, cs, [/^run_seed_only: randn\.000\./, /^run_seed_only: randn\.005\.scheduling_unclip/, /^run_seed_only: output\.images_np_NHWC/]);
});

test('a folder whose components are link files (a git symlink checked out as text) opens like the linked one', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-var-stub-'));
  try {
    for (const n of ['feature_extractor', 'image_encoder']) fs.cpSync(path.join(VAR, n), path.join(dir, n), { recursive: true });
    fs.copyFileSync(path.join(VAR, 'model_index.json'), path.join(dir, 'model_index.json'));
    for (const c of ['decoder', 'decoder_scheduler', 'super_res_first', 'super_res_last', 'super_res_scheduler', 'text_encoder', 'text_proj', 'tokenizer']) {
      fs.writeFileSync(path.join(dir, c), path.relative(dir, path.join(fixture('pipeline_tiny'), c)));
    }
    const pipe = await UnCLIPImageVariationPipeline.load(dir);
    assert.is(pipe.folder.dirs.decoder, path.resolve(fixture('pipeline_tiny'), 'decoder'));
    assert.is(pipe.dims.embeddingDim, 16);
    fs.writeFileSync(path.join(dir, 'text_proj'), '../no/such/folder');
    let msg = '';
    try { await UnCLIPImageVariationPipeline.load(dir); } catch (e) { msg = (e as Error).message; }
    assert.match(msg, /text_proj: component folder "text_proj" \(UnCLIPTextProjModel\) is missing/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test(`[${fastBackend}] vary(): stage events text → image → decoder → super_res with timings; embeddings path = image path; no leak`, async () => {
  await useBackend(fastBackend);
  const pipe = await UnCLIPImageVariationPipeline.load(VAR);
  const base = tf.memory().numTensors;
  const events: string[] = [];
  let embeds: Float32Array | undefined;
  const opts = { decoderSteps: 2, superResSteps: 2, seed: 7 };
  const a = await pipe.vary([IMAGE], {
    ...opts,
    onStage: (e) => { if (e.phase !== 'load') events.push(`${e.stage}:${e.phase}`); },
    onIntermediate: (name, t) => { if (name === 'image_encoder_image_embeds') embeds = t.dataSync().slice() as Float32Array; },
  });
  assert.equal(events, ['text:run', 'text:done', 'image:run', 'image:done', 'decoder:run', 'decoder:done', 'super_res:run', 'super_res:done']);
  assert.equal(Object.keys(a.timings.stages).sort(), (['decoder', 'image', 'super_res', 'text'] as VariationStage[]).sort());
  assert.equal(a.shape, [1, 64, 64, 3]);
  assert.is(a.seed, 7n);
  assert.is(tf.memory().numTensors, base, 'numTensors back to baseline after vary');
  // precomputed embeddings skip the image encoder and give the same images
  const e = tf.tensor2d(embeds!, [1, 16]);
  const b = await pipe.vary([], { ...opts, imageEmbeddings: e });
  e.dispose();
  assert.equal(Array.from(b.images), Array.from(a.images));
  assert.equal(Object.keys(b.timings.stages).sort(), ['decoder', 'super_res', 'text']);
  // karlo preprocessing (square resize, no crop) gives other pixel values, so other images
  const img = await readImage(IMAGE);
  const c = await pipe.vary([img], { ...opts, preprocess: 'karlo' });
  assert.is(c.settings.preprocess, 'karlo');
  assert.ok(c.images.some((v, i) => v !== a.images[i]));
  assert.is(tf.memory().numTensors, base, 'numTensors back to baseline');
  pipe.dispose();
});

test('clear errors: a text-to-image folder, a bad image, bad settings, wrong latents', async () => {
  let msg = '';
  try { await UnCLIPImageVariationPipeline.load(fixture('pipeline_tiny')); } catch (e) { msg = (e as Error).message; assert.instance(e, ModelFolderError); }
  assert.match(msg, /_class_name is "UnCLIPPipeline", expected "UnCLIPImageVariationPipeline" \(e\.g\. kakaobrain\/karlo-v1-alpha-image-variations/);
  const pipe = await UnCLIPImageVariationPipeline.load(VAR);
  const bad = path.join(os.tmpdir(), `karlo-not-an-image-${process.pid}.png`);
  fs.writeFileSync(bad, 'hello');
  try {
    await pipe.vary([bad]);
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, new RegExp(`${path.basename(bad)}: not a PNG or JPEG file`));
  } finally {
    fs.rmSync(bad);
  }
  try { await pipe.vary([IMAGE], { decoderSteps: 1 }); assert.unreachable(); } catch (e) { assert.match((e as Error).message, /decoderSteps must be an integer in \[2, 1000\]/); }
  try { await pipe.vary([IMAGE], { preprocess: 'crop' as never }); assert.unreachable(); } catch (e) { assert.match((e as Error).message, /preprocess must be "clip" or "karlo"/); }
  const lat = tf.zeros([1, 3, 16, 16]);
  try { await pipe.vary([IMAGE], { numImagesPerPrompt: 2, decoderLatents: lat }); assert.unreachable(); } catch (e) { assert.match((e as Error).message, /decoderLatents has shape \[1,3,16,16\], expected \[2,3,16,16\]/); }
  lat.dispose();
  pipe.dispose();
});

test.run();
