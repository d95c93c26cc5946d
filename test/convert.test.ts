// tools/convert on the original_ckpt fixtures: every converted tensor equal to the reference conversion bit for
// bit, configs JSON-equal, the key map equal to key_map.json, the size-independent files equal to karlo_configs;
// the converted folder loads strictly into our modules and reproduces the reference outputs of checks/io;
// YAML/tensor disagreements and overwrites stop with clear errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs-core';
import { fixture, backendsUnderTest, useBackend, assertClose } from './helpers.js';
import { SafetensorsFile, loadSafetensors } from '../src/io/safetensors.js';
import { convertOriginal, openOriginal, planRelease, TOKENIZER_DIR } from '../tools/convert/convert.js';
import { readKarloConfigs, defaultHparams } from '../tools/convert/hparams.js';
import { parseYaml } from '../tools/convert/yaml.js';
import { toPythonJson, pyFloat, pyFloatRepr } from '../tools/convert/pyjson.js';
import { loadComponent } from '../src/loading/load_component.js';

const ROOT = fixture('original_ckpt');
const ORIGINAL = path.join(ROOT, 'original');
const CONFIGS = path.join(ORIGINAL, 'configs');
const EXPECTED = path.join(ROOT, 'expected');
const COMPONENTS = ['prior', 'decoder', 'text_proj', 'super_res_first', 'super_res_last', 'text_encoder'];
const weightsName = (c: string) => (c === 'text_encoder' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-convert-'));
const OUT = path.join(tmp, 'karlo');
const readJson = (f: string) => JSON.parse(fs.readFileSync(f, 'utf8'));
const withoutStamps = (o: Record<string, unknown>) => {
  const { _diffusers_version: _a, transformers_version: _b, ...rest } = o;
  return rest;
};

test('convert: every tensor of every component equals the reference conversion bit for bit (names, shapes, F32 bytes)', () => {
  const report = convertOriginal({ from: ORIGINAL, out: OUT, configs: CONFIGS });
  assert.equal(report.components.map((c) => c.component).sort(), [...COMPONENTS].sort());
  for (const c of COMPONENTS) {
    const exp = SafetensorsFile.open(path.join(EXPECTED, c, weightsName(c)));
    const ours = SafetensorsFile.open(path.join(OUT, c, weightsName(c)));
    try {
      assert.equal(ours.names().sort(), exp.names().sort(), `${c}: tensor names`);
      for (const n of exp.names()) {
        const a = exp.info(n);
        const b = ours.info(n);
        assert.is(b.dtype, 'F32', `${c}/${n} dtype`);
        assert.is(a.dtype, 'F32');
        assert.equal(b.shape, a.shape, `${c}/${n} shape`);
        assert.ok(Buffer.compare(Buffer.from(ours.readBytes(n)), Buffer.from(exp.readBytes(n))) === 0, `${c}/${n}: values differ`);
      }
      assert.equal(ours.metadata, { format: 'pt' });
    } finally {
      exp.close();
      ours.close();
    }
  }
});

test('convert: config.json of every component is JSON-equal to the reference (version stamps aside)', () => {
  for (const c of COMPONENTS) {
    assert.equal(withoutStamps(readJson(path.join(OUT, c, 'config.json'))), withoutStamps(readJson(path.join(EXPECTED, c, 'config.json'))), c);
  }
  // Written like Python's json.dumps(indent=2, sort_keys=True): floats keep their Python spelling.
  const text = fs.readFileSync(path.join(OUT, 'decoder', 'config.json'), 'utf8');
  assert.match(text, /"norm_eps": 1e-05,/);
  assert.match(text, /"dropout": 0\.0,/);
  assert.match(text, /"resnet_out_scale_factor": 1\.0,/);
});

test('convert: the plan equals key_map.json (src, shapes, op, per-head row ranges) and the unused source keys', () => {
  const keyMap = readJson(path.join(EXPECTED, 'key_map.json'));
  const rel = openOriginal(ORIGINAL);
  try {
    const plans = planRelease(rel, readKarloConfigs(CONFIGS));
    for (const p of plans) {
      const km = keyMap[p.component];
      assert.is(p.sourceFile, km.source_file, p.component);
      const byDst = new Map<string, any>(km.entries.map((e: any) => [e.dst, e]));
      assert.is(p.entries.length, km.entries.length, `${p.component}: entry count`);
      for (const e of p.entries) {
        const k = byDst.get(e.dst);
        assert.ok(k, `${p.component}: ${e.dst} not in key_map.json`);
        assert.equal({ src: e.src, src_shape: e.srcShape, dst_shape: e.dstShape, op: e.op, rows: e.rows }, { src: k.src, src_shape: k.src_shape, dst_shape: k.dst_shape, op: k.op, rows: k.rows }, `${p.component}: ${e.dst}`);
      }
      const unused = Array.isArray(km.unused_source_keys) ? km.unused_source_keys : [];
      assert.equal(p.unusedSourceKeys, [...unused].sort(), `${p.component}: unused source keys`);
    }
  } finally {
    rel.close();
  }
});

test('convert: model_index.json, scheduler configs and tokenizer files equal the real Karlo ones', () => {
  const K = fixture('karlo_configs');
  for (const f of ['model_index.json', 'prior_scheduler/scheduler_config.json', 'decoder_scheduler/scheduler_config.json', 'super_res_scheduler/scheduler_config.json', 'tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json']) {
    assert.equal(readJson(path.join(OUT, f)), readJson(path.join(K, f)), f);
  }
  for (const f of ['vocab.json', 'merges.txt']) {
    assert.ok(fs.readFileSync(path.join(OUT, 'tokenizer', f)).equals(fs.readFileSync(fixture('tokenizer', f))), f);
  }
  assert.ok(fs.existsSync(path.join(TOKENIZER_DIR, 'vocab.json')));
  // Provenance file: every output tensor with its source and operation.
  const prov = readJson(path.join(OUT, 'karlo_conversion.json'));
  assert.is(prov.components.decoder.entries.length, 392);
});

test('convert: the converted folder loads strictly into our modules and reproduces the reference outputs (checks/io)', async () => {
  const io = loadSafetensors(path.join(ROOT, 'checks', 'io.safetensors'));
  const T = (n: string) => {
    const t = io.get(n)!;
    return tf.tensor(t.data, t.shape, t.dtype);
  };
  for (const b of await backendsUnderTest()) {
    await useBackend(b);
    const before = tf.memory().numTensors;
    const clip = loadComponent(path.join(OUT, 'text_encoder'), 'CLIPTextModelWithProjection');
    const prior = loadComponent(path.join(OUT, 'prior'), 'PriorTransformer');
    const textProj = loadComponent(path.join(OUT, 'text_proj'), 'UnCLIPTextProjModel');
    const decoder = loadComponent(path.join(OUT, 'decoder'), 'UNet2DConditionModel');
    const srFirst = loadComponent(path.join(OUT, 'super_res_first'), 'UNet2DModel');
    const srLast = loadComponent(path.join(OUT, 'super_res_last'), 'UNet2DModel');
    tf.tidy(() => {
      const c = clip.forward(T('clip.input_ids') as tf.Tensor2D);
      assertClose(`${b} clip text_embeds`, c.textEmbeds, io.get('clip.hf_text_embeds')!);
      assertClose(`${b} clip last_hidden_state`, c.lastHiddenState, io.get('clip.hf_last_hidden_state')!);
      const p = prior.forward(T('prior.hidden_states'), T('prior.timesteps'), T('text.text_embeds'), T('text.last_hidden_state') as tf.Tensor3D, T('text.mask'));
      assertClose(`${b} prior`, p, io.get('prior.diffusers_out')!);
      const tp = textProj.forward({
        imageEmbeddings: T('decoder.image_embeddings') as tf.Tensor2D, promptEmbeds: T('text.text_embeds') as tf.Tensor2D,
        textEncoderHiddenStates: T('text.last_hidden_state') as tf.Tensor3D, doClassifierFreeGuidance: false,
      });
      assertClose(`${b} text_proj hidden states`, tp.textEncoderHiddenStates, io.get('decoder.text_proj_encoder_hidden_states')!);
      assertClose(`${b} text_proj additive`, tp.additiveClipTimeEmbeddings, io.get('decoder.text_proj_additive_clip_time_embeddings')!);
      const mask = tf.concat([tf.ones([2, 4], 'int32'), tf.cast(T('text.mask'), 'int32')], 1) as tf.Tensor2D;
      const d = decoder.forward(T('decoder.sample') as tf.Tensor4D, T('decoder.timesteps'), tp.textEncoderHiddenStates, { classLabels: tp.additiveClipTimeEmbeddings, attentionMask: mask });
      assertClose(`${b} decoder`, d, io.get('decoder.diffusers_out')!);
      const srIn = tf.concat([T('sr.sample'), T('sr.low_res')], 1) as tf.Tensor4D;
      assertClose(`${b} super_res_first`, srFirst.forward(srIn, T('sr.super_res_first.timesteps')), io.get('sr.super_res_first.diffusers_out')!);
      assertClose(`${b} super_res_last`, srLast.forward(srIn, T('sr.super_res_last.timesteps')), io.get('sr.super_res_last.diffusers_out')!);
    });
    for (const m of [clip, prior, textProj, decoder, srFirst, srLast]) m.dispose();
    assert.is(tf.memory().numTensors, before, `${b}: tensors released`);
  }
});

test('convert: refuses to overwrite without --force, replaces atomically with it, leaves no temporary folders', () => {
  assert.throws(() => convertOriginal({ from: ORIGINAL, out: OUT, configs: CONFIGS }), /exists and is not empty; pass --force/);
  fs.writeFileSync(path.join(OUT, 'stale.txt'), 'old');
  convertOriginal({ from: ORIGINAL, out: OUT, configs: CONFIGS, force: true });
  assert.not.ok(fs.existsSync(path.join(OUT, 'stale.txt')), 'old folder replaced');
  assert.equal(fs.readdirSync(tmp).filter((n) => n.startsWith('.')), [], 'no .partial / .old folders left');
  // A failing conversion leaves neither a partial output nor a temporary folder.
  const out2 = path.join(tmp, 'fails');
  assert.throws(() => convertOriginal({ from: ORIGINAL, out: out2 }), /pass --configs/);
  assert.not.ok(fs.existsSync(out2));
  assert.equal(fs.readdirSync(tmp).filter((n) => n.startsWith('.')), []);
});

test('convert: YAML values that disagree with the tensors stop with an error naming the YAML file, key and checkpoint', () => {
  const cases: [string, string, RegExp, string][] = [
    ['prior_1B_vit_l.yaml', 'xf_layers: 2', /prior_1B_vit_l\.yaml: hparams\.xf_layers = 3 but the tensors of prior-ckpt-step=01000000-of-01000000\.ckpt say 2/, 'xf_layers: 3'],
    ['prior_1B_vit_l.yaml', 'xf_heads: 3', /xf_heads 5 does not divide the prior width 36/, 'xf_heads: 5'],
    ['decoder_900M_vit_l.yaml', 'num_res_blocks: 2', /decoder_900M_vit_l\.yaml: hparams\.num_res_blocks = 3 but the tensors of decoder-ckpt-step=01000000-of-01000000\.ckpt say 2/, 'num_res_blocks: 3'],
    ['decoder_900M_vit_l.yaml', 'attention_resolutions: 16,8', /hparams\.attention_resolutions = \[false,false,true\]/, 'attention_resolutions: 8'],
    ['decoder_900M_vit_l.yaml', 'num_head_channels: 16', /not a multiple of 3 × head_dim 24/, 'num_head_channels: 24'],
    ['decoder_900M_vit_l.yaml', 'use_scale_shift_norm: true', /use_scale_shift_norm = false but the tensors .* say true/, 'use_scale_shift_norm: false'],
    ['improved_sr_64_256_1.4B.yaml', 'channels: 32', /improved_sr_64_256_1\.4B\.yaml: hparams\.channels = 64/, 'channels: 64'],
  ];
  for (const [file, from, re, to] of cases) {
    const dir = path.join(tmp, `cfg-${file}-${to.replace(/\W/g, '')}`);
    fs.cpSync(CONFIGS, dir, { recursive: true });
    const f = path.join(dir, file);
    const text = fs.readFileSync(f, 'utf8');
    assert.ok(text.includes(from), `${file} has "${from}"`);
    fs.writeFileSync(f, text.replace(from, to));
    const rel = openOriginal(ORIGINAL);
    try {
      assert.throws(() => planRelease(rel, readKarloConfigs(dir)), re, `${file}: ${to}`);
    } finally {
      rel.close();
    }
  }
  assert.throws(() => readKarloConfigs(tmp), /prior_1B_vit_l\.yaml: missing/);
});

test('convert: missing release files and the default (real Karlo) hparams on tiny files give clear errors', () => {
  const partial = path.join(tmp, 'partial');
  fs.mkdirSync(partial);
  fs.copyFileSync(path.join(ORIGINAL, 'ViT-L-14.pt'), path.join(partial, 'ViT-L-14.pt'));
  assert.throws(() => openOriginal(partial), /missing prior-ckpt-step=01000000-of-01000000\.ckpt, ViT-L-14_stats\.th, decoder-ckpt-step=01000000-of-01000000\.ckpt, improved-sr-ckpt-step=1\.2M\.ckpt \(/);
  // Converting only the text encoder needs only ViT-L-14.pt.
  const only = convertOriginal({ from: partial, out: path.join(tmp, 'only-te'), components: ['text_encoder'] });
  assert.equal(only.components.map((c) => c.component), ['text_encoder']);
  assert.equal(fs.readdirSync(path.join(tmp, 'only-te')).sort(), ['karlo_conversion.json', 'text_encoder']);
  const rel = openOriginal(ORIGINAL);
  try {
    assert.throws(() => planRelease(rel, defaultHparams()), /prior width 36 is not a multiple of 64.*--configs/);
  } finally {
    rel.close();
  }
});

test('karlo convert CLI: converts, refuses to overwrite (exit 2, one line), --force replaces', () => {
  const out = path.join(tmp, 'cli');
  const run = (...args: string[]) => execFileSync(process.execPath, ['bin/karlo.js', 'convert', '--from-original', ORIGINAL, '--configs', CONFIGS, '--out', out, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout = run();
  assert.match(stdout, /decoder\s+392 tensors/);
  assert.match(stdout, new RegExp(`wrote ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  try {
    run();
    assert.unreachable('should refuse');
  } catch (e) {
    const err = e as { status: number; stderr: string };
    assert.is(err.status, 2);
    assert.match(err.stderr, /exists and is not empty; pass --force/);
    assert.is(err.stderr.trim().split('\n').length, 1);
  }
  run('--force');
  assert.equal(withoutStamps(readJson(path.join(out, 'prior', 'config.json'))), withoutStamps(readJson(path.join(EXPECTED, 'prior', 'config.json'))));
});

test('YAML subset parser and Python-style JSON', () => {
  const y = parseYaml(fs.readFileSync(path.join(CONFIGS, 'improved_sr_64_256_1.4B.yaml'), 'utf8'), 'sr.yaml') as any;
  assert.equal(y.model.hparams, { channels: 32, depth: 1, channels_multiple: [1, 1], dropout: 0 });
  assert.is(y.sampling.timestep_respacing, '7');
  const d = parseYaml(fs.readFileSync(path.join(CONFIGS, 'decoder_900M_vit_l.yaml'), 'utf8'), 'd.yaml') as any;
  assert.is(d.model.hparams.channel_mult, '1,1,1');
  assert.is(d.model.hparams.attention_resolutions, '16,8');
  assert.is(d.model.hparams.use_scale_shift_norm, true);
  assert.equal(parseYaml('a: [1, 2]\nb:\n  - x\n  - 2.5\nc: ~ # comment\n', 'x'), { a: [1, 2], b: ['x', 2.5], c: null });
  assert.throws(() => parseYaml('a: &anchor 1\n', 'bad.yaml'), /bad\.yaml:1: unsupported YAML/);
  assert.equal([1e-5, 0.02, 1, 5, 1e-8, 123456.5, 1e16, 0.0001].map(pyFloatRepr), ['1e-05', '0.02', '1.0', '5.0', '1e-08', '123456.5', '1e+16', '0.0001']);
  assert.is(toPythonJson({ b: [1, pyFloat(0)], a: null }), '{\n  "a": null,\n  "b": [\n    1,\n    0.0\n  ]\n}');
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
