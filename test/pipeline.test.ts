// The whole pipeline vs diffusers UnCLIPPipeline on fixtures/pipeline_tiny: run.json (explicit latents, recorded
// step noise) and run_seed_only.json (one seed: proves the generator and diffusers' draw order): every cap.*,
// step.* and the final image within the fixtures README tolerances, on every backend under test. Then memory
// hygiene (tf.memory() back to baseline after a call, also when a stage throws half-way) and stage-wise loading.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import { runPipelineParity } from '../src/parity/pipeline.js';
import { UnCLIPPipeline, KARLO_PRESETS, type StageEvent } from '../src/pipeline/unclip_pipeline.js';
import type { Comparison } from '../src/parity/compare.js';
import { backendsUnderTest, fixture, useBackend } from './helpers.js';
import { availableBackends } from '../src/backend/index.js';
import { loadComponent } from '../src/loading/load_component.js';

const backends = await backendsUnderTest();
const TINY = fixture('pipeline_tiny');

function assertAllOk(label: string, cs: Comparison[]): void {
  assert.ok(cs.length > 0, `${label}: nothing compared`);
  const bad = cs.filter((c) => !c.ok);
  // worst error relative to what is allowed, for the record
  const worst = cs.filter((c) => c.allowed > 0).sort((a, b) => b.maxAbs / b.allowed - a.maxAbs / a.allowed)[0];
  const img = cs.find((c) => c.name.startsWith('output.images_np_NHWC'));
  console.log(`  ${label}: ${cs.length} tensors compared; image max abs err ${img?.maxAbs.toExponential(2)}; worst ${worst?.name} ${worst?.maxAbs.toExponential(2)} (allowed ${worst?.allowed.toExponential(2)})`);
  assert.ok(bad.length === 0, `${label}: ${bad.length} tensor(s) beyond tolerance:\n${bad.map((c) => `  ${c.name}: max abs ${c.maxAbs.toExponential(3)} > ${c.allowed.toExponential(3)}`).join('\n')}`);
}

/** For the record: the free-running (end-to-end) image error the parity runner reports beside its checks. */
const logImage = (line: string) => { if (line.includes('output.images_np_NHWC')) console.log(`  ${line.trim()}`); };

function expectAll(cs: Comparison[], names: RegExp[]): void {
  // names may carry a note after a space (e.g. ill-conditioned elements reported apart)
  for (const re of names) assert.ok(cs.some((c) => re.test(c.name.split(' ')[0])), `no comparison matching ${re}`);
}

for (const b of backends) {
  test(`[${b}] pipeline_tiny run.json (explicit latents, recorded noise): every cap.*, step.* and the image match diffusers`, async () => {
    await useBackend(b);
    const base = tf.memory().numTensors;
    const cs = await runPipelineParity(path.join(TINY, 'run.json'), { noise: 'recorded', log: logImage });
    assertAllOk(`[${b}] run.json`, cs);
    expectAll(cs, [/^cap\.prompt_embeds$/, /^cap\.text_mask$/, /^cap\.image_embeddings$/, /^cap\.decoder_encoder_hidden_states$/,
      /^cap\.image_small$/, /^cap\.image_upscaled$/, /^step\.\d+\.super_res_scheduler\.t0\.prev_sample$/, /^output\.images_np_NHWC$/]);
    assert.is(tf.memory().numTensors, base, 'numTensors back to baseline');
  });

}

// Seed only: the draws (and so the draw order) do not depend on the backend; the numerics on each backend are
// covered by run.json above. On the fastest backend here (wasm) to keep the suite short, unless
// KARLO_TEST_BACKENDS names the backends.
const fastBackend = !process.env.KARLO_TEST_BACKENDS && (await availableBackends(['wasm'])).length ? 'wasm' : backends[0];
test(`[${fastBackend}] pipeline_tiny run_seed_only.json (seed 0 only): every random draw in diffusers' order, every cap.*, step.* and the image`, async () => {
  await useBackend(fastBackend);
  const base = tf.memory().numTensors;
  const cs = await runPipelineParity(path.join(TINY, 'run_seed_only.json'), { log: logImage });
  assertAllOk(`[${fastBackend}] run_seed_only.json`, cs);
  expectAll(cs, [/^randn\.000\.pipeline_unclip$/, /^step\.000\.prior_scheduler\.t999\.sample_in$/, /^output\.images_np_NHWC$/]);
  const draws = JSON.parse(fs.readFileSync(path.join(TINY, 'run_seed_only.json'), 'utf8')).randn_draw_order.length;
  assert.is(cs.filter((c) => c.name.startsWith('randn.')).length, draws, `all ${draws} draws compared`);
  assert.is(tf.memory().numTensors, base, 'numTensors back to baseline');
});

// ---------- API, memory hygiene, stage-wise loading ----------
// On a smaller copy of the tiny pipeline (decoder 8×8, super-res 32×32: the UNets are fully convolutional), on
// the fastest backend here: these tests are about the pipeline's logic, not numerics.

const FAST = { priorSteps: 2, decoderSteps: 2, superResSteps: 2, seed: 7 };
const apiBackend = fastBackend;
const MINI = miniModel();
test.after(() => fs.rmSync(MINI, { recursive: true, force: true }));

test('generate: NHWC images in [0, 1], same seed → same images, settings and timings reported', async () => {
  await useBackend(apiBackend);
  const pipe = await UnCLIPPipeline.load(MINI);
  const events: StageEvent[] = [];
  const a = await pipe.generate(['a frog'], { ...FAST, numImagesPerPrompt: 2, onStage: (e) => events.push(e) });
  assert.equal(a.shape, [2, 32, 32, 3]);
  assert.ok(a.images.every((v) => v >= 0 && v <= 1));
  assert.is(a.seed, 7n);
  assert.equal(a.settings, { numImagesPerPrompt: 2, priorSteps: 2, decoderSteps: 2, superResSteps: 2, priorGuidance: 4, decoderGuidance: 8 });
  for (const s of ['text', 'prior', 'decoder', 'super_res'] as const) {
    const t = a.timings.stages[s];
    assert.ok(t.loadSeconds > 0 && t.runSeconds > 0 && t.totalSeconds >= t.runSeconds, `${s} timing ${JSON.stringify(t)}`);
    assert.equal(events.filter((e) => e.stage === s).map((e) => e.phase), ['load', 'run', 'done']);
  }
  assert.ok(a.timings.peakRssMB > 0);
  const b = await pipe.generate(['a frog'], { ...FAST, numImagesPerPrompt: 2 });
  assert.equal(Array.from(b.images), Array.from(a.images), 'same seed, same images');
  // numImagesPerPrompt 2 draws different noise per image
  assert.not.equal(Array.from(a.images.subarray(0, 100)), Array.from(a.images.subarray(32 * 32 * 3, 32 * 32 * 3 + 100)));
});

test('presets: fast = 25/25/7, default = decoder 50; explicit steps override a preset; bad settings are clear errors', () => {
  assert.equal(UnCLIPPipeline.resolveSettings({}), { numImagesPerPrompt: 1, priorSteps: 25, decoderSteps: 25, superResSteps: 7, priorGuidance: 4, decoderGuidance: 8 });
  assert.is(UnCLIPPipeline.resolveSettings({ preset: 'default' }).decoderSteps, 50);
  assert.is(UnCLIPPipeline.resolveSettings({ preset: 'fast' }).decoderSteps, KARLO_PRESETS.fast.decoderSteps);
  assert.is(UnCLIPPipeline.resolveSettings({ preset: 'default', decoderSteps: 10 }).decoderSteps, 10);
  assert.throws(() => UnCLIPPipeline.resolveSettings({ priorSteps: 1 }), /priorSteps must be an integer in \[2, 1000\]/);
  assert.throws(() => UnCLIPPipeline.resolveSettings({ decoderGuidance: NaN }), /decoderGuidance must be a finite number/);
  assert.throws(() => UnCLIPPipeline.resolveSettings({ numImagesPerPrompt: 0 }), /numImagesPerPrompt/);
  assert.throws(() => UnCLIPPipeline.resolveSettings({ preset: 'slow' as never }), /preset must be one of fast, default/);
});

test('explicit latents of the wrong shape: an error naming the option, before anything runs', async () => {
  await useBackend(apiBackend);
  const pipe = await UnCLIPPipeline.load(MINI);
  const bad = tf.zeros([1, 3, 8, 8]);
  try {
    await pipe.generate(['a', 'b'], { ...FAST, decoderLatents: bad }).then(() => assert.unreachable('should throw'), (e: Error) => {
      assert.match(e.message, /decoderLatents has shape \[1,3,8,8\], expected \[2,3,8,8\]/);
    });
  } finally {
    bad.dispose();
  }
});

test('memory: numTensors back to baseline after generate, and when a stage throws half-way (onStep throws in the decoder)', async () => {
  await useBackend(apiBackend);
  const pipe = await UnCLIPPipeline.load(MINI);
  const base = tf.memory().numTensors;
  await pipe.generate(['a frog', 'a fox'], FAST);
  assert.is(tf.memory().numTensors, base, 'after a call');
  let steps = 0;
  await pipe.generate(['a frog'], {
    ...FAST,
    onStep: (info) => {
      steps++;
      tf.clone(info.latents); // a tensor made (and not kept) inside the callback is freed too
      if (info.stage === 'decoder' && info.step === 1) throw new Error('stop here');
    },
  }).then(() => assert.unreachable('should throw'), (e: Error) => assert.is(e.message, 'stop here'));
  assert.is(steps, 4, 'prior 2 steps + decoder 2 steps');
  assert.is(tf.memory().numTensors, base, 'after a call that threw in the decoder stage');
  await pipe.generate(['a frog'], { ...FAST, onIntermediate: (name) => { if (name === 'image_embeddings') throw new Error('stop at the prior'); } })
    .then(() => assert.unreachable('should throw'), (e: Error) => assert.is(e.message, 'stop at the prior'));
  assert.is(tf.memory().numTensors, base, 'after a call that threw between stages');
});

test('stage-wise loading: components are released after their stage; keepLoaded keeps them until dispose()', async () => {
  await useBackend(apiBackend);
  const base = tf.memory().numTensors;
  // During the super-res stage only its weights are alive: count tensors there vs with everything kept.
  const during = async (pipe: UnCLIPPipeline) => {
    let n = 0;
    await pipe.generate(['a frog'], { ...FAST, onStep: (i) => { if (i.stage === 'super_res') n = Math.max(n, tf.memory().numTensors); } });
    return n;
  };
  const staged = await UnCLIPPipeline.load(MINI);
  const nStaged = await during(staged);
  assert.is(tf.memory().numTensors, base);
  const kept = await UnCLIPPipeline.load(MINI, { keepLoaded: true });
  const nKept = await during(kept);
  const afterFirst = tf.memory().numTensors;
  assert.ok(afterFirst > base, 'weights stay loaded');
  assert.ok(nKept > nStaged, `all components alive during super-res when kept (${nKept}) vs staged (${nStaged})`);
  const second = await kept.generate(['a frog'], FAST);
  assert.is(tf.memory().numTensors, afterFirst, 'no growth on a second call');
  assert.ok(second.timings.stages.prior.loadSeconds === 0, 'kept components are not reloaded');
  kept.dispose();
  assert.is(tf.memory().numTensors, base, 'dispose() frees the kept components');
});

test('super-res holds one UNet at a time: super_res_last is loaded for the last step after super_res_first is released (both with keepLoaded)', async () => {
  await useBackend(apiBackend);
  const base = tf.memory().numTensors;
  const perStep = async (pipe: UnCLIPPipeline) => {
    const n: number[] = [];
    const released: number[] = [];
    const r = await pipe.generate(['a frog'], {
      ...FAST, superResSteps: 3,
      onStep: (i) => { if (i.stage === 'super_res') n.push(tf.memory().numTensors); },
      stageOptions: { super_res: { releaseFirst: () => released.push(n.length) } },
    });
    return { n, released, timing: r.timings.stages.super_res };
  };
  const staged = await perStep(await UnCLIPPipeline.load(MINI));
  assert.is(tf.memory().numTensors, base);
  assert.equal(staged.released, [2], 'super_res_first released once, before the last step');
  // Same architecture in first and last: the same number of tensors alive at the first and the last step.
  assert.is(staged.n[2], staged.n[0], `one UNet alive at the last step (${staged.n})`);
  assert.ok(staged.timing.loadSeconds > 0);
  const kept = await UnCLIPPipeline.load(MINI, { keepLoaded: true });
  const keptRun = await perStep(kept);
  const b0 = tf.memory().numTensors;
  const unet = loadComponent(path.join(MINI, 'super_res_last'), 'UNet2DModel');
  const nUnet = tf.memory().numTensors - b0;
  unet.dispose();
  assert.is(keptRun.n[2] - keptRun.n[0], nUnet, `both UNets alive at the last step with keepLoaded (${keptRun.n})`);
  assert.equal(keptRun.released, [2]);
  kept.dispose();
  assert.is(tf.memory().numTensors, base);
});

test('previews: decoder latents (8×8 here, 64×64 in Karlo) after each step plus image_small, super-res steps; all in [0, 1]', async () => {
  await useBackend(apiBackend);
  const pipe = await UnCLIPPipeline.load(MINI);
  const seen: string[] = [];
  await pipe.generate(['a frog'], {
    ...FAST,
    onPreview: (p) => {
      seen.push(`${p.stage}:${p.step}:${p.shape.join('x')}`);
      assert.ok(p.images.every((v) => v >= 0 && v <= 1));
    },
  });
  assert.equal(seen, ['decoder:0:1x8x8x3', 'decoder:1:1x8x8x3', 'decoder:-1:1x8x8x3', 'super_res:0:1x32x32x3', 'super_res:1:1x32x32x3']);
});

// ---------- model folders ----------

/** The tiny pipeline with decoder sample_size 8 and super-res sample_size 32 (same weights). */
function miniModel(): string {
  const d = tinyCopy();
  const edit = (c: string, size: number) => {
    const f = path.join(d, c, 'config.json');
    fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, 'utf8')), sample_size: size }, null, 2));
  };
  edit('decoder', 8);
  edit('super_res_first', 32);
  edit('super_res_last', 32);
  return d;
}

function tinyCopy(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-tiny-'));
  for (const n of fs.readdirSync(TINY)) {
    if (n.startsWith('run')) continue;
    fs.cpSync(path.join(TINY, n), path.join(d, n), { recursive: true });
  }
  return d;
}

test('model folder: missing folder, index, component, wrong pipeline/component class, missing weights → one error naming it', async () => {
  const load = (d: string) => UnCLIPPipeline.load(d);
  const rejects = async (d: string, re: RegExp) => {
    await load(d).then(() => assert.unreachable(`should reject ${d}`), (e: Error) => {
      assert.match(e.message, re);
      assert.is(e.name, 'ModelFolderError');
      assert.not.match(e.message, /\n/);
    });
  };
  await rejects('/nonexistent/karlo', /\/nonexistent\/karlo: model folder does not exist/);
  const d = tinyCopy();
  try {
    const idx = path.join(d, 'model_index.json');
    const index = JSON.parse(fs.readFileSync(idx, 'utf8'));
    fs.writeFileSync(idx, JSON.stringify({ ...index, _class_name: 'StableDiffusionPipeline' }));
    await rejects(d, /model_index\.json: _class_name is "StableDiffusionPipeline", expected "UnCLIPPipeline"/);
    fs.writeFileSync(idx, JSON.stringify({ ...index, decoder: ['diffusers', 'UNet2DModel'] }));
    await rejects(d, /component "decoder" is "UNet2DModel", expected "UNet2DConditionModel"/);
    const { prior: _p, ...noPrior } = index;
    fs.writeFileSync(idx, JSON.stringify(noPrior));
    await rejects(d, /component "prior" \(PriorTransformer\) is missing/);
    fs.writeFileSync(idx, JSON.stringify(index));
    const cfgFile = path.join(d, 'text_proj', 'config.json');
    const cfg = fs.readFileSync(cfgFile, 'utf8');
    fs.writeFileSync(cfgFile, cfg.replace('"UnCLIPTextProjModel"', '"UNet2DModel"'));
    await rejects(d, /text_proj\/config\.json: the config is for "UNet2DModel", expected "UnCLIPTextProjModel"/);
    fs.writeFileSync(cfgFile, cfg);
    fs.rmSync(path.join(d, 'decoder', 'diffusion_pytorch_model.safetensors'));
    await rejects(d, /decoder: no weights file .*\(component "decoder"\)/);
    fs.cpSync(path.join(TINY, 'decoder'), path.join(d, 'decoder'), { recursive: true });
    fs.rmSync(path.join(d, 'super_res_last'), { recursive: true });
    await rejects(d, /super_res_last: component folder "super_res_last" \(UNet2DModel\) is missing/);
    fs.rmSync(idx);
    await rejects(d, /model_index\.json: missing/);
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
});

test('fp16 / bf16 weight files: widened at load, identical results to float32 files holding the same values', async () => {
  await useBackend(apiBackend);
  const half = miniModel();
  const full = miniModel();
  try {
    const convert = (component: string, file: string, dtype: 'F16' | 'BF16') => {
      const src = path.join(half, component, file);
      const tensors = loadSafetensors(src);
      fs.rmSync(src);
      const outName = file.replace('.safetensors', '.fp16.safetensors');
      saveSafetensors(path.join(half, component, outName), Object.fromEntries([...tensors].map(([k, t]) => [k, { dtype, shape: t.shape, data: t.data as Float32Array }])));
      // the same (rounded) values back as float32
      const widened = loadSafetensors(path.join(half, component, outName));
      assert.ok([...widened.values()].every((t) => t.dtype === 'float32'));
      saveSafetensors(path.join(full, component, file), Object.fromEntries([...widened].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data as Float32Array }])));
    };
    convert('text_encoder', 'model.safetensors', 'F16');
    convert('prior', 'diffusion_pytorch_model.safetensors', 'BF16');
    convert('decoder', 'diffusion_pytorch_model.safetensors', 'F16');
    const a = await (await UnCLIPPipeline.load(half)).generate(['a frog'], FAST);
    const b = await (await UnCLIPPipeline.load(full)).generate(['a frog'], FAST);
    assert.equal(Array.from(a.images), Array.from(b.images));
  } finally {
    fs.rmSync(half, { recursive: true, force: true });
    fs.rmSync(full, { recursive: true, force: true });
  }
});

test.run();
