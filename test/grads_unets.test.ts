// Training parity against fixtures/grads (fixtures README k) for the UNets, on native: decoder (loss, output, every
// gradient, grad_input.*), both decoder AdamW steps, text_proj trained through the decoder loss, LoRA on the decoder
// (rank 4: output, loss, adapter gradients, merge/unmerge) and super-res. On the pure-JS cpu backend their backward
// pass takes minutes (measured 78 s for text_proj, 290 s for super-res; `karlo parity --backend cpu` can still run
// them); decoder and super-res on wasm: grads_wasm.test.ts.
import { test } from 'uvu';
import { registerNativeOrWhy, useBackend } from './helpers.js';
import { registerGradients } from '../src/backend/gradients.js';
import { runDecoderAdamW, runDecoderGrads, runDecoderLora, runSuperResGrads, runTextProjGrads } from '../src/parity/grads.js';
import { check, type GradsCase } from './grads_helpers.js';

await registerGradients();
const nativeWhy = await registerNativeOrWhy();

const UNETS: GradsCase[] = [
  ['decoder', runDecoderGrads, { min: 400, names: ['loss', 'output', 'x_t', 'grad.conv_out.weight', 'grad_input.sample', 'grad_input.encoder_hidden_states', 'grad_input.class_labels'] }],
  ['decoder_adamw', runDecoderAdamW, { min: 790, names: ['adamw1.conv_in.weight', 'adamw2.conv_out.bias', 'loss2', 'loss3'] }],
  ['text_proj', runTextProjGrads, { min: 29, names: ['loss', 'out_encoder_hidden_states', 'out_class_labels', 'grad_input.image_embeddings', 'grad_input.prompt_embeds', 'grad_input.text_encoder_hidden_states', '(upstream grads)'] }],
  ['decoder_lora', runDecoderLora, { min: 93, names: ['lora.output', 'lora.loss', 'grad.lora.mid_block.attentions.0.to_out.0.up.weight', 'grad.lora.down_blocks.1.attentions.0.to_q.down.weight', '(merged into the base weights)', 'merge + unmerge', 'adapted modules (44)'] }],
  ['super_res_first', runSuperResGrads, { min: 240, names: ['loss', 'upscaled', 'sample', 'output', 'grad_input.sample', 'grad.conv_in.weight'] }],
];

for (const [label, run, expect] of UNETS) {
  test(`[native] ${label}: loss, outputs and every gradient match torch autograd (fixtures/grads)`, async () => {
    if (nativeWhy) throw new Error(`native backend unavailable: ${nativeWhy}`);
    await useBackend('native');
    check(`[native] ${label}`, run, expect);
  });
}

test.run();
