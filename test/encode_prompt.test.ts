// encodePrompt vs diffusers 0.25.1 UnCLIPPipeline._encode_prompt on the tiny pipeline's recorded run
// (pipeline_tiny/run.safetensors cap.prompt_embeds, cap.text_enc_hid_states, cap.text_mask; uncond rows first).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors } from '../src/io/safetensors.js';
import { readJson } from '../src/io/weights.js';
import { CLIPTokenizer } from '../src/tokenizer/clip_tokenizer.js';
import { encodePrompt } from '../src/pipeline/encode_prompt.js';
import { assertClose, backendsUnderTest, fixture, useBackend } from './helpers.js';
import { loadComponent } from '../src/loading/load_component.js';

const run = loadSafetensors(fixture('pipeline_tiny', 'run.safetensors'));
const prompts = readJson<{ prompt: string[] }>(fixture('pipeline_tiny', 'run.json')).prompt;
const backends = await backendsUnderTest();

for (const b of backends) {
  test(`[${b}] encodePrompt equals the pipeline's cap.prompt_embeds / cap.text_enc_hid_states / cap.text_mask`, async () => {
    await useBackend(b);
    const tok = CLIPTokenizer.fromDir(fixture('pipeline_tiny', 'tokenizer'));
    const enc = loadComponent(fixture('pipeline_tiny', 'text_encoder'), 'CLIPTextModelWithProjection');
    const base = tf.memory().numTensors;
    const out = encodePrompt(tok, enc, prompts, { numImagesPerPrompt: 1, doClassifierFreeGuidance: true });
    assertClose('cap.prompt_embeds', out.promptEmbeds, run.get('cap.prompt_embeds')!);
    assertClose('cap.text_enc_hid_states', out.textEncHiddenStates, run.get('cap.text_enc_hid_states')!);
    assert.equal(out.textMask.shape, run.get('cap.text_mask')!.shape);
    assert.equal(out.textMask.dtype, 'int32');
    assert.equal([...out.textMask.dataSync()], [...run.get('cap.text_mask')!.data]);
    tf.dispose([out.promptEmbeds, out.textEncHiddenStates, out.textMask]);
    assert.is(tf.memory().numTensors, base, 'numTensors back to baseline');
    enc.dispose();
  });
}

test('numImagesPerPrompt repeats rows (repeat_interleave), uncond block first; no CFG gives the prompts only', async () => {
  await useBackend(backends[0]);
  const tok = CLIPTokenizer.fromDir(fixture('pipeline_tiny', 'tokenizer'));
  const enc = loadComponent(fixture('pipeline_tiny', 'text_encoder'), 'CLIPTextModelWithProjection');
  const ref = run.get('cap.prompt_embeds')!; // rows: "", "", p0, p1
  const D = ref.shape[1];
  const row = (i: number) => ref.data.slice(i * D, (i + 1) * D) as Float32Array;
  const out = encodePrompt(tok, enc, prompts, { numImagesPerPrompt: 3, doClassifierFreeGuidance: true });
  assert.equal(out.promptEmbeds.shape, [12, D]);
  assert.equal(out.textEncHiddenStates.shape, [12, 77, D]);
  const e = out.promptEmbeds.arraySync();
  const expectRows = [0, 0, 0, 0, 0, 0, 2, 2, 2, 3, 3, 3];
  expectRows.forEach((r, i) => assertClose(`row ${i}`, Float32Array.from(e[i]), row(r)));
  const noCfg = encodePrompt(tok, enc, prompts, { doClassifierFreeGuidance: false });
  assert.equal(noCfg.promptEmbeds.shape, [2, D]);
  assertClose('no-CFG row 1', Float32Array.from(noCfg.promptEmbeds.arraySync()[1]), row(3));
  tf.dispose([out.promptEmbeds, out.textEncHiddenStates, out.textMask, noCfg.promptEmbeds, noCfg.textEncHiddenStates, noCfg.textMask]);
  enc.dispose();
});

test('a prompt longer than 77 tokens is truncated with a warning naming the dropped text', async () => {
  await useBackend(backends[0]);
  const tok = CLIPTokenizer.fromDir(fixture('pipeline_tiny', 'tokenizer'));
  const enc = loadComponent(fixture('pipeline_tiny', 'text_encoder'), 'CLIPTextModelWithProjection');
  const warnings: string[] = [];
  const long = Array.from({ length: 80 }, (_, i) => (i < 75 ? 'frog' : 'toad')).join(' ');
  const out = encodePrompt(tok, enc, [long], { warn: (m) => warnings.push(m) });
  assert.is(warnings.length, 1);
  assert.match(warnings[0], /truncated because CLIP can only handle sequences up to 77 tokens/);
  assert.match(warnings[0], /toad toad toad toad toad/);
  assert.equal(out.textMask.shape, [2, 77]);
  tf.dispose([out.promptEmbeds, out.textEncHiddenStates, out.textMask]);
  const none: string[] = [];
  tf.dispose(Object.values(encodePrompt(tok, enc, ['a frog'], { warn: (m) => none.push(m) })));
  assert.is(none.length, 0);
  enc.dispose();
});

test('a tokenizer whose ids exceed the text encoder vocabulary is a clear error, not a tfjs GatherV2 failure', async () => {
  await useBackend(backends[backends.length - 1]);
  const tok = CLIPTokenizer.fromDir(fixture('pipeline_tiny', 'tokenizer'));
  // the converted-checkpoint fixture's CLIP has a 320-token vocabulary
  const enc = loadComponent(fixture('original_ckpt', 'expected', 'text_encoder'), 'CLIPTextModelWithProjection');
  const base = tf.memory().numTensors;
  assert.throws(() => encodePrompt(tok, enc, ['a frog'], {}), /id 4940[67] .*vocab_size is 320.*do not belong together/);
  assert.is(tf.memory().numTensors, base);
  enc.dispose();
});

test.run();
