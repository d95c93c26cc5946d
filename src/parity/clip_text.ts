// `karlo parity` kind "clip_text": a folder like test/fixtures/clip_text: config.json (architectures
// CLIPTextModelWithProjection) + model.safetensors + io.safetensors holding `input_ids` [B,L] (and optionally
// `attention_mask`) with any of the references `last_hidden_state`, `text_embeds`, `hidden_states.{i}` (from
// output_hidden_states=True, no mask) and `masked__last_hidden_state`, `masked__text_embeds`,
// `masked__hidden_states.{i}` (called with attention_mask).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { TensorData } from '../io/safetensors.js';
import { FixtureTensors, compareToFixture, namesClass } from './fixture.js';
import type { CLIPTextOutput } from '../models/clip_text.js';
import type { Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';

/** Fixtures README: single-module outputs and per-block outputs abs ≤ 1e-4 · max(1, max|ref|). */
const ATOL = 1e-4;

function intTensor(d: TensorData, file: string, key: string): tf.Tensor2D {
  if (d.shape.length !== 2) throw new Error(`${file}: "${key}" must be [batch, seq], got [${d.shape}]`);
  return tf.tensor2d(Int32Array.from(d.data), d.shape as [number, number], 'int32');
}

export async function runClipTextParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const ioFile = path.join(dir, 'io.safetensors');
  if (!fs.existsSync(ioFile)) throw new Error(`${dir}: no io.safetensors (inputs and reference outputs)`);
  const io = FixtureTensors.open(ioFile);
  const idsData = io.need('input_ids');
  const model = loadComponent(dir, 'CLIPTextModelWithProjection');
  const atol = opts.atol ?? ATOL;
  const out: Comparison[] = [];
  const ids = intTensor(idsData, ioFile, 'input_ids');
  const maskData = io.get('attention_mask');
  const mask = maskData ? intTensor(maskData, ioFile, 'attention_mask') : undefined;
  try {
    const compareRun = (prefix: string, res: CLIPTextOutput) => {
      const produced = new Map<string, tf.Tensor>([
        [`${prefix}last_hidden_state`, res.lastHiddenState],
        [`${prefix}text_embeds`, res.textEmbeds],
        ...res.hiddenStates.map((h, i) => [`${prefix}hidden_states.${i}`, h] as [string, tf.Tensor]),
      ]);
      out.push(...compareToFixture(io, produced, atol, opts.log));
    };
    const plain = model.forward(ids);
    compareRun('', plain);
    tf.dispose([plain.lastHiddenState, plain.textEmbeds, ...plain.hiddenStates]);
    if ([...io.keys()].some((k) => k.startsWith('masked__'))) {
      if (!mask) throw new Error(`${ioFile}: masked__* references need the tensor "attention_mask"`);
      const masked = model.forward(ids, mask);
      compareRun('masked__', masked);
      tf.dispose([masked.lastHiddenState, masked.textEmbeds, ...masked.hiddenStates]);
    }
    const unmatched = [...io.keys()].filter((k) => k !== 'input_ids' && k !== 'attention_mask' && !out.some((c) => c.name === k));
    if (unmatched.length) opts.log?.(`note: not compared (no counterpart): ${unmatched.join(', ')}`);
  } finally {
    tf.dispose([ids, ...(mask ? [mask] : [])]);
    model.dispose();
  }
  if (!out.length) throw new Error(`${ioFile}: no reference tensor we can produce (last_hidden_state, text_embeds, hidden_states.{i}, masked__*)`);
  return out;
}

export const clipTextParity: ParityKind = {
  name: 'clip_text',
  detect: (dir) => namesClass(dir, 'CLIPTextModelWithProjection', { modelType: 'clip_text_model', need: ['io.safetensors'] }),
  run: runClipTextParity,
};
