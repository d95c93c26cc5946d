import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { fixture, parityBackends, useBackend } from './helpers.js';
import { runSuperResParity } from '../src/parity/super_res.js';
import { UNet2DModel, unet2dConfig } from '../src/models/unet2d.js';
import { readConfig } from '../src/io/weights.js';

for (const backend of await parityBackends()) {
  test(`[${backend}] UNet2DModel super_res_first (output + every block_out.*) and super_res_last match diffusers, tensors freed`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const res = await runSuperResParity(fixture('super_res'));
    // first: output + 16 block outputs; last: output
    assert.is(res.length, 18);
    assert.ok(res.some((c) => c.name === 'super_res_first.block_out.down_blocks.1.res_samples.0'));
    for (const c of res) assert.ok(c.ok, `${c.name}: max abs err ${c.maxAbs} > ${c.allowed}`);
    assert.is(tf.memory().numTensors, before);
  });
}

test('UNet2DModel from the real Karlo super_res_first config has 691,579,523 parameters and diffusers key names', () => {
  const m = new UNet2DModel(unet2dConfig(readConfig(fixture('karlo_configs', 'super_res_first'))));
  assert.is(m.numParameters(), 691579523);
  const keys = m.namedParameters().map(([k]) => k);
  for (const k of ['conv_in.weight', 'time_embedding.linear_2.bias', 'down_blocks.0.resnets.2.conv1.weight', 'down_blocks.2.downsamplers.0.norm1.weight',
    'mid_block.resnets.1.time_emb_proj.weight', 'up_blocks.0.resnets.3.conv_shortcut.weight', 'up_blocks.2.upsamplers.0.conv2.bias', 'conv_norm_out.weight', 'conv_out.bias']) {
    assert.ok(keys.includes(k), k);
  }
  assert.not.ok(keys.some((k) => k.startsWith('down_blocks.3.downsamplers') || k.startsWith('up_blocks.3.upsamplers')));
});

test('UNet2DModel config: unsupported values are errors naming the field', () => {
  const base = readConfig(fixture('super_res', 'super_res_first'));
  assert.throws(() => unet2dConfig({ ...base, add_attention: true }, 'x/config.json'), /x\/config.json: add_attention = true is not supported/);
  assert.throws(() => unet2dConfig({ ...base, down_block_types: ['DownBlock2D', 'ResnetDownsampleBlock2D', 'ResnetDownsampleBlock2D'] }), /down_block_types .*"DownBlock2D"/);
  assert.throws(() => unet2dConfig({ ...base, time_embedding_type: 'fourier' }), /time_embedding_type = "fourier"/);
  assert.throws(() => unet2dConfig({ ...base, bogus: 1 }), /unknown field "bogus" for UNet2DModel/);
});

test('UNet2DModel: wrong input shape is an error naming the expectation', async () => {
  await useBackend('cpu');
  const m = new UNet2DModel(unet2dConfig(readConfig(fixture('super_res', 'super_res_first'))));
  const x = tf.zeros([1, 3, 32, 32]) as tf.Tensor4D;
  assert.throws(() => m.forward(x, 5), /sample must be NCHW with 6 channels, got \[1,3,32,32\]/);
  x.dispose();
  const y = tf.zeros([1, 6, 30, 32]) as tf.Tensor4D;
  assert.throws(() => m.forward(y, 5), /divisible by 4/);
  y.dispose();
});

test.run();
