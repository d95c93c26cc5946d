// The run report (issue 19 item 5). Numbers: at the last step (t = 0, previous ᾱ = 1) the scheduler's result IS
// its predicted x0, so the last decoder x0 of the strip equals image_small and the last super-res x0 equals the
// final image (to 8-bit rounding), and the prior's last predicted embedding is the final image embedding (cosine 1).
// Page: `karlo generate --report` writes one self-contained page (no external URLs, no scripts) that headless
// Chromium loads with no console errors, every image decoding; the screenshot has the viewport's size and is not
// blank.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { BUNDLED_MODEL_DIR } from '../src/package_root.js';
import { UnCLIPPipeline, type GenerateOptions, type Preview } from '../src/pipeline/unclip_pipeline.js';
import { ReportCollector } from '../src/internals/report.js';
import { decodePng } from '../src/io/png.js';
import { backendsUnderTest, useBackend } from './helpers.js';
import { CHROMIUM, inspectPage } from './chromium.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-report-'));
const backend = (await backendsUnderTest())[0];

const fromUri = (uri: string) => decodePng(Buffer.from(uri.replace(/^data:image\/png;base64,/, ''), 'base64'));

test(`[${backend}] report numbers: last decoder x0 = image_small, last super-res x0 = the image, last prior prediction = the image embedding`, async () => {
  await useBackend(backend);
  const pipe = await UnCLIPPipeline.load(BUNDLED_MODEL_DIR);
  const prompts = ['a red frog'];
  const gen: GenerateOptions = { seed: 5, priorSteps: 3, decoderSteps: 3, superResSteps: 2, numImagesPerPrompt: 2 };
  const before = tf.memory().numTensors;
  const rep = new ReportCollector(pipe, { prompts, modelDir: BUNDLED_MODEL_DIR }, gen);
  const previews: Preview[] = [];
  const result = await pipe.generate(prompts, rep.options({ ...gen, onPreview: (p) => previews.push(p) }));
  const small = previews.find((p) => p.stage === 'decoder' && p.step === -1)!;
  assert.is(rep.strips.decoder.length, 3);
  assert.is(rep.strips.super_res.length, 2);
  for (let i = 0; i < 2; i++) {
    const last = fromUri(rep.strips.decoder[2].pngs[i]);
    const [, h, w] = small.shape;
    assert.equal([last.width, last.height], [w, h]);
    let worst = 0;
    for (let j = 0; j < h * w * 3; j++) worst = Math.max(worst, Math.abs(last.data[j] - Math.round(small.images[i * h * w * 3 + j] * 255)));
    assert.ok(worst <= 1, `decoder x0 vs image_small: ${worst} levels`);
    const sr = fromUri(rep.strips.super_res[1].pngs[i]);
    const [, H, W] = result.shape;
    let worstSr = 0;
    for (let j = 0; j < H * W * 3; j++) worstSr = Math.max(worstSr, Math.abs(sr.data[j] - Math.round(result.images[i * H * W * 3 + j] * 255)));
    assert.ok(worstSr <= 1, `super-res x0 vs image: ${worstSr} levels`);
  }
  const cos = rep.priorCosines();
  assert.is(cos.length, 2);
  for (const c of cos) {
    assert.is(c.toFinal.length, 3);
    assert.ok(Math.abs(c.toFinal[2] - 1) < 1e-5, `last prediction vs final: ${c.toFinal[2]}`);
    assert.ok(c.toText.every((v) => v >= -1 && v <= 1));
  }
  const html = rep.html(result);
  assert.match(html, /a red frog/);
  rep.dispose();
  assert.is(tf.memory().numTensors, before);
  pipe.dispose();
});

test('karlo generate --report: a self-contained page Chromium loads without console errors, every image decoding; non-blank screenshot', async () => {
  const report = path.join(tmp, 'run.html');
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), 'generate', 'a big red frog', '--model', BUNDLED_MODEL_DIR,
    '--seed', '2', '--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2', '--num-images', '2',
    '--out', path.join(tmp, 'frog.png'), '--report', report, '--json'], { cwd: tmp, encoding: 'utf8', timeout: 120_000, env: { ...process.env, KARLO_BACKEND: backend } });
  assert.is(r.status, 0, r.stderr);
  assert.is(JSON.parse(r.stdout).report, report);
  const html = fs.readFileSync(report, 'utf8');
  assert.not.match(html, /<script|https?:\/\/|src="(?!data:)/, 'self-contained: no scripts, no external resources');
  assert.ok(CHROMIUM, 'chromium is installed (apt-get install chromium)');
  const page = await inspectPage(report, { width: 1000, height: 800 });
  assert.equal(page.errors, []);
  assert.is(page.title, 'Karlo run report');
  // Per image: final, cosine plot, 2 decoder x0, 2 super-res x0, attention maps.
  assert.is(page.images.length, 2 * 7);
  for (const im of page.images) assert.ok(im.complete && im.width > 0 && im.height > 0, `image "${im.alt}" did not decode`);
  const shot = decodePng(page.screenshot);
  assert.equal([shot.width, shot.height], [1000, 800]);
  const colours = new Set<number>();
  for (let i = 0; i < shot.data.length; i += shot.channels * 5) colours.add((shot.data[i] << 16) | (shot.data[i + 1] << 8) | shot.data[i + 2]);
  assert.ok(colours.size > 200, `screenshot looks blank: ${colours.size} colours`);
});

test('--report refuses an existing file without --force and a missing folder (one line, exit 2)', () => {
  const existing = path.join(tmp, 'exists.html');
  fs.writeFileSync(existing, 'x');
  for (const [target, msg] of [[existing, /exists; pass --force/], [path.join(tmp, 'nope', 'r.html'), /--report .*folder .* does not exist/]] as const) {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), 'generate', 'a frog', '--model', BUNDLED_MODEL_DIR, '--out', path.join(tmp, 'x.png'), '--report', target],
      { cwd: tmp, encoding: 'utf8', timeout: 60_000 });
    assert.is(r.status, 2, r.stderr);
    assert.match(r.stderr, msg);
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
