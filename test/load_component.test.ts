// The one component loader (src/loading/load_component.ts, issue 13 item 2): every model kind loads from its
// fixture folder with frozen weights unless asked, a config naming another class is refused naming both classes
// and the file, an unknown field is refused naming the field and the file, transformers' bookkeeping fields pass,
// and the position_ids buffer older CLIP checkpoints carry is ignored.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { fixture, useBackend } from './helpers.js';
import { COMPONENT_KINDS, loadComponent, type ComponentKind } from '../src/loading/load_component.js';
import { loadSafetensors, saveSafetensors, type TensorToWrite } from '../src/io/safetensors.js';

const FOLDERS: Record<ComponentKind, string> = {
  CLIPTextModelWithProjection: fixture('clip_text'),
  CLIPVisionModelWithProjection: fixture('clip_vision'),
  PriorTransformer: fixture('prior'),
  UnCLIPTextProjModel: fixture('text_proj'),
  UNet2DConditionModel: fixture('decoder'),
  UNet2DModel: fixture('super_res', 'super_res_first'),
};

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-loadcomponent-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of a fixture folder (config.json + weights) whose config is `edit`ed. */
function copyWith(kind: ComponentKind, name: string, edit: (cfg: Record<string, unknown>) => void): string {
  const src = FOLDERS[kind];
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(src)) if (f === 'config.json' || /(model|diffusion_pytorch_model)\.safetensors$/.test(f)) fs.copyFileSync(path.join(src, f), path.join(dir, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  edit(cfg);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  return dir;
}

test('every kind loads from its folder, frozen by default and trainable when asked', async () => {
  await useBackend('cpu');
  assert.equal(Object.keys(COMPONENT_KINDS).sort(), Object.keys(FOLDERS).sort());
  for (const kind of Object.keys(FOLDERS) as ComponentKind[]) {
    const before = tf.memory().numTensors;
    const frozen = loadComponent(FOLDERS[kind], kind);
    assert.ok(frozen.numParameters() > 0, kind);
    assert.ok(frozen.namedParameters().every(([, p]) => !p.value.trainable), `${kind}: default trainable false`);
    frozen.dispose();
    const trained = loadComponent(FOLDERS[kind], kind, { trainable: true });
    assert.ok(trained.namedParameters().every(([, p]) => p.value.trainable), `${kind}: trainable true`);
    trained.dispose();
    assert.is(tf.memory().numTensors, before, `${kind}: no tensor left`);
  }
});

test('a config naming another class is refused, naming the file and both classes', () => {
  assert.throws(() => loadComponent(FOLDERS.PriorTransformer, 'UNet2DModel'),
    /prior\/config\.json: the config is for "PriorTransformer", expected "UNet2DModel"/);
  assert.throws(() => loadComponent(FOLDERS.CLIPTextModelWithProjection, 'CLIPVisionModelWithProjection'),
    /clip_text\/config\.json: the config is for "CLIPTextModelWithProjection", expected "CLIPVisionModelWithProjection"/);
});

test('an unknown field is refused naming the field and the file, for every kind; transformers bookkeeping passes', async () => {
  await useBackend('cpu');
  for (const kind of Object.keys(FOLDERS) as ComponentKind[]) {
    const dir = copyWith(kind, `unknown-${kind}`, (c) => { c.frobnicate = 1; });
    assert.throws(() => loadComponent(dir, kind), new RegExp(`${dir}/config\\.json: unknown field "frobnicate" for ${kind}`));
  }
  const dir = copyWith('CLIPTextModelWithProjection', 'bookkeeping', (c) => { Object.assign(c, { use_bfloat16: false, id2label: { 0: 'a' }, top_k: 50, pad_token_id: null }); });
  loadComponent(dir, 'CLIPTextModelWithProjection').dispose();
});

test('CLIP: the position_ids buffer of older checkpoints is ignored on load', async () => {
  await useBackend('cpu');
  const dir = copyWith('CLIPTextModelWithProjection', 'position-ids', () => {});
  const file = path.join(dir, 'model.safetensors');
  const out = new Map<string, TensorToWrite>();
  for (const [k, t] of loadSafetensors(file)) out.set(k, { dtype: 'F32', shape: t.shape, data: t.data as Float32Array });
  out.set('text_model.embeddings.position_ids', { dtype: 'I64', shape: [1, 77], data: Int32Array.from({ length: 77 }, (_, i) => i) });
  saveSafetensors(file, out);
  loadComponent(dir, 'CLIPTextModelWithProjection').dispose();
});

test.run();
