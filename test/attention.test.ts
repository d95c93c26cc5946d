// AddedKVAttention (diffusers Attention + AttnAddedKVProcessor) against a float64 loop implementation of the same
// formula, on random weights: spatial GroupNorm, keys/values = [add_k/add_v(encoder), to_k/to_v(spatial)], the mask
// bias right-padded with zeros, softmax(q·kᵀ·d^-0.5 + bias)·v, to_out.0, residual; and the only-cross-attention form.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { AddedKVAttention } from '../src/layers/attention.js';
import { TorchGenerator } from '../src/random/generator.js';
import { backendsUnderTest, useBackend, assertClose } from './helpers.js';

const B = 2, H = 3, W = 2, C = 8, HEADS = 2, D = 4, L = 5, E = 6, GROUPS = 4;

function reference(x: Float32Array, enc: Float32Array, mask: number[][] | null, p: Map<string, Float32Array>, onlyCross: boolean): Float64Array {
  const hw = H * W;
  const lin = (inp: ArrayLike<number>, rows: number, inF: number, w: string, outF: number) => {
    const o = new Float64Array(rows * outF);
    const wt = p.get(`${w}.weight`)!, b = p.get(`${w}.bias`)!;
    for (let r = 0; r < rows; r++) for (let j = 0; j < outF; j++) {
      let s = b[j];
      for (let i = 0; i < inF; i++) s += inp[r * inF + i] * wt[j * inF + i];
      o[r * outF + j] = s;
    }
    return o;
  };
  const out = new Float64Array(B * hw * C);
  for (let b = 0; b < B; b++) {
    // GroupNorm over (tokens, channels of the group), biased variance, eps 1e-5.
    const xs = x.subarray(b * hw * C, (b + 1) * hw * C);
    const normed = new Float64Array(hw * C);
    const cg = C / GROUPS;
    for (let g = 0; g < GROUPS; g++) {
      let m = 0, v = 0;
      for (let t = 0; t < hw; t++) for (let c = g * cg; c < (g + 1) * cg; c++) m += xs[t * C + c];
      m /= hw * cg;
      for (let t = 0; t < hw; t++) for (let c = g * cg; c < (g + 1) * cg; c++) v += (xs[t * C + c] - m) ** 2;
      v /= hw * cg;
      for (let t = 0; t < hw; t++) for (let c = g * cg; c < (g + 1) * cg; c++) {
        normed[t * C + c] = ((xs[t * C + c] - m) / Math.sqrt(v + 1e-5)) * p.get('group_norm.weight')![c] + p.get('group_norm.bias')![c];
      }
    }
    const q = lin(normed, hw, C, 'to_q', C);
    const encB = enc.subarray(b * L * E, (b + 1) * L * E);
    const ks = [lin(encB, L, E, 'add_k_proj', C)], vs = [lin(encB, L, E, 'add_v_proj', C)];
    if (!onlyCross) { ks.push(lin(normed, hw, C, 'to_k', C)); vs.push(lin(normed, hw, C, 'to_v', C)); }
    const keys = ks.flatMap((k) => [...Array(k.length / C)].map((_, r) => k.subarray(r * C, (r + 1) * C)));
    const vals = vs.flatMap((v) => [...Array(v.length / C)].map((_, r) => v.subarray(r * C, (r + 1) * C)));
    const att = new Float64Array(hw * C);
    for (let h = 0; h < HEADS; h++) for (let t = 0; t < hw; t++) {
      const s = keys.map((k, j) => {
        let d = 0;
        for (let i = h * D; i < (h + 1) * D; i++) d += q[t * C + i] * k[i];
        const bias = mask && j < L ? (1 - mask[b][j]) * -10000 : 0; // spatial keys never masked
        return d / Math.sqrt(D) + bias;
      });
      const mx = Math.max(...s);
      const e = s.map((v) => Math.exp(v - mx));
      const z = e.reduce((a, c) => a + c, 0);
      for (let i = h * D; i < (h + 1) * D; i++) att[t * C + i] = e.reduce((a, w, j) => a + (w / z) * vals[j][i], 0);
    }
    const o = lin(att, hw, C, 'to_out.0', C);
    for (let i = 0; i < hw * C; i++) out[b * hw * C + i] = o[i] + xs[i];
  }
  return out;
}

for (const backend of await backendsUnderTest()) {
  for (const onlyCross of [false, true]) {
    for (const masked of [true, false]) {
      test(`[${backend}] AddedKVAttention${onlyCross ? ' (only cross-attention)' : ''}${masked ? ' with a padding mask' : ''} equals a float64 loop implementation`, async () => {
        await useBackend(backend);
        const g = new TorchGenerator(onlyCross ? 3 : 2);
        const attn = new AddedKVAttention({ queryDim: C, heads: HEADS, dimHead: D, addedKvProjDim: E, normNumGroups: GROUPS, bias: true, onlyCrossAttention: onlyCross });
        const params = new Map<string, Float32Array>();
        const sd = new Map(attn.namedParameters().map(([k, prm]) => {
          const data = g.randn(prm.torchShape).map((v) => (k.startsWith('group_norm.weight') ? 1 + 0.1 * v : 0.5 * v));
          params.set(k, data);
          return [k, { dtype: 'float32' as const, shape: prm.torchShape, data }];
        }));
        attn.loadStateDict(sd);
        assert.equal([...sd.keys()].sort(), (onlyCross
          ? ['add_k_proj', 'add_v_proj', 'group_norm', 'to_out.0', 'to_q']
          : ['add_k_proj', 'add_v_proj', 'group_norm', 'to_k', 'to_out.0', 'to_q', 'to_v']).flatMap((m) => [`${m}.bias`, `${m}.weight`]).sort());
        const x = g.randn([B, H, W, C]);
        const enc = g.randn([B, L, E]);
        const mask = masked ? [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]] : null;
        const before = tf.memory().numTensors;
        const ours = tf.tidy(() => {
          const bias = mask ? tf.mul(tf.sub(1, tf.tensor3d(mask.flat(), [B, 1, L])), -10000) : null;
          return attn.forward(tf.tensor4d(x, [B, H, W, C]), tf.tensor3d(enc, [B, L, E]), bias);
        });
        assertClose('attention output', ours, Float32Array.from(reference(x, enc, mask, params, onlyCross)), { atol: 1e-5 });
        ours.dispose();
        assert.is(tf.memory().numTensors, before);
        attn.dispose();
      });
    }
  }
}

test('AddedKVAttention: a mask that does not cover the encoder tokens is an error naming it', async () => {
  await useBackend('cpu');
  const attn = new AddedKVAttention({ queryDim: C, heads: HEADS, dimHead: D, addedKvProjDim: E, normNumGroups: GROUPS, bias: true });
  const sd = new Map(attn.namedParameters().map(([k, prm]) => [k, { dtype: 'float32' as const, shape: prm.torchShape, data: new Float32Array(prm.torchShape.reduce((a, b) => a * b, 1)) }]));
  attn.loadStateDict(sd);
  tf.tidy(() => {
    assert.throws(() => attn.forward(tf.zeros([B, H, W, C]) as tf.Tensor4D, tf.zeros([B, L, E]) as tf.Tensor3D, tf.zeros([B, 1, L + 1])), /attention mask has shape \[2,1,6\], \[2, 1, 5\] expected/);
    assert.throws(() => attn.forward(tf.zeros([B, H, W, C]) as tf.Tensor4D, tf.zeros([B, L, E + 1]) as tf.Tensor3D), /encoder_hidden_states has shape \[2,5,7\]/);
  });
  attn.dispose();
});

test.run();
