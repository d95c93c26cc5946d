// Provenance (issue 17 item 7): every PNG karlo generate writes carries a tEXt "parameters" chunk (prompt, index,
// seed, steps, guidance, model folder + config hash, backend, version); `karlo inspect image.png` prints it;
// `karlo generate --from image.png` re-runs the call to the same pixels; --json maps each image to its prompt and
// index; a generate result is JSON-serialisable (seed as a string).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodePng, encodePng, readPng, readPngText } from '../src/io/png.js';
import { openModelFolder } from '../src/io/model_folder.js';
import { DEFAULT_MODEL_DIR, PACKAGE_VERSION } from '../src/package_root.js';
import { UnCLIPPipeline } from '../src/pipeline/unclip_pipeline.js';
import { modelConfigHash, parseProvenance } from '../src/pipeline/provenance.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TINY = path.join(ROOT, 'models', 'karlo-tiny');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-prov-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const FAST = ['--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2'];

function karlo(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { cwd: tmp, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('png: tEXt chunks round-trip (keyword → Latin-1 text) and the pixels still decode; a chunk past the end is refused', () => {
  const img = { width: 3, height: 2, channels: 3 as const, data: Uint8Array.from({ length: 18 }, (_, i) => i * 13) };
  const buf = encodePng(img, { parameters: '{"a":"\\u00fc"}', Other: 'x' });
  assert.equal({ ...readPngText(buf) }, { parameters: '{"a":"\\u00fc"}', Other: 'x' });
  assert.equal(Array.from(decodePng(buf).data), Array.from(img.data));
  assert.throws(() => encodePng(img, { parameters: 'snow ☃' }), /Latin-1/);
  const cut = Buffer.from(buf);
  cut.writeUInt32BE(0x7fffffff, 8 + 25); // the first chunk after IHDR (tEXt) claims 2 GB
  assert.throws(() => readPngText(cut, 'cut.png'), /cut\.png: chunk "tEXt" at byte 33 runs past the end/);
});

test('generate writes provenance per image; --json maps images to prompt and index; inspect prints it; --from re-runs to the same pixels', () => {
  const out = path.join(tmp, 'g.png');
  const r = karlo(['generate', '--num-images', '2', '--seed', '42', '--out', out, ...FAST, '--json', '--', 'a frog ünïcode', '-a toad']);
  assert.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.outputs.map((o: { file: string; prompt: string; promptIndex: number; imageIndex: number }) => [path.basename(o.file), o.prompt, o.promptIndex, o.imageIndex]), [
    ['g-0.png', 'a frog ünïcode', 0, 0], ['g-1.png', 'a frog ünïcode', 0, 1], ['g-2.png', '-a toad', 1, 0], ['g-3.png', '-a toad', 1, 1],
  ]);
  // No --model: the default model (karlo-nano) is what the provenance names.
  const hash = modelConfigHash(openModelFolder(DEFAULT_MODEL_DIR));
  for (const [i, o] of j.outputs.entries()) {
    const p = parseProvenance(readPngText(fs.readFileSync(o.file)).parameters, o.file);
    assert.is(p.prompt, o.prompt);
    assert.is(p.promptIndex, o.promptIndex);
    assert.is(p.imageIndex, o.imageIndex);
    assert.equal(p.prompts, ['a frog ünïcode', '-a toad']);
    assert.is(p.seed, '42');
    assert.equal(p.steps, { prior: 2, decoder: 2, superRes: 2 });
    assert.equal(p.guidance, { prior: 4, decoder: 8 });
    assert.is(p.model, DEFAULT_MODEL_DIR);
    assert.is(p.modelConfigHash, hash);
    assert.is(p.backend, j.timings.backend);
    assert.is(p.version, PACKAGE_VERSION, `image ${i}`);
  }

  const ins = karlo(['inspect', path.join(tmp, 'g-3.png')]);
  assert.is(ins.code, 0, ins.stderr);
  assert.match(ins.stdout, /prompt: "-a toad" \(prompt 2 of 2, image 2 of 2\)/);
  assert.match(ins.stdout, /seed: 42/);
  assert.match(ins.stdout, /karlo generate --from/);
  const insJson = JSON.parse(karlo(['inspect', path.join(tmp, 'g-3.png'), '--json']).stdout);
  assert.is(insJson.parameters.seed, '42');

  const again = karlo(['generate', '--from', path.join(tmp, 'g-1.png'), '--out', path.join(tmp, 'h.png')]);
  assert.is(again.code, 0, again.stderr);
  for (let i = 0; i < 4; i++) {
    assert.equal(readPng(path.join(tmp, `h-${i}.png`)).data, readPng(path.join(tmp, `g-${i}.png`)).data, `image ${i} re-run`);
  }
});

test('inspect / --from on a PNG without provenance: one line, exit 2', () => {
  const plain = path.join(tmp, 'plain.png');
  fs.writeFileSync(plain, encodePng({ width: 1, height: 1, channels: 3, data: new Uint8Array(3) }));
  for (const args of [['inspect', plain], ['generate', '--from', plain]]) {
    const r = karlo(args);
    assert.is(r.code, 2, r.stderr);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /no "parameters" text chunk/);
  }
});

test('a generate result is JSON-serialisable: seed as a decimal string, images as numbers', async () => {
  const pipe = await UnCLIPPipeline.load(TINY, { backend: 'cpu', log: () => {} });
  const r = await pipe.generate(['a frog'], { seed: 2n ** 63n + 5n, priorSteps: 2, decoderSteps: 2, superResSteps: 2 });
  const j = JSON.parse(JSON.stringify(r));
  assert.is(j.seed, (2n ** 63n + 5n).toString());
  assert.is(typeof r.seed, 'bigint');
  assert.is(j.images.length, r.images.length);
  assert.is(j.images[7], r.images[7]);
  assert.equal(j.shape, r.shape);
});

test.run();
