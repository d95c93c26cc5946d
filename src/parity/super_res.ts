// `karlo parity` for super-resolution UNet2DModel fixtures (fixtures README g): either one UNet2DModel folder
// (config.json + weights + io.safetensors with sample, timestep, output and optional block_out.*), or a folder
// holding super_res_first/ and/or super_res_last/ such folders.
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { FixtureTensors, namesClass } from './fixture.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';

const SUBFOLDERS = ['super_res_first', 'super_res_last'];

const isUNet2DFolder = (dir: string) => namesClass(dir, 'UNet2DModel', { need: ['io.safetensors'] });

/** One UNet2DModel fixture folder: output and every block_out.* (names prefixed with `prefix`). */
export async function runUNet2DParity(dir: string, opts: ParityOptions = {}, prefix = ''): Promise<Comparison[]> {
  const file = path.join(dir, 'io.safetensors');
  const fx = FixtureTensors.open(file);
  const io = fx.tensors;
  const need = (n: string) => fx.need(n);
  const sampleData = need('sample');
  const tsData = need('timestep');
  if (sampleData.shape.length !== 4) throw new Error(`${file}: "sample" must be NCHW, got shape [${sampleData.shape}]`);
  const model = loadComponent(dir, 'UNet2DModel');
  const captured = new Map<string, Float32Array>();
  const wanted = new Set([...io.keys()].filter((k) => k.startsWith('block_out.')).map((k) => k.slice('block_out.'.length)));
  if (wanted.size) model.setOutputHook((p, t) => { if (wanted.has(p)) captured.set(p, t.dataSync() as Float32Array); });
  try {
    const out = tf.tidy(() => {
      const sample = tf.tensor4d(sampleData.data as Float32Array, sampleData.shape as [number, number, number, number]);
      const ts = tf.tensor(Array.from(tsData.data), tsData.shape.length ? tsData.shape : [], 'float32');
      return model.forward(sample, ts);
    });
    const atol = opts.atol ?? 1e-4;
    const res: Comparison[] = [compareArrays(`${prefix}output`, out.dataSync(), need('output').data, { atol })];
    out.dispose();
    for (const name of [...wanted].sort()) {
      const ours = captured.get(name);
      const ref = need(`block_out.${name}`);
      res.push(ours
        ? compareArrays(`${prefix}block_out.${name}`, ours, ref.data, { atol })
        : { name: `${prefix}block_out.${name} (not produced by our model)`, maxAbs: Infinity, maxRel: Infinity, maxRef: NaN, allowed: 0, argmax: -1, ok: false });
    }
    return res;
  } finally {
    model.dispose();
  }
}

export async function runSuperResParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  if (isUNet2DFolder(dir)) return runUNet2DParity(dir, opts);
  const subs = SUBFOLDERS.filter((s) => isUNet2DFolder(path.join(dir, s)));
  if (!subs.length) throw new Error(`${dir}: neither a UNet2DModel fixture folder nor one holding ${SUBFOLDERS.join('/ or ')}/`);
  const res: Comparison[] = [];
  for (const s of subs) {
    res.push(...(await runUNet2DParity(path.join(dir, s), opts, `${s}.`)));
  }
  return res;
}

export const superResParity: ParityKind = {
  name: 'super_res',
  detect: (dir) => isUNet2DFolder(dir) || SUBFOLDERS.some((s) => isUNet2DFolder(path.join(dir, s))),
  run: runSuperResParity,
};
