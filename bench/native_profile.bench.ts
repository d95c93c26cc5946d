// Where a UNet forward spends its time on the native backend, per tfjs kernel: the real Karlo configs
// (test/fixtures/karlo_configs) with random weights, one forward after a warm-up. This is how we decide which
// JS kernels to move into the addon (the goal: no single JS kernel above 10% of a step). Per kernel: calls, seconds,
// share of the forward, whether it ran in the addon (native) or in tfjs-cpu's JavaScript (JS), and for the GEMM and
// convolution kernels their GFLOP/s (2·MACs from the shapes each call saw) and share of the machine's fp32 FMA peak
// (measured first, as `bench kernels` does); then the time outside every kernel (tfjs bookkeeping, model JS).
//   npx tsx bench/native_profile.bench.ts [--model sr|decoder] [--size PX] [--batch N] [--top K] [--fused-groupnorm]
// Defaults: sr at 64x64 batch 1 and decoder at 32x32 batch 2 (the real sizes are 256 and 64: the kernel mix is the
// same, the time 16x/4x longer; pass --size to run them). Peak memory: the weights (2.8 GB sr, 3.5 GB decoder) + activations.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/backend/index.js';
import { enableKernelProfile, enableNativeStats, kernelProfile, describeNative, loadAddon, nativeStats } from '../src/backend/native/index.js';
import { readJson } from '../src/io/weights.js';
import type { TensorSource } from '../src/layers/module.js';
import { UNet2DModel, unet2dConfig } from '../src/models/unet2d.js';
import { GroupNorm } from '../src/layers/basic.js';
import { groupNorm } from '../src/ops/group_norm.js';
import { UNet2DConditionModel, unet2dConditionConfig } from '../src/models/unet2d_condition.js';
import { checkBenchArgs } from './args.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONFIGS = path.join(ROOT, 'test/fixtures/karlo_configs');

function opt(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

/**
 * Random weights on demand: uniform with std 1/√fan_in (norm weights near 1), filled from one pre-drawn block (a
 * profile needs plausible magnitudes, not independent values; this keeps 700M parameters to seconds).
 */
function randomSource(params: [string, number[]][]): TensorSource {
  const shapes = new Map(params);
  const BLOCK = 1 << 20;
  const block = new Float32Array(BLOCK + 4096);
  let s = 12345;
  for (let i = 0; i < block.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    block[i] = (s / 4294967296) * 2 - 1;
  }
  let offset = 0;
  return {
    names: () => [...shapes.keys()],
    shape: (n) => shapes.get(n)!,
    describe: () => 'random weights',
    read: (n) => {
      const shape = shapes.get(n)!;
      const size = shape.reduce((a, b) => a * b, 1);
      const fanIn = shape.length > 1 ? size / shape[0] : 1;
      const isNorm = /norm/.test(n) && n.endsWith('weight');
      const scale = isNorm ? 0.1 : shape.length === 1 ? 0.02 : Math.sqrt(3 / fanIn);
      const data = new Float32Array(size);
      for (let i = 0; i < size; i += BLOCK) {
        offset = (offset + 977) % 4096;
        data.set(block.subarray(offset, offset + Math.min(BLOCK, size - i)), i);
      }
      for (let i = 0; i < size; i++) data[i] = (isNorm ? 1 : 0) + scale * data[i];
      return { dtype: 'float32', shape, data };
    },
  };
}

type Info = { shape: number[] };
/** 2·MACs of one call of a GEMM or convolution kernel, from its inputs, attributes and output. */
function kernelFlops(name: string, inputs: Record<string, Info>, attrs: Record<string, unknown>, out: Info): number {
  if (name === 'Conv2D' || name === 'FusedConv2D') {
    const f = inputs.filter.shape; // [kh, kw, cin, cout]
    return 2 * out.shape.reduce((a, b) => a * b, 1) * f[0] * f[1] * f[2];
  }
  if (name === 'BatchMatMul' || name === '_FusedMatMul' || name === 'MatMul') {
    const a = inputs.a.shape;
    const k = attrs.transposeA ? a[a.length - 2] : a[a.length - 1];
    return 2 * out.shape.reduce((x, y) => x * y, 1) * k;
  }
  return 0;
}

/** Wraps the native backend's GEMM/conv kernels so every call adds its FLOPs to `flops` (name → total). */
function countFlops(flops: Map<string, number>): void {
  for (const name of ['Conv2D', 'FusedConv2D', 'BatchMatMul', '_FusedMatMul']) {
    const k = tf.getKernel(name, 'native');
    if (!k) continue;
    const inner = k.kernelFunc;
    tf.unregisterKernel(name, 'native');
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        const out = inner(args);
        const o = (Array.isArray(out) ? out[0] : out) as Info;
        flops.set(name, (flops.get(name) ?? 0) + kernelFlops(name, args.inputs as unknown as Record<string, Info>, args.attrs as Record<string, unknown>, o));
        return out;
      },
    });
  }
}

async function main() {
  checkBenchArgs('native_profile', { string: ['model', 'size', 'batch', 'top'], boolean: ['fused-groupnorm'], positionals: false });
  const model = opt('model', 'sr');
  const size = Number(opt('size', model === 'sr' ? '64' : '32'));
  const batch = Number(opt('batch', model === 'sr' ? '1' : '2'));
  const top = Number(opt('top', '15'));
  if (process.argv.includes('--fused-groupnorm')) {
    // What the layers would gain from the fused kernel: GroupNorm.forward through groupNorm() (SiLU stays separate).
    type GN = { weight: { value: tf.Tensor }; bias: { value: tf.Tensor }; numGroups: number; eps: number; emit(t: tf.Tensor): tf.Tensor };
    (GroupNorm.prototype as unknown as { forward: (x: tf.Tensor) => tf.Tensor }).forward = function (this: GN, x: tf.Tensor) {
      return this.emit(groupNorm(x, this.weight.value, this.bias.value, this.numGroups, this.eps));
    };
    console.log('GroupNorm.forward patched to the fused groupNorm()');
  }
  const choice = await initBackend(opt('backend', 'native'));
  console.log(`${choice.message}; ${describeNative()}`);
  const peak = (() => {
    const a = loadAddon();
    let iters = 1e6, best = 0;
    for (let r = a.fmaPeak(iters, 0); r.seconds < 0.05; r = a.fmaPeak(iters, 0)) iters *= 4;
    for (let i = 0; i < 5; i++) { const r = a.fmaPeak(iters, 0); best = Math.max(best, r.flops / r.seconds / 1e9); }
    return best;
  })();
  console.log(`fp32 FMA peak: ${peak.toFixed(1)} GFLOP/s`);
  const flops = new Map<string, number>();
  countFlops(flops);

  const t0 = performance.now();
  let run: () => tf.Tensor;
  let net: UNet2DModel | UNet2DConditionModel;
  if (model === 'sr') {
    const m = new UNet2DModel(unet2dConfig(readJson(path.join(CONFIGS, 'super_res_first/config.json'))));
    m.loadStateDict(randomSource(m.namedParameters().map(([k, p]) => [k, p.torchShape])), { trainable: false });
    const x = tf.randomNormal([batch, 6, size, size]) as tf.Tensor4D;
    run = () => m.forward(x, 500);
    net = m;
  } else {
    const cfg = unet2dConditionConfig(readJson(path.join(CONFIGS, 'decoder/config.json')) as Record<string, unknown>);
    const m = new UNet2DConditionModel(cfg);
    m.loadStateDict(randomSource(m.namedParameters().map(([k, p]) => [k, p.torchShape])), { trainable: false });
    const x = tf.randomNormal([batch, cfg.in_channels, size, size]) as tf.Tensor4D;
    const ctx = tf.randomNormal([batch, 81, 1536]) as tf.Tensor3D;
    const cls = tf.randomNormal([batch, m.timeEmbedDim]) as tf.Tensor2D;
    run = () => m.forward(x, 500, ctx, { classLabels: cls });
    net = m;
  }
  console.log(`${model}: ${(net.numParameters() / 1e6).toFixed(0)}M parameters, random weights in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  // Warm-up (oneDNN primitive creation), then one profiled forward.
  tf.dispose(run());
  kernelProfile.clear();
  flops.clear();
  nativeStats.clear();
  enableNativeStats(true);
  enableKernelProfile(true);
  const t1 = performance.now();
  const y = run();
  y.dataSync();
  const total = performance.now() - t1;
  enableKernelProfile(false);
  enableNativeStats(false);
  y.dispose();
  const rows = [...kernelProfile.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const inKernels = rows.reduce((a, [, v]) => a + v.ms, 0);
  console.log(`forward ${model} ${batch}x${size}x${size}: ${(total / 1000).toFixed(2)} s (${(inKernels / 1000).toFixed(2)} s in kernels), ` +
    `peak RSS ${(process.resourceUsage().maxRSS / 1024 / 1024).toFixed(2)} GB`);
  let jsMs = 0;
  for (const [name, v] of rows) {
    const st = nativeStats.get(name);
    if (!st || st.native === 0) jsMs += v.ms;
  }
  for (const [name, v] of rows.slice(0, top)) {
    const st = nativeStats.get(name);
    const where = !st ? 'JS' : st.fallback ? `native ${st.native}, JS ${st.fallback}` : 'native';
    const fl = flops.get(name);
    const rate = fl ? fl / (v.ms / 1000) / 1e9 : 0;
    console.log(`  ${name.padEnd(24)} ${v.calls.toString().padStart(5)} calls ${(v.ms / 1000).toFixed(3).padStart(8)} s ${((100 * v.ms) / total).toFixed(1).padStart(5)}%  ${where.padEnd(18)}` +
      (fl ? ` ${(fl / 1e9).toFixed(1).padStart(8)} GFLOP ${rate.toFixed(1).padStart(7)} GFLOP/s (${(100 * rate / peak).toFixed(0)}% of peak)` : ''));
  }
  const allFlops = [...flops.values()].reduce((a, b) => a + b, 0);
  console.log(`  JS kernels ${(jsMs / 1000).toFixed(3)} s (${(100 * jsMs / total).toFixed(1)}%); outside every kernel ${((total - inKernels) / 1000).toFixed(3)} s (${(100 * (total - inKernels) / total).toFixed(1)}%); ` +
    `GEMM + conv ${(allFlops / 1e9).toFixed(1)} GFLOP in ${total > 0 ? (total / 1000).toFixed(2) : '-'} s: ${(allFlops / (total / 1000) / 1e9).toFixed(1)} GFLOP/s effective (${(100 * allFlops / (total / 1000) / 1e9 / peak).toFixed(0)}% of peak)`);
  net.dispose();
}

await main();
