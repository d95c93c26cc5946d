// Real-size Karlo decoder (karlo_configs/decoder: UNet2DConditionModel 64 px, (320, 640, 960, 1280), 3 layers per
// block, SimpleCrossAttn at levels 1-3, 885,439,686 parameters) and text_proj (7,878,400), random weights, written
// to temporary safetensors files under the OS temp dir (deleted afterwards) and loaded back. Then ONE guided decoder
// step at 64×64 as runDecoder does it: the UNet on cat([latents]·2) (batch 2 = CFG, 81 context tokens with a
// padding mask), guidance 8 on ε, the text half's variance, UnCLIPScheduler learned_range step. One child process
// per backend. Reports s/step, GFLOP/s (2·MACs of every conv and linear plus the attention QKᵀ and PV products,
// PERF.md's count: 1216.6 GFLOP), peak RSS (whole process, and during the step alone via VmHWM reset).
// --compare-torch: the same UNet forward (batch 2, 81 context tokens) timed in PyTorch on the same weights, in this
// run (bench/side_by_side.ts; no figure from another machine).
//   npx tsx bench/decoder.bench.ts [backend ...] [--backend B] [--size N] [--warm-steps N] [--allow-slow] [--compare-torch]
// Default backend: native. For cpu (plain JS) and wasm the script times one of the step's convolutions instead and
// prints the implied step time (tens of minutes for cpu); --allow-slow runs the step anyway. wasm cannot hold 3.54 GB
// of weights plus the activations in its 4 GB heap. Also printed: the step's CPU seconds (all threads) and the load
// average, since wall time on a shared machine overstates the cost.
import * as fs from 'node:fs';
import { maxRssMB, resetPeakRss, statusMB } from './memory.js';
import { runBackends, afterFirstStep, warmStepsOption } from './steps.js';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, availableBackends } from '../src/backend/index.js';
import { saveSafetensors } from '../src/io/safetensors.js';
import { randomWeights } from './random_weights.js';
import { readJson } from '../src/io/weights.js';
import type { ResnetBlock2D } from '../src/layers/resnet.js';
import type { AddedKVAttention } from '../src/layers/attention.js';
import { UNet2DConditionModel, unet2dConditionConfig } from '../src/models/unet2d_condition.js';
import { SimpleCrossAttnDownBlock2D, SimpleCrossAttnUpBlock2D } from '../src/layers/cross_attn_blocks.js';
import { UnCLIPTextProjModel, textProjConfig } from '../src/models/text_proj.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { TorchGenerator, randnTensor } from '../src/random/generator.js';
import { decoderConditioning, decoderPredict } from '../src/pipeline/decoder_stage.js';
import { denoiseStep } from '../src/samplers/denoise.js';
import { checkBenchArgs } from './args.js';
import { torchForward, torchForwardLine, torchSeconds } from './side_by_side.js';
import { loadComponent } from '../src/loading/load_component.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONFIGS = path.join(ROOT, 'test/fixtures/karlo_configs');
const MB = 2 ** 20;

/**
 * 2·MACs of one UNet forward at H×W for `batch` rows and `nEnc` encoder tokens: every Conv2d and Linear, and the
 * attention products QKᵀ and PV (keys = encoder tokens + spatial tokens). Walks the blocks as forward() does.
 */
export function unet2dConditionGflop(m: UNet2DConditionModel, H: number, W: number, batch: number, nEnc: number): number {
  const temb = m.timeEmbedDim;
  let f = 2 * batch * (m.config.block_out_channels[0] * temb + temb * temb); // time embedding MLP
  const conv = (cin: number, cout: number, k: number, h: number, w: number) => { f += 2 * batch * h * w * cin * cout * k * k; };
  const resnet = (r: ResnetBlock2D, h: number, w: number): [number, number] => {
    const s = r.opts.down ? 0.5 : r.opts.up ? 2 : 1;
    const [ho, wo] = [h * s, w * s];
    conv(r.inChannels, r.outChannels, 3, ho, wo);
    conv(r.outChannels, r.outChannels, 3, ho, wo);
    if (r.conv_shortcut) conv(r.inChannels, r.outChannels, 1, ho, wo);
    if (r.time_emb_proj) f += 2 * batch * temb * r.time_emb_proj.outFeatures;
    return [ho, wo];
  };
  const attn = (a: AddedKVAttention, h: number, w: number) => {
    const c = a.opts.queryDim, inner = a.innerDim, hw = h * w;
    const keys = nEnc + (a.onlyCrossAttention ? 0 : hw);
    f += 2 * batch * hw * c * inner * (a.onlyCrossAttention ? 1 : 3); // to_q (+ to_k, to_v)
    f += 2 * 2 * batch * nEnc * a.opts.addedKvProjDim * inner; // add_k_proj, add_v_proj
    f += 2 * 2 * batch * hw * keys * inner; // QKᵀ and PV over all heads
    f += 2 * batch * hw * inner * c; // to_out.0
  };
  let h = H, w = W;
  conv(m.config.in_channels, m.config.block_out_channels[0], m.config.conv_in_kernel, h, w);
  for (const d of m.down_blocks) {
    d.resnets.forEach((r, i) => {
      resnet(r, h, w);
      if (d instanceof SimpleCrossAttnDownBlock2D) attn(d.attentions[i], h, w);
    });
    for (const r of d.downsamplers ?? []) [h, w] = resnet(r, h, w);
  }
  if (m.mid_block) {
    resnet(m.mid_block.resnets[0], h, w);
    m.mid_block.attentions.forEach((a, i) => { attn(a, h, w); resnet(m.mid_block!.resnets[i + 1], h, w); });
  }
  for (const u of m.up_blocks) {
    u.resnets.forEach((r, i) => {
      resnet(r, h, w);
      if (u instanceof SimpleCrossAttnUpBlock2D) attn(u.attentions[i], h, w);
    });
    for (const r of u.upsamplers ?? []) [h, w] = resnet(r, h, w);
  }
  conv(m.config.block_out_channels[0], m.config.out_channels, m.config.conv_out_kernel, h, w);
  return f / 1e9;
}

async function child(backend: string, dir: string, size: number, warmSteps: number): Promise<void> {
  const choice = await initBackend(backend);
  const t0 = performance.now();
  const decoder = loadComponent(path.join(dir, 'decoder'), 'UNet2DConditionModel');
  const textProj = loadComponent(path.join(dir, 'text_proj'), 'UnCLIPTextProjModel');
  const loadS = (performance.now() - t0) / 1000;
  const loadPeakMB = maxRssMB();
  const weightsMB = ((decoder.numParameters() + textProj.numParameters()) * 4) / MB;
  const sched = UnCLIPScheduler.fromDir(path.join(CONFIGS, 'decoder_scheduler'));
  sched.setTimesteps(25);
  const gen = new TorchGenerator(0);
  const d = textProj.config.clip_embeddings_dim;
  // One prompt with CFG: rows [unconditional, prompt]; masks of 2 and 12 tokens (BOS … EOS), the rest padding.
  const text = {
    promptEmbeds: randnTensor([2, d], gen) as tf.Tensor2D,
    textEncHiddenStates: randnTensor([2, 77, d], gen) as tf.Tensor3D,
    textMask: tf.tensor2d([...Array.from({ length: 77 }, (_, i) => +(i < 2)), ...Array.from({ length: 77 }, (_, i) => +(i < 12))], [2, 77], 'int32'),
  };
  const imageEmbeddings = randnTensor([1, d], gen) as tf.Tensor2D;
  let t = performance.now();
  const cond = decoderConditioning(textProj, imageEmbeddings, text, true);
  cond.encoderHiddenStates.dataSync();
  const textProjS = (performance.now() - t) / 1000;
  let latents = randnTensor([1, decoder.config.in_channels, size, size], gen) as tf.Tensor4D;
  const base = tf.memory().numTensors;
  (globalThis as { gc?: () => void }).gc?.();
  const rssBeforeMB = statusMB('VmRSS');
  const peakResettable = resetPeakRss();
  // One step of runDecoder's loop (the sampler's denoiseStep with the stage's predict), timed with the result read back.
  const predict = decoderPredict(decoder, cond, 8, true);
  const stepAt = (i: number, x: tf.Tensor4D) =>
    denoiseStep(sched, predict, x, { step: i, timestep: sched.timesteps[i], prevTimestep: sched.timesteps[i + 1], generator: gen }).prevSample;
  t = performance.now();
  const cpu0 = process.cpuUsage();
  const next = tf.tidy(() => stepAt(0, latents));
  const out = next.dataSync();
  const stepS = (performance.now() - t) / 1000;
  const cpu1 = process.cpuUsage(cpu0);
  // CPU seconds of the step (all threads): on a shared, loaded machine wall time overstates the cost.
  const stepCpuS = (cpu1.user + cpu1.system) / 1e6;
  const stepPeakMB = peakResettable ? statusMB('VmHWM') : NaN;
  const later = afterFirstStep(out, latents, next as tf.Tensor4D, base, warmSteps, stepAt);
  latents = later.latents;
  const warmStepS = later.meanS;
  const gf = unet2dConditionGflop(decoder, size, size, 2, cond.encoderHiddenStates.shape[1]);
  console.log(JSON.stringify({
    backend: choice.name, size, params: decoder.numParameters(), textProjParams: textProj.numParameters(), weightsMB: Math.round(weightsMB),
    loadS: +loadS.toFixed(1), loadPeakRssMB: Math.round(loadPeakMB), textProjS: +textProjS.toFixed(3), rssBeforeStepMB: Math.round(rssBeforeMB),
    stepPeakRssMB: Math.round(stepPeakMB), stepGrowthMB: Math.round(stepPeakMB - rssBeforeMB), stepS: +stepS.toFixed(2), stepCpuS: +stepCpuS.toFixed(2), warmStepS: warmStepS === undefined ? null : +warmStepS.toFixed(2),
    loadAvg1: +os.loadavg()[0].toFixed(1), gflop: +gf.toFixed(1), gflops: +(gf / (warmStepS ?? stepS)).toFixed(1), processPeakRssMB: Math.round(maxRssMB()),
  }));
  tf.dispose([latents, imageEmbeddings, text.promptEmbeds, text.textEncHiddenStates, text.textMask, cond.encoderHiddenStates, cond.additiveClipTimeEmbeddings, cond.attentionMask]);
  decoder.dispose();
  textProj.dispose();
}

/** Times one of the decoder's own convolutions (level 0: 320 → 320, 3×3, 64×64, batch 2: 15.1 GFLOP) on a backend. */
async function probe(backend: string): Promise<void> {
  await initBackend(backend);
  const x = tf.randomNormal([2, 64, 64, 320]) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, 320, 320], 0, 0.02) as tf.Tensor4D;
  const t = performance.now();
  tf.tidy(() => tf.conv2d(x, w, 1, 'same').dataSync());
  const s = (performance.now() - t) / 1000;
  const gf = (2 * 2 * 64 * 64 * 320 * 320 * 9) / 1e9;
  console.log(JSON.stringify({ backend, convS: +s.toFixed(2), gflops: +(gf / s).toFixed(2), loadAvg1: +os.loadavg()[0].toFixed(1) }));
  tf.dispose([x, w]);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const i = argv.indexOf('--child');
  if (i >= 0) return child(argv[i + 1], argv[i + 2], Number(argv[i + 3]), Number(argv[i + 4] ?? 0));
  checkBenchArgs('decoder', { string: ['size', 'warm-steps'], boolean: ['allow-slow', 'compare-torch'] });
  const pi = argv.indexOf('--probe');
  if (pi >= 0) return probe(argv[pi + 1]);
  const opt = (name: string) => { const k = argv.indexOf(name); return k >= 0 ? argv[k + 1] : undefined; };
  const size = Number(opt('--size') ?? 64);
  if (!Number.isInteger(size) || size < 8 || size % 8) throw new Error(`--size must be a multiple of 8, got ${opt('--size')}`);
  const allowSlow = argv.includes('--allow-slow');
  const warmSteps = warmStepsOption(opt('--warm-steps'));
  const valued = new Set(['--size', '--backend', '--warm-steps']);
  const asked = argv.filter((a, k) => !a.startsWith('-') && !valued.has(argv[k - 1]));
  if (opt('--backend') && opt('--backend') !== 'auto') asked.push(opt('--backend')!);
  const wanted = asked.length ? asked : ['native'];
  const backends = await availableBackends(wanted as never[]);
  for (const b of wanted) if (!backends.includes(b as never)) console.log(`${b}: not available here, skipped`);

  const decCfgFile = path.join(CONFIGS, 'decoder', 'config.json');
  const tpCfgFile = path.join(CONFIGS, 'text_proj', 'config.json');
  const rawDec = readJson(decCfgFile);
  const rawTp = readJson(tpCfgFile);
  const decShell = new UNet2DConditionModel(unet2dConditionConfig(rawDec, decCfgFile));
  const tpShell = new UnCLIPTextProjModel(textProjConfig(rawTp, tpCfgFile));
  const counts = readJson<Record<string, number>>(path.join(CONFIGS, 'param_counts.json'));
  const params = decShell.numParameters(), tpParams = tpShell.numParameters();
  if (params !== counts.decoder) throw new Error(`decoder parameter count ${params} != param_counts.json ${counts.decoder}`);
  if (tpParams !== counts.text_proj) throw new Error(`text_proj parameter count ${tpParams} != param_counts.json ${counts.text_proj}`);
  const gf = unet2dConditionGflop(decShell, size, size, 2, 77 + tpShell.config.clip_extra_context_tokens);
  const free = os.freemem() / 2 ** 30;
  console.log(`decoder (random weights): ${params.toLocaleString('en')} parameters, text_proj ${tpParams.toLocaleString('en')} (both = param_counts.json); ${size}×${size} batch 2 (CFG), 81 context tokens: ${gf.toFixed(1)} GFLOP per step; free memory ${free.toFixed(1)} GiB`);
  const run: string[] = [];
  for (const b of backends) {
    if ((b === 'cpu' || b === 'wasm') && gf > 100 && !allowSlow) {
      // Measure instead of guessing: one of the step's own convolutions on that backend.
      const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--probe', b], { encoding: 'utf8', cwd: ROOT });
      const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
      const rate = line ? (JSON.parse(line).gflops as number) : NaN;
      console.log(`${b}: not run: one 15.1 GFLOP convolution of this step ran at ${rate.toFixed(2)} GFLOP/s here, so the ${gf.toFixed(0)} GFLOP step would take ~${(gf / rate / 60).toFixed(0)} min${b === 'wasm' ? ', and 3.54 GB of weights plus the activations do not fit the 4 GB wasm heap' : ''} (--allow-slow to force)${line ? `; ${line}` : ''}`);
      continue;
    }
    run.push(b);
  }
  if (!run.length) return;
  if (free < 7) console.log(`warning: only ${free.toFixed(1)} GiB free; the run needs about 5 GiB`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-decoder-bench-'));
  try {
    const t = performance.now();
    for (const [name, raw, shell, seed] of [['decoder', rawDec, decShell, 11], ['text_proj', rawTp, tpShell, 12]] as const) {
      fs.mkdirSync(path.join(dir, name));
      fs.writeFileSync(path.join(dir, name, 'config.json'), JSON.stringify(raw));
      saveSafetensors(path.join(dir, name, 'diffusion_pytorch_model.safetensors'), randomWeights(shell, seed));
    }
    const bytes = fs.statSync(path.join(dir, 'decoder', 'diffusion_pytorch_model.safetensors')).size;
    console.log(`wrote ${(bytes / 1e9).toFixed(2)} GB (decoder) in ${((performance.now() - t) / 1000).toFixed(1)} s (writer peak RSS ${Math.round(maxRssMB())} MB)`);
    const tp = tpShell.config, ctx = 77 + tp.clip_extra_context_tokens;
    const torch = process.argv.includes('--compare-torch') ? await torchForward(dir, 'decoder', {
      sample: { shape: [2, decShell.config.in_channels, size, size], kind: 'randn' }, timestep: { shape: [], kind: 'int', value: 999 },
      encoder_hidden_states: { shape: [2, ctx, tp.cross_attention_dim], kind: 'randn' },
      class_labels: { shape: [2, tp.time_embed_dim], kind: 'randn' }, attention_mask: { shape: [2, ctx], kind: 'bool' },
    }, 1) : undefined;
    const torchS = torch && !('why' in torch) ? torchSeconds(torch) : undefined;
    console.log(torchForwardLine(torch, gf));
    console.log('backend   load s  step s  (CPU s)  warm step s  GFLOP/s  vs PyTorch  weights MB  RSS before step  peak RSS in step (+growth)  process peak RSS');
    runBackends<any>(fileURLToPath(import.meta.url), ROOT, run, (b) => [dir, String(size), String(warmSteps(b))],
      (j) => `${j.backend.padEnd(9)} ${String(j.loadS).padStart(6)}  ${String(j.stepS).padStart(6)}  ${String(j.stepCpuS).padStart(7)}  ${String(j.warmStepS ?? '-').padStart(11)}  ${String(j.gflops).padStart(7)}  ${(torchS ? `${((j.warmStepS ?? j.stepS) / torchS).toFixed(2)}×` : '-').padStart(10)}  ${String(j.weightsMB).padStart(10)}  ${String(j.rssBeforeStepMB).padStart(15)}  ${String(j.stepPeakRssMB).padStart(16)} (+${j.stepGrowthMB})  ${j.processPeakRssMB}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
