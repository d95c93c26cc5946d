import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { fixture, parityBackends, useBackend } from './helpers.js';
import { runDecoderParity } from '../src/parity/decoder.js';
import { UNet2DConditionModel, unet2dConditionConfig } from '../src/models/unet2d_condition.js';
import { readConfig } from '../src/io/weights.js';

for (const backend of await parityBackends()) {
  test(`[${backend}] UNet2DConditionModel matches diffusers on fixtures/decoder: output, every block_out.*, nomask call; tensors freed`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const res = await runDecoderParity(fixture('decoder'));
    const names = res.map((c) => c.name);
    for (const n of ['output', 'nomask_output', 'block_out.conv_in', 'block_out.time_embedding', 'block_out.down_blocks.2.res_samples.0', 'block_out.mid_block', 'block_out.up_blocks.2', 'block_out.conv_norm_out', 'block_out.conv_out']) {
      assert.ok(names.includes(n), `${n} compared`);
    }
    assert.is(res.length, 18);
    const worst = res.reduce((a, c) => Math.max(a, c.maxAbs), 0);
    console.log(`  [${backend}] decoder: ${res.length} tensors, worst max abs err ${worst.toExponential(2)}`);
    for (const c of res) assert.ok(c.ok, `${c.name}: max abs err ${c.maxAbs} > ${c.allowed}`);
    assert.is(tf.memory().numTensors, before);
  });
}

test('UNet2DConditionModel: the real Karlo decoder config builds with 885,439,686 parameters', () => {
  const cfg = unet2dConditionConfig(readConfig(fixture('karlo_configs', 'decoder')));
  assert.is(new UNet2DConditionModel(cfg).numParameters(), 885_439_686);
});

test('UNet2DConditionModel config: unsupported values are errors naming the field', () => {
  const base = readConfig(fixture('decoder'));
  assert.throws(() => unet2dConditionConfig({ ...base, up_block_types: ['UpBlock2D', 'SimpleCrossAttnUpBlock2D', 'ResnetUpsampleBlock2D'] }, 'd/config.json'), /d\/config.json: up_block_types = .*block type "UpBlock2D"/);
  assert.throws(() => unet2dConditionConfig({ ...base, class_embed_type: 'timestep' }, 'c'), /class_embed_type = "timestep" is not supported/);
  assert.throws(() => unet2dConditionConfig({ ...base, resnet_time_scale_shift: 'ada_group' }, 'c'), /resnet_time_scale_shift/);
  assert.throws(() => unet2dConditionConfig({ ...base, frobnicate: 1 }, 'c'), /unknown field "frobnicate"/);
  assert.throws(() => unet2dConditionConfig({ ...base, mid_block_type: 'UNetMidBlock2DCrossAttn' }, 'c'), /mid_block_type/);
});

test('UNet2DConditionModel: bad inputs are errors naming the argument', async () => {
  await useBackend('cpu');
  const m = new UNet2DConditionModel(unet2dConditionConfig(readConfig(fixture('decoder'))));
  const before = tf.memory().numTensors;
  tf.tidy(() => {
    const x = tf.zeros([1, 3, 16, 16]) as tf.Tensor4D;
    const ehs = tf.zeros([1, 81, 64]) as tf.Tensor3D;
    assert.throws(() => m.forward(x, 3, ehs, {}), /class_labels are required/);
    assert.throws(() => m.forward(tf.zeros([1, 3, 10, 16]) as tf.Tensor4D, 3, ehs, {}), /10x16; height and width must be divisible by 4/);
    assert.throws(() => m.forward(x, 3, ehs, { classLabels: tf.zeros([1, 128]) as tf.Tensor2D, attentionMask: tf.ones([1, 77]) as tf.Tensor2D }), /attention_mask has shape \[1,77\]/);
    assert.throws(() => m.forward(x, 3, tf.zeros([2, 81, 64]) as tf.Tensor3D, { classLabels: tf.zeros([1, 128]) as tf.Tensor2D }), /encoder_hidden_states has shape \[2,81,64\]/);
  });
  assert.is(tf.memory().numTensors, before);
});

test.run();
