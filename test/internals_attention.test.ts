// Attention probabilities through the output-hook system (issue 19 item 1), on the fixture models: CLIP text
// self-attention, the prior's causal self-attention over 81 tokens, the decoder's AddedKV attention. Each is
// checked against softmax(q·kᵀ/√d + mask) computed here in float64 from the layer's own weights and its input
// (captured by the hook), every row sums to 1, asking for probs changes no output, and hooks that do not ask
// for them never see them.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { SafetensorsFile, type TensorData } from '../src/io/safetensors.js';
import type { Module, OutputHook } from '../src/layers/module.js';
import type { Linear } from '../src/layers/basic.js';
import { Capture } from '../src/internals/interventions.js';
import { fixture, backendsUnderTest, useBackend, assertClose } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

function io(dir: string): (n: string) => TensorData {
  const f = SafetensorsFile.open(fixture(dir, 'io.safetensors'));
  const cache = new Map(f.names().map((n) => [n, f.read(n)]));
  f.close();
  return (n) => cache.get(n)!;
}

/** x [rows, in] · Wᵀ + b in float64 from a Linear's own weights. */
function linear(x: ArrayLike<number>, rows: number, lin: Linear): Float64Array {
  const [outF, inF] = lin.weight.torchShape;
  const w = lin.weight.value.dataSync(), b = lin.bias?.value.dataSync();
  const o = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++) for (let j = 0; j < outF; j++) {
    let s = b ? b[j] : 0;
    for (let i = 0; i < inF; i++) s += x[r * inF + i] * w[j * inF + i];
    o[r * outF + j] = s;
  }
  return o;
}

/**
 * softmax(q·kᵀ·scale + bias(i, j)) per batch row and head: q [B·Q, heads·d], k [B·K, heads·d] → [B, heads, Q, K].
 * bias(b, i, j) additive; -Infinity allowed.
 */
function referenceProbs(q: Float64Array, k: Float64Array, B: number, Q: number, K: number, heads: number, d: number, bias: (b: number, i: number, j: number) => number): Float64Array {
  const out = new Float64Array(B * heads * Q * K);
  const inner = heads * d;
  for (let b = 0; b < B; b++) for (let h = 0; h < heads; h++) for (let i = 0; i < Q; i++) {
    const row = new Float64Array(K);
    let m = -Infinity;
    for (let j = 0; j < K; j++) {
      let s = 0;
      for (let c = 0; c < d; c++) s += q[(b * Q + i) * inner + h * d + c] * k[(b * K + j) * inner + h * d + c];
      row[j] = s / Math.sqrt(d) + bias(b, i, j);
      m = Math.max(m, row[j]);
    }
    let z = 0;
    for (let j = 0; j < K; j++) { row[j] = Math.exp(row[j] - m); z += row[j]; }
    for (let j = 0; j < K; j++) out[((b * heads + h) * Q + i) * K + j] = row[j] / z;
  }
  return out;
}

function assertRowsSumToOne(name: string, p: tf.Tensor): void {
  const sums = tf.tidy(() => tf.sum(p, -1));
  const ones = new Float32Array(sums.size).fill(1);
  assertClose(`${name} row sums`, sums, ones, { atol: 1e-5, scaleByMax: false });
  sums.dispose();
}

/** Runs fwd with a Capture of `globs` installed; returns outputs data + the capture (caller disposes). */
function withCapture(model: Module, globs: string[], fwd: () => tf.Tensor): { out: Float32Array; cap: Capture } {
  const cap = new Capture(globs);
  model.setOutputHook(cap.hook);
  try {
    const t = fwd();
    const out = t.dataSync().slice() as Float32Array;
    t.dispose();
    return { out, cap };
  } finally {
    model.setOutputHook(null);
  }
}

function plainRun(fwd: () => tf.Tensor): Float32Array {
  const t = fwd();
  const d = t.dataSync().slice() as Float32Array;
  t.dispose();
  return d;
}

for (const backend of await backendsUnderTest()) {
  test(`[${backend}] CLIP text self-attention probs = softmax(QKᵀ/√d + causal mask) from the layer's own q/k; rows sum to 1; outputs unchanged`, async () => {
    await useBackend(backend);
    const model = loadComponent(fixture('clip_text'), 'CLIPTextModelWithProjection');
    const ref = io('clip_text');
    const ids = tf.tensor2d(ref('input_ids').data as Int32Array, [3, 77], 'int32');
    const before = tf.memory().numTensors;
    const fwd = () => { const o = model.forward(ids); tf.dispose([o.textEmbeds, ...o.hiddenStates]); return o.lastHiddenState; };
    const plain = plainRun(fwd);
    const { out, cap } = withCapture(model, ['*.probs', 'text_model.encoder.layers.*.layer_norm1'], fwd);
    try {
      assertClose('last_hidden_state with probs hooked', out, plain, { atol: 1e-6, scaleByMax: false });
      const cfg = model.config, H = cfg.num_attention_heads, d = cfg.hidden_size / H;
      for (let l = 0; l < cfg.num_hidden_layers; l++) {
        const path = `text_model.encoder.layers.${l}.self_attn`;
        const probs = cap.get(`${path}.probs`);
        assert.equal(probs.shape, [3, H, 77, 77]);
        assertRowsSumToOne(path, probs);
        const x = cap.get(`text_model.encoder.layers.${l}.layer_norm1`).dataSync();
        const attn = model.text_model.encoder.layers[l].self_attn;
        const q = linear(x, 3 * 77, attn.q_proj), k = linear(x, 3 * 77, attn.k_proj);
        const expected = referenceProbs(q, k, 3, 77, 77, H, d, (_b, i, j) => (j > i ? -Infinity : 0));
        assertClose(`${path}.probs`, probs, Float32Array.from(expected), { atol: 1e-5, scaleByMax: false });
      }
    } finally {
      cap.dispose();
    }
    assert.is(tf.memory().numTensors, before);
    ids.dispose();
    model.dispose();
  });

  test(`[${backend}] prior causal self-attention probs over 81 tokens = softmax(QKᵀ/√d + padding and causal bias); rows sum to 1; outputs unchanged`, async () => {
    await useBackend(backend);
    const prior = loadComponent(fixture('prior'), 'PriorTransformer');
    const ref = io('prior');
    const t = (n: string, shape: number[]) => tf.tensor(ref(n).data as Float32Array, shape, 'float32');
    const hs = t('hidden_states', [6, 16]), pe = t('proj_embedding', [6, 16]), enc = t('encoder_hidden_states', [6, 77, 16]) as tf.Tensor3D;
    const maskData = ref('attention_mask').data as Int32Array;
    const mask = tf.tensor2d(maskData, [6, 77], 'int32');
    const before = tf.memory().numTensors;
    const fwd = () => prior.forward(hs, 999, pe, enc, mask);
    const plain = plainRun(fwd);
    const { out, cap } = withCapture(prior, ['transformer_blocks.*.attn1.probs', 'transformer_blocks.*.norm1'], fwd);
    try {
      assertClose('predicted_image_embedding with probs hooked', out, plain, { atol: 1e-6, scaleByMax: false });
      const H = prior.config.num_attention_heads, d = prior.config.attention_head_dim, S = 81;
      prior.transformer_blocks.forEach((block, l) => {
        const path = `transformer_blocks.${l}.attn1`;
        const probs = cap.get(`${path}.probs`);
        assert.equal(probs.shape, [6, H, S, S]);
        assertRowsSumToOne(path, probs);
        const x = cap.get(`transformer_blocks.${l}.norm1`).dataSync();
        const q = linear(x, 6 * S, block.attn1.to_q), k = linear(x, 6 * S, block.attn1.to_k);
        // diffusers: (1 − mask)·−10000 on the 77 text keys (0 on the 4 extra), plus −10000 above the diagonal.
        const bias = (b: number, i: number, j: number) => (j < 77 && !maskData[b * 77 + j] ? -10000 : 0) + (j > i ? -10000 : 0);
        assertClose(`${path}.probs`, probs, Float32Array.from(referenceProbs(q, k, 6, S, S, H, d, bias)), { atol: 1e-5, scaleByMax: false });
        // The prd token (last query) never puts weight on padded text tokens.
        const p = probs.dataSync();
        for (let j = 0; j < 77; j++) if (!maskData[5 * 77 + j]) assert.ok(p[((5 * H) * S + 80) * S + j] < 1e-3, `padded key ${j}`);
      });
    } finally {
      cap.dispose();
    }
    assert.is(tf.memory().numTensors, before);
    tf.dispose([hs, pe, enc, mask]);
    prior.dispose();
  });

  test(`[${backend}] decoder AddedKV probs: spatial queries over [extra + text tokens | spatial keys] = softmax(QKᵀ/√d + mask bias); rows sum to 1; outputs unchanged`, async () => {
    await useBackend(backend);
    const unet = loadComponent(fixture('decoder'), 'UNet2DConditionModel');
    const ref = io('decoder');
    const t = (n: string, shape: number[]) => tf.tensor(ref(n).data as Float32Array, shape, 'float32');
    const sample = t('sample', [4, 3, 16, 16]) as tf.Tensor4D, enc = t('encoder_hidden_states', [4, 81, 64]) as tf.Tensor3D;
    const cls = t('class_labels', [4, 128]) as tf.Tensor2D;
    const maskData = ref('attention_mask').data as Int32Array;
    const mask = tf.tensor2d(maskData, [4, 81], 'int32');
    const before = tf.memory().numTensors;
    const fwd = () => unet.forward(sample, 749, enc, { classLabels: cls, attentionMask: mask });
    const plain = plainRun(fwd);
    const { out, cap } = withCapture(unet, ['*.attentions.*.probs', '*.attentions.*.group_norm'], fwd);
    try {
      assertClose('decoder output with probs hooked', out, plain, { atol: 1e-6, scaleByMax: false });
      const attns = unet.namedModules().filter(([p]) => /\.attentions\.\d+$/.test(p));
      assert.is(attns.length, 2 + 2 + 1 + 3 + 3, 'down 1-2 (2 each), mid (1), up 0-1 (3 each)');
      const encData = enc.dataSync();
      for (const [path, m] of attns) {
        const a = m as import('../src/layers/attention.js').AddedKVAttention;
        const probs = cap.get(`${path}.probs`);
        const [B, heads, HW, K] = probs.shape;
        assert.equal([B, heads, K], [4, a.heads, 81 + HW], path);
        assertRowsSumToOne(path, probs);
        // The group_norm hook reports [B, H·W, C] tokens (the spatial stream the projections read).
        const normed = cap.get(`${path}.group_norm`).dataSync();
        const q = linear(normed, B * HW, a.to_q);
        const kEnc = linear(encData, B * 81, a.add_k_proj), kSp = linear(normed, B * HW, a.to_k!);
        const inner = a.innerDim;
        const k = new Float64Array(B * K * inner);
        for (let b = 0; b < B; b++) {
          k.set(kEnc.subarray(b * 81 * inner, (b + 1) * 81 * inner), b * K * inner);
          k.set(kSp.subarray(b * HW * inner, (b + 1) * HW * inner), (b * K + 81) * inner);
        }
        const bias = (b: number, _i: number, j: number) => (j < 81 && !maskData[b * 81 + j] ? -10000 : 0);
        assertClose(`${path}.probs`, probs, Float32Array.from(referenceProbs(q, k, B, HW, K, heads, a.dimHead, bias)), { atol: 1e-5, scaleByMax: false });
      }
    } finally {
      cap.dispose();
    }
    assert.is(tf.memory().numTensors, before);
    tf.dispose([sample, enc, cls, mask]);
    unet.dispose();
  });
}

test('attention probs are opt-in: hooks without `wants` never see them; a hook that wants nothing is never called', async () => {
  await useBackend('cpu');
  const prior = loadComponent(fixture('prior'), 'PriorTransformer');
  const ref = io('prior');
  const t = (n: string, shape: number[]) => tf.tensor(ref(n).data as Float32Array, shape, 'float32');
  const hs = t('hidden_states', [6, 16]), pe = t('proj_embedding', [6, 16]), enc = t('encoder_hidden_states', [6, 77, 16]) as tf.Tensor3D;
  const seen: string[] = [];
  prior.setOutputHook((p) => { seen.push(p); });
  tf.dispose(prior.forward(hs, 999, pe, enc, null));
  assert.ok(seen.includes('transformer_blocks.0.attn1'));
  assert.not.ok(seen.some((p) => p.endsWith('.probs')), 'no probs without asking');
  let calls = 0;
  const nothing: OutputHook = () => { calls++; };
  nothing.wants = () => false;
  prior.setOutputHook(nothing);
  tf.dispose(prior.forward(hs, 999, pe, enc, null));
  assert.is(calls, 0);
  prior.setOutputHook(null);
  tf.dispose([hs, pe, enc]);
  prior.dispose();
});

test.run();
