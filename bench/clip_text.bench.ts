// Real-size CLIP ViT-L/14 text encoder (Karlo's text_encoder config, random weights): parameter count against
// karlo_configs/param_counts.json, weights written to a temporary safetensors file and loaded back (load time),
// then forwards on input_ids [2, 77] (a prompt and "" = the pipeline's CFG batch). One child process per backend so
// peak RSS is per backend.
// PyTorch's text stage is timed side by side in `npm run bench pipeline -- --compare-torch` (no figure from another
// machine here).
//   npm run bench clip_text [-- --backend B]   or   npx tsx bench/clip_text.bench.ts [backend ...]
//   (default: every available one of native, wasm, cpu)
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, availableBackends, type BackendName } from '../src/backend/index.js';
import { saveSafetensors } from '../src/io/safetensors.js';
import { randomWeights } from './random_weights.js';
import { readJson } from '../src/io/weights.js';
import { CLIPTextModelWithProjection, clipTextConfig, type CLIPTextConfig } from '../src/models/clip_text.js';
import { CLIPTokenizer } from '../src/tokenizer/clip_tokenizer.js';
import { checkBenchArgs } from './args.js';
import { loadComponent } from '../src/loading/load_component.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONFIGS = path.join(ROOT, 'test/fixtures/karlo_configs');

/** 2·MACs of Linear layers and the two attention matmuls, as PERF.md counts them. */
function gflops(c: CLIPTextConfig, B: number, L: number): number {
  const D = c.hidden_size, I = c.intermediate_size;
  const perLayer = 4 * L * D * D + 2 * L * D * I + 2 * L * L * D;
  return (2 * B * (c.num_hidden_layers * perLayer + D * c.projection_dim)) / 1e9;
}

const rssMB = () => process.resourceUsage().maxRSS / 1024;

async function child(backend: string): Promise<void> {
  const choice = await initBackend(backend);
  const rawCfg = readJson(path.join(CONFIGS, 'text_encoder/config.json'));
  const cfg = clipTextConfig(rawCfg);
  const expected = readJson<Record<string, number>>(path.join(CONFIGS, 'param_counts.json')).text_encoder;
  const shell = new CLIPTextModelWithProjection(cfg);
  const params = shell.numParameters();
  if (params !== expected) throw new Error(`parameter count ${params} != param_counts.json text_encoder ${expected}`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-clip-bench-'));
  try {
    let t = performance.now();
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(rawCfg));
    saveSafetensors(path.join(dir, 'model.safetensors'), randomWeights(shell));
    const writeS = (performance.now() - t) / 1000;
    const bytes = fs.statSync(path.join(dir, 'model.safetensors')).size;

    t = performance.now();
    const model = loadComponent(dir, 'CLIPTextModelWithProjection');
    const loadS = (performance.now() - t) / 1000;

    const tok = CLIPTokenizer.fromDir(path.join(CONFIGS, 'tokenizer')); // real Karlo: pad "!" = 0
    const enc = tok.encode(['', 'a high-resolution photograph of a big red frog on a green leaf.']);
    const ids = tf.tensor2d(enc.inputIds, [2, 77], 'int32');
    const base = tf.memory().numTensors;
    const forward = () => {
      const t0 = performance.now();
      const o = model.forward(ids);
      o.textEmbeds.dataSync();
      o.lastHiddenState.dataSync();
      const s = (performance.now() - t0) / 1000;
      tf.dispose([o.textEmbeds, o.lastHiddenState, ...o.hiddenStates]);
      return s;
    };
    const first = forward();
    const runs = first > 20 ? [] : [forward(), forward(), forward()];
    const med = runs.length ? runs.slice().sort((a, b) => a - b)[1] : first;
    if (tf.memory().numTensors !== base) throw new Error(`tensor leak: ${tf.memory().numTensors - base} tensors after the forwards`);
    const gf = gflops(cfg, 2, 77);
    console.log(JSON.stringify({
      backend: choice.name, params, fileMB: +(bytes / 2 ** 20).toFixed(1), writeS: +writeS.toFixed(2), loadS: +loadS.toFixed(2),
      firstForwardS: +first.toFixed(3), warmForwardS: runs.map((x) => +x.toFixed(3)), medianS: +med.toFixed(3),
      gflop: +gf.toFixed(1), gflops: +(gf / med).toFixed(1), peakRssMB: Math.round(rssMB()),
    }));
    model.dispose();
    ids.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--child');
  if (i >= 0) return child(process.argv[i + 1]);
  // Backends: `--backend B` (as bench/index.ts passes it) or positional names; default (or auto) every available one.
  checkBenchArgs('clip_text', {});
  const argv = process.argv.slice(2);
  const asked: string[] = [];
  for (let k = 0; k < argv.length; k++) {
    if (argv[k] === '--backend') asked.push(argv[++k]);
    else if (argv[k].startsWith('--backend=')) asked.push(argv[k].slice(10));
    else if (!argv[k].startsWith('-')) asked.push(argv[k]);
  }
  const named = asked.filter((b) => b !== 'auto') as Exclude<BackendName, 'auto'>[];
  const backends = named.length ? named : await availableBackends(['native', 'wasm', 'cpu']);
  const free = os.freemem() / 2 ** 30;
  console.log(`CLIP ViT-L/14 text encoder (Karlo text_encoder config, random weights), ids [2,77]; free memory ${free.toFixed(1)} GiB`);
  console.log('backend  params       load s  forward s (first; median of warm)  GFLOP/s  peak RSS');
  for (const b of backends) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', b], { encoding: 'utf8', cwd: ROOT, maxBuffer: 1 << 24 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
    if (r.status !== 0 || !line) {
      console.log(`${b.padEnd(8)} failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
      continue;
    }
    const j = JSON.parse(line);
    console.log(`${j.backend.padEnd(8)} ${String(j.params).padEnd(12)} ${String(j.loadS).padStart(6)}  ${String(j.firstForwardS).padStart(8)}; ${String(j.medianS).padStart(8)} ${''.padStart(16)}${String(j.gflops).padStart(7)}  ${j.peakRssMB} MB`);
    console.log(`         ${line}`);
  }
}

await main();
