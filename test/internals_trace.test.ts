// `karlo trace` and trace parity (issue 19 item 3) on the bundled tiny model (= the pipeline fixture):
// a trace of the recorded seed-only run (both prompts, seed 0, 5/5/3 steps, guidance 4/8) matches the recorded
// pipeline tensors (cap.*, every prior and decoder step.*) through `karlo parity TRACE REF`; trace tensors are the
// very tensors the models produce at those steps (checked against an in-process Capture); the size estimate equals
// the bytes written, super-res first/last and step selections included; --max-bytes refuses with the estimate;
// --list names the capturable attention probabilities.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { BUNDLED_MODEL_DIR } from '../src/package_root.js';
import { UnCLIPPipeline, type GenerateOptions } from '../src/pipeline/unclip_pipeline.js';
import { SafetensorsFile, saveSafetensors } from '../src/io/safetensors.js';
import { Capture } from '../src/internals/interventions.js';
import { estimateTrace, recordRun, traceBytes, writeTrace } from '../src/internals/trace.js';
import { compareTraceFiles } from '../src/parity/trace.js';
import { backendsUnderTest, useBackend } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-trace-'));
const PROMPTS = ['a high-resolution photograph of a big red frog on a green leaf.', 'A watercolor of a fox in the snow'];
const RUN: GenerateOptions = { seed: 0, priorSteps: 5, decoderSteps: 5, superResSteps: 3, priorGuidance: 4, decoderGuidance: 8 };
const RUN_ARGS = ['--seed', '0', '--prior-steps', '5', '--decoder-steps', '5', '--sr-steps', '3', '--prior-guidance', '4', '--decoder-guidance', '8'];
const backend = (await backendsUnderTest())[0];

function karlo(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], {
    cwd: tmp, encoding: 'utf8', timeout: 120_000, env: { ...process.env, KARLO_BACKEND: backend },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('karlo trace of the pipeline fixture run matches its recorded tensors (cap.*, prior and decoder steps) through karlo parity', () => {
  const out = path.join(tmp, 'fixture.safetensors');
  const t = karlo(['trace', ...PROMPTS, '--model', BUNDLED_MODEL_DIR, ...RUN_ARGS, '--stages', 'text,prior,decoder',
    '--capture', 'cap.*,step.*,decoder.down_blocks.*,decoder.mid_block,decoder.up_blocks.?', '--out', out]);
  assert.is(t.code, 0, t.stderr);
  assert.match(t.stderr, /trace estimate: \d+ tensors/);
  const p = karlo(['parity', out, path.join(BUNDLED_MODEL_DIR, 'run_seed_only.safetensors'), '--json', '--atol', '1e-3']);
  assert.is(p.code, 0, p.stdout + p.stderr);
  const r = JSON.parse(p.stdout) as { pass: boolean; tensors: { name: string; pass: boolean; maxAbsErr: number }[] };
  assert.ok(r.pass);
  const names = r.tensors.map((c) => c.name);
  // 8 cap.* (all but image_upscaled: super-res not traced) + prior 5 prev + 4 sample_in + decoder 5 × 3.
  assert.is(r.tensors.length, 8 + 9 + 15, names.join(' '));
  for (const n of ['cap.image_small', 'cap.decoder_encoder_hidden_states', 'step.009.decoder_scheduler.t0.prev_sample', 'step.007.decoder_scheduler.t500.model_output_after_cfg']) assert.ok(names.includes(n), n);
  // The free-running decoder's image (guidance 8) is within the fixtures README's 1e-3 on the image.
  assert.ok(r.tensors.find((c) => c.name === 'cap.image_small')!.maxAbsErr < 1e-3);
  // The same file against itself: everything compared, exactly equal.
  const self = compareTraceFiles(out, out);
  assert.ok(self.length > 100 && self.every((c) => c.maxAbs === 0));
});

test(`[${backend}] trace tensors are the models' own outputs at the labelled steps; metadata names component, path, step, timestep`, async () => {
  await useBackend(backend);
  const pipe = await UnCLIPPipeline.load(BUNDLED_MODEL_DIR);
  const sel = { capture: 'decoder.mid_block,decoder.mid_block.attentions.0.probs,prior.transformer_blocks.1,text_encoder.text_model.encoder.layers.0', steps: [1, 3] };
  const before = tf.memory().numTensors;
  const rec = await recordRun(pipe, PROMPTS, sel, RUN);
  const cap = new Capture(['mid_block', 'mid_block.attentions.0.probs', 'transformer_blocks.1']);
  await pipe.generate(PROMPTS, { ...RUN, outputHooks: { decoder: cap.hook, prior: cap.hook } });
  const byName = new Map(rec.tensors.map((t) => [t.name, t]));
  assert.equal([...byName.keys()].sort(), [
    'block_out.text_encoder.text_model.encoder.layers.0',
    'step.001.prior_scheduler.t749.block_out.prior.transformer_blocks.1',
    'step.003.prior_scheduler.t250.block_out.prior.transformer_blocks.1',
    'step.006.decoder_scheduler.t749.block_out.decoder.mid_block',
    'step.006.decoder_scheduler.t749.block_out.decoder.mid_block.attentions.0.probs',
    'step.008.decoder_scheduler.t250.block_out.decoder.mid_block',
    'step.008.decoder_scheduler.t250.block_out.decoder.mid_block.attentions.0.probs',
  ]);
  const same = (name: string, t: tf.Tensor) => {
    const got = byName.get(name)!;
    assert.equal(got.shape, t.shape, name);
    assert.equal(Array.from(got.data!), Array.from(t.dataSync()), name);
  };
  same('step.006.decoder_scheduler.t749.block_out.decoder.mid_block', cap.get('mid_block', 1));
  same('step.008.decoder_scheduler.t250.block_out.decoder.mid_block.attentions.0.probs', cap.get('mid_block.attentions.0.probs', 3));
  same('step.003.prior_scheduler.t250.block_out.prior.transformer_blocks.1', cap.get('transformer_blocks.1', 3));
  assert.equal(byName.get('step.008.decoder_scheduler.t250.block_out.decoder.mid_block')!.info,
    { key: 'decoder.mid_block', stage: 'decoder', component: 'decoder', path: 'mid_block', step: 3, timestep: 250, label: 'step.008.decoder_scheduler.t250' });
  cap.dispose();
  const file = path.join(tmp, 'meta.safetensors');
  writeTrace(file, rec.tensors, { prompts: PROMPTS });
  const f = SafetensorsFile.open(file);
  const meta = JSON.parse(f.metadata['karlo.trace']) as { tensors: Record<string, { label?: string }> };
  assert.is(meta.tensors['step.006.decoder_scheduler.t749.block_out.decoder.mid_block'].label, 'step.006.decoder_scheduler.t749');
  f.close();
  assert.is(tf.memory().numTensors, before);
  pipe.dispose();
});

test(`[${backend}] the size estimate equals the bytes a trace writes (super-res first/last, sample_in from step 1, chosen steps); --list keys include every attention`, async () => {
  await useBackend(backend);
  const pipe = await UnCLIPPipeline.load(BUNDLED_MODEL_DIR);
  const sel = { capture: 'step.*,super_res_*.mid_block,decoder.down_blocks.1,cap.*', steps: [0, 2] };
  const est = await estimateTrace(pipe, PROMPTS, sel, RUN);
  const rec = await recordRun(pipe, PROMPTS, sel, RUN);
  assert.is(est.tensors, rec.tensors.length);
  assert.is(est.bytes, traceBytes(rec.tensors));
  assert.ok(rec.tensors.some((t) => t.name === 'step.012.super_res_scheduler.t0.block_out.super_res_last.mid_block'));
  assert.ok(rec.tensors.some((t) => t.name === 'step.010.super_res_scheduler.t999.block_out.super_res_first.mid_block'));
  const all = await estimateTrace(pipe, ['a frog'], { capture: '*' }, { ...RUN, numImagesPerPrompt: 1 });
  const keys = new Set(all.keys.map((k) => k.key));
  for (const k of ['text_encoder.text_model.encoder.layers.1.self_attn.probs', 'prior.transformer_blocks.0.attn1.probs', 'decoder.down_blocks.1.attentions.0.probs',
    'decoder.mid_block.attentions.0.probs', 'decoder.up_blocks.1.attentions.2.probs', 'cap.image_small', 'step.decoder_scheduler.model_output_after_cfg']) assert.ok(keys.has(k), k);
  const probs = all.keys.find((k) => k.key === 'decoder.down_blocks.1.attentions.0.probs')!;
  assert.equal(probs.shape, [2, 2, 64, 81 + 64]);
  pipe.dispose();
});

test('karlo trace refuses a trace above --max-bytes with the estimate in the message (exit 2); bad --steps/--capture are one line', () => {
  const r = karlo(['trace', 'a frog', '--model', BUNDLED_MODEL_DIR, '--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2', '--capture', 'decoder.*', '--max-bytes', '1KB', '--out', path.join(tmp, 'big.safetensors')]);
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /the trace would be \d+ tensors, [\d.]+ MB \(\d+ bytes\), above --max-bytes 1\.00 KB/);
  assert.not.ok(fs.existsSync(path.join(tmp, 'big.safetensors')));
  const s = karlo(['trace', 'a frog', '--model', BUNDLED_MODEL_DIR, '--steps', '0,x', '--capture', '*', '--out', path.join(tmp, 'x.safetensors')]);
  assert.is(s.code, 2);
  assert.match(s.stderr, /--steps: "x" is not a step index/);
});

test('trace comparison: equal within 1e-4·max(1, |ref|) is OK, beyond fails, shape mismatches fail, one-sided names are notes, nothing in common is an error', () => {
  const a = path.join(tmp, 'a.safetensors'), b = path.join(tmp, 'b.safetensors'), c = path.join(tmp, 'c.safetensors');
  const f32 = (v: number[], shape = [v.length]) => ({ dtype: 'F32' as const, shape, data: Float32Array.from(v) });
  saveSafetensors(a, { same: f32([1, 2, 3]), close: f32([10, 0]), far: f32([0, 1]), shape: f32([1, 2]), onlyA: f32([0]) });
  saveSafetensors(b, { same: f32([1, 2, 3]), close: f32([10.0009, 0]), far: f32([0, 1.001]), shape: f32([1, 2], [2, 1]), onlyB: f32([0]) });
  saveSafetensors(c, { other: f32([0]) });
  const notes: string[] = [];
  const rows = compareTraceFiles(a, b, { log: (l) => notes.push(l) });
  assert.equal(rows.map((r) => [r.name, r.ok]), [['close', true], ['far', false], ['same', true], ['shape', false]]);
  assert.ok(notes.some((n) => /only in .*a\.safetensors \(1\): onlyA/.test(n)) && notes.some((n) => /onlyB/.test(n)));
  assert.throws(() => compareTraceFiles(a, c), /no tensor names in common/);
  const r = karlo(['parity', a, b]);
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /trace: 2\/4 OK, 2 FAIL/);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
