// The whole Karlo pipeline at real size with random weights: every component written from the real configs
// (test/fixtures/karlo_configs; tokenizer vocab/merges from models/karlo-tiny) as float32 safetensors to a temporary
// folder under the OS temp dir (≈ 14 GB; deleted afterwards, also on failure or Ctrl-C), then loaded through the
// normal path (UnCLIPPipeline.load, stage-wise loading) in a child process and run on one prompt with seed 0. Prints
// per stage: load s, s/step, peak RSS during the stage (VmHWM reset at each stage start, Linux).
// --compare-torch: first runs diffusers' UnCLIPPipeline on the same folder, same prompt and seed
// (bench/torch/unclip_driver.py: a python3 with torch, diffusers and transformers, components loaded one at a time),
// then ours, and prints both side by side (load s, s/step, peak RSS, ours/PyTorch) with the difference of the two
// final images (max /255, share of values more than 2/255 apart, PSNR). OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are
// removed from both sides' environment. No figure from another run or machine is printed.
//   npm run bench pipeline [-- --backend B --steps=P/D/S --tiny --compare-torch]
//   karlo bench pipeline [--backend B] [--compare-torch]      (default steps 2/2/2)
//   npx tsx bench/pipeline.bench.ts [--tiny] [--model DIR] [--backend B] [--steps 25/25/7 | --prior-steps 2
//                                   --decoder-steps 2 --sr-steps 2] [--keep-loaded] [--allow-slow] [--compare-torch]
// --max-diff=N (with --compare-torch): exit 1 when the two images differ by more than N/255 anywhere (the parity
// guard after a speed change; issue 21 item 2).
// Through npm run bench, give values with "=" (--steps=25/25/7): bare words there are benchmark names.
// --steps N or P/D/S (also P,D,S): the step counts of all three stages at once. --tiny: the same code path at
// models/karlo-tiny's configs (seconds; the side-by-side smoke test). --model DIR: time an existing folder instead
// (nothing written). Default backend: native; cpu and wasm are refused at real size unless --allow-slow (hours /
// the 4 GB prior exceeds the wasm heap). Steps must be ≥ 2 (UnCLIPScheduler divides by steps − 1).
// The PyTorch interpreter: $KARLO_TORCH_PYTHON, else $PY (../shared/ref/env.sh sets it), else python3.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend/index.js';
import { UnCLIPPipeline, type PipelineStage, type StageTiming } from '../src/pipeline/unclip_pipeline.js';
import { writeRandomKarloFolder } from './random_weights.js';
import { checkBenchArgs } from './args.js';
import {
  describeDifference, extrapolate, imageDifference, parseSteps, probeTorch, runDriver, sideBySideEnv, sideBySideTable, sideThreads,
  type SideFigures,
} from './side_by_side.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const REAL_CONFIGS = path.join(ROOT, 'test/fixtures/karlo_configs');
const TINY = path.join(ROOT, 'models/karlo-tiny');
const STAGES: PipelineStage[] = ['text', 'prior', 'decoder', 'super_res'];
const DEFAULT_STEPS: Record<PipelineStage, number> = { text: 1, prior: 25, decoder: 25, super_res: 7 };
const PROMPT = 'a high-resolution photograph of a big red frog on a green leaf.';

interface ChildResult {
  backend: string;
  steps: Record<PipelineStage, number>;
  stages: Record<PipelineStage, StageTiming & { peakRssMB: number | null }>;
  totalSeconds: number;
  peakRssMB: number;
  finite: boolean;
  shape: number[];
  loadavg: number[];
  /** Hidden loading: per prefetched file, MB the worker read ahead / the loader's thread read / read directly, s waited. */
  prefetch: { component: string; workerMB: number; loaderMB: number; directMB: number; waitedS: number }[];
}

interface Args {
  tiny: boolean; model?: string; backend: string; steps: Record<'prior' | 'decoder' | 'super_res', number>; keepLoaded: boolean;
  compareTorch: boolean; out?: string;
}

function parseArgs(argv: string[]): Args {
  const val = (name: string): string | undefined => {
    const k = argv.findIndex((a) => a === name || a.startsWith(`${name}=`));
    if (k < 0) return undefined;
    const v = argv[k].includes('=') ? argv[k].slice(name.length + 1) : argv[k + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value`);
    return v;
  };
  const steps = (name: string) => {
    const v = Number(val(name) ?? 2);
    if (!Number.isInteger(v) || v < 2) throw new Error(`${name} must be an integer ≥ 2 (UnCLIPScheduler divides by steps − 1), got ${val(name)}`);
    return v;
  };
  const backend = val('--backend') ?? 'native';
  const all = val('--steps') === undefined ? undefined : parseSteps(val('--steps')!);
  if (all && ['--prior-steps', '--decoder-steps', '--sr-steps'].some((n) => val(n) !== undefined)) throw new Error('give --steps or the per-stage --*-steps options, not both');
  return {
    tiny: argv.includes('--tiny'),
    model: val('--model'),
    backend: backend === 'auto' ? 'native' : backend,
    steps: all ? { prior: all[0], decoder: all[1], super_res: all[2] } : { prior: steps('--prior-steps'), decoder: steps('--decoder-steps'), super_res: steps('--sr-steps') },
    keepLoaded: argv.includes('--keep-loaded'),
    compareTorch: argv.includes('--compare-torch'),
    out: val('--out'),
  };
}

function hwmMB(): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch { return null; }
}
function resetHwm(): void {
  try { fs.writeFileSync('/proc/self/clear_refs', '5'); } catch { /* not Linux: per-stage peaks stay null */ }
}

async function child(dir: string, args: Args): Promise<void> {
  const choice = await initBackend(args.backend);
  const pipe = await UnCLIPPipeline.load(dir, { keepLoaded: args.keepLoaded });
  const stagePeak = {} as Record<PipelineStage, number | null>;
  const r = await pipe.generate([PROMPT], {
    seed: 0,
    priorSteps: args.steps.prior, decoderSteps: args.steps.decoder, superResSteps: args.steps.super_res,
    onStage: (e) => {
      if (e.phase === 'load') resetHwm();
      if (e.phase === 'done') stagePeak[e.stage] = hwmMB();
      process.stderr.write(`  ${e.stage} ${e.phase}${e.timing ? `: load ${e.timing.loadSeconds.toFixed(1)} s, ${e.timing.secondsPerStep.toFixed(2)} s/step` : ''}\n`);
    },
    onStep: (i) => process.stderr.write(`    ${i.stage} step ${i.step + 1}/${i.numSteps}\n`),
  });
  const prefetch = pipe.prefetch.stats.map((p) => ({
    component: path.basename(path.dirname(p.file)), workerMB: Math.round(p.prefetchedBytes / 1e6), loaderMB: Math.round(p.loaderBytes / 1e6),
    directMB: Math.round(p.directBytes / 1e6), waitedS: +p.waitedSeconds.toFixed(2),
  }));
  pipe.dispose();
  if (args.out) fs.writeFileSync(args.out, new Uint8Array(r.images.buffer, r.images.byteOffset, r.images.byteLength));
  const stages = {} as ChildResult['stages'];
  for (const s of STAGES) stages[s] = { ...r.timings.stages[s], peakRssMB: stagePeak[s] === null ? null : Math.round(stagePeak[s]!) };
  const out: ChildResult = {
    backend: choice.name,
    steps: { text: 1, prior: r.settings.priorSteps, decoder: r.settings.decoderSteps, super_res: r.settings.superResSteps },
    stages, totalSeconds: r.timings.totalSeconds, peakRssMB: Math.round(r.timings.peakRssMB),
    finite: r.images.every(Number.isFinite), shape: r.shape, loadavg: os.loadavg(), prefetch,
  };
  console.log(`RESULT ${JSON.stringify(out)}`);
}

let running: ChildProcess | undefined;

/** Runs the child asynchronously (so a signal to this process can still clean up); returns its RESULT line. */
function runChild(dir: string, argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const p = running = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', dir, ...argv], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    p.stdout.on('data', (d) => { stdout += d; });
    const kill = () => p.kill('SIGTERM');
    process.once('exit', kill);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      running = undefined;
      process.off('exit', kill);
      const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
      if (code !== 0 || !line) reject(new Error(`pipeline child ${signal ? `killed by ${signal}` : `exited ${code}`}: ${stdout.trim().split('\n').slice(-3).join(' | ')}`));
      else resolve(JSON.parse(line.slice(7)) as ChildResult);
    });
  });
}

const f = (x: number, d = 2) => x.toFixed(d);

function ourFigures(r: ChildResult): SideFigures {
  const stages = {} as SideFigures['stages'];
  for (const s of STAGES) stages[s] = { ...r.stages[s] };
  return { stages, totalSeconds: r.totalSeconds, peakRssMB: r.peakRssMB };
}

/** The PyTorch side of a side-by-side: diffusers' UnCLIPPipeline on dir (same prompt, seed 0, steps), image to out. */
async function runTorchPipeline(dir: string, args: Args, out: string): Promise<{ figures: SideFigures; torch: string; threads: number } | { why: string }> {
  const probe = await probeTorch();
  if ('why' in probe) return probe;
  console.log(`PyTorch: torch ${probe.versions.torch}, diffusers ${probe.versions.diffusers}, transformers ${probe.versions.transformers} (${probe.versions.python}); ${sideThreads()} threads; OPENBLAS_CORETYPE unset`);
  const r = await runDriver(['pipeline', '--model', dir, '--prompt', PROMPT, '--seed', '0', '--threads', String(sideThreads()),
    '--steps', `${args.steps.prior},${args.steps.decoder},${args.steps.super_res}`, '--out', out],
  (line) => { if (!/step \d+\/\d+$/.test(line) || / 1\/\d+$/.test(line)) process.stderr.write(`  [torch] ${line.trim()}\n`); });
  if (!r.result) return { why: `PyTorch run failed (exit ${r.code}): ${r.error.trim().split('\n').slice(-3).join(' | ')}` };
  const j = r.result as unknown as SideFigures & { torch: string; threads: number };
  return { figures: { stages: j.stages, totalSeconds: j.totalSeconds, peakRssMB: j.peakRssMB }, torch: j.torch, threads: j.threads };
}

function report(r: ChildResult, loadavgBefore: number[], torch?: SideFigures): void {
  const ours = ourFigures(r);
  console.log(sideBySideTable(ours, torch));
  const load = STAGES.reduce((a, s) => a + r.stages[s].loadSeconds, 0);
  console.log(`loading on the critical path: ${f(load, 1)} s; hidden loading (KARLO_PREFETCH_MB=${process.env.KARLO_PREFETCH_MB ?? 'default'}): ${r.prefetch.length ? r.prefetch.map((p) => `${p.component} ${p.workerMB} MB read ahead + ${p.loaderMB} MB at load (waited ${f(p.waitedS, 1)} s)`).join(', ') : 'nothing prefetched'}`);
  console.log(`backend ${r.backend}; image ${r.shape.join('×')} ${r.finite ? 'finite' : 'NOT FINITE'}; run ${f(r.totalSeconds, 1)} s; load average before ${loadavgBefore.map((x) => f(x)).join(' ')}, after ${r.loadavg.map((x) => f(x)).join(' ')}; ${os.cpus().length} CPUs, ${f(os.totalmem() / 2 ** 30, 1)} GiB RAM`);
  const full = STAGES.every((s) => r.steps[s] === DEFAULT_STEPS[s]);
  const at = { prior: DEFAULT_STEPS.prior, decoder: DEFAULT_STEPS.decoder, super_res: DEFAULT_STEPS.super_res };
  const oursAt = extrapolate(ours, at);
  let line = `${full ? 'measured at' : 'extrapolated to'} 25/25/7 steps: ours ${f(oursAt, 0)} s of sampling (+ ${f(load, 0)} s loading)`;
  if (torch) {
    const torchAt = extrapolate(torch, at);
    const tLoad = STAGES.reduce((a, s) => a + torch.stages[s].loadSeconds, 0);
    line += `, PyTorch ${f(torchAt, 0)} s (+ ${f(tLoad, 0)} s loading): ${f(oursAt / torchAt)}× PyTorch's time`;
  }
  console.log(`${line}${full ? '' : '; each stage\'s first step includes one-time set-up, so few steps overstate s/step'}`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const ci = argv.indexOf('--child');
  if (ci >= 0) return child(argv[ci + 1], parseArgs(argv));
  checkBenchArgs('pipeline', { string: ['model', 'steps', 'prior-steps', 'decoder-steps', 'sr-steps', 'max-diff'], boolean: ['tiny', 'keep-loaded', 'allow-slow', 'compare-torch'], positionals: false });
  const args = parseArgs(argv);
  const loadavgBefore = os.loadavg();
  const freeGiB = os.freemem() / 2 ** 30;
  console.log(`pipeline bench: ${args.model ? args.model : args.tiny ? 'models/karlo-tiny configs' : 'real Karlo configs (karlo_configs)'}, random weights, 1 prompt, seed 0, steps ${args.steps.prior}/${args.steps.decoder}/${args.steps.super_res}, backend ${args.backend}${args.keepLoaded ? ', keepLoaded' : ''}${args.compareTorch ? ', side by side with PyTorch' : ''}; free memory ${f(freeGiB, 1)} GiB, load average ${loadavgBefore.map((x) => f(x)).join(' ')}`);
  const real = !args.tiny && !args.model;
  if (real && freeGiB < 9) console.log(`warning: only ${f(freeGiB, 1)} GiB free; the run needs about 8 GiB (one 4 GB prior or 2.8 GB UNet at a time plus activations)`);

  if (real && (args.backend === 'cpu' || args.backend === 'wasm') && !argv.includes('--allow-slow')) {
    // Same policy as the per-module benches: plain JS runs ~1 GFLOP/s (2/2/2 steps are ~20 TFLOP: hours), and the
    // 4 GB prior does not fit wasm's 4 GB heap.
    console.log(`${args.backend}: not run at real size (${args.backend === 'cpu' ? '~20 TFLOP at ~1 GFLOP/s would take hours' : 'the 4.09 GB prior does not fit the 4 GB wasm heap'}); --allow-slow to force, --tiny for the code path`);
    return;
  }
  const tmp = os.tmpdir();
  const needGB = args.model ? 0.01 : args.tiny ? 0.1 : 15;
  const st = fs.statfsSync(tmp);
  const freeDiskGB = (st.bavail * st.bsize) / 1e9;
  if (freeDiskGB < needGB) throw new Error(`${tmp}: ${f(freeDiskGB, 1)} GB free on disk, the random-weight folder needs about ${needGB} GB`);
  const work = fs.mkdtempSync(path.join(tmp, 'karlo-pipeline-bench-'));
  const cleanup = () => fs.rmSync(work, { recursive: true, force: true });
  const onSignal = (sig: NodeJS.Signals) => { running?.kill('SIGKILL'); cleanup(); process.kill(process.pid, sig); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    let dir: string;
    if (args.model) dir = path.resolve(args.model);
    else {
      dir = path.join(work, 'model');
      const w = writeRandomKarloFolder(args.tiny ? TINY : REAL_CONFIGS, path.join(TINY, 'tokenizer'), dir, (name, bytes, s) => console.log(`  wrote ${name} ${f(bytes / 1e9)} GB in ${f(s, 1)} s`));
      const params = Object.values(w.params).reduce((a, b) => a + b, 0);
      console.log(`wrote ${dir}: ${params.toLocaleString('en')} parameters, ${f(w.bytes / 1e9)} GB in ${f(w.seconds, 1)} s`);
      if (real) {
        const expected = JSON.parse(fs.readFileSync(path.join(REAL_CONFIGS, 'param_counts.json'), 'utf8')) as Record<string, number>;
        for (const [k, n] of Object.entries(w.params)) if (expected[k] !== n) throw new Error(`${k}: ${n} parameters != param_counts.json ${expected[k]}`);
        console.log('parameter counts = param_counts.json');
      }
    }
    const childArgs = argv.filter((a) => a !== '--compare-torch');
    if (!args.compareTorch) {
      report(await runChild(dir, childArgs), loadavgBefore);
      return;
    }
    // PyTorch first, then ours; both in their own process, both without OPENBLAS_CORETYPE.
    const torchOut = path.join(work, 'torch.f32'), oursOut = path.join(work, 'ours.f32');
    const t = await runTorchPipeline(dir, args, torchOut);
    if ('why' in t) console.log(t.why);
    const ours = await runChild(dir, [...childArgs, '--out', oursOut], sideBySideEnv());
    report(ours, loadavgBefore, 'why' in t ? undefined : t.figures);
    if (!('why' in t)) {
      const a = new Float32Array(new Uint8Array(fs.readFileSync(oursOut)).buffer);
      const b = new Float32Array(new Uint8Array(fs.readFileSync(torchOut)).buffer);
      const d = imageDifference(a, b);
      console.log(`final images, ours vs PyTorch (${ours.shape.join('×')}, seed 0): ${describeDifference(d)}`);
      const maxDiff = argv.find((x) => x.startsWith('--max-diff'));
      if (maxDiff) {
        const limit = Number(maxDiff.includes('=') ? maxDiff.split('=')[1] : argv[argv.indexOf(maxDiff) + 1]);
        if (!(limit >= 0)) throw new Error(`--max-diff takes a number of 1/255 steps ≥ 0, got ${maxDiff}`);
        if (!(d.max255 <= limit) || d.nonFinite) {
          console.log(`FAIL: the images differ by ${d.max255.toFixed(2)}/255 > --max-diff ${limit}/255`);
          process.exitCode = 1;
        } else console.log(`parity: within --max-diff ${limit}/255`);
      }
    }
  } finally {
    cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

await main();
