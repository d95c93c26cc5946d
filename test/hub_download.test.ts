// `karlo generate --model owner/name --download` against a Hub-shaped HTTP server on 127.0.0.1 serving the tiny
// model (the endpoints @huggingface/hub uses: revision info, tree listing, paths-info, ranged /resolve/ GETs):
// byte progress on stderr, the snapshot written in the Hugging Face cache layout (refs/main → commit, snapshot
// files linked to blobs), only configs/tokenizer/safetensors fetched (a .bin in the repo is skipped), and a second
// run served from the cache without the server.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TINY = path.join(ROOT, 'models', 'karlo-tiny');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hubdl-'));
const SHA = 'd'.repeat(40);
const REPO = 'kakaobrain/karlo-tiny';

// The repository: the tiny model's files (no recorded runs) plus a PyTorch file karlo must not fetch.
const files = new Map<string, Buffer>();
const walk = (rel: string) => {
  for (const e of fs.readdirSync(path.join(TINY, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) walk(r);
    else if (!/^run/.test(e.name)) files.set(r, fs.readFileSync(path.join(TINY, r)));
  }
};
walk('');
files.set('decoder/diffusion_pytorch_model.bin', Buffer.alloc(1000, 7));
const oid = (b: Buffer) => createHash('sha1').update(b).digest('hex');
const requested: string[] = [];

const server = http.createServer((req, res) => {
  const url = new URL(req.url!, 'http://x');
  const json = (v: unknown) => { res.writeHead(200, { 'Content-Type': 'application/json' }); res.end(JSON.stringify(v)); };
  const entry = (p: string) => ({ type: 'file', path: p, size: files.get(p)!.length, oid: oid(files.get(p)!), lastCommit: { id: SHA, title: 'x', date: '2024-01-01T00:00:00Z' } });
  if (url.pathname === `/api/models/${REPO}/revision/main`) return json({ id: REPO, _id: 'x', sha: SHA, private: false, siblings: [...files.keys()].map((rfilename) => ({ rfilename })) });
  if (url.pathname === `/api/models/${REPO}/tree/${SHA}`) {
    const dirs = new Set([...files.keys()].filter((p) => p.includes('/')).map((p) => p.split('/')[0]));
    return json([...[...dirs].map((d) => ({ type: 'directory', path: d, size: 0, oid: oid(Buffer.from(d)) })), ...[...files.keys()].map(entry)]);
  }
  if (req.method === 'POST' && url.pathname === `/api/models/${REPO}/paths-info/${SHA}`) {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => json((JSON.parse(body).paths as string[]).filter((p) => files.has(p)).map(entry)));
    return;
  }
  const m = new RegExp(`^/${REPO}/resolve/${SHA}/(.+)$`).exec(url.pathname);
  if (m && files.has(decodeURIComponent(m[1]))) {
    const p = decodeURIComponent(m[1]);
    const data = files.get(p)!;
    const r = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (r && r[0] !== 'bytes=0-0') requested.push(p);
    const start = r ? Number(r[1]) : 0;
    const end = r && r[2] ? Math.min(Number(r[2]), data.length - 1) : data.length - 1;
    res.writeHead(r ? 206 : 200, {
      'Content-Type': 'application/octet-stream', ETag: `"${oid(data)}"`, 'X-Repo-Commit': SHA,
      'Content-Length': String(end - start + 1), ...(r ? { 'Content-Range': `bytes ${start}-${end}/${data.length}` } : {}),
    });
    res.end(data.subarray(start, end + 1));
    return;
  }
  res.writeHead(404, { 'X-Error-Code': 'EntryNotFound' });
  res.end('{}');
});
await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
test.after(() => { server.close(); fs.rmSync(tmp, { recursive: true, force: true }); });

/** Runs karlo without blocking this process's event loop (the server lives here). */
function karlo(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), ...args], { cwd: tmp, env: { ...process.env, HF_HUB_CACHE: '', ...env } });
    let stdout = '', stderr = '';
    c.stdout.on('data', (d) => { stdout += d; });
    c.stderr.on('data', (d) => { stderr += d; });
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const HF_HOME = path.join(tmp, 'hf');
const FAST = ['--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2'];

test('without --download: one line saying how to get it (--download among the ways), exit 2', async () => {
  const r = await karlo(['generate', 'a frog', '--model', REPO, '--out', path.join(tmp, 'x.png'), ...FAST], { HF_HOME, HF_ENDPOINT: endpoint });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /not in the Hugging Face cache .*or pass --download/);
});

test('--download: byte progress, the cache layout of huggingface_hub, only what karlo reads; then offline from the cache', async () => {
  const r = await karlo(['generate', 'a frog', '--model', REPO, '--download', '--out', path.join(tmp, 'a.png'), ...FAST], { HF_HOME, HF_ENDPOINT: endpoint });
  assert.is(r.code, 0, r.stderr);
  const total = [...files].filter(([p]) => !p.endsWith('.bin')).reduce((a, [, b]) => a + b.length, 0);
  assert.match(r.stderr, /^download: \d+ files of kakaobrain\/karlo-tiny@main$/m);
  assert.match(r.stderr, new RegExp(`^download: .* / .*B  .*took`, 'm'));
  const base = path.join(HF_HOME, 'hub', 'models--kakaobrain--karlo-tiny');
  assert.is(fs.readFileSync(path.join(base, 'refs', 'main'), 'utf8'), SHA);
  const snap = path.join(base, 'snapshots', SHA);
  for (const [p, data] of files) {
    const f = path.join(snap, p);
    if (p.endsWith('.bin')) { assert.not.ok(fs.existsSync(f), 'PyTorch files are not fetched'); continue; }
    assert.ok(fs.lstatSync(f).isSymbolicLink(), `${p} links into blobs/`);
    assert.ok(fs.readFileSync(f).equals(data), p);
  }
  assert.not.ok(requested.some((p) => p.endsWith('.bin')));
  assert.equal(fs.readdirSync(path.join(base, 'blobs')).filter((n) => n.endsWith('.incomplete')), []);
  assert.ok(total > 1e6);
  // Offline: the server is no longer asked.
  const before = requested.length;
  const again = await karlo(['generate', 'a frog', '--model', REPO, '--out', path.join(tmp, 'b.png'), ...FAST], { HF_HOME, HF_ENDPOINT: 'http://127.0.0.1:9' });
  assert.is(again.code, 0, again.stderr);
  assert.is(requested.length, before);
});

test.run();
