// CLIPTextModelWithProjection vs transformers on fixtures/clip_text: every tensor of io.safetensors (outputs,
// hidden_states.*, masked__*) within 1e-4·max(1, max|ref|), on every backend under test; no tensor leaks.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors } from '../src/io/safetensors.js';
import { readJson } from '../src/io/weights.js';
import { CLIPTextModelWithProjection, clipTextConfig, CLIP_TEXT_DEFAULTS } from '../src/models/clip_text.js';
import { PARITY_KINDS } from '../src/parity/registry.js';
import { assertClose, parityBackends, fixture, useBackend } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

const io = loadSafetensors(fixture('clip_text', 'io.safetensors'));
const ids = io.get('input_ids')!;
const mask = io.get('attention_mask')!;
const backends = await parityBackends();

for (const b of backends) {
  test(`[${b}] clip_text: last_hidden_state, text_embeds, hidden_states.* and masked__* within 1e-4`, async () => {
    await useBackend(b);
    const model = loadComponent(fixture('clip_text'), 'CLIPTextModelWithProjection');
    const base = tf.memory().numTensors;
    const idsT = tf.tensor2d(ids.data as Int32Array, ids.shape as [number, number], 'int32');
    const maskT = tf.tensor2d(mask.data as Int32Array, mask.shape as [number, number], 'int32');
    const hooked = new Map<string, Float32Array>();
    model.setOutputHook((p, t) => { if (/^text_model\.encoder\.layers\.\d+$/.test(p)) hooked.set(p, t.dataSync() as Float32Array); });
    const out = model.forward(idsT);
    model.setOutputHook(null);
    assertClose('last_hidden_state', out.lastHiddenState, io.get('last_hidden_state')!);
    assertClose('text_embeds', out.textEmbeds, io.get('text_embeds')!);
    assert.is(out.hiddenStates.length, model.config.num_hidden_layers + 1);
    out.hiddenStates.forEach((h, i) => assertClose(`hidden_states.${i}`, h, io.get(`hidden_states.${i}`)!));
    // the hooks see each layer's output (= hidden_states.{i+1})
    assert.is(hooked.size, model.config.num_hidden_layers);
    for (let i = 0; i < model.config.num_hidden_layers; i++) {
      assertClose(`hook layers.${i}`, hooked.get(`text_model.encoder.layers.${i}`)!, io.get(`hidden_states.${i + 1}`)!.data as Float32Array);
    }
    const masked = model.forward(idsT, maskT);
    assertClose('masked__last_hidden_state', masked.lastHiddenState, io.get('masked__last_hidden_state')!);
    assertClose('masked__text_embeds', masked.textEmbeds, io.get('masked__text_embeds')!);
    tf.dispose([out.lastHiddenState, out.textEmbeds, ...out.hiddenStates, masked.lastHiddenState, masked.textEmbeds, ...masked.hiddenStates, idsT, maskT]);
    assert.is(tf.memory().numTensors, base, 'numTensors back to baseline after two forwards');
    model.dispose();
  });
}

test('legacy pooling (eos_token_id == 2) takes argmax(input_ids); otherwise the first eos_token_id', async () => {
  await useBackend(backends[0]);
  const cfg = clipTextConfig({ hidden_size: 8, intermediate_size: 16, projection_dim: 8, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 10, max_position_embeddings: 6, eos_token_id: 2 });
  const legacy = new CLIPTextModelWithProjection(cfg);
  const modern = new CLIPTextModelWithProjection({ ...cfg, eos_token_id: 7 });
  // identity projection so text_embeds = pooled row of last_hidden_state
  for (const m of [legacy, modern]) {
    for (const [k, p] of m.namedParameters()) {
      const n = p.torchShape.reduce((a, c) => a * c, 1);
      const data = k === 'text_projection.weight' ? tf.eye(8).dataSync() as Float32Array : Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + k.length));
      p.setFromTorch(data);
    }
    legacy.loadStateDict(new Map([...m.stateDict()].map(([k, t]) => [k, { dtype: 'float32' as const, shape: t.shape, data: t.dataSync() as Float32Array }])));
  }
  const ids = tf.tensor2d([[1, 5, 9, 7, 7, 3], [1, 7, 9, 2, 0, 0]], [2, 6], 'int32');
  const check = (m: CLIPTextModelWithProjection, pos: number[]) => {
    const o = m.forward(ids);
    const last = o.lastHiddenState.arraySync();
    const emb = o.textEmbeds.arraySync();
    pos.forEach((p, bi) => assertClose(`row ${bi} pooled at ${p}`, Float32Array.from(emb[bi]), Float32Array.from(last[bi][p]), { atol: 1e-6 }));
    tf.dispose([o.lastHiddenState, o.textEmbeds, ...o.hiddenStates]);
  };
  check(legacy, [2, 2]); // argmax: id 9 at position 2 in both rows
  check(modern, [3, 1]); // first 7
  ids.dispose();
  legacy.dispose(); modern.dispose();
});

test('config: defaults, nested CLIPConfig, and errors naming the field', () => {
  const c = clipTextConfig({});
  assert.equal(c, CLIP_TEXT_DEFAULTS);
  const real = clipTextConfig(readJson(fixture('karlo_configs', 'text_encoder', 'config.json')));
  assert.is(real.hidden_size, 768);
  assert.is(real.eos_token_id, 2);
  assert.is(new CLIPTextModelWithProjection(real).numParameters(), 123_650_304);
  assert.is(clipTextConfig({ model_type: 'clip', projection_dim: 32, text_config: { hidden_size: 64, num_attention_heads: 4 } }).projection_dim, 32);
  assert.throws(() => clipTextConfig({ hidden_act: 'relu' }, 'x/config.json'), /x\/config.json: hidden_act = "relu" is not supported by CLIPTextModelWithProjection/);
  assert.throws(() => clipTextConfig({ hidden_size: 10, num_attention_heads: 3 }), /not divisible/);
  assert.throws(() => loadComponent(fixture('prior'), 'CLIPTextModelWithProjection'), /config.json/);
});

test('karlo parity kind "clip_text" recognises the fixture folder and compares all 7 reference tensors', async () => {
  await useBackend(backends[0]);
  const kind = PARITY_KINDS.find((k) => k.detect(fixture('clip_text')));
  assert.is(kind?.name, 'clip_text');
  const rows = await kind!.run(fixture('clip_text'), {});
  assert.equal(rows.map((r) => r.name).sort(), ['hidden_states.0', 'hidden_states.1', 'hidden_states.2', 'last_hidden_state', 'masked__last_hidden_state', 'masked__text_embeds', 'text_embeds']);
  assert.ok(rows.every((r) => r.ok), rows.filter((r) => !r.ok).map((r) => r.name).join(', '));
  assert.not.ok(kind!.detect(fixture('pipeline_tiny', 'text_encoder')), 'a weights folder without io.safetensors is not a parity folder');
});

test.run();
