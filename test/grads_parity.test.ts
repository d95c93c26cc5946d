// Training parity against fixtures/grads (fixtures README k), CLIP text and prior on native, cpu and wasm: every
// loss, model output, parameter gradient (max|ours − ref| ≤ 1e-4·max|ref| + 1e-6·grad_global_max_abs), grad_input.*,
// the sparse token-embedding gradient, params_with_no_grad, both AdamW steps of the prior. The UNets: grads_unets.test.ts.
import { test } from 'uvu';
import { registerNativeOrWhy, useBackend } from './helpers.js';
import { registerGradients } from '../src/backend/gradients.js';
import { availableBackends } from '../src/backend/index.js';
import { runClipTextGrads, runPriorAdamW, runPriorGrads } from '../src/parity/grads.js';
import { check, type GradsCase } from './grads_helpers.js';

await registerGradients();
const nativeWhy = await registerNativeOrWhy();

const SMALL: GradsCase[] = [
  ['clip_text', runClipTextGrads, { min: 40, names: ['loss', 'text_embeds', 'sparse_grad.text_model.embeddings.token_embedding.weight.values', '.indices', 'other 49381 rows', 'grad.text_model.final_layer_norm.weight', 'params_with_no_grad'] }],
  ['prior', runPriorGrads, { min: 55, names: ['loss', 'x_t', 'x0', 'predicted_image_embedding', 'grad_input.x_t', 'grad_input.proj_embedding', 'grad_input.encoder_hidden_states', 'params_with_no_grad [clip_mean, clip_std]'] }],
  ['prior_adamw', runPriorAdamW, { min: 300, names: ['adamw1.', 'adamw2.', 'exp_avg1.', 'exp_avg_sq2.', 'grad2.', 'loss1', 'loss2', 'loss3'] }],
];

// wasm: the CLIP text and prior cases here; the UNets on wasm in grads_wasm.test.ts.
const wasm = (await availableBackends(['wasm'])).length > 0;
for (const backend of ['native', 'cpu', ...(wasm ? ['wasm'] : [])]) {
  for (const [label, run, expect] of SMALL) {
    test(`[${backend}] ${label}: loss, outputs and every gradient match torch autograd (fixtures/grads)`, async () => {
      if (backend === 'native' && nativeWhy) throw new Error(`native backend unavailable: ${nativeWhy}`);
      await useBackend(backend);
      check(`[${backend}] ${label}`, run, expect);
    });
  }
}

test.run();
