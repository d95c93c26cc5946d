// LoRA adapters beyond the decoder fixture (test/grads_parity.test.ts): prior attn1 and CLIP q/k/v/out adapters
// equal their merged form (W + scale·B·A), merge/unmerge round trip, fresh adapters leave the model unchanged,
// save → load (peft/diffusers key names, rank/alpha in metadata, a user scale), and clear errors for bad files.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { fixture, useBackend } from './helpers.js';
import { SafetensorsFile, saveSafetensors } from '../src/io/safetensors.js';
import { applyLora, loadLoraFile, LORA_TARGETS, type Lora } from '../src/training/lora.js';
import { randnTensor, TorchGenerator } from '../src/random/generator.js';
import { loadComponent } from '../src/loading/load_component.js';
import type { PriorTransformer } from '../src/models/prior_transformer.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-lora-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.before(async () => { await useBackend('cpu'); });

/** Non-zero B so the adapters change the output. */
function randomizeUp(lora: Lora, seed: number): void {
  const g = new TorchGenerator(seed);
  for (const a of lora.adapters) {
    const t = tf.tidy(() => tf.mul(randnTensor(a.up.torchShape, g), 0.1));
    a.up.setFromTorch(t.dataSync() as Float32Array, true);
    t.dispose();
  }
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const priorRun = (prior: PriorTransformer) => tf.tidy(() => {
  const g = new TorchGenerator(7);
  const x = randnTensor([2, 16], g);
  const pe = randnTensor([2, 16], g);
  const ehs = randnTensor([2, 77, 16], g) as tf.Tensor3D;
  return Array.from(prior.forward(x, tf.tensor1d([3, 700], 'int32'), pe, ehs, tf.ones([2, 77])).dataSync());
});

test('prior attn1 LoRA: fresh adapters change nothing; trained ones equal the merged weights; unmerge restores W', () => {
  const prior = loadComponent(fixture('prior'), 'PriorTransformer');
  const before = tf.memory().numTensors;
  const base = priorRun(prior);
  const lora = applyLora(prior, { rank: 2, alpha: 4, seed: 1 });
  assert.equal(lora.adapters.map((a) => a.module).slice(0, 4),
    ['transformer_blocks.0.attn1.to_q', 'transformer_blocks.0.attn1.to_k', 'transformer_blocks.0.attn1.to_v', 'transformer_blocks.0.attn1.to_out.0']);
  assert.is(lora.adapters.length, 8);
  assert.is(lora.scale, 2);
  assert.ok(maxDiff(priorRun(prior), base) < 1e-6, 'B = 0: same output');
  randomizeUp(lora, 2);
  const unmerged = priorRun(prior);
  assert.ok(maxDiff(unmerged, base) > 1e-3, 'adapters change the output');
  const w0 = Array.from(prior.transformer_blocks[0].attn1.to_q.weight.value.dataSync());
  lora.merge();
  assert.ok(maxDiff(priorRun(prior), unmerged) < 1e-5, 'merged = unmerged');
  lora.unmerge();
  assert.ok(maxDiff(prior.transformer_blocks[0].attn1.to_q.weight.value.dataSync(), w0) < 1e-6, 'W restored');
  assert.ok(maxDiff(priorRun(prior), unmerged) < 1e-6);
  // Only the adapters are variables to train.
  assert.equal([...lora.variables().keys()].slice(0, 2), ['transformer_blocks.0.attn1.to_q.lora_A.weight', 'transformer_blocks.0.attn1.to_q.lora_B.weight']);
  lora.remove();
  assert.ok(maxDiff(priorRun(prior), base) < 1e-6, 'removed: base output');
  assert.is(tf.memory().numTensors, before);
  prior.dispose();
});

test('CLIP text LoRA on q/k/v/out_proj; save -> loadLoraFile with a scale: peft key names, rank/alpha metadata, same output', () => {
  const clip = loadComponent(fixture('clip_text'), 'CLIPTextModelWithProjection');
  const ids = tf.tensor2d([[49406, 320, 1125, 49407, ...new Array(73).fill(49407)]], [1, 77], 'int32');
  const run = () => tf.tidy(() => Array.from(clip.forward(ids).textEmbeds.dataSync()));
  const base = run();
  const lora = applyLora(clip, { rank: 4, alpha: 8, seed: 3 });
  assert.equal(new Set(lora.adapters.map((a) => a.module.split('.').pop())), new Set(['q_proj', 'k_proj', 'v_proj', 'out_proj']));
  randomizeUp(lora, 4);
  lora.multiplier = 0.5;
  const half = run();
  const file = path.join(tmp, 'clip_lora.safetensors');
  lora.multiplier = 1;
  lora.save(file);
  lora.remove();
  assert.ok(maxDiff(run(), base) < 1e-6);
  const f = SafetensorsFile.open(file);
  assert.ok(f.names().includes('text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight'));
  assert.ok(f.names().includes('text_model.encoder.layers.1.self_attn.out_proj.lora_B.weight'));
  assert.equal(f.info('text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight').shape, [4, 16]);
  assert.is(f.metadata.lora_rank, '4');
  assert.is(f.metadata.lora_alpha, '8');
  f.close();
  const loaded = loadLoraFile(clip, file, 0.5);
  assert.is(loaded.scale, 1);
  assert.ok(maxDiff(run(), half) < 1e-6, 'loaded at scale 0.5 = saved adapters at multiplier 0.5');
  loaded.remove();
  ids.dispose();
  clip.dispose();
});

test('loadLoraFile: diffusers lora.down/up names and unet. prefix accepted; unknown module, bad shape, lone A: one clear error', () => {
  const prior = loadComponent(fixture('prior'), 'PriorTransformer');
  const f32 = (n: number) => new Float32Array(n).fill(0.01);
  const m = 'transformer_blocks.0.attn1.to_q';
  const ok = path.join(tmp, 'diffusers.safetensors');
  saveSafetensors(ok, { [`unet.${m}.lora.down.weight`]: { dtype: 'F32', shape: [2, 16], data: f32(32) }, [`unet.${m}.lora.up.weight`]: { dtype: 'F32', shape: [16, 2], data: f32(32) } });
  const l = loadLoraFile(prior, ok);
  assert.equal(l.adapters.map((a) => a.module), [m]);
  assert.is(l.rank, 2);
  assert.is(l.alpha, 2);
  l.remove();
  const bad = (name: string, t: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>, re: RegExp) => {
    const file = path.join(tmp, name);
    saveSafetensors(file, t);
    assert.throws(() => loadLoraFile(prior, file), (e: Error) => re.test(e.message) && e.message.includes(file));
  };
  bad('unknown.safetensors', { 'nope.lora_A.weight': { dtype: 'F32', shape: [2, 16], data: f32(32) }, 'nope.lora_B.weight': { dtype: 'F32', shape: [16, 2], data: f32(32) } }, /has no Linear module "nope"/);
  bad('shape.safetensors', { [`${m}.lora_A.weight`]: { dtype: 'F32', shape: [2, 15], data: f32(30) }, [`${m}.lora_B.weight`]: { dtype: 'F32', shape: [16, 2], data: f32(32) } }, /do not fit a Linear 16x16/);
  bad('lone.safetensors', { [`${m}.lora_A.weight`]: { dtype: 'F32', shape: [2, 16], data: f32(32) } }, /has lora_A but no lora_B/);
  bad('other.safetensors', { 'weight': { dtype: 'F32', shape: [2], data: f32(2) } }, /"weight" is not a LoRA weight/);
  assert.throws(() => applyLora(prior, { rank: 2, targets: ['q_proj'] }), /no Linear module of PriorTransformer is named q_proj/);
  assert.throws(() => applyLora(prior, { rank: 2, targets: ['to_q', 'q_proj'] }), /target "q_proj" matches no Linear module/);
  assert.throws(() => applyLora(prior, { rank: 0 }), /rank must be a positive integer/);
  assert.ok(LORA_TARGETS.includes('add_k_proj'));
  prior.dispose();
});

test.run();
