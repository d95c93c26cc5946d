// Real-size Karlo prior (karlo_configs/prior: 32 heads × 64, 20 layers, 1,022,030,080 parameters) with random
// weights: written to a temporary 4.09 GB safetensors file under the OS temp dir, loaded back with positioned reads
// (one tensor in flight: peak RSS must stay well under twice the weights), then ONE guided prior step as
// runPrior does it (prior on cat([latents]·2) with 77 text tokens + 4 = 81 tokens, CFG, UnCLIPScheduler step).
// One child process per backend, so peak RSS is per backend; the temp file is deleted at the end.
// --compare-torch: the same forward (batch 2, 77 tokens) timed in PyTorch on the same weights, in this run
// (bench/side_by_side.ts; no figure from another machine).
//   npx tsx bench/prior.bench.ts [backend ...] [--config DIR] [--compare-torch]   (default: native and cpu where available; wasm cannot hold
//                                                   4.09 GB of float32 weights in its 4 GB heap)
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
import { PriorTransformer, priorTransformerConfig, type PriorTransformerConfig } from '../src/models/prior_transformer.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { TorchGenerator, randnTensor } from '../src/random/generator.js';
import { checkBenchArgs } from './args.js';
import { torchForward, torchForwardLine, torchSeconds } from './side_by_side.js';
import { priorPredict } from '../src/pipeline/prior_stage.js';
import { denoiseStep } from '../src/samplers/denoise.js';
import { loadComponent } from '../src/loading/load_component.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONFIGS = path.join(ROOT, 'test/fixtures/karlo_configs');
const MB = 2 ** 20;

/** 2·MACs of every Linear and the two attention matmuls (PERF.md's count): 328.8 GFLOP for batch 2. */
function gflops(c: PriorTransformerConfig, B: number, S: number): number {
  const W = c.num_attention_heads * c.attention_head_dim;
  const perLayer = 4 * S * W * W + 2 * S * W * 4 * W + 2 * S * S * W;
  const io = (S - 4) * c.embedding_dim * W + 2 * c.embedding_dim * W + 2 * W * W + W * c.embedding_dim;
  return (2 * B * (c.num_layers * perLayer + io)) / 1e9;
}

const rssMB = () => process.resourceUsage().maxRSS / 1024;

async function child(backend: string, dir: string): Promise<void> {
  const choice = await initBackend(backend);
  const rawCfg = readJson(path.join(dir, 'config.json'));
  const baseRss = rssMB();
  let t = performance.now();
  const prior = loadComponent(dir, 'PriorTransformer');
  const loadS = (performance.now() - t) / 1000;
  const loadRss = rssMB();
  const weightBytes = prior.numParameters() * 4;
  const cfg = prior.config;
  const D = cfg.embedding_dim, L = cfg.num_embeddings;

  // A CFG batch as the pipeline builds it: "" then a prompt (B = 1 image → 2 rows), 10 real tokens.
  const gen = new TorchGenerator(0);
  const text = {
    promptEmbeds: randnTensor([2, D], gen) as tf.Tensor2D,
    textEncHiddenStates: randnTensor([2, L, D], gen) as tf.Tensor3D,
    textMask: tf.tensor2d(Array.from({ length: 2 * L }, (_, i) => (i % L < (i < L ? 2 : 10) ? 1 : 0)), [2, L], 'int32'),
  };
  const sched = UnCLIPScheduler.fromDir(path.join(CONFIGS, 'prior_scheduler'));
  sched.setTimesteps(25);
  const latents = randnTensor([1, D], gen) as tf.Tensor2D;
  const base = tf.memory().numTensors;
  // One step of runPrior's loop (the sampler's denoiseStep with the stage's predict), timed with the result read back.
  const predict = priorPredict(prior, text, 4.0, true);
  const step = (t: number, prev: number) => {
    const t0 = performance.now();
    const out = tf.tidy(() => denoiseStep(sched, predict, latents, { step: 0, timestep: t, prevTimestep: prev, generator: gen }).prevSample);
    out.dataSync();
    out.dispose();
    return (performance.now() - t0) / 1000;
  };
  const stepS = step(sched.timesteps[0], sched.timesteps[1]);
  // A second (warm) step where that is cheap; the first includes one-time kernel/JIT set-up.
  const warmStepS = stepS < 60 ? step(sched.timesteps[1], sched.timesteps[2]) : null;
  if (tf.memory().numTensors !== base) throw new Error(`tensor leak: ${tf.memory().numTensors - base} tensors after the step`);
  const gf = gflops(cfg, 2, L + cfg.additional_embeddings);
  console.log(JSON.stringify({
    backend: choice.name, params: prior.numParameters(), loadS: +loadS.toFixed(1), loadPeakRssMB: Math.round(loadRss),
    weightsMB: Math.round(weightBytes / MB), baseRssMB: Math.round(baseRss),
    loadRssOverWeights: +(loadRss * MB / weightBytes).toFixed(2), loadRssGrowthOverWeights: +((loadRss - baseRss) * MB / weightBytes).toFixed(2),
    stepS: +stepS.toFixed(2), warmStepS: warmStepS === null ? null : +warmStepS.toFixed(2), gflop: +gf.toFixed(1), gflops: +(gf / stepS).toFixed(2), peakRssMB: Math.round(rssMB()),
    rawConfigLayers: (rawCfg as { num_layers?: number }).num_layers,
  }));
  tf.dispose([text.promptEmbeds, text.textEncHiddenStates, text.textMask, latents]);
  prior.dispose();
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--child');
  if (i >= 0) return child(process.argv[i + 1], process.argv[i + 2]);
  // --config DIR: another prior config.json folder (a smoke run of this script on a small prior).
  checkBenchArgs('prior', { string: ['config'], boolean: ['compare-torch'] });
  const ci = process.argv.indexOf('--config');
  const cfgDir = ci >= 0 ? path.resolve(process.argv[ci + 1]) : path.join(CONFIGS, 'prior');
  const asked = process.argv.slice(2).filter((a, k, all) => !a.startsWith('-') && all[k - 1] !== '--config') as Exclude<BackendName, 'auto'>[];
  const backends = asked.length ? asked : await availableBackends(['native', 'cpu']);
  const rawCfg = readJson(path.join(cfgDir, 'config.json'));
  const shell = new PriorTransformer(priorTransformerConfig(rawCfg, path.join(cfgDir, 'config.json')));
  const params = shell.numParameters();
  if (ci < 0) {
    const expected = readJson<Record<string, number>>(path.join(CONFIGS, 'param_counts.json')).prior;
    if (params !== expected) throw new Error(`parameter count ${params} != param_counts.json prior ${expected}`);
  }
  const free = os.freemem() / 2 ** 30;
  console.log(`prior ${path.relative(ROOT, cfgDir)} (random weights): ${params.toLocaleString('en')} parameters${ci < 0 ? ' (= param_counts.json)' : ''}; free memory ${free.toFixed(1)} GiB`);
  if (free < 9) console.log(`warning: only ${free.toFixed(1)} GiB free; the run needs about 5 GiB per backend`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-prior-bench-'));
  try {
    let t = performance.now();
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(rawCfg));
    saveSafetensors(path.join(dir, 'diffusion_pytorch_model.safetensors'), randomWeights(shell));
    const bytes = fs.statSync(path.join(dir, 'diffusion_pytorch_model.safetensors')).size;
    console.log(`wrote ${(bytes / 1e9).toFixed(2)} GB in ${((performance.now() - t) / 1000).toFixed(1)} s (writer peak RSS ${Math.round(rssMB())} MB)`);
    const cfg = rawCfg as { embedding_dim?: number; num_embeddings?: number };
    const D = cfg.embedding_dim ?? 768, L = cfg.num_embeddings ?? 77;
    const torch = process.argv.includes('--compare-torch') ? await torchForward(dir, 'prior', {
      hidden_states: { shape: [2, D], kind: 'randn' }, timestep: { shape: [], kind: 'int', value: 999 },
      proj_embedding: { shape: [2, D], kind: 'randn' }, encoder_hidden_states: { shape: [2, L, D], kind: 'randn' },
      attention_mask: { shape: [2, L], kind: 'bool' },
    }, 1) : undefined;
    const torchS = torch && !('why' in torch) ? torchSeconds(torch) : undefined;
    console.log(torchForwardLine(torch, gflops(shell.config, 2, L + shell.config.additional_embeddings)));
    console.log('backend  load s  load peak RSS (× weights)  guided step s (warm)  GFLOP/s  vs PyTorch (warm)  peak RSS');
    for (const b of backends) {
      t = performance.now();
      const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', b, dir], { encoding: 'utf8', cwd: ROOT, maxBuffer: 1 << 24 });
      const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
      if (r.status !== 0 || !line) {
        console.log(`${b.padEnd(8)} failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
        continue;
      }
      const j = JSON.parse(line);
      console.log(`${j.backend.padEnd(8)} ${String(j.loadS).padStart(6)}  ${String(j.loadPeakRssMB).padStart(8)} MB (${j.loadRssOverWeights}×)       ${String(j.stepS).padStart(9)} (${j.warmStepS ?? '-'})  ${String(j.gflops).padStart(7)}  ${torchS ? `${((j.warmStepS ?? j.stepS) / torchS).toFixed(2)}×` : '-'}  ${j.peakRssMB} MB`);
      console.log(`         ${line}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
