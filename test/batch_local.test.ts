// `karlo batch` without a queue: job identity, prompt/seed files and their errors, the model config hash, the
// output folder (manifest, torn lines, lock, leftovers), and the in-process command on the bundled tiny model:
// images equal to the pipeline's for the same seed and settings, resumable, no re-run of done jobs.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import { BUNDLED_MODEL_DIR } from '../src/cli/commands/generate.js';
import { buildJobs, imageFileName, jobHash, readPromptFile, specProblem, BatchInputError, type JobSpec } from '../src/batch/jobs.js';
import { modelConfigHash, ModelHashError } from '../src/batch/model_hash.js';
import { OutputDir, OutputDirError, readManifest } from '../src/batch/output.js';
import { renderJob } from '../src/batch/render.js';
import { parseRedisUrl, redactUrl } from '../src/batch/queue.js';
import { decodePng, floatToRgb8, readPngText } from '../src/io/png.js';
import { PROVENANCE_KEY, parseProvenance } from '../src/pipeline/provenance.js';
import { UnCLIPPipeline } from '../src/pipeline/unclip_pipeline.js';
import { availableBackends } from '../src/backend/index.js';
import { registerNativeOrWhy, useBackend } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-batch-'));
const BACKEND = (await registerNativeOrWhy()) === undefined ? 'native' : (await availableBackends(['wasm'])).length ? 'wasm' : 'cpu';
const ENV = { ...process.env, KARLO_BACKEND: BACKEND, KARLO_NATIVE_THREADS: '1' };
const MODEL_HASH = modelConfigHash(BUNDLED_MODEL_DIR);

// The bundled tiny model with an 8×8 decoder and 32×32 super-res (same weights).
const MINI = path.join(tmp, 'mini');
fs.cpSync(BUNDLED_MODEL_DIR, MINI, { recursive: true });
for (const [c, size] of [['decoder', 8], ['super_res_first', 32], ['super_res_last', 32]] as const) {
  const f = path.join(MINI, c, 'config.json');
  fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, 'utf8')), sample_size: size }));
}
const FAST = ['--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2'];

function write(name: string, text: string): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, text);
  return f;
}

function karlo(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { cwd: tmp, env: ENV, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const SPEC: JobSpec = {
  v: 1, prompt: 'a red frog', seed: '7', model: MODEL_HASH,
  settings: { numImagesPerPrompt: 1, priorSteps: 2, decoderSteps: 2, superResSteps: 2, priorGuidance: 4, decoderGuidance: 8 },
};

test('job identity: a SHA-256 of prompt, seed, every setting and the model; key order does not matter', () => {
  const h = jobHash(SPEC);
  assert.match(h, /^[0-9a-f]{64}$/);
  const reordered = JSON.parse(JSON.stringify({ model: SPEC.model, settings: { ...SPEC.settings }, seed: SPEC.seed, prompt: SPEC.prompt, v: 1 }));
  assert.is(jobHash(reordered), h);
  const variants: JobSpec[] = [
    { ...SPEC, prompt: 'a red frog ' }, { ...SPEC, seed: '8' }, { ...SPEC, model: '0'.repeat(64) },
    ...(Object.keys(SPEC.settings) as (keyof JobSpec['settings'])[]).map((k) => ({ ...SPEC, settings: { ...SPEC.settings, [k]: SPEC.settings[k] + 1 } })),
  ];
  assert.is(new Set([h, ...variants.map(jobHash)]).size, variants.length + 1, 'every field changes the hash');
  assert.is(imageFileName(3, h, 0, 1), `00003-${h.slice(0, 8)}.png`);
  assert.is(imageFileName(3, h, 1, 2), `00003-${h.slice(0, 8)}-1.png`);
  assert.is(specProblem(SPEC), undefined);
  assert.match(specProblem({ ...SPEC, prompt: '' })!, /"prompt" must be a non-empty string/);
  assert.match(specProblem({ ...SPEC, seed: 7 })!, /"seed" must be a decimal integer string/);
  assert.match(specProblem({ ...SPEC, settings: { ...SPEC.settings, decoderSteps: 1 } })!, /decoderSteps must be an integer in \[2, 1000\]/);
  assert.match(specProblem({ ...SPEC, extra: 1 })!, /unknown field\(s\) "extra"/);
  assert.match(specProblem(null)!, /not an object/);
});

test('prompt files: .txt lines, .jsonl with per-line seed/options/meta; seeds: base+index, --seeds, line wins; errors name FILE:LINE', () => {
  const txt = write('p.txt', 'a frog\n\n  a cat  \r\n');
  assert.equal(readPromptFile(txt).map((p) => [p.prompt, p.where]), [['a frog', `${txt}:1`], ['a cat', `${txt}:3`]]);
  const jl = write('p.jsonl', [
    JSON.stringify({ prompt: 'one' }),
    JSON.stringify({ prompt: 'two', seed: 5, decoder_steps: 3, meta: { coco_id: 12 } }),
    JSON.stringify({ prompt: 'three', seed: '18446744073709551615', 'num-images': 2, preset: 'fast' }),
  ].join('\n'));
  const jobs = buildJobs(jl, { seed: 100n, priorSteps: 2, decoderSteps: 2, superResSteps: 2 }, MODEL_HASH);
  assert.equal(jobs.map((j) => j.spec.seed), ['100', '5', '18446744073709551615']);
  assert.is(jobs[1].spec.settings.decoderSteps, 3);
  assert.equal(jobs[1].meta, { coco_id: 12 });
  // a line's preset replaces the batch's steps/guidance (fast: 25/25/7), its own options still apply
  assert.equal(jobs[2].spec.settings, { numImagesPerPrompt: 2, priorSteps: 25, decoderSteps: 25, superResSteps: 7, priorGuidance: 4, decoderGuidance: 8 });
  assert.equal(buildJobs(jl, { seeds: [1n, 2n, 3n] }, MODEL_HASH).map((j) => j.spec.seed), ['1', '5', '18446744073709551615']);
  const bad: [string, string, RegExp][] = [
    ['b1.jsonl', '{"prompt": "x"}\n{"prompt": "y", "decoder_step": 3}', /b1\.jsonl:2: unknown key "decoder_step"/],
    ['b2.jsonl', '{"prompt": "x"}\nnot json', /b2\.jsonl:2: invalid JSON/],
    ['b3.jsonl', '{"prompt": "x", "seed": -1}', /b3\.jsonl:1: "seed" must be an integer/],
    ['b4.jsonl', '{"prompt": "x", "prior_steps": 1}', /b4\.jsonl:1: --prior-steps must be an integer in \[2, 1000\]/],
    ['b5.jsonl', '{"prompt": ""}', /b5\.jsonl:1: "prompt" must be a non-empty string/],
    ['b6.csv', 'x', /b6\.csv: prompts must be a \.txt .* or \.jsonl file/],
    ['b7.txt', '\n\n', /b7\.txt: no prompts/],
  ];
  for (const [name, text, re] of bad) {
    const f = write(name, text);
    assert.throws(() => buildJobs(f, {}, MODEL_HASH), (e: Error) => e instanceof BatchInputError && re.test(e.message), name);
  }
  assert.throws(() => buildJobs(txt, { seeds: [1n] }, MODEL_HASH), /--seeds has 1 seeds for 2 prompts/);
});

test('model config hash: configs and tokenizer only (a folder without weights hashes the same), bookkeeping keys ignored, any real change counts', () => {
  const noWeights = path.join(tmp, 'configs-only');
  fs.cpSync(BUNDLED_MODEL_DIR, noWeights, { recursive: true, filter: (src) => !src.endsWith('.safetensors') });
  assert.is(modelConfigHash(noWeights), MODEL_HASH);
  const f = path.join(noWeights, 'decoder', 'config.json');
  const cfg = JSON.parse(fs.readFileSync(f, 'utf8'));
  fs.writeFileSync(f, JSON.stringify({ ...cfg, _diffusers_version: '9.9.9' }, null, 4));
  assert.is(modelConfigHash(noWeights), MODEL_HASH, 'whitespace and _diffusers_version do not matter');
  fs.writeFileSync(f, JSON.stringify({ ...cfg, sample_size: 8 }));
  assert.is.not(modelConfigHash(noWeights), MODEL_HASH);
  fs.rmSync(path.join(noWeights, 'prior'), { recursive: true });
  assert.throws(() => modelConfigHash(noWeights), (e: Error) => e instanceof ModelHashError && /prior.*component folder "prior" is missing/.test(e.message));
});

test('output folder: manifest drives resume, a torn last line is dropped, one writer at a time, leftovers of dead writers removed', () => {
  const dir = path.join(tmp, 'outdir');
  const jobs = buildJobs(write('o.txt', 'a\nb\n'), { priorSteps: 2, decoderSteps: 2, superResSteps: 2 }, MODEL_HASH);
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]);
  let out = new OutputDir(dir);
  assert.throws(() => new OutputDir(dir), (e: Error) => e instanceof OutputDirError && /another karlo batch \(pid \d+\) is writing/.test(e.message));
  assert.is(out.pending(jobs).length, 2);
  assert.ok(out.write(jobs[0], [png], { worker: 'w', backend: 'cpu', seconds: 1 }).written);
  assert.not.ok(out.write(jobs[0], [png], { worker: 'w2', backend: 'cpu', seconds: 1 }).written, 'a second delivery is not written');
  out.close();
  // a crash during the append: a torn last line; a dead writer's temporary file; a stale lock (pid gone)
  fs.appendFileSync(path.join(dir, 'manifest.jsonl'), '{"index":1,"ima');
  fs.writeFileSync(path.join(dir, '.00001-x.png.999999999.1.tmp'), 'half');
  fs.writeFileSync(path.join(dir, '.karlo-batch.lock'), `999999999 ${os.hostname()}`);
  out = new OutputDir(dir);
  assert.equal(out.pending(jobs).map((j) => j.index), [1]);
  assert.is(fs.readFileSync(path.join(dir, 'manifest.jsonl'), 'utf8').split('\n').length, 2, 'torn line dropped');
  assert.not.ok(fs.existsSync(path.join(dir, '.00001-x.png.999999999.1.tmp')));
  // a manifest line whose file is gone: the job is pending again
  fs.unlinkSync(path.join(dir, imageFileName(0, jobs[0].hash, 0, 1)));
  out.close();
  out = new OutputDir(dir);
  assert.is(out.pending(jobs).length, 2);
  out.close();
  assert.equal(readManifest(dir), []);
});

test('renderJob: PNGs equal to the pipeline output for the same seed and settings, tensors back to baseline', async () => {
  await useBackend(BACKEND);
  const pipe = await UnCLIPPipeline.load(MINI, { keepLoaded: true });
  try {
    const spec = { ...SPEC, model: modelConfigHash(MINI), settings: { ...SPEC.settings, numImagesPerPrompt: 2 } };
    await renderJob(pipe, spec); // loads the components
    const before = tf.memory().numTensors;
    const r = await renderJob(pipe, spec);
    assert.is(tf.memory().numTensors, before);
    const ref = await pipe.generate(['a red frog'], { seed: 7, priorSteps: 2, decoderSteps: 2, superResSteps: 2, numImagesPerPrompt: 2 });
    assert.is(r.pngs.length, 2);
    for (let k = 0; k < 2; k++) assert.equal(Array.from(decodePng(r.pngs[k]).data), Array.from(floatToRgb8(ref.images, ref.shape, k).data));
  } finally {
    pipe.dispose();
  }
});

test('karlo batch (in-process): files + manifest, same bytes as renderJob; a rerun does nothing; a lost file is made again, identical', async () => {
  const prompts = write('run.jsonl', [
    JSON.stringify({ prompt: 'a red frog', seed: 7 }),
    JSON.stringify({ prompt: 'a blue cat', num_images: 2 }),
    JSON.stringify({ prompt: 'a green teapot', meta: { id: 'x' } }),
  ].join('\n'));
  const out = path.join(tmp, 'run');
  const r = karlo(['batch', prompts, '--model', MINI, '--out', out, ...FAST, '--seed', '40', '--json']);
  assert.is(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout), { ...JSON.parse(r.stdout), jobs: 3, skipped: 0, done: 3, images: 4, left: 0 });
  assert.match(r.stderr, /\[3\/3\] /);
  const m = readManifest(out);
  assert.equal(m.map((e) => [e.index, e.image, e.seed, e.prompt]), [[0, 0, '7', 'a red frog'], [1, 0, '41', 'a blue cat'], [1, 1, '41', 'a blue cat'], [2, 0, '42', 'a green teapot']]);
  assert.equal(m[3].meta, { id: 'x' });
  for (const e of m) {
    assert.is(e.file, imageFileName(e.index, e.hash, e.image, e.settings.numImagesPerPrompt));
    // the provenance chunk of karlo generate: karlo inspect shows it, karlo generate --from re-runs it
    const prov = parseProvenance(readPngText(fs.readFileSync(path.join(out, e.file)))[PROVENANCE_KEY], e.file);
    assert.equal([prov.prompts, prov.seed, prov.imageIndex, prov.numImagesPerPrompt, prov.steps.decoder, prov.extra], [[e.prompt], e.seed, e.image, e.settings.numImagesPerPrompt, 2, { batchJob: e.hash }]);
  }
  await useBackend(BACKEND);
  const pipe = await UnCLIPPipeline.load(MINI, { keepLoaded: true });
  try {
    const first = await renderJob(pipe, { ...SPEC, model: modelConfigHash(MINI) });
    assert.ok(fs.readFileSync(path.join(out, m[0].file)).equals(first.pngs[0]), 'same bytes as renderJob of the same spec');
  } finally {
    pipe.dispose();
  }
  const mtimes = m.map((e) => fs.statSync(path.join(out, e.file)).mtimeMs);
  const again = karlo(['batch', prompts, '--model', MINI, '--out', out, ...FAST, '--seed', '40', '--json']);
  assert.is(again.code, 0, again.stderr);
  assert.is(JSON.parse(again.stdout).done, 0);
  assert.match(again.stderr, /3 already done/);
  assert.equal(m.map((e) => fs.statSync(path.join(out, e.file)).mtimeMs), mtimes, 'nothing rewritten');
  const lost = fs.readFileSync(path.join(out, m[3].file));
  fs.unlinkSync(path.join(out, m[3].file));
  const third = karlo(['batch', prompts, '--model', MINI, '--out', out, ...FAST, '--seed', '40', '--json']);
  assert.is(JSON.parse(third.stdout).done, 1, third.stderr);
  assert.ok(fs.readFileSync(path.join(out, m[3].file)).equals(lost), 'made again, identical');
  assert.equal(fs.readdirSync(out).filter((n) => n.endsWith('.tmp') || n.startsWith('.karlo')), [], 'no temporary files or lock left');
});

test('karlo batch / worker: bad arguments are one line, exit 2', () => {
  const p = write('ok.txt', 'a frog\n');
  const cases: [string[], RegExp][] = [
    [['batch', p, '--model', MINI], /--out DIR is required/],
    [['batch', p, '--model', MINI, '--out', 'o', '--seed', '1', '--seeds', p], /give --seed or --seeds, not both/],
    [['batch', p, '--model', MINI, '--out', 'o', '--decoder-steps', '1'], /--decoder-steps must be an integer in \[2, 1000\]/],
    [['batch', write('bad.jsonl', '{"prompt": 3}'), '--model', MINI, '--out', 'o'], /bad\.jsonl:1: "prompt" must be a non-empty string/],
    [['batch', p, '--model', path.join(tmp, 'nope'), '--out', 'o'], /nope: model folder does not exist/],
    [['batch', p, '--model', MINI, '--out', 'o', '--wait'], /--wait needs --queue/],
    [['batch', 'status'], /needs --queue/],
    [['worker', '--model', MINI], /karlo worker needs --queue/],
    [['worker', '--queue', 'redis://127.0.0.1:1/0', '--model', MINI, '--concurrency', '0'], /--concurrency must be a positive integer/],
  ];
  const pick = (o: object) => { const r = o as Record<string, unknown>; return [r.host, r.port, r.db, r.username, r.password, r.maxRetriesPerRequest]; };
  assert.equal(pick(parseRedisUrl('redis://u:p%40ss@10.0.0.1:6380/3')), ['10.0.0.1', 6380, 3, 'u', 'p@ss', null]);
  assert.equal(pick(parseRedisUrl('redis://[::1]')), ['::1', 6379, 0, undefined, undefined, null]);
  assert.is(redactUrl('redis://u:secret@h:1/0'), 'redis://u:***@h:1/0');
  assert.throws(() => parseRedisUrl('http://x'), /expected a redis:\/\/ or rediss:\/\/ URL/);
  assert.throws(() => parseRedisUrl('redis://h/x'), /the path must be a database number/);
  for (const [args, re] of cases) {
    const r = karlo(args);
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.is(r.stderr.trim().split('\n').filter((l) => !l.startsWith('note:')).length, 1, r.stderr);
    assert.match(r.stderr, re);
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
