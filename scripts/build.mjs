#!/usr/bin/env node
// `npm run build`: tsc -p tsconfig.build.json into a fresh folder, then swapped in for dist/ (no stale files from
// renamed sources, and a failed build leaves the previous dist/ alone). dist/BUILD records when and from what.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = path.join(root, `.dist.partial-${process.pid}`);
const dist = path.join(root, 'dist');
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
if (!fs.existsSync(tsc)) {
  console.error('build: typescript is not installed (npm install first: it is a devDependency)');
  process.exit(2);
}
// Partial folders of builds that died (their process is gone).
for (const n of fs.readdirSync(root)) {
  const m = /^\.dist\.partial-(\d+)$/.exec(n);
  if (!m) continue;
  let alive = false;
  try { process.kill(Number(m[1]), 0); alive = true; } catch { /* gone */ }
  if (!alive) fs.rmSync(path.join(root, n), { recursive: true, force: true });
}
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', tmp], { cwd: root, stdio: ['ignore', 2, 2] });
if (r.status !== 0) {
  fs.rmSync(tmp, { recursive: true, force: true });
  console.error(`build: tsc failed (exit ${r.status}); dist/ left as it was`);
  process.exit(1);
}
fs.writeFileSync(path.join(tmp, 'BUILD'), `built ${new Date().toISOString()} by tsc -p tsconfig.build.json\n`);
const old = path.join(root, `.dist.old-${process.pid}`);
if (fs.existsSync(dist)) fs.renameSync(dist, old);
fs.renameSync(tmp, dist);
fs.rmSync(old, { recursive: true, force: true });
console.error('build: wrote dist/ (JavaScript + .d.ts)');
