// `karlo parity` on a grads folder (fixtures README k) end to end through bin/karlo.js on the cpu backend: the
// folder is recognised as kind `grads`, every compared tensor gets a row (loss, outputs, each parameter gradient,
// grad_input.*, the sparse embedding gradient, AdamW states), exit 0; a perturbed reference gradient is a FAIL row
// and exit 1. (A subset of the files keeps it fast: the UNet files take minutes on cpu; grads_unets.test.ts runs
// them in-process on native.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixture } from './helpers.js';
import { loadSafetensors, saveSafetensors, type SafetensorsDType } from '../src/io/safetensors.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-grads-cli-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function karlo(...args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/karlo.js'), ...args], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, KARLO_BACKEND: 'cpu' }, timeout: 180_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** tmp/<name>/ holding index.json + the given files, with the sibling weight folders index.json points to. */
function gradsFolder(name: string, files: string[], edit?: (file: string, t: Map<string, { dtype: SafetensorsDType; shape: number[]; data: Float32Array | Int32Array }>) => void): string {
  const root = path.join(tmp, name);
  const dir = path.join(root, 'grads');
  fs.mkdirSync(dir, { recursive: true });
  for (const w of ['clip_text', 'prior']) fs.symlinkSync(fixture(w), path.join(root, w));
  fs.copyFileSync(fixture('grads', 'index.json'), path.join(dir, 'index.json'));
  for (const f of files) {
    if (!edit) {
      fs.copyFileSync(fixture('grads', f), path.join(dir, f));
      continue;
    }
    const m = new Map([...loadSafetensors(fixture('grads', f))].map(([k, t]) => [k, { dtype: (t.dtype === 'int32' ? 'I64' : 'F32') as SafetensorsDType, shape: t.shape, data: t.data }]));
    edit(f, m);
    saveSafetensors(path.join(dir, f), m);
  }
  return dir;
}

test('karlo parity <grads folder>: kind grads, a row per compared tensor, all OK, exit 0; --json carries them', () => {
  const dir = gradsFolder('ok', ['clip_text.safetensors', 'prior.safetensors', 'prior_adamw.safetensors']);
  const r = karlo('parity', dir);
  assert.is(r.code, 0, r.err + r.out.slice(-2000));
  const rows = r.out.split('\n').filter((l) => /\s(OK|FAIL)$/.test(l));
  assert.is(rows.length, 1 + 42 + 58 + 343, 'schedule + clip_text + prior + prior_adamw rows');
  for (const re of [
    /^clip_text: loss\s.*\sOK$/m,
    /^clip_text: sparse_grad\.text_model\.embeddings\.token_embedding\.weight\.values\s.*OK$/m,
    /^prior: grad\.transformer_blocks\.0\.attn1\.to_q\.weight\s.*OK$/m,
    /^prior: grad_input\.encoder_hidden_states\s.*OK$/m,
    /^prior: params_with_no_grad \[clip_mean, clip_std\] vs \[clip_mean, clip_std\]\s.*OK$/m,
    /^prior_adamw: adamw2\.proj_to_clip_embeddings\.weight\s.*OK$/m,
    /^prior_adamw: exp_avg_sq1\.positional_embedding\s.*OK$/m,
    /^grads: 444\/444 OK \(backend cpu/m,
  ]) assert.ok(re.test(r.out), `${re} in:\n${r.out.slice(0, 3000)}`);
  const j = JSON.parse(karlo('parity', dir, '--json').out);
  assert.is(j.kind, 'grads');
  // (field names of the JSON contract as of both the old and the new `karlo parity --json`)
  assert.is(j.pass ?? j.ok, true);
  assert.is((j.tensors ?? j.comparisons).length, 444);
});

test('karlo parity <grads folder>: a reference gradient off by 10% of its max is a FAIL row and exit 1', () => {
  const victim = 'grad.transformer_blocks.1.ff.net.2.weight';
  const dir = gradsFolder('bad', ['prior.safetensors'], (_f, m) => {
    const t = m.get(victim)!;
    let max = 0;
    for (const v of t.data) max = Math.max(max, Math.abs(v));
    t.data[3] += 0.1 * max;
  });
  const r = karlo('parity', dir);
  assert.is(r.code, 1, r.err);
  const row = new RegExp(`^prior: ${victim.replace(/\./g, '\\.')}\\s.*\\bFAIL\\b`, 'm');
  assert.ok(row.test(r.out), `${row} in:\n${r.out}`);
  assert.match(r.out, /grads: 58\/59 OK, 1 FAIL/);
});

test.run();
