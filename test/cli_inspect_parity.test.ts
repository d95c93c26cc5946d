// `karlo inspect` and `karlo parity` end to end (child processes of bin/karlo.js): the JSON contract, parameter counts
// equal to the sums of tensor sizes read independently from the file headers, exit codes, one-line errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixture } from './helpers.js';
import { saveSafetensors } from '../src/io/safetensors.js';
import { PARITY_KINDS } from '../src/parity/registry.js';
import { inspectPath } from '../src/io/inspect.js';
import { detectKind } from '../src/cli/commands/parity.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-cli-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function karlo(...args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/karlo.js'), ...args], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, KARLO_BACKEND: 'cpu' }, timeout: 120_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Independent header reader: tensor name → [dtype, shape] straight from the JSON (no project code). */
function headerOf(file: string): Record<string, { dtype: string; shape: number[] }> {
  const fd = fs.openSync(file, 'r');
  const len = Buffer.alloc(8);
  fs.readSync(fd, len, 0, 8, 0);
  const h = Buffer.alloc(Number(len.readBigUInt64LE(0)));
  fs.readSync(fd, h, 0, h.length, 8);
  fs.closeSync(fd);
  const j = JSON.parse(h.toString('utf8'));
  delete j.__metadata__;
  return j;
}
const sumSizes = (h: Record<string, { shape: number[] }>) => Object.values(h).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);

function oneLineError(r: { code: number | null; err: string; out: string }, re: RegExp): void {
  assert.is(r.code, 2, `exit code 2 (stderr: ${r.err})`);
  const lines = r.err.trim().split('\n');
  assert.is(lines.length, 1, `one line on stderr: ${r.err}`);
  assert.match(lines[0], re);
  assert.not.match(r.err, /\n\s+at /, 'no stack trace');
  assert.is(r.out, '');
}

test('inspect pipeline_tiny --json: the seven non-scheduler components, classes from model_index.json, exact counts', () => {
  const r = karlo('inspect', fixture('pipeline_tiny'), '--json');
  assert.is(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(Object.keys(j), ['components', 'parameters', 'bytesPerDtype']);
  const idx = JSON.parse(fs.readFileSync(fixture('pipeline_tiny', 'model_index.json'), 'utf8'));
  const names = j.components.map((c: { name: string }) => c.name);
  assert.equal(names.sort(), ['decoder', 'prior', 'super_res_first', 'super_res_last', 'text_encoder', 'text_proj', 'tokenizer']);
  let total = 0;
  for (const c of j.components) {
    assert.equal(Object.keys(c), ['name', 'class', 'parameters', 'tensors']);
    assert.is(c.class, idx[c.name][1]);
    if (c.name === 'tokenizer') {
      assert.is(c.parameters, 0);
      assert.equal(c.tensors, []);
      continue;
    }
    const dir = fixture('pipeline_tiny', c.name);
    const file = path.join(dir, fs.readdirSync(dir).find((n) => n.endsWith('.safetensors'))!);
    const h = headerOf(file);
    assert.is(c.parameters, sumSizes(h), `${c.name} parameters`);
    assert.is(c.tensors.length, Object.keys(h).length);
    for (const t of c.tensors) {
      assert.equal(Object.keys(t), ['name', 'dtype', 'shape']);
      assert.equal([t.dtype, t.shape], [h[t.name].dtype, h[t.name].shape], t.name);
    }
    total += c.parameters;
  }
  assert.is(j.parameters, total);
});

test('inspect every fixture component folder (in process) and a weights file (CLI): one component, count = sum of tensor sizes', () => {
  for (const comp of ['clip_text', 'prior', 'text_proj', 'decoder', 'super_res']) {
    const dir = fixture(comp);
    if (!fs.existsSync(path.join(dir, 'config.json'))) continue;
    const j = inspectPath(dir).result;
    assert.is(j.components.length, 1);
    assert.is(j.components[0].name, comp);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    assert.is(j.components[0].class, cfg._class_name ?? cfg.architectures?.[0] ?? null);
    const wf = fs.readdirSync(dir).find((n) => /^(diffusion_pytorch_model|model)\.safetensors$/.test(n))!;
    assert.is(j.components[0].parameters, sumSizes(headerOf(path.join(dir, wf))));
    assert.is(j.parameters, j.components[0].parameters);
  }
  const file = fixture('rng', 'rng.safetensors');
  const j = JSON.parse(karlo('inspect', file, '--json').out);
  assert.equal([j.components[0].name, j.components[0].class], ['rng.safetensors', null]);
  assert.is(j.parameters, sumSizes(headerOf(file)));
});

test('inspect text output lists tensors with dtype and shape, per-component and total counts', () => {
  const r = karlo('inspect', fixture('pipeline_tiny'));
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /^prior \(PriorTransformer\): 9,568 parameters in 50 tensors/m);
  assert.match(r.out, /^ {2}clip_mean\s+F32\s+\[1, 16\]$/m);
  assert.match(r.out, /^total\s+3,491,158 parameters$/m);
});

test('inspect bad input: one line on stderr naming the path, exit 2, no stack trace', () => {
  oneLineError(karlo('inspect', path.join(tmp, 'missing')), /missing: no such file or folder/);
  const junk = path.join(tmp, 'junk.safetensors');
  fs.writeFileSync(junk, 'this is not a safetensors file at all');
  oneLineError(karlo('inspect', junk), new RegExp(`${junk}: header length`));
  // The rest in process (same messages; the CLI turns any of them into one line + exit 2, as above).
  const fails = (p: string, re: RegExp) => assert.throws(() => inspectPath(p), (e: Error) => re.test(e.message) && !e.message.includes('\n'));
  const empty = path.join(tmp, 'emptydir');
  fs.mkdirSync(empty);
  fails(empty, /emptydir: no weights file \(looked for diffusion_pytorch_model\.safetensors, model\.safetensors/);
  const pipe = path.join(tmp, 'pipe');
  fs.mkdirSync(pipe);
  fs.writeFileSync(path.join(pipe, 'model_index.json'), JSON.stringify({ _class_name: 'UnCLIPPipeline', prior: ['diffusers', 'PriorTransformer'] }));
  fails(pipe, /pipe\/prior: component folder "prior" \(PriorTransformer\) named in .*model_index\.json is missing/);
  fs.mkdirSync(path.join(pipe, 'prior'));
  fs.writeFileSync(path.join(pipe, 'prior', 'config.json'), '{}');
  fails(pipe, /pipe\/prior: no weights file \(looked for/);
  fs.writeFileSync(path.join(pipe, 'model_index.json'), '{"prior": ');
  fails(pipe, /model_index\.json: invalid JSON/);
  const trunc = path.join(tmp, 'trunc.safetensors');
  const good = fs.readFileSync(fixture('prior', 'io.safetensors'));
  fs.writeFileSync(trunc, good.subarray(0, good.length - 10));
  fails(trunc, /trunc\.safetensors: (tensor "[^"]+": .*past the end|\d+ bytes after)/);
});

test('parity on the rng fixtures: 66 comparisons, all OK, exit 0; --json carries the same', () => {
  const r = karlo('parity', fixture('rng'));
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /^randn\.seed42\.shape1x4x8x8\s+\[1,4,8,8\]\s+0\.00e\+0\s+0\.00e\+0\s+1\.00e-6\s+exact\s+OK$/m);
  assert.match(r.out, /rng: 66\/66 OK \(backend cpu/);
  assert.match(r.err, /^backend: cpu( \(.*\))?$/m);
  const j = JSON.parse(karlo('parity', fixture('rng'), '--json').out);
  assert.is(j.kind, 'rng');
  assert.is(j.pass, true);
  assert.is(j.tensors.length, 66);
  assert.ok(j.tensors.every((c: { pass: boolean; maxAbsErr: number }) => c.pass && c.maxAbsErr === 0));
});

test('parity exits 1 and marks FAIL when a reference tensor is off by more than the tolerance', () => {
  const dir = path.join(tmp, 'rng-bad');
  fs.mkdirSync(dir);
  fs.copyFileSync(fixture('rng', 'index.json'), path.join(dir, 'index.json'));
  const st = JSON.parse(fs.readFileSync(fixture('rng', 'index.json'), 'utf8')) as { name: string; shape: number[] }[];
  // Rebuild rng.safetensors with one element of one tensor moved by 3e-6 (> 1e-6).
  const { loadSafetensors } = awaitImport;
  const tensors = loadSafetensors(fixture('rng', 'rng.safetensors'));
  const victim = 'randn.seed1.shape17';
  tensors.get(victim)!.data[5] += 3e-6;
  saveSafetensors(path.join(dir, 'rng.safetensors'), Object.fromEntries(st.map((e) => [e.name, { dtype: 'F32' as const, shape: e.shape, data: tensors.get(e.name)!.data }])));
  const r = karlo('parity', dir);
  assert.is(r.code, 1, r.err);
  // The FAIL row: shape, error, allowed, headroom below 1, and where the worst element is.
  assert.match(r.out, new RegExp(`^${victim.replace(/\./g, '\\.')}\\s+\\[17\\]\\s+3\\.\\d+e-6\\s+\\S+\\s+1\\.00e-6\\s+0\\.3x\\s+FAIL  worst at \\[5\\]$`, 'm'));
  assert.match(r.out, new RegExp(`^first failure \\(execution order\\): ${victim.replace(/\./g, '\\.')} \\[17\\]: max abs 3\\.\\d+e-6 > allowed 1\\.00e-6 at element \\[5\\]$`, 'm'));
  assert.match(r.out, /rng: 65\/66 OK, 1 FAIL/);
  // --json: exactly kind, pass, tensors[{name, shape, maxAbsErr, maxRelErr, allowed, pass}].
  const j = JSON.parse(karlo('parity', dir, '--json').out);
  assert.equal(Object.keys(j), ['kind', 'pass', 'tensors']);
  assert.is(j.pass, false);
  const bad = j.tensors.find((t: { name: string }) => t.name === victim);
  assert.equal(Object.keys(bad), ['name', 'shape', 'maxAbsErr', 'maxRelErr', 'allowed', 'pass']);
  assert.equal(bad.shape, [17]);
  assert.is(bad.pass, false);
  assert.ok(bad.maxAbsErr > bad.allowed);
  // A looser --atol accepts it.
  assert.is(karlo('parity', dir, '--atol', '1e-5').code, 0);
});

test('parity rows in execution order with labels split off: decoder blocks as the hooks fire, then the output; the pipeline run stage by stage, run labels in "run", step numbers in "step"', () => {
  const d = JSON.parse(karlo('parity', fixture('decoder'), '--json').out);
  const names = d.tensors.map((t: { name: string }) => t.name);
  assert.is(names[0], 'block_out.time_embedding');
  assert.ok(names.indexOf('block_out.conv_in') < names.indexOf('block_out.down_blocks.0') && names.indexOf('block_out.down_blocks.0') < names.indexOf('block_out.mid_block'), names.join(' '));
  assert.ok(names.indexOf('block_out.mid_block') < names.indexOf('block_out.up_blocks.0') && names.indexOf('block_out.up_blocks.2') < names.indexOf('block_out.conv_out'), names.join(' '));
  assert.ok(names.indexOf('block_out.conv_out') < names.indexOf('output'), names.join(' '));
  const p = JSON.parse(karlo('parity', path.join(ROOT, 'models', 'karlo-tiny'), '--json', '--backend', 'wasm').out); // wasm: seconds, cpu: minutes
  assert.is(p.pass, true);
  const run = p.tensors.filter((t: { run?: string }) => t.run === 'run');
  const order = run.map((t: { name: string }) => t.name);
  const at = (n: string) => order.indexOf(n);
  assert.ok(at('cap.prompt_embeds') < at('step.000.prior_scheduler.t999.prev_sample'), order.join(' '));
  assert.ok(at('cap.image_embeddings') < at('cap.decoder_encoder_hidden_states') && at('cap.image_small') < at('output.images_np_NHWC'), order.join(' '));
  const step = p.tensors.find((t: { name: string; run?: string }) => t.run === 'run_seed_only' && t.name === 'step.011.super_res_scheduler.t500.prev_sample');
  assert.ok(step, 'run_seed_only rows keep the fixture key as name');
  assert.is(step.step, 11);
  assert.equal(step.shape, [2, 3, 64, 64]);
  const tok = JSON.parse(karlo('parity', fixture('tokenizer'), '--json').out);
  const c12 = tok.tensors.find((t: { name: string; case?: number }) => t.case === 12 && t.name === 'input_ids');
  assert.ok(c12, 'tokenizer rows: case number in "case", key in "name"');
});

test('inspect reads PyTorch files (.pt TorchScript, Lightning .ckpt) through the safe torch reader; --filter GLOB; bytes per dtype', () => {
  const orig = fixture('original_ckpt', 'original');
  const pt = karlo('inspect', path.join(orig, 'ViT-L-14.pt'), '--json');
  assert.is(pt.code, 0, pt.err);
  const j = JSON.parse(pt.out);
  const t = Object.fromEntries(j.components[0].tensors.map((x: { name: string; dtype: string; shape: number[] }) => [x.name, x]));
  assert.equal(t.positional_embedding, { name: 'positional_embedding', dtype: 'F32', shape: [77, 64] });
  assert.is(t.text_projection.dtype, 'F16');
  const f16 = j.components[0].tensors.filter((x: { dtype: string }) => x.dtype === 'F16').reduce((a: number, x: { shape: number[] }) => a + x.shape.reduce((p, q) => p * q, 1), 0);
  assert.is(j.bytesPerDtype.F16, 2 * f16);
  const ck = karlo('inspect', path.join(orig, 'prior-ckpt-step=01000000-of-01000000.ckpt'));
  assert.is(ck.code, 0, ck.err);
  assert.match(ck.out, /PyTorch file \(read by the safe torch reader: no code runs\)/);
  const filtered = karlo('inspect', path.join(orig, 'ViT-L-14.pt'), '--filter', '*ln_final*');
  assert.is(filtered.code, 0, filtered.err);
  assert.match(filtered.out, /128 parameters in 2 tensors/);
  assert.match(filtered.out, /^  ln_final\.weight +F32 +\[64\]$/m);
  assert.match(filtered.out, /^bytes: F32 512 B$/m);
  const tiny = JSON.parse(karlo('inspect', path.join(ROOT, 'models', 'karlo-tiny'), '--json').out);
  assert.equal(tiny.bytesPerDtype, { F32: 4 * tiny.parameters });
});

test('parity on a folder no kind recognises: one line listing the known kinds, exit 2', () => {
  const known = PARITY_KINDS.map((k) => k.name);
  assert.ok(known.includes('rng'));
  const r = karlo('parity', tmp);
  oneLineError(r, new RegExp(`not a folder any parity kind recognises; known kinds: ${known.join(', ')}`));
  assert.throws(() => detectKind(path.join(tmp, 'nope')), /nope: no such folder/);
  assert.throws(() => detectKind(fixture('rng'), 'bogus'), /unknown parity kind "bogus"; known kinds: /);
  assert.is(detectKind(fixture('rng')).name, 'rng');
});

const awaitImport = await import('../src/io/safetensors.js');

test.run();
