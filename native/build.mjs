#!/usr/bin/env node
// Builds the optional native addon (oneDNN + OpenBLAS) at `npm install` time. Never fails the install: when the
// compiler or the libraries are missing it says why and how to fix it, and exits 0 (the backend then reports
// itself unavailable and the others still work). `node native/build.mjs --strict` exits 1 instead.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const strict = process.argv.includes('--strict');
const FIX = 'install with: apt-get install g++ make python3 libdnnl-dev libopenblas-dev, then run: npm run build:native';

function skip(why) {
  console.log(`karlo-tfjs: native backend not built: ${why}; ${FIX}`);
  process.exit(strict ? 1 : 0);
}

if (process.env.KARLO_SKIP_NATIVE_BUILD) skip('KARLO_SKIP_NATIVE_BUILD is set');
if (process.platform !== 'linux' || process.arch !== 'x64') skip(`only linux x64 is supported (this is ${process.platform} ${process.arch})`);
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
for (const tool of ['g++', 'make', 'python3']) if (!has(tool)) skip(`${tool} not found`);
const headers = {
  'oneDNN (libdnnl-dev)': ['/usr/include/dnnl.hpp', '/usr/include/oneapi/dnnl/dnnl.hpp'],
  'OpenBLAS (libopenblas-dev)': ['/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h', '/usr/include/cblas.h'],
};
for (const [lib, files] of Object.entries(headers)) if (!files.some((f) => existsSync(f))) skip(`${lib} headers not found`);

// node-gyp: the one npm runs scripts with, else the copy bundled with npm.
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
  '/usr/share/nodejs/node-gyp/bin/node-gyp.js',
].filter(Boolean);
const gyp = candidates.find((f) => existsSync(f));
if (!gyp) skip('node-gyp not found (it ships with npm)');

// Node's own headers: npm's nodedir setting, else the system's (no download needed).
const args = [gyp, 'rebuild'];
if (!process.env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h')) args.push('--nodedir=/usr');
console.log('karlo-tfjs: building the native backend (oneDNN + OpenBLAS)...');
const r = spawnSync(process.execPath, args, { cwd: here, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
if (r.status !== 0) {
  const tail = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
  console.log(tail);
  skip(`node-gyp failed (exit ${r.status})`);
}
console.log('karlo-tfjs: native backend built: native/build/Release/karlo_native.node');
