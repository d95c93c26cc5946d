#!/usr/bin/env node
// The `karlo` command. An installed package runs the built JavaScript (dist/). A source checkout runs dist/ too
// when it is at least as new as every source file; otherwise (a fresh clone before `npm run build`, or sources
// edited since) it runs the TypeScript sources through tsx, a devDependency. KARLO_FROM_SOURCE=1 forces the sources.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = join(root, 'dist', 'src', 'cli', 'main.js');
const stamp = join(root, 'dist', 'BUILD');

/** Newest modification time of the .ts files under the given folders (0 when there are none). */
function newestSource(dirs) {
  let newest = 0;
  const walk = (d) => {
    let entries;
    try { entries = readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of dirs) walk(d);
  return newest;
}

function distIsCurrent() {
  if (process.env.KARLO_FROM_SOURCE === '1' || !existsSync(built) || !existsSync(stamp)) return false;
  return statSync(stamp).mtimeMs >= newestSource([join(root, 'src'), join(root, 'tools', 'convert')]);
}

if (distIsCurrent()) {
  await import(pathToFileURL(built).href);
} else if (existsSync(join(root, 'src', 'cli', 'main.ts'))) {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    console.error('karlo: dist/ is missing or older than src/, and tsx (a devDependency) is not installed: run `npm install` then `npm run build`');
    process.exit(2);
  }
  register();
  await import(pathToFileURL(join(root, 'src', 'cli', 'main.ts')).href);
} else {
  console.error(`karlo: ${built} is missing: this install of karlo-tfjs is incomplete (reinstall the package)`);
  process.exit(2);
}
