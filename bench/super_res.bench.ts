// Real-size Karlo super-res UNet (karlo_configs/super_res_first: UNet2DModel 256 px, (320, 640, 960, 1280),
// 3 layers per block, 691,579,523 parameters) with random weights: written to a temporary 2.77 GB safetensors file
// under the OS temp dir, loaded back (positioned reads), then ONE super-res step at 256×256, batch 1, as
// runSuperRes does it: unet(cat([latents, upscaled], 1), t) + UnCLIPScheduler step. One child process per backend.
// Reports s/step, GFLOP/s (2·MACs of every conv and linear, PERF.md's count), and peak RSS: of the whole process,
// and during the step alone (Linux: VmHWM reset through /proc/self/clear_refs after loading), next to the weights
// and an estimate of the activations the step must hold (skip tensors + the largest resnet's working set).
// --compare-torch: the same forward timed in PyTorch on the same weights, in this run (bench/side_by_side.ts; no
// figure from another machine).
//   npx tsx bench/super_res.bench.ts [backend ...] [--backend B] [--size N] [--warm-steps N] [--config DIR] [--allow-slow]
// Default backend: native. The cpu backend (plain JS, ~1 GFLOP/s) would need hours for the 8.5 TFLOP of one step:
// it runs only with --allow-slow. wasm cannot hold 2.77 GB of weights plus ~2 GB of activations in its 4 GB heap.
import * as fs from 'node:fs';
import { maxRssMB, resetPeakRss, statusMB } from './memory.js';
import { runBackends, afterFirstStep, warmStepsOption } from './steps.js';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, availableBackends } from '../src/backend/index.js';
import { saveSafetensors } from '../src/io/safetensors.js';
import { randomWeights } from './random_weights.js';
import { readJson } from '../src/io/weights.js';
import { UNet2DModel, unet2dConfig, type UNet2DConfig } from '../src/models/unet2d.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { TorchGenerator, randnTensor } from '../src/random/generator.js';
import { bicubicResize } from '../src/layers/interpolate.js';
import { superResPredict } from '../src/pipeline/super_res_stage.js';
import { denoiseStep } from '../src/samplers/denoise.js';
import { checkBenchArgs } from './args.js';
import { torchForward, torchForwardLine, torchSeconds } from './side_by_side.js';
import { loadComponent } from '../src/loading/load_component.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONFIGS = path.join(ROOT, 'test/fixtures/karlo_configs');
const MB = 2 ** 20;

/**
 * 2·MACs of every Conv2d and Linear of one forward at H×W (batch 1), walking the blocks as forward() does.
 * Equals PERF.md's 8497.4 GFLOP for the real config at 256×256.
 */
export function unet2dGflop(cfg: UNet2DConfig, H: number, W: number): number {
  const ch = cfg.block_out_channels;
  const temb = ch[0] * 4;
  let f = 0;
  const conv = (cin: number, cout: number, k: number, h: number, w: number) => { f += 2 * h * w * cin * cout * k * k; };
  const resnet = (cin: number, cout: number, hIn: number, wIn: number, scale = 1) => {
    const h = hIn * scale, w = wIn * scale;
    conv(cin, cout, 3, h, w);
    conv(cout, cout, 3, h, w);
    if (cin !== cout) conv(cin, cout, 1, h, w);
    f += 2 * temb * (cfg.resnet_time_scale_shift === 'scale_shift' ? 2 * cout : cout);
  };
  f += 2 * (ch[0] * temb + temb * temb); // time embedding MLP
  conv(cfg.in_channels, ch[0], 3, H, W);
  let h = H, w = W;
  const skipCh: number[] = [ch[0]];
  let prev = ch[0];
  ch.forEach((c, i) => {
    for (let j = 0; j < cfg.layers_per_block; j++) { resnet(j === 0 ? prev : c, c, h, w); skipCh.push(c); }
    prev = c;
    if (i < ch.length - 1) { resnet(c, c, h, w, 0.5); h /= 2; w /= 2; skipCh.push(c); }
  });
  resnet(prev, prev, h, w);
  resnet(prev, prev, h, w);
  [...ch].reverse().forEach((c, i) => {
    for (let j = 0; j < cfg.layers_per_block + 1; j++) { resnet((j === 0 ? prev : c) + skipCh.pop()!, c, h, w); }
    prev = c;
    if (i < ch.length - 1) { resnet(c, c, h, w, 2); h *= 2; w *= 2; }
  });
  conv(ch[0], cfg.out_channels, 3, H, W);
  return f / 1e9;
}

/**
 * Activations one forward must hold at its worst point, in MB: every skip tensor of the down path (alive until
 * the up path consumes it) plus the largest resnet input of the up path (the concat) with its block output.
 */
function activationEstimateMB(cfg: UNet2DConfig, H: number, W: number): { skipsMB: number; largestConcatMB: number } {
  const ch = cfg.block_out_channels;
  let h = H, w = W, skips = H * W * ch[0], prev = ch[0];
  ch.forEach((c, i) => {
    skips += cfg.layers_per_block * h * w * c;
    if (i < ch.length - 1) { h /= 2; w /= 2; skips += h * w * c; }
    prev = c;
  });
  // Up path, top level: first resnet input = previous level's output (ch[1]) ++ a skip (ch[0]) at full size.
  const topIn = (ch.length > 1 ? ch[1] : ch[0]) + ch[0];
  return { skipsMB: (skips * 4) / MB, largestConcatMB: (H * W * topIn * 4) / MB };
}

async function child(backend: string, dir: string, size: number, warmSteps: number): Promise<void> {
  const choice = await initBackend(backend);
  const t0 = performance.now();
  const unet = loadComponent(dir, 'UNet2DModel');
  const loadS = (performance.now() - t0) / 1000;
  const loadPeakMB = maxRssMB();
  const cfg = unet.config;
  const weightsMB = (unet.numParameters() * 4) / MB;
  const gen = new TorchGenerator(0);
  const sched = UnCLIPScheduler.fromDir(path.join(CONFIGS, 'super_res_scheduler'));
  sched.setTimesteps(7);
  const ch = cfg.in_channels / 2;
  const small = tf.tidy(() => tf.clipByValue(randnTensor([1, ch, size / 4, size / 4], gen), -1, 1)) as tf.Tensor4D;
  const upscaled = bicubicResize(small, [size, size], { antialias: true });
  let latents = randnTensor([1, ch, size, size], gen) as tf.Tensor4D;
  const base = tf.memory().numTensors;
  // Let V8 drop the loading garbage before the step is measured.
  (globalThis as { gc?: () => void }).gc?.();
  const rssBeforeMB = statusMB('VmRSS');
  const peakResettable = resetPeakRss();
  // One step of runSuperRes's loop (the sampler's denoiseStep with the stage's predict), timed with the result read back.
  const predict = superResPredict(() => unet, upscaled);
  const stepAt = (i: number, x: tf.Tensor4D) =>
    denoiseStep(sched, predict, x, { step: i, timestep: sched.timesteps[i], prevTimestep: sched.timesteps[i + 1], generator: gen }).prevSample;
  const t1 = performance.now();
  const next = tf.tidy(() => stepAt(0, latents));
  const out = next.dataSync();
  const stepS = (performance.now() - t1) / 1000;
  const stepPeakMB = peakResettable ? statusMB('VmHWM') : NaN;
  const later = afterFirstStep(out, latents, next as tf.Tensor4D, base, warmSteps, stepAt);
  latents = later.latents;
  const warmStepS = later.meanS;
  const gf = unet2dGflop(cfg, size, size);
  const act = activationEstimateMB(cfg, size, size);
  console.log(JSON.stringify({
    backend: choice.name, size, params: unet.numParameters(), weightsMB: Math.round(weightsMB), loadS: +loadS.toFixed(1),
    loadPeakRssMB: Math.round(loadPeakMB), rssBeforeStepMB: Math.round(rssBeforeMB), stepPeakRssMB: Math.round(stepPeakMB),
    stepGrowthMB: Math.round(stepPeakMB - rssBeforeMB), skipsMB: Math.round(act.skipsMB), largestConcatMB: Math.round(act.largestConcatMB),
    stepS: +stepS.toFixed(2), warmStepS: warmStepS === undefined ? null : +warmStepS.toFixed(2), gflop: +gf.toFixed(1),
    gflops: +(gf / (warmStepS ?? stepS)).toFixed(1), processPeakRssMB: Math.round(maxRssMB()),
  }));
  tf.dispose([small, upscaled, latents]);
  unet.dispose();
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const i = argv.indexOf('--child');
  if (i >= 0) return child(argv[i + 1], argv[i + 2], Number(argv[i + 3]), Number(argv[i + 4] ?? 0));
  checkBenchArgs('super_res', { string: ['config', 'size', 'warm-steps'], boolean: ['allow-slow', 'compare-torch'] });
  const opt = (name: string) => { const k = argv.indexOf(name); return k >= 0 ? argv[k + 1] : undefined; };
  const cfgDir = opt('--config') ? path.resolve(opt('--config')!) : path.join(CONFIGS, 'super_res_first');
  const size = Number(opt('--size') ?? 256);
  if (!Number.isInteger(size) || size < 8 || size % 8) throw new Error(`--size must be a multiple of 8, got ${opt('--size')}`);
  const allowSlow = argv.includes('--allow-slow');
  const warmSteps = warmStepsOption(opt('--warm-steps'));
  const valued = new Set(['--config', '--size', '--backend', '--warm-steps']);
  const asked = argv.filter((a, k) => !a.startsWith('-') && !valued.has(argv[k - 1]));
  if (opt('--backend') && opt('--backend') !== 'auto') asked.push(opt('--backend')!);
  const wanted = asked.length ? asked : ['native'];
  const backends = await availableBackends(wanted as never[]);
  for (const b of wanted) if (!backends.includes(b as never)) console.log(`${b}: not available here, skipped`);

  const rawCfg = readJson(path.join(cfgDir, 'config.json'));
  const shell = new UNet2DModel(unet2dConfig(rawCfg, path.join(cfgDir, 'config.json')));
  const params = shell.numParameters();
  const real = !opt('--config');
  if (real) {
    const expected = readJson<Record<string, number>>(path.join(CONFIGS, 'param_counts.json')).super_res_first;
    if (params !== expected) throw new Error(`parameter count ${params} != param_counts.json super_res_first ${expected}`);
  }
  const gf = unet2dGflop(shell.config, size, size);
  const free = os.freemem() / 2 ** 30;
  console.log(`super_res_first ${path.relative(ROOT, cfgDir)} (random weights): ${params.toLocaleString('en')} parameters${real ? ' (= param_counts.json)' : ''}; ${size}×${size} batch 1: ${gf.toFixed(1)} GFLOP per step; free memory ${free.toFixed(1)} GiB`);
  const run = backends.filter((b) => {
    if ((b === 'cpu' || b === 'wasm') && gf > 100 && !allowSlow) {
      console.log(`${b}: not run: ~${gf.toFixed(0)} GFLOP at ~${b === 'cpu' ? 1 : 20} GFLOP/s would take ~${(gf / (b === 'cpu' ? 1 : 20) / 3600).toFixed(1)} h${b === 'wasm' ? ', and 2.77 GB of weights plus the activations do not fit the 4 GB wasm heap' : ''} (--allow-slow to force)`);
      return false;
    }
    return true;
  });
  if (!run.length) return;
  if (free < 7) console.log(`warning: only ${free.toFixed(1)} GiB free; the run needs about 5 GiB`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-sr-bench-'));
  try {
    const t = performance.now();
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(rawCfg));
    saveSafetensors(path.join(dir, 'diffusion_pytorch_model.safetensors'), randomWeights(shell, 7));
    const bytes = fs.statSync(path.join(dir, 'diffusion_pytorch_model.safetensors')).size;
    console.log(`wrote ${(bytes / 1e9).toFixed(2)} GB in ${((performance.now() - t) / 1000).toFixed(1)} s (writer peak RSS ${Math.round(maxRssMB())} MB)`);
    const torch = process.argv.includes('--compare-torch') ? await torchForward(dir, 'super_res_first', {
      sample: { shape: [1, shell.config.in_channels, size, size], kind: 'randn' }, timestep: { shape: [], kind: 'int', value: 999 },
    }, 1) : undefined;
    const torchS = torch && !('why' in torch) ? torchSeconds(torch) : undefined;
    console.log(torchForwardLine(torch, gf));
    console.log('backend   load s  step s  warm step s  GFLOP/s  vs PyTorch  weights MB  RSS before step  peak RSS in step (+growth)  skips + largest concat MB  process peak RSS');
    runBackends<any>(fileURLToPath(import.meta.url), ROOT, run, (b) => [dir, String(size), String(warmSteps(b))],
      (j) => `${j.backend.padEnd(9)} ${String(j.loadS).padStart(6)}  ${String(j.stepS).padStart(6)}  ${String(j.warmStepS ?? '-').padStart(11)}  ${String(j.gflops).padStart(7)}  ${(torchS ? `${((j.warmStepS ?? j.stepS) / torchS).toFixed(2)}×` : '-').padStart(10)}  ${String(j.weightsMB).padStart(10)}  ${String(j.rssBeforeStepMB).padStart(15)}  ${String(j.stepPeakRssMB).padStart(16)} (+${j.stepGrowthMB})  ${String(j.skipsMB).padStart(14)} + ${j.largestConcatMB}  ${j.processPeakRssMB}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
