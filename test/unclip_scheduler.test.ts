// UnCLIPScheduler parity with diffusers 0.25.1 (test/fixtures/schedulers): schedule tables, respaced timesteps,
// single steps and whole loops, with the recorded variance noise and with our torch-compatible generator.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors } from '../src/io/safetensors.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { roundHalfEven } from '../src/samplers/betas.js';
import { runSchedulerParity } from '../src/parity/schedulers.js';
import { fixture, backendsUnderTest, useBackend } from './helpers.js';

const NAMES = ['prior', 'decoder', 'super_res'];

test('squaredcos_cap_v2 betas, alphas and alphas_cumprod equal diffusers bit for bit', () => {
  for (const name of NAMES) {
    const st = loadSafetensors(fixture('schedulers', `${name}.safetensors`));
    const s = UnCLIPScheduler.fromDir(fixture('schedulers', name));
    for (const [key, ours] of [['betas', s.betas], ['alphas', s.alphas], ['alphas_cumprod', s.alphasCumprod]] as const) {
      const ref = st.get(key)!.data;
      assert.is(ours.length, ref.length);
      for (let i = 0; i < ref.length; i++) if (ours[i] !== ref[i]) assert.unreachable(`${name}.${key}[${i}] = ${ours[i]}, reference ${ref[i]}`);
    }
  }
});

test('setTimesteps gives the reference timesteps for every N exactly (numpy round half to even)', () => {
  const st = loadSafetensors(fixture('schedulers', 'prior.safetensors'));
  const s = UnCLIPScheduler.fromDir(fixture('schedulers', 'prior'));
  let n = 0;
  for (const key of st.keys()) {
    const m = /^timesteps\.N(\d+)$/.exec(key);
    if (!m) continue;
    s.setTimesteps(Number(m[1]));
    assert.equal(s.timesteps, [...st.get(key)!.data], key);
    n++;
  }
  assert.ok(n >= 6);
  assert.is(roundHalfEven(166.5), 166);
  assert.is(roundHalfEven(832.5), 832);
  assert.is(roundHalfEven(2.5), 2);
  assert.is(roundHalfEven(3.5), 4);
});

test('bad configs and arguments are errors naming the field', () => {
  assert.throws(() => UnCLIPScheduler.fromConfig({ beta_schedule: 'linear' } as never), /beta_schedule = "linear"/);
  assert.throws(() => UnCLIPScheduler.fromConfig({ variance_type: 'fixed_small' } as never), /variance_type = "fixed_small"/);
  assert.throws(() => UnCLIPScheduler.fromConfig({ prediction_type: 'v_prediction' } as never), /prediction_type = "v_prediction"/);
  assert.throws(() => UnCLIPScheduler.fromDir('/nonexistent/prior_scheduler'), /nonexistent\/prior_scheduler\/scheduler_config\.json/);
  const s = UnCLIPScheduler.fromConfig({});
  assert.throws(() => s.setTimesteps(1), /steps: 1/);
  const x = tf.zeros([1, 3, 4, 4]);
  assert.throws(() => s.step(x, 10, x, {}), /needs variance noise/);
  assert.throws(() => s.step(x, 1000, x, {}), /timestep 1000/);
  x.dispose();
});

for (const backend of await backendsUnderTest()) {
  test(`[${backend}] every single step and loop (recorded noise and TorchGenerator) matches diffusers within 1e-5`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    for (const name of NAMES) {
      const comps = await runSchedulerParity(fixture('schedulers'), name, {});
      const singles = comps.filter((c) => c.name.includes('single.'));
      const loops = comps.filter((c) => c.name.includes('loop.'));
      assert.ok(singles.length >= 4 && loops.length >= 12, `${name}: ${singles.length} single / ${loops.length} loop comparisons`);
      for (const c of comps) {
        if (!c.ok) assert.unreachable(`${c.name}: max abs err ${c.maxAbs.toExponential(3)} > ${c.allowed.toExponential(3)}`);
      }
    }
    assert.is(tf.memory().numTensors, before, 'tensors leaked');
  });
}

test.run();
