// Training mode: every model is in eval mode by default (dropout off, output identical to dropout 0), train() turns
// the configured dropout on (outputs change, a seeded generator makes them reproducible, gradients flow through
// the masks), eval() turns it off again. Dropout sits where torch has it: ResnetBlock2D before conv2 (decoder,
// super-res), the prior's attention output and feed-forward, CLIP's attention probabilities.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { fixture, useBackend } from './helpers.js';
import { registerGradients } from '../src/backend/gradients.js';
import { readConfig } from '../src/io/weights.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import type { Module } from '../src/layers/module.js';
import { CLIPTextModelWithProjection, clipTextConfig } from '../src/models/clip_text.js';
import { PriorTransformer, priorTransformerConfig } from '../src/models/prior_transformer.js';
import { UNet2DConditionModel, unet2dConditionConfig } from '../src/models/unet2d_condition.js';
import { UNet2DModel, unet2dConfig } from '../src/models/unet2d.js';
import { TorchGenerator, randnTensor } from '../src/random/generator.js';
import { valueAndGrads } from '../src/training/losses.js';

await registerGradients();
// (set when this file's tests start: other test files in the same process switch backends too)
test.before(async () => { await useBackend('native').catch(() => useBackend('cpu')); });

/** A model of the fixture's config with `patch` applied, loaded with the fixture's weights. */
function build<M extends Module>(make: (raw: Record<string, unknown>) => M, dir: string, file: string, patch: Record<string, unknown>): M {
  const m = make({ ...readConfig(fixture(dir)), ...patch });
  m.loadStateDict(loadSafetensors(fixture(dir, file)));
  return m;
}

interface Case {
  name: string;
  make: (patch: Record<string, unknown>) => Module;
  patch: Record<string, unknown>;
  run: (m: Module) => tf.Tensor;
}

const g = new TorchGenerator(11);
const ids = tf.tensor2d([[49406, 320, 1125, 539, 49407, ...new Array(72).fill(49407)]], [1, 77], 'int32');
const cases: Case[] = [
  {
    name: 'CLIPTextModelWithProjection (attention_dropout)',
    make: (p) => build((raw) => new CLIPTextModelWithProjection(clipTextConfig(raw)), 'clip_text', 'model.safetensors', p),
    patch: { attention_dropout: 0.5 },
    run: (m) => tf.tidy(() => (m as CLIPTextModelWithProjection).forward(ids).textEmbeds),
  },
  {
    name: 'PriorTransformer (dropout)',
    make: (p) => build((raw) => new PriorTransformer(priorTransformerConfig(raw)), 'prior', 'diffusion_pytorch_model.safetensors', p),
    patch: { dropout: 0.5 },
    run: (m) => tf.tidy(() => {
      const gg = new TorchGenerator(1);
      return (m as PriorTransformer).forward(randnTensor([2, 16], gg), tf.tensor1d([5, 900], 'int32'), randnTensor([2, 16], gg), randnTensor([2, 77, 16], gg) as tf.Tensor3D, tf.ones([2, 77]));
    }),
  },
  {
    name: 'UNet2DConditionModel (dropout)',
    make: (p) => build((raw) => new UNet2DConditionModel(unet2dConditionConfig(raw)), 'decoder', 'diffusion_pytorch_model.safetensors', p),
    patch: { dropout: 0.5 },
    run: (m) => tf.tidy(() => {
      const gg = new TorchGenerator(2);
      return (m as UNet2DConditionModel).forward(randnTensor([1, 3, 16, 16], gg) as tf.Tensor4D, 500, randnTensor([1, 81, 64], gg) as tf.Tensor3D,
        { classLabels: randnTensor([1, 128], gg) as tf.Tensor2D });
    }),
  },
  {
    name: 'UNet2DModel (dropout)',
    make: (p) => build((raw) => new UNet2DModel(unet2dConfig(raw)), 'super_res/super_res_first', 'diffusion_pytorch_model.safetensors', p),
    patch: { dropout: 0.5 },
    run: (m) => tf.tidy(() => (m as UNet2DModel).forward(randnTensor([1, 6, 16, 16], new TorchGenerator(3)) as tf.Tensor4D, 500)),
  },
];

const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);

for (const c of cases) {
  test(`${c.name}: eval by default = no dropout; train() drops (seeded: reproducible), gradients flow; eval() restores`, () => {
    const plain = c.make({});
    const drop = c.make(c.patch);
    const before = tf.memory().numTensors;
    assert.is(drop.training, false);
    const ref = c.run(plain);
    const evalOut = c.run(drop);
    assert.is(maxDiff(evalOut, ref), 0, 'eval mode: identical to the model without dropout');
    drop.train(true, { generator: new TorchGenerator(5) });
    assert.ok(drop.namedModules().every(([, m]) => m.training), 'train() reaches every module');
    const t1 = c.run(drop);
    assert.ok(maxDiff(t1, ref) > 1e-3, 'training mode: dropout changes the output');
    drop.train(true, { generator: new TorchGenerator(5) });
    const t2 = c.run(drop);
    assert.is(maxDiff(t1, t2), 0, 'same generator seed: same masks');
    const vars = new Map(drop.namedParameters().map(([k, p]) => [k, p.value]));
    const { value, grads } = valueAndGrads(() => tf.mean(tf.square(c.run(drop))) as tf.Scalar, vars);
    assert.ok(Number.isFinite(value.dataSync()[0]));
    assert.ok(grads.size > vars.size / 2, `gradients in training mode (${grads.size} of ${vars.size})`);
    tf.dispose([value, ...grads.values()]);
    drop.eval();
    const back = c.run(drop);
    assert.is(maxDiff(back, ref), 0, 'eval() again: no dropout');
    tf.dispose([ref, evalOut, t1, t2, back]);
    assert.is(tf.memory().numTensors, before);
    plain.dispose();
    drop.dispose();
  });
}

test.after(() => { ids.dispose(); void g; });
test.run();
