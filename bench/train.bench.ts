// One training step of the real-size Karlo decoder (karlo_configs/decoder: 885,439,686 parameters, random weights)
// at 64×64, batch 1: forward + backward + AdamW, as `karlo train` does it (losses.ts decoderLoss: x_t =
// addNoise(x0, ε, t), ε-MSE on the first 3 of 6 output channels; valueAndGrads; AdamW.step). Two modes:
//   full   every parameter trained: weights + gradients + AdamW's two moments = 16 bytes per parameter (14.2 GB)
//   lora   LoRA rank 16 (alpha 16) on to_q/to_k/to_v/to_out.0/add_k_proj/add_v_proj, the base frozen
//   subset full fine-tuning of the parameters matching --subset GLOB (default 'up_blocks.1.**': 162M parameters of
//          the decoder's up path, 18%), the rest frozen (karlo train --train GLOB)
// Each mode runs in its own child process (its own peak RSS), ours on the native backend, then PyTorch's same step
// (diffusers 0.25.1 UNet2DConditionModel from the same config, torch.optim.AdamW, LoRA as y = Wx + b + s·B(Ax) on
// the same projections) when a python3 with torch and diffusers is found (../shared/ref/env.sh; KARLO_REF_VENDOR).
// The first step also allocates AdamW's moments (and, for us, creates the oneDNN primitives); the second step
// is what every later step costs. A watchdog kills a child when the machine's available memory drops below
// --min-free (GB, default 1.0): a mode that does not fit is reported as such instead of taking the machine down.
//   npm run bench train [-- --size 64 --modes lora,subset,full --subset 'up_blocks.1.**' --lora-rank 16 --steps 2
//                           --threads N --no-torch]
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { checkBenchArgs } from './args.js';
import { maxRssMB, resetPeakRss, statusMB } from './memory.js';
import { randomWeights } from './random_weights.js';
import { initBackend } from '../src/backend/index.js';
import { registerGradients } from '../src/backend/gradients.js';
import { readJson } from '../src/io/weights.js';
import { UNet2DConditionModel, unet2dConditionConfig } from '../src/models/unet2d_condition.js';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';
import { TorchGenerator, randnTensor } from '../src/random/generator.js';
import { AdamW } from '../src/training/adamw.js';
import { applyLora } from '../src/training/lora.js';
import { decoderLoss, valueAndGrads } from '../src/training/losses.js';
import { selectTrainable } from '../src/training/trainable.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONFIGS = path.join(ROOT, 'test/fixtures/karlo_configs');
const SHARED_REF = path.resolve(ROOT, '../shared/ref');
const GB = 2 ** 30;

type Mode = 'full' | 'lora' | 'subset';

interface StepResult {
  impl: 'karlo-tfjs' | 'pytorch';
  mode: Mode;
  backend: string;
  params: number;
  trainable: number;
  buildS: number;
  stepS: number[];
  loss: number[];
  rssBeforeMB: number;
  peakRssMB: number;
  cpuS: number[];
}

/** Availability of memory now (MemAvailable), GB. */
function availableGB(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) / 2 ** 20 : os.freemem() / GB;
}

// ---------- ours (child) ----------

async function child(mode: Mode, size: number, rank: number, steps: number, subset: string): Promise<void> {
  const choice = await initBackend('native');
  await registerGradients();
  const t0 = performance.now();
  const cfgFile = path.join(CONFIGS, 'decoder', 'config.json');
  const decoder = new UNet2DConditionModel(unet2dConditionConfig(readJson(cfgFile), cfgFile));
  // Random weights straight into the variables (no file): one tensor at a time.
  const w = randomWeights(decoder, 11);
  for (const [k, p] of decoder.namedParameters()) {
    const d = w[k].data as () => Uint8Array;
    const bytes = d();
    p.setFromTorch(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4), mode !== 'lora');
  }
  let vars: Map<string, tf.Variable>;
  let lora: ReturnType<typeof applyLora> | undefined;
  if (mode === 'lora') {
    lora = applyLora(decoder, { rank, alpha: rank, seed: 0 });
    vars = lora.variables();
  } else {
    const params = new Map(decoder.namedParameters());
    const keys = mode === 'full' ? [...params.keys()] : selectTrainable([...params.keys()], { train: [subset] }).trainable;
    vars = new Map(keys.map((k) => [k, params.get(k)!.value]));
  }
  let trainable = 0;
  for (const v of vars.values()) trainable += v.size;
  const buildS = (performance.now() - t0) / 1000;
  const sched = UnCLIPScheduler.fromDir(path.join(CONFIGS, 'decoder_scheduler'));
  const gen = new TorchGenerator(0);
  const cross = decoder.config.cross_attention_dim as number;
  const x0 = tf.tidy(() => tf.sub(tf.mul(tf.randomUniform([1, 3, size, size], 0, 1, 'float32', 1), 2), 1)) as tf.Tensor4D;
  const noise = randnTensor([1, 3, size, size], gen) as tf.Tensor4D;
  const enc = randnTensor([1, 81, cross], gen) as tf.Tensor3D;
  const cls = randnTensor([1, decoder.timeEmbedDim], gen) as tf.Tensor2D;
  const mask = tf.tensor2d([Array.from({ length: 81 }, (_, i) => +(i < 4 + 12))], [1, 81], 'int32');
  const opt = new AdamW(vars, { lr: 1e-5 });
  (globalThis as { gc?: () => void }).gc?.();
  const rssBeforeMB = statusMB('VmRSS');
  resetPeakRss();
  const stepS: number[] = [], loss: number[] = [], cpuS: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t = performance.now();
    const c0 = process.cpuUsage();
    const { value, grads } = valueAndGrads(() => decoderLoss(decoder, sched, {
      x0, noise, timesteps: [500], encoderHiddenStates: enc, classLabels: cls, attentionMask: mask,
    }), vars);
    loss.push((await value.data())[0]);
    value.dispose();
    opt.step(grads);
    tf.dispose([...grads.values()]);
    // read one updated weight back so the step is complete
    vars.values().next().value!.dataSync();
    stepS.push(+((performance.now() - t) / 1000).toFixed(2));
    const c = process.cpuUsage(c0);
    cpuS.push(+((c.user + c.system) / 1e6).toFixed(1));
  }
  const peakRssMB = statusMB('VmHWM');
  const r: StepResult = {
    impl: 'karlo-tfjs', mode, backend: choice.name, params: decoder.numParameters(), trainable, buildS: +buildS.toFixed(1),
    stepS, loss: loss.map((l) => +l.toFixed(5)), rssBeforeMB: Math.round(rssBeforeMB), peakRssMB: Math.round(Math.max(peakRssMB, maxRssMB())), cpuS,
  };
  console.log(JSON.stringify(r));
  opt.dispose();
  lora?.remove();
  tf.dispose([x0, noise, enc, cls, mask]);
  decoder.dispose();
}

// ---------- PyTorch (child) ----------

const TORCH_SCRIPT = String.raw`
import json, resource, sys, time
import torch
import torch.nn.functional as F
mode, size, rank, steps, threads, cfg_file, subset = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
torch.set_num_threads(threads)
torch.manual_seed(0)
from diffusers import UNet2DConditionModel, UnCLIPScheduler
t0 = time.perf_counter()
cfg = json.load(open(cfg_file))
unet = UNet2DConditionModel.from_config(cfg)
unet.train()

class LoRA(torch.nn.Module):
    def __init__(self, base, r):
        super().__init__()
        self.base = base
        self.down = torch.nn.Linear(base.in_features, r, bias=False)
        self.up = torch.nn.Linear(r, base.out_features, bias=False)
        torch.nn.init.normal_(self.down.weight, std=1 / r)
        torch.nn.init.zeros_(self.up.weight)
    def forward(self, x, *args, **kw):
        return self.base(x) + self.up(self.down(x))

if mode == 'lora':
    unet.requires_grad_(False)
    targets = ('to_q', 'to_k', 'to_v', 'add_k_proj', 'add_v_proj')
    for name, m in list(unet.named_modules()):
        for child_name, c in list(m.named_children()):
            if child_name in targets and isinstance(c, torch.nn.Linear):
                setattr(m, child_name, LoRA(c, rank))
        if name.endswith('to_out'):
            m[0] = LoRA(m[0], rank)
if mode == 'subset':
    prefix = subset[:-3] if subset.endswith('.**') else subset
    for name, p in unet.named_parameters():
        p.requires_grad_(name.startswith(prefix + '.'))
params = [p for p in unet.parameters() if p.requires_grad]
trainable = sum(p.numel() for p in params)
opt = torch.optim.AdamW(params, lr=1e-5)
sched = UnCLIPScheduler(variance_type='learned_range', num_train_timesteps=1000)
x0 = torch.rand(1, 3, size, size) * 2 - 1
noise = torch.randn(1, 3, size, size)
t = torch.tensor([500])
xt = sched.add_noise(x0, noise, t)
enc = torch.randn(1, 81, cfg['cross_attention_dim'])
cls = torch.randn(1, cfg['block_out_channels'][0] * 4)
mask = torch.zeros(1, 81, dtype=torch.bool)
mask[:, :16] = True
build = time.perf_counter() - t0
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
times, losses, cpus = [], [], []
for i in range(steps):
    t1 = time.perf_counter(); c1 = time.process_time()
    out = unet(xt, t, encoder_hidden_states=enc, class_labels=cls, attention_mask=mask).sample
    loss = F.mse_loss(out[:, :3], noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    times.append(round(time.perf_counter() - t1, 2)); cpus.append(round(time.process_time() - c1, 1))
    losses.append(round(loss.item(), 5))
print(json.dumps(dict(impl='pytorch', mode=mode, backend='torch ' + torch.__version__ + ' cpu, %d threads' % threads,
    params=sum(p.numel() for p in unet.parameters()), trainable=trainable, buildS=round(build, 1), stepS=times, loss=losses,
    rssBeforeMB=round(rss_before), peakRssMB=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), cpuS=cpus)))
`;

/** The python with torch + diffusers, and its environment (../shared/ref/env.sh), or why there is none. */
function torchEnv(): { py: string; env: NodeJS.ProcessEnv } | string {
  const vendor = process.env.KARLO_REF_VENDOR ?? [path.join(SHARED_REF, 'vendor'), '/tmp/karlo-ref-vendor'].find((d) => fs.existsSync(path.join(d, 'diffusers')));
  if (!vendor || !fs.existsSync(path.join(vendor, 'diffusers', 'src'))) return 'no diffusers checkout (set KARLO_REF_VENDOR; see ../shared/ref/ENV.md)';
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PYTHONPATH: [path.join(SHARED_REF, 'shim'), path.join(vendor, 'diffusers/src'), path.join(vendor, 'transformers/src'), path.join(vendor, 'huggingface_hub/src')].join(':'),
    HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1', DIFFUSERS_OFFLINE: '1', HF_HUB_DISABLE_TELEMETRY: '1',
  };
  delete env.OPENBLAS_CORETYPE; // PyTorch's OpenBLAS picks its own kernels (ENV.md)
  const py = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  return { py, env };
}

// ---------- parent ----------

/** Runs a child with a memory watchdog; resolves with its JSON line or why it failed. */
function runChild(cmd: string, args: string[], env: NodeJS.ProcessEnv, minFreeGB: number): Promise<{ json?: StepResult; failed?: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '', killedFor = '', lowest = Infinity;
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    const timer = setInterval(() => {
      const a = availableGB();
      lowest = Math.min(lowest, a);
      if (a < minFreeGB && !killedFor) {
        killedFor = `killed by the watchdog: the machine's available memory fell to ${a.toFixed(1)} GB (< ${minFreeGB} GB)`;
        p.kill('SIGKILL');
      }
    }, 250);
    p.on('close', (code, signal) => {
      clearInterval(timer);
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (code === 0 && line) resolve({ json: JSON.parse(line) as StepResult });
      else resolve({ failed: killedFor || `exit ${code ?? signal}: ${(err || out).trim().split('\n').slice(-2).join(' | ')}` });
      void lowest;
    });
  });
}

function row(r: StepResult): string {
  const first = r.stepS[0], later = r.stepS.length > 1 ? r.stepS[r.stepS.length - 1] : NaN;
  return `${r.impl.padEnd(10)} ${r.mode.padEnd(5)} ${r.trainable.toLocaleString('en').padStart(12)}  ${String(r.buildS).padStart(6)}  ${first.toFixed(1).padStart(7)}  ${Number.isNaN(later) ? '      -' : later.toFixed(1).padStart(7)}  ${(r.cpuS[r.cpuS.length - 1] ?? NaN).toFixed(0).padStart(5)}  ${(r.rssBeforeMB / 1024).toFixed(1).padStart(8)}  ${(r.peakRssMB / 1024).toFixed(1).padStart(8)}   loss ${r.loss.join(' → ')}  (${r.backend})`;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const ci = argv.indexOf('--child');
  if (ci >= 0) return child(argv[ci + 1] as Mode, Number(argv[ci + 2]), Number(argv[ci + 3]), Number(argv[ci + 4]), argv[ci + 5] ?? 'up_blocks.1.**');
  checkBenchArgs('train', { string: ['size', 'modes', 'lora-rank', 'steps', 'threads', 'min-free', 'subset'], boolean: ['no-torch', 'json'], positionals: false });
  const opt = (name: string, d: string) => { const k = argv.findIndex((a) => a === name || a.startsWith(`${name}=`)); return k < 0 ? d : argv[k].includes('=') ? argv[k].split('=')[1] : argv[k + 1]; };
  const size = Number(opt('--size', '64'));
  const rank = Number(opt('--lora-rank', '16'));
  const steps = Number(opt('--steps', '2'));
  const threads = Number(opt('--threads', String(os.cpus().length)));
  const minFree = Number(opt('--min-free', '1.0'));
  const modes = opt('--modes', 'lora,subset,full').split(',');
  const subset = opt('--subset', 'up_blocks.1.**');
  if (!/^[\w.]+\.\*\*$/.test(subset)) throw new Error(`--subset must be a module path followed by .** (e.g. up_blocks.1.**), got ${subset}`);
  if (!Number.isInteger(size) || size < 8 || size % 8) throw new Error(`--size must be a multiple of 8, got ${size}`);
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`--lora-rank must be a positive integer, got ${rank}`);
  if (!Number.isInteger(steps) || steps < 1 || steps > 5) throw new Error(`--steps must be an integer in [1, 5], got ${steps}`);
  for (const m of modes) if (m !== 'full' && m !== 'lora' && m !== 'subset') throw new Error(`--modes: "${m}" is not lora, subset or full`);
  const backend = opt('--backend', 'native');
  if (backend !== 'native' && backend !== 'auto') console.log(`note: this benchmark runs on the native backend (asked: ${backend})`);

  const cfgFile = path.join(CONFIGS, 'decoder', 'config.json');
  const shell = new UNet2DConditionModel(unet2dConditionConfig(readJson(cfgFile), cfgFile));
  const n = shell.numParameters();
  const counts = readJson<Record<string, number>>(path.join(CONFIGS, 'param_counts.json'));
  if (n !== counts.decoder) throw new Error(`decoder parameter count ${n} != param_counts.json ${counts.decoder}`);
  console.log(`decoder (random weights): ${n.toLocaleString('en')} parameters; one training step at ${size}x${size}, batch 1, timestep 500, 81 context tokens`);
  console.log(`full fine-tuning state: weights ${(4 * n / GB).toFixed(1)} GiB + gradients ${(4 * n / GB).toFixed(1)} GiB + AdamW moments ${(8 * n / GB).toFixed(1)} GiB = ${(16 * n / GB).toFixed(1)} GiB before activations`);
  console.log(`machine: ${(os.totalmem() / GB).toFixed(1)} GiB, ${availableGB().toFixed(1)} GiB available now, ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(1)}; watchdog at ${minFree} GiB available`);

  const tenv = argv.includes('--no-torch') ? 'not asked (--no-torch)' : torchEnv();
  const results: StepResult[] = [];
  const failures: string[] = [];
  console.log(`impl       mode     trainable   build s  step1 s  step${steps} s  CPU s  RSS0 GiB  peak GiB`);
  for (const mode of modes) {
    const ours = await runChild(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), '--child', mode, String(size), String(rank), String(steps), subset], process.env, minFree);
    if (ours.json) { results.push(ours.json); console.log(row(ours.json)); } else { failures.push(`karlo-tfjs ${mode}: ${ours.failed}`); console.log(`karlo-tfjs ${mode.padEnd(5)} did not complete: ${ours.failed}`); }
    if (typeof tenv === 'string') continue;
    const script = path.join(os.tmpdir(), `karlo-train-bench-${process.pid}.py`);
    fs.writeFileSync(script, TORCH_SCRIPT);
    try {
      const theirs = await runChild(tenv.py, [script, mode, String(size), String(rank), String(steps), String(threads), cfgFile, subset], tenv.env, minFree);
      if (theirs.json) { results.push(theirs.json); console.log(row(theirs.json)); } else { failures.push(`pytorch ${mode}: ${theirs.failed}`); console.log(`pytorch    ${mode.padEnd(5)} did not complete: ${theirs.failed}`); }
    } finally {
      fs.rmSync(script, { force: true });
    }
  }
  if (typeof tenv === 'string') console.log(`PyTorch: not measured: ${tenv}`);
  if (argv.includes('--json')) console.log(JSON.stringify({ size, rank, steps, results, failures }));
}

await main();
