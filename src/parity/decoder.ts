// `karlo parity` for UNet2DConditionModel fixture folders (fixtures README f): config.json + weights +
// io.safetensors with sample, timestep, encoder_hidden_states, class_labels, attention_mask, output, the
// per-block activations block_out.* (NCHW) and optionally a second call nomask_* (no attention mask).
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { TensorData } from '../io/safetensors.js';
import type { UNet2DConditionModel } from '../models/unet2d_condition.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';
import { FixtureTensors, namesClass } from './fixture.js';
import { loadComponent } from '../loading/load_component.js';

/** Hook outputs (the models hand them over in PyTorch layout) copied by path, for the paths asked for. */
export function captureOutputs(model: { setOutputHook(fn: ((p: string, t: tf.Tensor) => void) | null): void }, wanted: Set<string>) {
  const got = new Map<string, Float32Array>();
  model.setOutputHook((p, t) => {
    if (!wanted.has(p)) return;
    got.set(p, (t.dataSync() as Float32Array).slice());
  });
  return { got, stop: () => model.setOutputHook(null) };
}

function toTensor(t: TensorData): tf.Tensor {
  return tf.tensor(t.data, t.shape, t.dtype);
}

/** One UNet call on the fixture's inputs under `prefix` ('' or 'nomask_'); returns its comparisons. */
export function compareUNetCall(
  model: UNet2DConditionModel,
  io: FixtureTensors,
  prefix: string,
  withBlocks: boolean,
  atol: number,
): Comparison[] {
  const get = (n: string) => io.need(prefix + n);
  const blockNames = withBlocks ? [...io.keys()].filter((n) => n.startsWith('block_out.')) : [];
  const cap = captureOutputs(model, new Set(blockNames.map((n) => n.slice('block_out.'.length))));
  let out: Float32Array;
  try {
    out = tf.tidy(() => {
      const mask = prefix === '' && io.has('attention_mask') ? toTensor(get('attention_mask')) as tf.Tensor2D : null;
      const ts = get('timestep');
      // I64 timesteps arrive as int32, float ones as float32; 0-d or [1] or one per row.
      const y = model.forward(toTensor(get('sample')) as tf.Tensor4D, tf.tensor1d(Array.from(ts.data), ts.dtype), toTensor(get('encoder_hidden_states')) as tf.Tensor3D, {
        classLabels: io.has(prefix + 'class_labels') ? toTensor(get('class_labels')) as tf.Tensor2D : null,
        attentionMask: mask,
      });
      return y.dataSync() as Float32Array;
    });
  } finally {
    cap.stop();
  }
  // Rows in execution order: block outputs as the hooks fired, blocks never emitted, then the model output.
  const fired = [...cap.got.keys()].map((k) => `block_out.${k}`).filter((n) => blockNames.includes(n));
  const res: Comparison[] = [];
  for (const n of [...fired, ...blockNames.filter((b) => !fired.includes(b))]) {
    const ours = cap.got.get(n.slice('block_out.'.length));
    // A block output we never produced is a failure, not a skip.
    res.push(ours ? compareArrays(n, ours, io.get(n)!.data, { atol }) : { name: `${n} (not emitted)`, maxAbs: Infinity, maxRel: Infinity, maxRef: NaN, allowed: 0, argmax: -1, ok: false });
  }
  res.push(compareArrays(`${prefix}output`, out, get('output').data, { atol }));
  return res;
}

export async function runDecoderParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const file = path.join(dir, 'io.safetensors');
  const io = FixtureTensors.open(file);
  const model = loadComponent(dir, 'UNet2DConditionModel');
  const atol = opts.atol ?? 1e-4;
  try {
    const res = compareUNetCall(model, io, '', true, atol);
    if (io.has('nomask_sample')) res.push(...compareUNetCall(model, io, 'nomask_', false, atol));
    return res;
  } finally {
    model.dispose();
  }
}

export const decoderParity: ParityKind = {
  name: 'decoder',
  detect: (dir) => namesClass(dir, 'UNet2DConditionModel', { need: ['io.safetensors'] }),
  run: runDecoderParity,
};
