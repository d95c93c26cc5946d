// Memory of the training loop: 100 steps (forward + backward + clipGradNorm + AdamW, scheduled learning rate) on a
// tiny model keep tf.memory().numTensors flat (the count after the first step, which creates the optimizer state,
// never moves) and memory bounded (after a garbage collection and with the native buffer pool trimmed: RSS and the
// JS heap from step 50, when the allocators have warmed up, to step 100; measured flat over 400 steps), for full fine-tuning of the tiny prior and for LoRA on it; the loss goes down.
// (The tiny prior keeps it fast; the decoder's and super-res's training steps are the same code and their
// gradients are checked in grads_unets.test.ts.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { fixture, registerNativeOrWhy, useBackend } from './helpers.js';
import { registerGradients } from '../src/backend/gradients.js';
import type { Module } from '../src/layers/module.js';
import type { PriorTransformer } from '../src/models/prior_transformer.js';
import { trimBackendMemory } from '../src/backend/memory.js';
import { TorchGenerator, randnTensor } from '../src/random/generator.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { AdamW } from '../src/training/adamw.js';
import { clipGradNorm } from '../src/training/clip_grad.js';
import { applyLora } from '../src/training/lora.js';
import { priorLoss, valueAndGrads } from '../src/training/losses.js';
import { lrSchedule } from '../src/training/lr_schedule.js';
import { trainableVariables } from '../src/training/trainable.js';
import { loadComponent } from '../src/loading/load_component.js';

await registerGradients();
const nativeWhy = await registerNativeOrWhy();
const STEPS = 100;
const RSS_BUDGET_MB = 32;
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
/** RSS after a full garbage collection, with the native backend's recycled buffers given back. */
function settled(): { rss: number; heap: number } {
  trimBackendMemory();
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss / 2 ** 20, heap: m.heapUsed / 2 ** 20 };
}

function loop(model: Module, vars: Map<string, tf.Variable>, label: string): void {
  const scheduler = new UnCLIPScheduler();
  const opt = new AdamW(vars, { lr: 1e-3 });
  const lr = lrSchedule({ kind: 'cosine', baseLr: 1e-3, warmupSteps: 10, totalSteps: STEPS });
  const g = new TorchGenerator(0);
  // One fixed batch of 4: the loss must go down on it.
  const batch = {
    imageEmbeds: tf.keep(randnTensor([4, 16], g)) as tf.Tensor2D,
    noise: tf.keep(randnTensor([4, 16], g)) as tf.Tensor2D,
    timesteps: [10, 300, 600, 900],
    projEmbedding: tf.keep(randnTensor([4, 16], g)) as tf.Tensor2D,
    encoderHiddenStates: tf.keep(randnTensor([4, 77, 16], g)) as tf.Tensor3D,
    attentionMask: tf.keep(tf.ones([4, 77])) as tf.Tensor2D,
  };
  const before = tf.memory().numTensors;
  let afterFirst = -1;
  let at50 = { rss: 0, heap: 0 };
  const losses: number[] = [];
  const t0 = performance.now();
  for (let step = 0; step < STEPS; step++) {
    const { value, grads } = valueAndGrads(() => priorLoss(model as PriorTransformer, scheduler, batch), vars);
    const clipped = clipGradNorm(grads, 1.0);
    opt.step(clipped.grads, lr(step));
    losses.push(value.dataSync()[0]);
    tf.dispose([value, ...grads.values(), ...clipped.grads.values()]);
    const n = tf.memory().numTensors;
    if (step === 0) afterFirst = n;
    else assert.is(n, afterFirst, `${label}: step ${step + 1}: ${n} tensors, ${afterFirst} after the first step`);
    if (step === 49) at50 = settled();
  }
  const end = settled();
  const grow = end.rss - at50.rss;
  const heapGrow = end.heap - at50.heap;
  const s = opt.state();
  const stateTensors = s.tensors.size;
  tf.dispose([...s.tensors.values()]);
  assert.is(afterFirst - before, stateTensors, `${label}: the only new tensors are the AdamW moments`);
  console.log(`  ${label}: ${STEPS} steps in ${((performance.now() - t0) / 1000).toFixed(1)} s, loss ${losses[0].toFixed(4)} -> ${losses[STEPS - 1].toFixed(4)}, ` +
    `${afterFirst} tensors throughout (${stateTensors} optimizer moments), RSS ${grow >= 0 ? '+' : ''}${grow.toFixed(1)} MB and JS heap ${heapGrow >= 0 ? '+' : ''}${heapGrow.toFixed(2)} MB from step 50 to ${STEPS}`);
  assert.ok(grow < RSS_BUDGET_MB, `${label}: RSS grew ${grow.toFixed(1)} MB from step 50 to ${STEPS} (budget ${RSS_BUDGET_MB} MB)`);
  assert.ok(heapGrow < 4, `${label}: JS heap grew ${heapGrow.toFixed(2)} MB from step 50 to ${STEPS} (budget 4 MB)`);
  assert.ok(losses[STEPS - 1] < 0.8 * losses[0], `${label}: loss ${losses[0]} -> ${losses[STEPS - 1]} should go down`);
  opt.dispose();
  tf.dispose(Object.values(batch).filter((t) => t instanceof tf.Tensor) as tf.Tensor[]);
  assert.is(tf.memory().numTensors, before - 5, `${label}: everything freed`);
}

test(`${STEPS} training steps of the tiny prior (full fine-tuning, clip_mean/clip_std frozen): numTensors flat, RSS bounded, loss down`, async () => {
  if (nativeWhy) throw new Error(`native backend unavailable: ${nativeWhy}`);
  await useBackend('native');
  const prior = loadComponent(fixture('prior'), 'PriorTransformer');
  loop(prior, trainableVariables(prior, { freeze: ['clip_mean', 'clip_std'] }), 'prior full');
  prior.dispose();
});

test(`${STEPS} training steps of LoRA (rank 4) on the tiny prior: numTensors flat, RSS bounded, loss down`, async () => {
  if (nativeWhy) throw new Error(`native backend unavailable: ${nativeWhy}`);
  await useBackend('native');
  const prior = loadComponent(fixture('prior'), 'PriorTransformer');
  const lora = applyLora(prior, { rank: 4, alpha: 4, seed: 1 });
  loop(prior, lora.variables(), 'prior LoRA');
  lora.remove();
  prior.dispose();
});

test.run();
