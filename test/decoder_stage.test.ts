// Decoder stage (UnCLIPPipeline's text_proj + decoder loop) against the recorded tiny pipeline run
// (test/fixtures/pipeline_tiny): text_proj outputs, every decoder step from the recorded inputs, and the whole
// loop to cap.image_small, with the recorded noise, and with the latents and the noise drawn from
// TorchGenerator(0) (run_seed_only).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { runDecoder } from '../src/pipeline/decoder_stage.js';
import { runDecoderStageParity } from '../src/parity/decoder_stage.js';
import { fixture, backendsUnderTest, useBackend } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

const DIR = fixture('pipeline_tiny');

for (const backend of await backendsUnderTest()) {
  // Explicit latents + recorded noise pin down the math (step by step too); seed-only + generator the draw order
  // (latents, then noise) through the whole loop.
  for (const [runFile, noise, stepByStep] of [['run.safetensors', 'recorded', true], ['run_seed_only.safetensors', 'generator', false]] as const) {
    test(`[${backend}] decoder stage of ${runFile} (${noise} noise): text_proj${stepByStep ? ' and every step' : ''} within 1e-4, whole loop and image_small within 1e-3`, async () => {
      await useBackend(backend);
      const before = tf.memory().numTensors;
      const comps = await runDecoderStageParity(DIR, runFile, { noise, stepByStep });
      const names = comps.map((c) => c.name);
      assert.is(names.filter((n) => /^step\..*\.model_output_after_cfg$/.test(n)).length, stepByStep ? 5 : 0);
      assert.is(names.filter((n) => /^step\..*\.prev_sample$/.test(n)).length, stepByStep ? 5 : 0);
      assert.is(names.filter((n) => /^loop\..*\.prev_sample/.test(n)).length, 5);
      for (const n of ['cap.decoder_encoder_hidden_states', 'cap.additive_clip_time_embeddings', 'cap.image_small']) assert.ok(names.includes(n), n);
      for (const c of comps) {
        if (!c.ok) assert.unreachable(`${c.name}: max abs err ${c.maxAbs.toExponential(3)} > ${c.allowed.toExponential(3)}`);
      }
      const img = comps.find((c) => c.name === 'cap.image_small')!;
      console.log(`  [${backend}] ${runFile} ${noise}: image_small max abs err ${img.maxAbs.toExponential(2)}, worst per-step ${Math.max(0, ...comps.filter((c) => c.name.startsWith('step.')).map((c) => c.maxAbs)).toExponential(2)}`);
      assert.is(tf.memory().numTensors, before, 'tensors leaked');
    });
  }
}

test('runDecoder reports every step, clamps to [-1, 1], checks its inputs and frees every step', async () => {
  await useBackend('cpu');
  const textProj = loadComponent(fixture('pipeline_tiny', 'text_proj'), 'UnCLIPTextProjModel');
  const decoder = loadComponent(fixture('pipeline_tiny', 'decoder'), 'UNet2DConditionModel');
  const sched = UnCLIPScheduler.fromDir(fixture('pipeline_tiny', 'decoder_scheduler'));
  const text = {
    promptEmbeds: tf.randomNormal([2, 16]) as tf.Tensor2D,
    textEncHiddenStates: tf.randomNormal([2, 77, 16]) as tf.Tensor3D,
    textMask: tf.concat([tf.ones([2, 5], 'int32'), tf.zeros([2, 72], 'int32')], 1) as tf.Tensor2D,
  };
  const emb = tf.randomNormal([1, 16]) as tf.Tensor2D;
  const latents = tf.mul(tf.randomNormal([1, 3, 16, 16]), 3);
  const before = tf.memory().numTensors;
  const seen: [number, number][] = [];
  let masks = 0;
  const img = await runDecoder(textProj, decoder, sched, emb, text, {
    steps: 3, latents, noiseForStep: (_i, shape) => tf.zeros(shape),
    onConditioning: (c) => {
      masks++;
      assert.equal(c.attentionMask.shape, [2, 81]);
      assert.equal([...c.attentionMask.dataSync().slice(0, 10)], [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
      assert.equal(c.encoderHiddenStates.shape, [2, 81, 64]);
    },
    onModelOutput: ({ modelOutput }) => assert.equal(modelOutput.shape, [1, 6, 16, 16]),
    onStep: ({ stage, step, timestep, numSteps, latents: x }) => { assert.is(stage, 'decoder'); assert.is(numSteps, 3); assert.equal(x.shape, [1, 3, 16, 16]); seen.push([step, timestep]); },
  });
  assert.is(masks, 1);
  assert.equal(seen, [[0, 999], [1, 500], [2, 0]]);
  assert.equal(img.shape, [1, 3, 16, 16]);
  const v = img.dataSync();
  assert.ok(v.every((x) => x >= -1 && x <= 1), 'clamped to [-1, 1]');
  img.dispose();
  assert.is(tf.memory().numTensors, before, 'tensors leaked');
  const err = async (p: Promise<unknown>) => { try { await p; } catch (e) { return (e as Error).message; } return ''; };
  assert.match(await err(runDecoder(textProj, decoder, sched, emb, text, { steps: 3 })), /pass latents or a generator/);
  assert.match(await err(runDecoder(textProj, decoder, sched, emb, text, { steps: 3, latents: tf.zeros([2, 3, 16, 16]) })), /latents have shape \[2,3,16,16\], \[1, 3, H, W\] expected/);
  assert.match(await err(runDecoder(textProj, decoder, sched, tf.zeros([3, 16]) as tf.Tensor2D, text, { steps: 3, latents })), /3 image embeddings need 3 text rows, got 2/);
  tf.dispose([text.promptEmbeds, text.textEncHiddenStates, text.textMask, emb, latents]);
  textProj.dispose();
  decoder.dispose();
});

test.run();
