// Profiles one super-res training step (forward vs forward + backward, kernel times): where training time goes.
//   tsx tools/nano-data/profile-step.ts MODEL_DIR [batch=4] [--backend native]
// MODEL_DIR: a Karlo folder (e.g. one written by tools/nano-data/init.ts); its super_res_first is used.
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/backend/index.js';
import { registerGradients } from '../../src/backend/gradients.js';
import { loadComponent } from '../../src/loading/load_component.js';
import { superResEpsilonLoss, valueAndGrads } from '../../src/training/losses.js';

const args = process.argv.slice(2);
const bi = args.indexOf('--backend');
const backend = bi >= 0 ? args.splice(bi, 2)[1] : 'native';
const [dir, b = '4'] = args;
if (!dir) { process.stderr.write('usage: profile-step.ts MODEL_DIR [batch] [--backend native]\n'); process.exit(2); }
const B = Number(b);
process.stderr.write(`${(await initBackend(backend)).message}\n`);
await registerGradients();
const sr = loadComponent(path.join(dir, 'super_res_first'), 'UNet2DModel');
const vars = new Map(sr.namedParameters().map(([k, p]) => [k, p.value]));
const size = sr.config.sample_size as number;
const sample = tf.randomUniform([B, sr.config.in_channels, size, size], -1, 1) as tf.Tensor4D;
const noise = tf.randomNormal([B, sr.config.out_channels, size, size]) as tf.Tensor4D;
for (let k = 0; k < 2; k++) {
  let t = performance.now();
  const f = tf.tidy(() => sr.forward(sample, tf.tensor1d(Array(B).fill(500), 'int32')));
  await f.data();
  f.dispose();
  const fwd = performance.now() - t;
  t = performance.now();
  const prof = await tf.profile(async () => {
    const { value, grads } = valueAndGrads(() => superResEpsilonLoss(sr, { sample, noise, timesteps: Array(B).fill(500) }), vars);
    await value.data();
    value.dispose();
    tf.dispose([...grads.values()]);
  });
  const both = performance.now() - t;
  if (k === 0) continue; // warm-up
  console.log(`super-res ${size}px batch ${B}: forward ${fwd.toFixed(0)} ms, forward + backward ${both.toFixed(0)} ms`);
  const agg = new Map<string, number>();
  for (const kk of prof.kernels) agg.set(kk.name, (agg.get(kk.name) ?? 0) + Number(kk.kernelTimeMs));
  for (const [n, v] of [...agg].sort((x, y) => y[1] - x[1]).slice(0, 12)) console.log(`  ${n.padEnd(28)} ${v.toFixed(0)} ms`);
}
