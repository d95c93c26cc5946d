// karlo-nano configs and the initialised folder (src/nano/configs.ts, init.ts): the real Karlo classes at tiny
// sizes in the diffusers layout that every loader accepts; initialisation rules as torch/transformers/diffusers;
// deterministic per seed; float16 fits the 20 MB budget; the pipeline runs on it (and on the variation layout).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors } from '../src/io/safetensors.js';
import { openModelFolder, VARIATION_PIPELINE } from '../src/io/model_folder.js';
import { checkModelFolder } from '../src/pipeline/check_folder.js';
import { UNCLIP_COMPONENTS } from '../src/io/model_folder.js';
import { UnCLIPPipeline } from '../src/pipeline/unclip_pipeline.js';
import { NANO, NANO_MODEL_COMPONENTS } from '../src/nano/configs.js';
import { initRule, weightsFileName, writeNanoInitFolder } from '../src/nano/init.js';
import { useBackend } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

await useBackend('native').catch(() => useBackend('cpu'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-nano-init-'));
const f32 = path.join(tmp, 'f32');
const f16 = path.join(tmp, 'f16');
const info32 = writeNanoInitFolder(f32, { seed: 0 });
const info16 = writeNanoInitFolder(f16, { seed: 0, dtype: 'F16' });

function folderBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? folderBytes(path.join(dir, e.name)) : fs.statSync(path.join(dir, e.name)).size;
  return n;
}

test('a diffusers UnCLIPPipeline folder with the image-variation extras; every component loads with its class', () => {
  const folder = openModelFolder(f32);
  const report = checkModelFolder(folder, UNCLIP_COMPONENTS);
  assert.ok(report);
  // The variation components (image_encoder, feature_extractor, ...) are all there with their classes.
  const v = openModelFolder(f32, { ...VARIATION_PIPELINE, className: 'UnCLIPPipeline' });
  assert.ok(v.weights.image_encoder);
  const vision = loadComponent(path.join(f32, 'image_encoder'), 'CLIPVisionModelWithProjection');
  assert.is(vision.config.image_size, NANO.visionSize);
  assert.is(vision.config.projection_dim, NANO.clipDim);
  vision.dispose();
  assert.ok(info32.params.decoder > 1e6 && info32.params.prior > 1e5, JSON.stringify(info32.params));
});

test('float16 folder within 20 MB; same seed same bytes; another seed differs', () => {
  const total = folderBytes(f16);
  assert.ok(total <= 20 * 1024 * 1024, `F16 folder is ${(total / 2 ** 20).toFixed(2)} MiB`);
  assert.ok(info16.bytes * 2 > info32.bytes * 0.99);
  const again = path.join(tmp, 'again');
  writeNanoInitFolder(again, { seed: 0, dtype: 'F16' });
  const other = path.join(tmp, 'other');
  writeNanoInitFolder(other, { seed: 1, dtype: 'F16' });
  for (const c of NANO_MODEL_COMPONENTS) {
    const a = fs.readFileSync(path.join(f16, c, weightsFileName(c)));
    assert.ok(a.equals(fs.readFileSync(path.join(again, c, weightsFileName(c)))), c);
    assert.not.ok(a.equals(fs.readFileSync(path.join(other, c, weightsFileName(c)))), c);
  }
  assert.throws(() => writeNanoInitFolder(again), /already holds a model/);
});

test('initial values follow the rules: norms 1/0, biases 0, U(±1/√fan_in), embeddings N(0, 0.02), prior stats 0/1', () => {
  const dec = loadSafetensors(path.join(f32, 'decoder', 'diffusion_pytorch_model.safetensors'));
  const stats = (name: string, src = dec) => {
    const t = src.get(name)!;
    const d = t.data as Float32Array;
    let mn = Infinity, mx = -Infinity, s = 0, s2 = 0;
    for (const v of d) { mn = Math.min(mn, v); mx = Math.max(mx, v); s += v; s2 += v * v; }
    return { shape: t.shape, min: mn, max: mx, mean: s / d.length, std: Math.sqrt(s2 / d.length - (s / d.length) ** 2) };
  };
  const conv = stats('conv_in.weight');
  const bound = 1 / Math.sqrt(3 * 3 * 3);
  assert.ok(conv.max <= bound && conv.min >= -bound && conv.max > 0.9 * bound, JSON.stringify(conv));
  assert.equal([stats('conv_norm_out.weight').min, stats('conv_norm_out.weight').max], [1, 1]);
  assert.equal([stats('conv_in.bias').min, stats('conv_in.bias').max], [0, 0]);
  const te = loadSafetensors(path.join(f32, 'text_encoder', 'model.safetensors'));
  const emb = stats('text_model.embeddings.token_embedding.weight', te);
  assert.ok(Math.abs(emb.std - 0.02) < 0.001 && Math.abs(emb.mean) < 0.001, JSON.stringify(emb));
  const prior = loadSafetensors(path.join(f32, 'prior', 'diffusion_pytorch_model.safetensors'));
  assert.equal([stats('clip_std', prior).min, stats('clip_std', prior).max], [1, 1]);
  assert.equal([stats('clip_mean', prior).min, stats('positional_embedding', prior).max], [0, 0]);
  assert.equal(initRule('vision_model.embeddings.class_embedding', [64]), { kind: 'normal', std: 1 / 8 });
  assert.equal(initRule('down_blocks.0.resnets.0.norm1.weight', [32]), { kind: 'const', value: 1 });
});

test('the pipeline generates from it at the nano sizes (decoder 32, super-res 128), tensors freed', async () => {
  const before = tf.memory().numTensors;
  const pipe = await UnCLIPPipeline.load(f16);
  const r = await pipe.generate(['a red star on a black background'], { seed: 0, priorSteps: 2, decoderSteps: 2, superResSteps: 2 });
  assert.equal(r.shape, [1, NANO.superResSize, NANO.superResSize, 3]);
  assert.ok(r.images.every((v) => v >= 0 && v <= 1));
  pipe.dispose();
  assert.is(tf.memory().numTensors, before);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
