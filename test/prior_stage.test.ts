// Prior stage (UnCLIPPipeline's prior loop) against the recorded tiny pipeline run (test/fixtures/pipeline_tiny):
// every prior scheduler step, the final latents and the image embeddings, with the recorded noise, with noise drawn
// from TorchGenerator(0), and with the latents themselves drawn from the generator (run_seed_only).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { runPrior } from '../src/pipeline/prior_stage.js';
import { runPriorStageParity } from '../src/parity/prior_stage.js';
import { fixture, backendsUnderTest, useBackend } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

const DIR = fixture('pipeline_tiny');

for (const backend of await backendsUnderTest()) {
  for (const [runFile, noise] of [['run.safetensors', 'recorded'], ['run.safetensors', 'generator'], ['run_seed_only.safetensors', 'generator']] as const) {
    test(`[${backend}] prior stage of ${runFile} (${noise} noise): every step, final latents and image embeddings within 1e-4`, async () => {
      await useBackend(backend);
      const before = tf.memory().numTensors;
      const comps = await runPriorStageParity(DIR, runFile, { noise });
      const names = comps.map((c) => c.name);
      assert.is(names.filter((n) => n.includes('.prev_sample')).length, 5);
      assert.is(names.filter((n) => n.includes('.model_output_after_cfg')).length, 5);
      assert.ok(names.includes('cap.prior_latents_final') && names.includes('cap.image_embeddings'));
      for (const c of comps) {
        if (!c.ok) assert.unreachable(`${c.name}: max abs err ${c.maxAbs.toExponential(3)} > ${c.allowed.toExponential(3)}`);
      }
      assert.is(tf.memory().numTensors, before, 'tensors leaked');
    });
  }
}

test('runPrior reports every step, checks its inputs and frees every step', async () => {
  const prior = loadComponent(fixture('pipeline_tiny', 'prior'), 'PriorTransformer');
  const sched = UnCLIPScheduler.fromDir(fixture('pipeline_tiny', 'prior_scheduler'));
  const text = {
    promptEmbeds: tf.randomNormal([4, 16]) as tf.Tensor2D,
    textEncHiddenStates: tf.randomNormal([4, 77, 16]) as tf.Tensor3D,
    textMask: tf.ones([4, 77], 'int32') as tf.Tensor2D,
  };
  const latents = tf.randomNormal([2, 16]);
  const before = tf.memory().numTensors;
  const seen: [number, number][] = [];
  const emb = await runPrior(prior, sched, text, {
    steps: 3, latents, noiseForStep: (_i, shape) => tf.zeros(shape),
    onStep: ({ stage, step, timestep, numSteps, latents: x }) => { assert.is(stage, 'prior'); assert.is(numSteps, 3); assert.equal(x.shape, [2, 16]); seen.push([step, timestep]); },
  });
  assert.equal(seen, [[0, 999], [1, 500], [2, 0]]);
  assert.equal(emb.shape, [2, 16]);
  emb.dispose();
  assert.is(tf.memory().numTensors, before, 'tensors leaked');
  const errorOf = async (p: () => Promise<unknown>) => { try { await p(); } catch (e) { return (e as Error).message; } return 'no error'; };
  const bad = tf.zeros([3, 16]);
  assert.match(await errorOf(() => runPrior(prior, sched, text, { steps: 3, latents: bad, classifierFreeGuidance: true })), /latents have shape \[3,16\], \[2, 16\] expected/);
  assert.match(await errorOf(() => runPrior(prior, sched, text, { steps: 3 })), /pass latents or a generator/);
  assert.match(await errorOf(() => runPrior(prior, sched, text, { steps: 1, latents })), /steps: 1/);
  bad.dispose();
  tf.dispose([text.promptEmbeds, text.textEncHiddenStates, text.textMask, latents]);
  prior.dispose();
});

test.run();
