// Attention maps (issue 19 item 4): the collector's decoder maps equal an independent aggregation of the captured
// probabilities (conditional rows, keys = extra + text tokens, mean over heads, bilinear upsampling with half-pixel
// centres written here, mean over layers and steps); the prior's prd-token rows likewise, and they sum to 1;
// `karlo attention` writes a labelled PNG of the expected size that is not blank, and --json names the tokens.
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
import { AttentionCollector, colormap } from '../src/internals/attention_maps.js';
import { Capture, makeHook } from '../src/internals/interventions.js';
import { readPng } from '../src/io/png.js';
import { assertClose, backendsUnderTest, useBackend } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-attn-'));
const backend = (await backendsUnderTest())[0];
const RUN: GenerateOptions = { seed: 3, priorSteps: 2, decoderSteps: 3, superResSteps: 2, numImagesPerPrompt: 2 };

/** Bilinear resize with half-pixel centres (edge-clamped), [h, w] → [S, S], one channel. */
function upsample(src: Float64Array, h: number, S: number): Float64Array {
  const out = new Float64Array(S * S);
  const c = (v: number) => Math.min(h - 1, Math.max(0, v));
  for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
    const sy = c(((y + 0.5) * h) / S - 0.5), sx = c(((x + 0.5) * h) / S - 0.5);
    const y0 = Math.floor(sy), x0 = Math.floor(sx), y1 = Math.min(h - 1, y0 + 1), x1 = Math.min(h - 1, x0 + 1);
    const fy = sy - y0, fx = sx - x0;
    out[y * S + x] = (1 - fy) * ((1 - fx) * src[y0 * h + x0] + fx * src[y0 * h + x1]) + fy * ((1 - fx) * src[y1 * h + x0] + fx * src[y1 * h + x1]);
  }
  return out;
}

test(`[${backend}] decoder maps and prior prd rows equal an independent aggregation of the captured probabilities`, async () => {
  await useBackend(backend);
  const pipe = await UnCLIPPipeline.load(BUNDLED_MODEL_DIR);
  const prompts = ['a red frog', 'a fox in the snow'];
  const n = 4, S = pipe.dims.decoderSize, E = 4 + 77;
  const col = new AttentionCollector(n, S, E);
  const decCap = new Capture('*.attentions.*.probs'), priorCap = new Capture('transformer_blocks.*.attn1.probs');
  const before = tf.memory().numTensors;
  const both = (a: typeof col.outputHooks.decoder, b: Capture) => makeHook({ edits: { '*.probs': (t, p) => { if (a.wants!(p)) a(p, t); } }, observe: b.hook });
  await pipe.generate(prompts, { ...RUN, outputHooks: { decoder: both(col.outputHooks.decoder, decCap), prior: both(col.outputHooks.prior, priorCap) } });
  const r = col.result();
  col.dispose();
  // Independent aggregation.
  const expected = new Float64Array(n * S * S * E);
  let calls = 0;
  for (const p of decCap.paths()) {
    for (const probs of decCap.all(p)) {
      calls++;
      const [B, H, HW, K] = probs.shape;
      assert.is(B, 2 * n);
      const d = probs.dataSync();
      const h = Math.sqrt(HW);
      for (let i = 0; i < n; i++) for (let k = 0; k < E; k++) {
        const m = new Float64Array(HW);
        for (let head = 0; head < H; head++) for (let q = 0; q < HW; q++) m[q] += d[(((n + i) * H + head) * HW + q) * K + k] / H;
        const up = h === S ? m : upsample(m, h, S);
        for (let q = 0; q < S * S; q++) expected[(i * S * S + q) * E + k] += up[q];
      }
    }
  }
  assert.is(r.decoder.calls, calls);
  assert.is(calls, 11 * 3, '11 attention layers × 3 decoder steps');
  assertClose('decoder maps', Float32Array.from(r.decoder.maps!), Float32Array.from(expected, (v) => v / calls), { atol: 1e-6, scaleByMax: false });
  // Per pixel, the text/extra keys hold at most all of the mass (the rest is on spatial keys).
  for (let q = 0; q < n * S * S; q++) {
    let s = 0;
    for (let k = 0; k < E; k++) s += r.decoder.maps![q * E + k];
    assert.ok(s <= 1 + 1e-5 && s > 0);
  }
  const prior = new Float64Array(n * 81);
  let pc = 0;
  for (const p of priorCap.paths()) for (const probs of priorCap.all(p)) {
    pc++;
    const [, H, , K] = probs.shape;
    const d = probs.dataSync();
    for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) for (let head = 0; head < H; head++) prior[i * 81 + k] += d[(((n + i) * H + head) * 81 + 80) * 81 + k] / H;
  }
  assert.is(r.prior.calls, pc);
  assertClose('prior prd rows', r.prior.mass!, Float32Array.from(prior, (v) => v / pc), { atol: 1e-6, scaleByMax: false });
  for (let i = 0; i < n; i++) assertClose(`prior row ${i} sums to 1`, [r.prior.mass!.subarray(i * 81, (i + 1) * 81).reduce((a, b) => a + b, 0)], [1], { atol: 1e-5 });
  decCap.dispose();
  priorCap.dispose();
  assert.is(tf.memory().numTensors, before);
  pipe.dispose();
});

test('colormap: dark at 0, bright at 1, clamps', () => {
  assert.equal(colormap(0), [68, 1, 84]);
  assert.equal(colormap(1), [253, 231, 37]);
  assert.equal(colormap(-3), colormap(0));
  assert.equal(colormap(NaN), colormap(0));
});

test('karlo attention writes one labelled, non-blank PNG per image; --json lists the tokens with their mean mass', () => {
  const out = path.join(tmp, 'maps.png');
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), 'attention', 'a big red frog', '--model', BUNDLED_MODEL_DIR,
    '--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2', '--num-images', '2', '--out', out, '--json'], {
    cwd: tmp, encoding: 'utf8', timeout: 120_000, env: { ...process.env, KARLO_BACKEND: backend },
  });
  assert.is(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { images: { file: string; decoder: { token: string; meanMass: number }[]; prior: { label: string; mass: number }[] }[] };
  assert.is(j.images.length, 2);
  assert.equal(j.images[0].decoder.map((d) => d.token), ['[clip 0]', '[clip 1]', '[clip 2]', '[clip 3]', '<start>', 'a', 'big', 'red', 'frog', '<end>']);
  assert.equal(j.images[0].prior.map((d) => d.label), ['<start>', 'a', 'big', 'red', 'frog', '<end>', '[text emb]', '[time]', '[x_t]', '[prd]']);
  for (const f of [path.join(tmp, 'maps-0.png'), path.join(tmp, 'maps-1.png')]) {
    const img = readPng(f);
    // 11 cells (image + 10 keys) in rows of 6: 2 rows; colour bar; bar chart below.
    assert.equal([img.width, img.height], [10 + 6 * 138 + 70, 40 + 2 * 162 + 230 + 10]);
    const colours = new Set<number>();
    for (let i = 0; i < img.data.length; i += 3 * 7) colours.add((img.data[i] << 16) | (img.data[i + 1] << 8) | img.data[i + 2]);
    assert.ok(colours.size > 500, `only ${colours.size} colours`);
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
