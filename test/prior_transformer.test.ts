// PriorTransformer parity with diffusers 0.25.1 (test/fixtures/prior): predicted_image_embedding at t=999 and
// t=437, every transformer block's output, post_process_latents; the real config's parameter count.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { PriorTransformer, priorTransformerConfig } from '../src/models/prior_transformer.js';
import { readConfig, readJson } from '../src/io/weights.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { runPriorParity } from '../src/parity/prior.js';
import { fixture, parityBackends, useBackend } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

test('parameter names and shapes are exactly the diffusers state dict of the tiny prior', () => {
  const prior = new PriorTransformer(priorTransformerConfig(readConfig(fixture('prior'))));
  const f = SafetensorsFile.open(fixture('prior', 'diffusion_pytorch_model.safetensors'));
  try {
    const ours = new Map(prior.namedParameters().map(([k, p]) => [k, p.torchShape.join(',')]));
    const theirs = new Map(f.names().map((n) => [n, f.info(n).shape.join(',')]));
    assert.equal([...ours.keys()].sort(), [...theirs.keys()].sort());
    for (const [k, s] of ours) assert.is(s, theirs.get(k), k);
  } finally {
    f.close();
  }
});

test('the real Karlo prior config builds 1,022,030,080 parameters (param_counts.json)', () => {
  const prior = new PriorTransformer(priorTransformerConfig(readConfig(fixture('karlo_configs', 'prior'))));
  const counts = readJson<Record<string, number>>(fixture('karlo_configs', 'param_counts.json'));
  assert.is(prior.numParameters(), 1022030080);
  assert.is(prior.numParameters(), counts.prior);
});

test('unsupported config values are errors naming the field', () => {
  assert.throws(() => priorTransformerConfig({ time_embed_act_fn: 'gelu' }, 'x/config.json'), /x\/config\.json: time_embed_act_fn = "gelu"/);
  assert.throws(() => priorTransformerConfig({ added_emb_type: 'foo' }), /added_emb_type/);
  assert.throws(() => priorTransformerConfig({ norm_in_type: 'rms' }), /norm_in_type/);
  assert.throws(() => priorTransformerConfig({ num_attention_heads: 0 }), /num_attention_heads/);
});

for (const backend of await parityBackends()) {
  test(`[${backend}] prior output (t=999, t=437), every block output and post_process_latents match diffusers within 1e-4`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const comps = await runPriorParity(fixture('prior'));
    const names = comps.map((c) => c.name);
    assert.ok(names.some((n) => n.startsWith('predicted_image_embedding (t=999)')));
    assert.ok(names.some((n) => n.startsWith('predicted_image_embedding_b (t=437)')));
    assert.ok(names.filter((n) => n.startsWith('block_out.transformer_blocks.')).length >= 2);
    for (const c of comps) {
      if (!c.ok) assert.unreachable(`${c.name}: max abs err ${c.maxAbs.toExponential(3)} > ${c.allowed.toExponential(3)}`);
    }
    assert.is(tf.memory().numTensors, before, 'tensors leaked');
  });

  test(`[${backend}] bad inputs are errors naming the argument`, async () => {
    await useBackend(backend);
    const prior = loadComponent(fixture('prior'), 'PriorTransformer');
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const h = tf.zeros([2, 16]);
      const enc = tf.zeros([2, 77, 16]) as tf.Tensor3D;
      assert.throws(() => prior.forward(tf.zeros([2, 15]), 3, h, enc, null), /hidden_states has width 15/);
      assert.throws(() => prior.forward(h, 3, h, null, null), /encoder_hidden_states is required/);
      assert.throws(() => prior.forward(h, 3, h, enc, tf.ones([2, 76])), /attention_mask has shape \[2,76\]/);
    });
    assert.is(tf.memory().numTensors, before, 'tensors leaked on the error paths');
    prior.dispose();
  });
}

test.run();
