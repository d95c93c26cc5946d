// A 40-step training run of the bundled tiny decoder equals PyTorch's (fixtures/train_trajectory, made by its
// make_reference.py with torch autograd + torch.optim.AdamW): the same timesteps drawn, every step's loss and total
// gradient norm, four tensors' final weights and the images 10 learned-range sampling steps make from them. The
// per-step gradients and AdamW updates are pinned by fixtures/grads; this checks what `karlo train`'s pieces
// (TorchGenerator draws, addNoise, decoderEpsilonLoss, clipGradNormInPlace, AdamW, UnCLIPScheduler.step) add up to
// over a run, where float32 rounding differences could compound. Measured worst errors here: losses 8.9e-7 (native) /
// 1.1e-6 (wasm) relative, gradient norms 1.0e-6 / 2.0e-6, final weights 3.3e-6 / 2.3e-6, sampled images 5.3e-5 /
// 6.2e-5 absolute; the bounds below leave about 10x. On native and wasm (the pure-JS cpu backend's backward pass
// takes minutes for the 40 steps).
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { registerGradients } from '../src/backend/gradients.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { loadComponent } from '../src/loading/load_component.js';
import { BUNDLED_MODEL_DIR } from '../src/package_root.js';
import { TorchGenerator } from '../src/random/generator.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { AdamW } from '../src/training/adamw.js';
import { decoderEpsilonLoss, valueAndGrads } from '../src/training/losses.js';
import { clipGradNormInPlace } from '../src/training/trainer.js';
import { availableBackends } from '../src/backend/index.js';
import { fixture, useBackend } from './helpers.js';

await registerGradients();
const ref = loadSafetensors(fixture('train_trajectory', 'reference.safetensors'));
const get = (k: string) => {
  const t = ref.get(k);
  if (!t) throw new Error(`train_trajectory/reference.safetensors: no tensor ${k}`);
  return t;
};
const STEPS = 40, LR = 1e-3, SAMPLE_STEPS = 10;

function maxRel(ours: ArrayLike<number>, want: ArrayLike<number>): number {
  let d = 0, m = 0;
  for (let i = 0; i < want.length; i++) { d = Math.max(d, Math.abs(ours[i] - want[i])); m = Math.max(m, Math.abs(want[i])); }
  return d / m;
}

for (const backend of await availableBackends(['native', 'wasm'])) {
  test(`[${backend}] 40 training steps + sampling of the tiny decoder follow PyTorch's run`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const T = (k: string) => tf.tensor(get(k).data as Float32Array, get(k).shape);
    const x0 = T('x0') as tf.Tensor4D, ehs = T('encoder_hidden_states') as tf.Tensor3D, cl = T('class_labels') as tf.Tensor2D;
    const dec = loadComponent(path.join(BUNDLED_MODEL_DIR, 'decoder'), 'UNet2DConditionModel', { trainable: true });
    const sched = UnCLIPScheduler.fromDir(path.join(BUNDLED_MODEL_DIR, 'decoder_scheduler'));
    const vars = new Map(dec.namedParameters().map(([k, p]) => [k, p.value]));
    const opt = new AdamW(vars, { lr: LR, weightDecay: 1e-2 });
    const g = new TorchGenerator(0n);
    const B = x0.shape[0];
    const wantT = Array.from(get('timesteps').data as ArrayLike<number | bigint>, Number);
    const losses: number[] = [], norms: number[] = [];
    for (let s = 0; s < STEPS; s++) {
      // torch.randint(0, 1000, (B,)) on CPU: one 32-bit draw per value, modulo the range.
      const ts = Array.from({ length: B }, () => g.nextU32() % 1000);
      assert.equal(ts, wantT.slice(s * B, (s + 1) * B), `step ${s + 1}: timesteps`);
      const noise = tf.tensor(g.randn([...x0.shape]), x0.shape) as tf.Tensor4D;
      const { value, grads } = valueAndGrads(() => tf.tidy(() => decoderEpsilonLoss(dec, {
        noisySample: sched.addNoise(x0, noise, ts) as tf.Tensor4D, noise, timesteps: ts, encoderHiddenStates: ehs, classLabels: cl,
      })), vars);
      losses.push(value.dataSync()[0]);
      tf.dispose([value, noise]);
      norms.push(clipGradNormInPlace(grads, 1));
      opt.step(grads, LR);
      tf.dispose([...grads.values()]);
    }
    const lossErr = maxRel(losses, get('losses').data as Float32Array);
    const normErr = maxRel(norms, get('grad_norms').data as Float32Array);
    const finals = dec.namedParameters().filter(([k]) => ref.has(`final.${k}`)).map(([k, p]) => {
      const t = p.toTorch();
      const e = maxRel(t.dataSync() as Float32Array, get(`final.${k}`).data as Float32Array);
      t.dispose();
      return [k, e] as const;
    });
    assert.is(finals.length, 4, 'the four final tensors of the reference');
    sched.setTimesteps(SAMPLE_STEPS);
    let x = T('latents') as tf.Tensor4D;
    const tss = sched.timesteps;
    for (let i = 0; i < tss.length; i++) {
      const out = dec.forward(x, tss[i], ehs, { classLabels: cl });
      const r = sched.step(out, tss[i], x, { prevTimestep: i === tss.length - 1 ? undefined : tss[i + 1], generator: g });
      tf.dispose([out, x, r.predOriginalSample]);
      x = r.prevSample as tf.Tensor4D;
    }
    const sample = get('sample').data as Float32Array;
    const xs = x.dataSync();
    let sampleErr = 0;
    for (let i = 0; i < sample.length; i++) sampleErr = Math.max(sampleErr, Math.abs(xs[i] - sample[i]));
    console.log(`  [${backend}] worst relative error: losses ${lossErr.toExponential(2)}, gradient norms ${normErr.toExponential(2)}, final weights ${finals.map(([k, e]) => `${k} ${e.toExponential(2)}`).join(', ')}; sample max abs ${sampleErr.toExponential(2)}`);
    assert.ok(lossErr <= 1e-5, `losses: ${lossErr}`);
    assert.ok(normErr <= 2e-5, `gradient norms: ${normErr}`);
    for (const [k, e] of finals) assert.ok(e <= 3e-5, `final ${k}: ${e}`);
    assert.ok(sampleErr <= 6e-4, `sample: ${sampleErr}`);
    tf.dispose([x, x0, ehs, cl]);
    opt.dispose();
    dec.dispose();
    assert.is(tf.memory().numTensors, before, 'every tensor freed');
  });
}

test.run();
