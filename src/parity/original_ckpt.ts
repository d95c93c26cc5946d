// `karlo parity` for the original_ckpt fixture folder (fixtures README o): converts original/ with tools/convert
// into a temporary folder, then compares (1) every converted tensor with expected/ (exactly: tolerance 0),
// (2) every config.json (JSON-equal, version stamps aside), (3) our modules loaded from the converted folder
// against the reference outputs of checks/io.safetensors (project tolerance).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { SafetensorsFile } from '../io/safetensors.js';
import { FixtureTensors } from './fixture.js';
import { readJson } from '../io/weights.js';
import { convertOriginal } from '../../tools/convert/convert.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';

const COMPONENTS = ['prior', 'text_proj', 'decoder', 'super_res_first', 'super_res_last', 'text_encoder'];
const weights = (c: string) => (c === 'text_encoder' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors');

function stripStamps(o: Record<string, unknown>): Record<string, unknown> {
  const { _diffusers_version: _a, transformers_version: _b, ...rest } = o;
  return rest;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a as object).sort();
  const kb = Object.keys(b as object).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

export async function runOriginalCkptParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const log = opts.log ?? (() => {});
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-parity-convert-'));
  const out = path.join(tmp, 'converted');
  const res: Comparison[] = [];
  try {
    const configs = path.join(dir, 'original', 'configs');
    convertOriginal({ from: path.join(dir, 'original'), out, configs: fs.existsSync(configs) ? configs : undefined, log });
    // (1) converted tensors, exactly.
    for (const c of COMPONENTS) {
      const exp = SafetensorsFile.open(path.join(dir, 'expected', c, weights(c)));
      const ours = SafetensorsFile.open(path.join(out, c, weights(c)));
      try {
        let maxAbs = 0;
        let maxRef = 0;
        let ok = ours.names().length === exp.names().length;
        for (const n of exp.names()) {
          if (!ours.has(n) || ours.info(n).shape.join() !== exp.info(n).shape.join()) { ok = false; continue; }
          const cmp = compareArrays(n, ours.read(n).data, exp.read(n).data, { atol: 0 });
          maxAbs = Math.max(maxAbs, cmp.maxAbs);
          maxRef = Math.max(maxRef, cmp.maxRef);
        }
        res.push({ name: `${c}: ${exp.names().length} converted tensors (exact)`, maxAbs: ok ? maxAbs : Infinity, maxRel: 0, maxRef, allowed: 0, argmax: 0, ok: ok && maxAbs === 0 });
      } finally {
        exp.close();
        ours.close();
      }
      // (2) configs.
      const same = deepEqual(stripStamps(readJson(path.join(out, c, 'config.json'))), stripStamps(readJson(path.join(dir, 'expected', c, 'config.json'))));
      res.push({ name: `${c}/config.json (JSON-equal)`, maxAbs: same ? 0 : Infinity, maxRel: 0, maxRef: 0, allowed: 0, argmax: 0, ok: same });
    }
    // (3) our modules on the converted weights vs the reference modules' outputs.
    const ioFile = path.join(dir, 'checks', 'io.safetensors');
    const io = FixtureTensors.open(ioFile);
    const T = (n: string) => io.tensor(n);
    const atol = opts.atol ?? 1e-4;
    const cmp = (name: string, t: tf.Tensor, ref: string) => {
      const c = compareArrays(name, t.dataSync(), io.get(ref)!.data, { atol });
      c.shape = io.get(ref)!.shape;
      res.push(c);
    };
    const clip = loadComponent(path.join(out, 'text_encoder'), 'CLIPTextModelWithProjection');
    const prior = loadComponent(path.join(out, 'prior'), 'PriorTransformer');
    const textProj = loadComponent(path.join(out, 'text_proj'), 'UnCLIPTextProjModel');
    const decoder = loadComponent(path.join(out, 'decoder'), 'UNet2DConditionModel');
    const srFirst = loadComponent(path.join(out, 'super_res_first'), 'UNet2DModel');
    const srLast = loadComponent(path.join(out, 'super_res_last'), 'UNet2DModel');
    try {
      tf.tidy(() => {
        const c = clip.forward(T('clip.input_ids') as tf.Tensor2D);
        cmp('text_encoder: text_embeds vs transformers', c.textEmbeds, 'clip.hf_text_embeds');
        cmp('text_encoder: last_hidden_state vs transformers', c.lastHiddenState, 'clip.hf_last_hidden_state');
        cmp('text_encoder: last_hidden_state vs OpenAI ln_final (Karlo x_seq)', c.lastHiddenState, 'clip.openai_x_seq');
        const p = prior.forward(T('prior.hidden_states'), T('prior.timesteps'), T('text.text_embeds'), T('text.last_hidden_state') as tf.Tensor3D, T('text.mask'));
        cmp('prior: output vs diffusers', p, 'prior.diffusers_out');
        cmp('prior: output vs Karlo original', p, 'prior.karlo_out');
        const tp = textProj.forward({
          imageEmbeddings: T('decoder.image_embeddings') as tf.Tensor2D, promptEmbeds: T('text.text_embeds') as tf.Tensor2D,
          textEncoderHiddenStates: T('text.last_hidden_state') as tf.Tensor3D, doClassifierFreeGuidance: false,
        });
        cmp('text_proj: encoder_hidden_states', tp.textEncoderHiddenStates, 'decoder.text_proj_encoder_hidden_states');
        cmp('text_proj: additive_clip_time_embeddings', tp.additiveClipTimeEmbeddings, 'decoder.text_proj_additive_clip_time_embeddings');
        const mask = tf.concat([tf.ones([tp.textEncoderHiddenStates.shape[0], tp.textEncoderHiddenStates.shape[1] - T('text.mask').shape[1]!], 'int32'), tf.cast(T('text.mask'), 'int32')], 1) as tf.Tensor2D;
        const d = decoder.forward(T('decoder.sample') as tf.Tensor4D, T('decoder.timesteps'), tp.textEncoderHiddenStates, { classLabels: tp.additiveClipTimeEmbeddings, attentionMask: mask });
        cmp('decoder: output vs diffusers', d, 'decoder.diffusers_out');
        cmp('decoder: output vs Karlo original', d, 'decoder.karlo_out');
        const srIn = tf.concat([T('sr.sample'), T('sr.low_res')], 1) as tf.Tensor4D;
        const f = srFirst.forward(srIn, T('sr.super_res_first.timesteps'));
        cmp('super_res_first: output vs diffusers', f, 'sr.super_res_first.diffusers_out');
        cmp('super_res_first: output vs Karlo original', f, 'sr.super_res_first.karlo_out');
        const l = srLast.forward(srIn, T('sr.super_res_last.timesteps'));
        cmp('super_res_last: output vs diffusers', l, 'sr.super_res_last.diffusers_out');
        cmp('super_res_last: output vs Karlo original', l, 'sr.super_res_last.karlo_out');
      });
    } finally {
      for (const m of [clip, prior, textProj, decoder, srFirst, srLast]) m.dispose();
    }
    return res;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export const originalCkptParity: ParityKind = {
  name: 'original_ckpt',
  detect: (dir) => fs.existsSync(path.join(dir, 'original')) && fs.existsSync(path.join(dir, 'expected', 'key_map.json')) && fs.existsSync(path.join(dir, 'checks', 'io.safetensors')),
  run: runOriginalCkptParity,
};
