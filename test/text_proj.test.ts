import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { fixture, parityBackends, useBackend } from './helpers.js';
import { runTextProjParity } from '../src/parity/text_proj.js';
import { textProjConfig } from '../src/models/text_proj.js';
import { loadComponent } from '../src/loading/load_component.js';

for (const backend of await parityBackends()) {
  test(`[${backend}] UnCLIPTextProjModel matches diffusers on fixtures/text_proj (CFG), tensors freed`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const res = await runTextProjParity(fixture('text_proj'));
    assert.is(res.length, 2);
    for (const c of res) assert.ok(c.ok, `${c.name}: max abs err ${c.maxAbs} > ${c.allowed}`);
    assert.is(tf.memory().numTensors, before);
  });
}

test('text_proj config: unknown field and bad values are errors naming them', () => {
  assert.throws(() => textProjConfig({ time_embed_dim: 8, cross_attention_dim: 4, foo: 1 }, 'x/config.json'), /x\/config.json: unknown field "foo" for UnCLIPTextProjModel/);
  assert.throws(() => textProjConfig({ cross_attention_dim: 4 }, 'c'), /field "time_embed_dim" is required by UnCLIPTextProjModel/);
  assert.equal(textProjConfig({ time_embed_dim: 8, cross_attention_dim: 4 }).clip_embeddings_dim, 768);
});

test('text_proj: batch mismatch is an error naming the inputs', async () => {
  await useBackend('cpu');
  const m = loadComponent(fixture('text_proj'), 'UnCLIPTextProjModel');
  const inputs = {
    imageEmbeddings: tf.zeros([2, 16]) as tf.Tensor2D,
    promptEmbeds: tf.zeros([3, 16]) as tf.Tensor2D,
    textEncoderHiddenStates: tf.zeros([3, 77, 16]) as tf.Tensor3D,
    doClassifierFreeGuidance: true,
  };
  const before = tf.memory().numTensors;
  assert.throws(() => m.forward(inputs), /batch sizes differ: image embeddings 4 \(after prepending the CFG rows\), promptEmbeds 3/);
  assert.throws(() => m.forward({ ...inputs, promptEmbeds: inputs.imageEmbeddings, imageEmbeddings: tf.zeros([1, 8]) }), /imageEmbeddings has shape \[1,8\]/);
  assert.is(tf.memory().numTensors, before + 1);
  tf.dispose([inputs.imageEmbeddings, inputs.promptEmbeds, inputs.textEncoderHiddenStates]);
  m.dispose();
});

test.run();
