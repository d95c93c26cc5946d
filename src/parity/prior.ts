// `karlo parity` kind "prior": a folder like test/fixtures/prior (config.json, diffusion_pytorch_model.safetensors,
// io.safetensors with hidden_states, timestep[, timestep_b], proj_embedding, encoder_hidden_states,
// attention_mask, predicted_image_embedding[_b], block_out.transformer_blocks.*, post_process_*).
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { TensorData } from '../io/safetensors.js';
import { FixtureTensors, namesClass } from './fixture.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';

const isPriorDir = (dir: string) => namesClass(dir, 'PriorTransformer', { need: ['io.safetensors'] });

/** Runs the prior on the recorded inputs (both timesteps), with per-block hooks; one Comparison per tensor. */
export async function runPriorParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const ioFile = path.join(dir, 'io.safetensors');
  const fx = FixtureTensors.open(ioFile);
  const io = fx.tensors;
  const need = (k: string) => fx.need(k);
  const atol = opts.atol ?? 1e-4;
  const out: Comparison[] = [];
  const cmp = (name: string, ours: tf.Tensor, ref: TensorData) => {
    const c = compareArrays(name, ours.dataSync(), ref.data, { atol });
    if (ours.shape.join(',') !== ref.shape.join(',')) c.ok = false;
    out.push(c);
    opts.log?.(`${c.ok ? 'ok  ' : 'FAIL'} ${name} max abs ${c.maxAbs.toExponential(2)} (max |ref| ${c.maxRef.toExponential(2)})`);
  };

  const prior = loadComponent(dir, 'PriorTransformer');
  try {
    const blocks = new Map<string, Float32Array>();
    tf.tidy(() => {
      const t = (d: TensorData) => tf.tensor(d.data, d.shape, d.dtype);
      const hidden = t(need('hidden_states'));
      const proj = t(need('proj_embedding'));
      const enc = t(need('encoder_hidden_states')) as tf.Tensor3D;
      const mask = io.has('attention_mask') ? t(io.get('attention_mask')!) : null;
      const runs: [string, string, string][] = [['timestep', 'predicted_image_embedding', '']];
      if (io.has('timestep_b') && io.has('predicted_image_embedding_b')) runs.push(['timestep_b', 'predicted_image_embedding_b', '_b']);
      for (const [tKey, outKey, suffix] of runs) {
        const timestep = need(tKey).data[0];
        // Hooks copy each block output (they must not hold tensors the tidy frees).
        prior.setOutputHook((p, x) => { if (/^transformer_blocks\.\d+$/.test(p)) blocks.set(`block_out.${p}${suffix}`, x.dataSync() as Float32Array); });
        const pred = prior.forward(hidden, timestep, proj, enc, mask);
        prior.setOutputHook(null);
        cmp(`${outKey} (t=${timestep})`, pred, need(outKey));
        for (const [k, v] of blocks) {
          if (!k.endsWith(suffix) || (suffix === '' && k.endsWith('_b'))) continue;
          const ref = io.get(k);
          if (ref) cmp(`${k} (t=${timestep})`, tf.tensor(v, ref.shape), ref);
        }
      }
      if (io.has('post_process_input') && io.has('post_process_latents')) {
        cmp('post_process_latents', prior.postProcessLatents(t(io.get('post_process_input')!)), io.get('post_process_latents')!);
      }
      for (const k of ['clip_mean', 'clip_std'] as const) if (io.has(k)) cmp(k, prior[k].value, io.get(k)!);
    });
    const missing = [...io.keys()].filter((k) => k.startsWith('block_out.') && !blocks.has(k));
    if (missing.length) throw new Error(`${ioFile}: no output of ours for ${missing.join(', ')}`);
  } finally {
    prior.setOutputHook(null);
    prior.dispose();
  }
  return out;
}

export const priorParity: ParityKind = {
  name: 'prior',
  detect: isPriorDir,
  run: (dir, opts) => runPriorParity(dir, opts),
};
