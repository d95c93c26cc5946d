// Profiles one training step's forward + backward pass (kernel times and counts): where training time goes.
//   tsx tools/nano-data/profile-step.ts MODEL_DIR [batch=4] [--component super_res|decoder] [--backend native]
// MODEL_DIR: a Karlo folder (e.g. models/karlo-nano); its super_res_first or decoder is used, on random inputs
// (the decoder with random text_proj-shaped conditioning: 4 extra tokens + 77, and a class embedding).
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/backend/index.js';
import { registerGradients } from '../../src/backend/gradients.js';
import { loadComponent } from '../../src/loading/load_component.js';
import { decoderEpsilonLoss, superResEpsilonLoss, valueAndGrads } from '../../src/training/losses.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : dflt;
};
const backend = opt('--backend', 'native');
const component = opt('--component', 'super_res');
const [dir, b = '4'] = args;
if (!dir || !['super_res', 'decoder'].includes(component)) {
  process.stderr.write('usage: profile-step.ts MODEL_DIR [batch] [--component super_res|decoder] [--backend native]\n');
  process.exit(2);
}
const B = Number(b);
process.stderr.write(`${(await initBackend(backend)).message}\n`);
await registerGradients();

let forward: () => tf.Tensor, loss: () => tf.Scalar, vars: Map<string, tf.Variable>, what: string;
if (component === 'decoder') {
  const dec = loadComponent(path.join(dir, 'decoder'), 'UNet2DConditionModel');
  vars = new Map(dec.namedParameters().map(([k, p]) => [k, p.value]));
  const S = dec.config.sample_size as number, cross = dec.config.cross_attention_dim as number;
  const x = tf.randomUniform([B, 3, S, S], -1, 1) as tf.Tensor4D;
  const noise = tf.randomNormal([B, 3, S, S]) as tf.Tensor4D;
  const ehs = tf.randomNormal([B, 81, cross]) as tf.Tensor3D;
  const classLabels = tf.randomNormal([B, 4 * dec.config.block_out_channels[0]]) as tf.Tensor2D;
  const ts = Array(B).fill(500);
  forward = () => dec.forward(x, tf.tensor1d(ts, 'int32'), ehs, { classLabels });
  loss = () => decoderEpsilonLoss(dec, { noisySample: x, noise, timesteps: ts, encoderHiddenStates: ehs, classLabels });
  what = `decoder ${S}px`;
} else {
  const sr = loadComponent(path.join(dir, 'super_res_first'), 'UNet2DModel');
  vars = new Map(sr.namedParameters().map(([k, p]) => [k, p.value]));
  const size = sr.config.sample_size as number;
  const sample = tf.randomUniform([B, sr.config.in_channels, size, size], -1, 1) as tf.Tensor4D;
  const noise = tf.randomNormal([B, sr.config.out_channels, size, size]) as tf.Tensor4D;
  const ts = Array(B).fill(500);
  forward = () => sr.forward(sample, tf.tensor1d(ts, 'int32'));
  loss = () => superResEpsilonLoss(sr, { sample, noise, timesteps: ts });
  what = `super-res ${size}px`;
}
for (let k = 0; k < 3; k++) {
  let t = performance.now();
  const f = tf.tidy(forward);
  await f.data();
  f.dispose();
  const fwd = performance.now() - t;
  t = performance.now();
  const prof = await tf.profile(async () => {
    const { value, grads } = valueAndGrads(loss, vars);
    await value.data();
    value.dispose();
    tf.dispose([...grads.values()]);
  });
  const both = performance.now() - t;
  if (k < 2) continue; // warm-up
  console.log(`${what} batch ${B}: forward ${fwd.toFixed(0)} ms, forward + backward ${both.toFixed(0)} ms, ${prof.kernels.length} kernels`);
  const agg = new Map<string, [number, number]>();
  for (const kk of prof.kernels) {
    const a = agg.get(kk.name) ?? [0, 0];
    agg.set(kk.name, [a[0] + Number(kk.kernelTimeMs), a[1] + 1]);
  }
  // tf.profile also lists op scopes (fusedConv2d__op, unnamed scope) that contain kernels listed on their own.
  for (const [n, [ms, c]] of [...agg].sort((x, y) => y[1][0] - x[1][0]).slice(0, 16)) console.log(`  ${n.padEnd(28)} ${ms.toFixed(0).padStart(5)} ms  x${c}`);
}
