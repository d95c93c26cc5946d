// Hub ids (issue 17 item 4): `--model owner/name[@revision]` and UnCLIPPipeline.load('owner/name') resolve a
// snapshot in the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub) through refs/<rev>
// (or a commit hash), in the layout huggingface_hub writes (snapshot files are links into blobs/); otherwise one
// line naming the caches looked in and how to get the weights, exit 2.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HubError, hubCacheDirs, parseHubId, resolveHubSnapshot, resolveModelDir } from '../src/io/hub.js';
import { UnCLIPPipeline } from '../src/pipeline/unclip_pipeline.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TINY = path.join(ROOT, 'models', 'karlo-tiny');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hub-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const MAIN = 'a'.repeat(40);
const TAGGED = 'b'.repeat(40);

/** A Hub cache entry for `repo` at `commit` holding the tiny model, as huggingface_hub lays it out. */
function cacheEntry(cache: string, repo: string, commit: string, refs: Record<string, string>): string {
  const base = path.join(cache, `models--${repo.replace('/', '--')}`);
  const snap = path.join(base, 'snapshots', commit);
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(TINY, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) { walk(r); continue; }
      if (/^run/.test(e.name)) continue;
      const data = fs.readFileSync(path.join(TINY, r));
      const blob = path.join(base, 'blobs', createHash('sha256').update(data).digest('hex'));
      fs.mkdirSync(path.dirname(blob), { recursive: true });
      if (!fs.existsSync(blob)) fs.writeFileSync(blob, data);
      fs.mkdirSync(path.dirname(path.join(snap, r)), { recursive: true });
      fs.symlinkSync(path.relative(path.dirname(path.join(snap, r)), blob), path.join(snap, r));
    }
  };
  walk('');
  for (const [ref, c] of Object.entries(refs)) {
    fs.mkdirSync(path.dirname(path.join(base, 'refs', ref)), { recursive: true });
    fs.writeFileSync(path.join(base, 'refs', ref), c);
  }
  return snap;
}

const HF_HOME = path.join(tmp, 'hf_home');
const SNAP = cacheEntry(path.join(HF_HOME, 'hub'), 'kakaobrain/karlo-tiny', MAIN, { main: MAIN });
const TAG_SNAP = cacheEntry(path.join(HF_HOME, 'hub'), 'kakaobrain/karlo-tiny', TAGGED, { 'v1.0': TAGGED });
const env = { HOME: path.join(tmp, 'home'), HF_HOME } as NodeJS.ProcessEnv;

test('parseHubId: owner/name[@revision]; paths and odd names are not ids', () => {
  assert.equal(parseHubId('kakaobrain/karlo-v1-alpha'), { owner: 'kakaobrain', name: 'karlo-v1-alpha', revision: 'main' });
  assert.equal(parseHubId('kakaobrain/karlo-v1-alpha@refs/pr/3'), { owner: 'kakaobrain', name: 'karlo-v1-alpha', revision: 'refs/pr/3' });
  for (const s of ['./models/x', 'a/b/c', '../x', 'a/..', '/abs/path', 'karlo', 'a/b@', 'a/b@../../etc']) assert.is(parseHubId(s), undefined, s);
});

test('cache folders in order: $HF_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub', () => {
  assert.equal(hubCacheDirs({ HF_HUB_CACHE: '/c1', HF_HOME: '/h', XDG_CACHE_HOME: '/x', HOME: '/home/u' }), ['/c1', '/h/hub', '/x/huggingface/hub', '/home/u/.cache/huggingface/hub']);
  assert.equal(hubCacheDirs({ HOME: '/home/u' }), ['/home/u/.cache/huggingface/hub']);
});

test('resolve: refs/main, a tag, a commit hash; $HF_HUB_CACHE first; missing: how to get it', () => {
  assert.is(resolveModelDir('kakaobrain/karlo-tiny', env), SNAP);
  assert.is(resolveModelDir('kakaobrain/karlo-tiny@v1.0', env), TAG_SNAP);
  assert.is(resolveModelDir(`kakaobrain/karlo-tiny@${TAGGED}`, env), TAG_SNAP);
  const first = path.join(tmp, 'hub_cache');
  const other = cacheEntry(first, 'kakaobrain/karlo-tiny', 'c'.repeat(40), { main: 'c'.repeat(40) });
  assert.is(resolveModelDir('kakaobrain/karlo-tiny', { ...env, HF_HUB_CACHE: first }), other);
  assert.is(resolveModelDir(TINY, env), TINY, 'an existing path is a path');
  try {
    resolveHubSnapshot(parseHubId('kakaobrain/karlo-v1-alpha')!, env);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, HubError);
    assert.match((e as Error).message, /^kakaobrain\/karlo-v1-alpha: not in the Hugging Face cache \(looked in .*hf_home\/hub\/models--kakaobrain--karlo-v1-alpha, .*home\/\.cache\/huggingface\/hub\/models--kakaobrain--karlo-v1-alpha\); get it with `huggingface-cli download kakaobrain\/karlo-v1-alpha`/);
    assert.not.match((e as Error).message, /\n/);
  }
});

test('UnCLIPPipeline.load takes a Hub id (the snapshot, its files links into blobs/)', async () => {
  const saved = process.env.HF_HOME;
  process.env.HF_HOME = HF_HOME;
  try {
    const pipe = await UnCLIPPipeline.load('kakaobrain/karlo-tiny', { backend: 'cpu', log: () => {} });
    assert.is(pipe.folder.root, SNAP);
  } finally {
    if (saved === undefined) delete process.env.HF_HOME; else process.env.HF_HOME = saved;
  }
});

test('karlo generate --model owner/name: runs from the cache; not cached: one line with how to get it, exit 2', () => {
  const run = (model: string) => spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), 'generate', 'a frog', '--model', model,
    '--out', path.join(tmp, `${model.replace(/\W/g, '_')}.png`), '--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2'],
  { cwd: tmp, encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env, HF_HUB_CACHE: '' } });
  const ok = run('kakaobrain/karlo-tiny');
  assert.is(ok.status, 0, ok.stderr);
  const missing = run('kakaobrain/karlo-v1-alpha');
  assert.is(missing.status, 2, missing.stderr);
  const errors = missing.stderr.trim().split('\n').filter((l) => l.startsWith('karlo: '));
  assert.is(errors.length, 1, missing.stderr);
  assert.match(errors[0], /not in the Hugging Face cache .*huggingface-cli download kakaobrain\/karlo-v1-alpha/);
});

test.run();
