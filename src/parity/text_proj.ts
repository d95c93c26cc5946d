// `karlo parity` for UnCLIPTextProjModel fixture folders (fixtures README e): config.json + weights + io.safetensors
// with image_embeddings, prompt_embeds, text_encoder_hidden_states and the two outputs (CFG when the text rows
// are twice the image rows, as the fixture's call).
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { FixtureTensors, namesClass } from './fixture.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';


export async function runTextProjParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const file = path.join(dir, 'io.safetensors');
  const fx = FixtureTensors.open(file);
  const get = (n: string) => fx.tensor(n);
  const model = loadComponent(dir, 'UnCLIPTextProjModel');
  try {
    const out = tf.tidy(() => {
      const imageEmbeddings = get('image_embeddings') as tf.Tensor2D;
      const promptEmbeds = get('prompt_embeds') as tf.Tensor2D;
      const r = model.forward({
        imageEmbeddings,
        promptEmbeds,
        textEncoderHiddenStates: get('text_encoder_hidden_states') as tf.Tensor3D,
        // The recorded call used guidance when the text rows are twice the image rows (unconditional rows first).
        doClassifierFreeGuidance: promptEmbeds.shape[0] === 2 * imageEmbeddings.shape[0],
      });
      return [r.textEncoderHiddenStates, r.additiveClipTimeEmbeddings];
    });
    const atol = opts.atol ?? 1e-4;
    const res = [
      compareArrays('out_text_encoder_hidden_states', out[0].dataSync(), fx.need('out_text_encoder_hidden_states').data, { atol }),
      compareArrays('out_additive_clip_time_embeddings', out[1].dataSync(), fx.need('out_additive_clip_time_embeddings').data, { atol }),
    ];
    tf.dispose(out);
    return res;
  } finally {
    model.dispose();
  }
}

export const textProjParity: ParityKind = {
  name: 'text_proj',
  detect: (dir) => namesClass(dir, 'UnCLIPTextProjModel', { need: ['io.safetensors'] }),
  run: runTextProjParity,
};
