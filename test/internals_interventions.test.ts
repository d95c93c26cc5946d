// Interventions through output hooks (issue 19 item 2), each checked against numbers computed independently:
// patching the prior's last block output with X gives the prior's head (norm_out, prd token, projection) applied to
// X, computed here in float64; adding a direction gives the head applied to X + d; ablating every head of an
// attention layer leaves exactly its output-bias path (prior: to_out bias; decoder AddedKV: input + to_out bias);
// head edits are linear in the head (zero/scale identities); a block output captured from another prompt makes
// the rest of the model reproduce that prompt; wrong shapes are errors naming the path; no tensors leak.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import type { PriorTransformer } from '../src/models/prior_transformer.js';
import { SafetensorsFile, type TensorData } from '../src/io/safetensors.js';
import { Capture, addDirection, makeHook, replaceWith, scaleHeads, zeroHeads, type Edit } from '../src/internals/interventions.js';
import type { OutputHook } from '../src/layers/module.js';
import type { SimpleCrossAttnDownBlock2D } from '../src/layers/cross_attn_blocks.js';
import { fixture, backendsUnderTest, useBackend, assertClose } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

function io(dir: string): (n: string) => TensorData {
  const f = SafetensorsFile.open(fixture(dir, 'io.safetensors'));
  const cache = new Map(f.names().map((n) => [n, f.read(n)]));
  f.close();
  return (n) => cache.get(n)!;
}

/** The prior's head in float64: LayerNorm(norm_out) of the last (prd) token of x [B, S, C], then proj_to_clip_embeddings. */
function priorHead(prior: PriorTransformer, x: ArrayLike<number>, B: number, S: number): Float32Array {
  const C = prior.innerDim;
  const g = prior.norm_out.weight.value.dataSync(), bta = prior.norm_out.bias.value.dataSync();
  const w = prior.proj_to_clip_embeddings.weight.value.dataSync(), pb = prior.proj_to_clip_embeddings.bias!.value.dataSync();
  const D = prior.clipEmbedDim;
  const out = new Float32Array(B * D);
  for (let b = 0; b < B; b++) {
    const row = Array.from({ length: C }, (_, c) => x[(b * S + S - 1) * C + c]);
    const m = row.reduce((a, v) => a + v, 0) / C;
    const v = row.reduce((a, u) => a + (u - m) ** 2, 0) / C;
    const n = row.map((u, c) => ((u - m) / Math.sqrt(v + prior.norm_out.eps)) * g[c] + bta[c]);
    for (let j = 0; j < D; j++) {
      let s = pb[j];
      for (let c = 0; c < C; c++) s += n[c] * w[j * C + c];
      out[b * D + j] = s;
    }
  }
  return out;
}

function priorInputs() {
  const ref = io('prior');
  const t = (n: string, shape: number[]) => tf.tensor(ref(n).data as Float32Array, shape, 'float32');
  return {
    hs: t('hidden_states', [6, 16]), pe: t('proj_embedding', [6, 16]), enc: t('encoder_hidden_states', [6, 77, 16]) as tf.Tensor3D,
    mask: tf.tensor2d(ref('attention_mask').data as Int32Array, [6, 77], 'int32'),
  };
}

/** Runs the prior once with edits (and an optional capture), returns the prediction as data. */
function runPrior(prior: PriorTransformer, inp: ReturnType<typeof priorInputs>, edits: Record<string, Edit>, cap?: Capture): Float32Array {
  prior.setOutputHook(makeHook({ edits, observe: cap?.hook }));
  try {
    const y = prior.forward(inp.hs, 999, inp.pe, inp.enc, inp.mask);
    const d = y.dataSync().slice() as Float32Array;
    y.dispose();
    return d;
  } finally {
    prior.setOutputHook(null);
  }
}

for (const backend of await backendsUnderTest()) {
  test(`[${backend}] patching the last prior block's output with X gives the prior head applied to X; adding a direction d gives the head of X + d`, async () => {
    await useBackend(backend);
    const prior = loadComponent(fixture('prior'), 'PriorTransformer');
    const inp = priorInputs();
    const before = tf.memory().numTensors;
    const last = `transformer_blocks.${prior.transformer_blocks.length - 1}`;
    const X = tf.randomNormal([6, 81, 16], 0, 1, 'float32', 7);
    const patched = runPrior(prior, inp, { [last]: replaceWith(X) });
    assertClose('head(X)', patched, priorHead(prior, X.dataSync(), 6, 81), { atol: 1e-5 });

    const cap = new Capture([last]);
    const unedited = runPrior(prior, inp, {}, cap);
    const captured = cap.get(last).dataSync();
    const d = tf.randomNormal([16], 0, 1, 'float32', 8);
    const steered = runPrior(prior, inp, { [last]: addDirection(d, 0.5) });
    const dd = d.dataSync();
    const shifted = Float32Array.from(captured, (v, i) => v + 0.5 * dd[i % 16]);
    assertClose('head(X + 0.5 d)', steered, priorHead(prior, shifted, 6, 81), { atol: 1e-5 });
    assertClose('head(captured) = unedited run', unedited, priorHead(prior, captured, 6, 81), { atol: 1e-5 });
    cap.dispose();
    tf.dispose([X, d]);
    assert.is(tf.memory().numTensors, before);
    tf.dispose(Object.values(inp));
    prior.dispose();
  });

  test(`[${backend}] prior: ablating all heads of attn1 leaves exactly its to_out bias; head edits are linear (zero/scale identities)`, async () => {
    await useBackend(backend);
    const prior = loadComponent(fixture('prior'), 'PriorTransformer');
    const inp = priorInputs();
    const before = tf.memory().numTensors;
    const attn = 'transformer_blocks.0.attn1';
    const outWith = (edit: Edit | null) => {
      const cap = new Capture([attn]);
      runPrior(prior, inp, edit ? { [`${attn}.probs`]: edit } : {}, cap);
      const d = cap.get(attn).dataSync().slice() as Float32Array;
      cap.dispose();
      return d;
    };
    const bias = prior.transformer_blocks[0].attn1.to_out.items[0].bias!.value.dataSync();
    const all = outWith(zeroHeads());
    assertClose('all heads ablated = to_out bias', all, Float32Array.from({ length: 6 * 81 * 16 }, (_, i) => bias[i % 16]), { atol: 1e-6, scaleByMax: false });
    const none = outWith(null), z0 = outWith(zeroHeads([0])), z1 = outWith(zeroHeads([1])), s0 = outWith(scaleHeads([0], 3));
    // 2 heads: out(no h0) + out(no h1) − out = out(no heads); out(3·h0) = out(no h0) + 3·(out − out(no h0)).
    assertClose('zero-head linearity', Float32Array.from(z0, (v, i) => v + z1[i] - none[i]), all, { atol: 1e-5 });
    assertClose('head scaling', s0, Float32Array.from(z0, (v, i) => v + 3 * (none[i] - v)), { atol: 1e-5 });
    assert.throws(() => runPrior(prior, inp, { [`${attn}.probs`]: zeroHeads([2]) }), /transformer_blocks\.0\.attn1\.probs" has 2 heads \(0\.\.1\); head 2/);
    assert.throws(() => runPrior(prior, inp, { [attn]: zeroHeads() }), /attention probabilities.*"transformer_blocks\.0\.attn1" has shape \[6,81,16\]/);
    assert.is(tf.memory().numTensors, before);
    tf.dispose(Object.values(inp));
    prior.dispose();
  });

  test(`[${backend}] decoder: ablating all heads of an AddedKV attention leaves its input + to_out bias (NCHW at the hook)`, async () => {
    await useBackend(backend);
    const unet = loadComponent(fixture('decoder'), 'UNet2DConditionModel');
    const ref = io('decoder');
    const t = (n: string, shape: number[]) => tf.tensor(ref(n).data as Float32Array, shape, 'float32');
    const sample = t('sample', [4, 3, 16, 16]) as tf.Tensor4D, enc = t('encoder_hidden_states', [4, 81, 64]) as tf.Tensor3D;
    const cls = t('class_labels', [4, 128]) as tf.Tensor2D;
    const mask = tf.tensor2d(ref('attention_mask').data as Int32Array, [4, 81], 'int32');
    const before = tf.memory().numTensors;
    const attn = 'down_blocks.1.attentions.0';
    const cap = new Capture([attn, 'down_blocks.1.resnets.0']);
    unet.setOutputHook(makeHook({ edits: { [`${attn}.probs`]: zeroHeads() }, observe: cap.hook }));
    tf.dispose(unet.forward(sample, 749, enc, { classLabels: cls, attentionMask: mask }));
    unet.setOutputHook(null);
    const out = cap.get(attn), input = cap.get('down_blocks.1.resnets.0');
    assert.equal(out.shape, [4, 32, 8, 8]);
    const bias = (unet.down_blocks[1] as SimpleCrossAttnDownBlock2D).attentions[0].to_out.items[0].bias!.value.dataSync();
    const x = input.dataSync();
    assertClose(`${attn} ablated`, out, Float32Array.from(x, (v, i) => v + bias[Math.floor(i / 64) % 32]), { atol: 1e-6 });
    cap.dispose();
    // A replacement of the wrong shape is an error naming the path (NCHW shape in the message).
    unet.setOutputHook(makeHook({ edits: { mid_block: () => tf.zeros([4, 64, 4, 5]) } }));
    assert.throws(() => unet.forward(sample, 749, enc, { classLabels: cls, attentionMask: mask }), /edit for "mid_block" returned shape \[4,64,4,5\]; the output "mid_block" has shape \[4,64,4,4\]/);
    const bad: OutputHook = () => tf.zeros([1]);
    bad.wants = (p) => p === 'conv_in';
    unet.setOutputHook(bad);
    assert.throws(() => unet.forward(sample, 749, enc, { classLabels: cls, attentionMask: mask }), /output hook for "conv_in" returned shape \[1\]; the output "conv_in" has shape \[4,32,16,16\]/);
    unet.setOutputHook(null);
    assert.is(tf.memory().numTensors, before, 'failed forwards free their tensors too');
    tf.dispose([sample, enc, cls, mask]);
    unet.dispose();
  });

  test(`[${backend}] CLIP text: the last layer's output captured from prompt A, patched into prompt B's run, reproduces A's last_hidden_state`, async () => {
    await useBackend(backend);
    const model = loadComponent(fixture('clip_text'), 'CLIPTextModelWithProjection');
    const ids = io('clip_text')('input_ids').data as Int32Array;
    const row = (r: number) => tf.tensor2d(ids.subarray(r * 77, (r + 1) * 77), [1, 77], 'int32');
    const a = row(0), b = row(1);
    const before = tf.memory().numTensors;
    const last = `text_model.encoder.layers.${model.config.num_hidden_layers - 1}`;
    const run = () => { const o = model.forward(b); const d = o.lastHiddenState.dataSync().slice() as Float32Array; tf.dispose(o as never); return d; };
    const cap = new Capture([last]);
    model.setOutputHook(cap.hook);
    const oa = model.forward(a);
    model.setOutputHook(null);
    const refA = oa.lastHiddenState.dataSync().slice() as Float32Array;
    tf.dispose(oa as never);
    const plainB = run();
    model.setOutputHook(makeHook({ edits: { [last]: replaceWith(cap.get(last)) } }));
    const patchedB = run();
    model.setOutputHook(null);
    assertClose('patched B = A', patchedB, refA, { atol: 1e-6, scaleByMax: false });
    assert.ok(Math.max(...plainB.map((v, i) => Math.abs(v - refA[i]))) > 1e-2, 'the prompts differ to begin with');
    cap.dispose();
    assert.is(tf.memory().numTensors, before);
    tf.dispose([a, b]);
    model.dispose();
  });
}

test.run();
