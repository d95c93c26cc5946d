// The whole Karlo pipeline at real size with random weights: every component written from the real configs
// (test/fixtures/karlo_configs; tokenizer vocab/merges from models/karlo-tiny) as float32 safetensors to a temporary
// folder under the OS temp dir (≈ 14 GB; deleted afterwards, also on failure or Ctrl-C), then loaded through the
// normal path (UnCLIPPipeline.load, stage-wise loading) in a child process and run on one prompt with reduced
// steps. Prints per stage: load s, s/step, peak RSS during the stage (VmHWM reset at each stage start, Linux), and
// the time extrapolated to UnCLIPPipeline's defaults (25/25/7 steps) next to PyTorch 1.13 CPU on this machine
// (PERF.md: text 0.22 s, prior 2.16 s/step, decoder 11.61 s/step, super-res 49.49 s/step; ≈ 690 s in all).
//   npm run bench pipeline [-- --backend B --prior-steps=N --decoder-steps=N --sr-steps=N --tiny]
//   karlo bench pipeline [--backend B]                  (default steps 2/2/2)
//   npx tsx bench/pipeline.bench.ts [--tiny] [--model DIR] [--backend B] [--prior-steps 2] [--decoder-steps 2]
//                                   [--sr-steps 2] [--keep-loaded] [--allow-slow]
// Through npm run bench, give values with "=" (--sr-steps=7): bare words there are benchmark names.
// --tiny: the same code path at models/karlo-tiny's configs (seconds). --model DIR: time an existing folder instead
// (nothing written). Default backend: native; cpu and wasm are refused at real size unless --allow-slow (hours /
// the 4 GB prior exceeds the wasm heap). Steps must be ≥ 2 (UnCLIPScheduler divides by steps − 1).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend/index.js';
import { UnCLIPPipeline, type PipelineStage, type StageTiming } from '../src/pipeline/unclip_pipeline.js';
import { writeRandomKarloFolder } from './random_weights.js';
import { checkBenchArgs } from './args.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const REAL_CONFIGS = path.join(ROOT, 'test/fixtures/karlo_configs');
const TINY = path.join(ROOT, 'models/karlo-tiny');
const STAGES: PipelineStage[] = ['text', 'prior', 'decoder', 'super_res'];
/** PyTorch 1.13 CPU, best thread count, per forward (PERF.md): the text encoder once, the others per step. */
const TORCH: Record<PipelineStage, number> = { text: 0.22, prior: 2.16, decoder: 11.61, super_res: 49.49 };
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
}

interface Args { tiny: boolean; model?: string; backend: string; steps: Record<'prior' | 'decoder' | 'super_res', number>; keepLoaded: boolean }

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
  return {
    tiny: argv.includes('--tiny'),
    model: val('--model'),
    backend: backend === 'auto' ? 'native' : backend,
    steps: { prior: steps('--prior-steps'), decoder: steps('--decoder-steps'), super_res: steps('--sr-steps') },
    keepLoaded: argv.includes('--keep-loaded'),
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
  pipe.dispose();
  const stages = {} as ChildResult['stages'];
  for (const s of STAGES) stages[s] = { ...r.timings.stages[s], peakRssMB: stagePeak[s] === null ? null : Math.round(stagePeak[s]!) };
  const out: ChildResult = {
    backend: choice.name,
    steps: { text: 1, prior: r.settings.priorSteps, decoder: r.settings.decoderSteps, super_res: r.settings.superResSteps },
    stages, totalSeconds: r.timings.totalSeconds, peakRssMB: Math.round(r.timings.peakRssMB),
    finite: r.images.every(Number.isFinite), shape: r.shape, loadavg: os.loadavg(),
  };
  console.log(`RESULT ${JSON.stringify(out)}`);
}

let running: ChildProcess | undefined;

/** Runs the child asynchronously (so a signal to this process can still clean up); returns its RESULT line. */
function runChild(dir: string, argv: string[]): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const p = running = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', dir, ...argv], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
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

function report(r: ChildResult, real: boolean, loadavgBefore: number[]): void {
  const rows: string[] = [];
  rows.push('| stage | steps run | load s | s/step | peak RSS in stage MB | at 25/25/7: s | PyTorch s/step | PyTorch at 25/25/7: s |');
  rows.push('|---|---|---|---|---|---|---|---|');
  let ours = 0, load = 0, torch = 0;
  for (const s of STAGES) {
    const t = r.stages[s];
    const n = DEFAULT_STEPS[s];
    ours += t.secondsPerStep * n;
    load += t.loadSeconds;
    torch += TORCH[s] * n;
    rows.push(`| ${s} | ${t.steps} | ${f(t.loadSeconds, 1)} | ${f(t.secondsPerStep)} | ${t.peakRssMB ?? '-'} | ${f(t.secondsPerStep * n, 1)} | ${real ? f(TORCH[s]) : '-'} | ${real ? f(TORCH[s] * n, 1) : '-'} |`);
  }
  rows.push(`| **total** | | ${f(load, 1)} | | ${r.peakRssMB} (process) | **${f(ours, 0)}** (+ ${f(load, 0)} load) | | **${real ? f(torch, 0) : '-'}** |`);
  console.log(rows.join('\n'));
  console.log(`backend ${r.backend}; image ${r.shape.join('×')} ${r.finite ? 'finite' : 'NOT FINITE'}; run ${f(r.totalSeconds, 1)} s; load average before ${loadavgBefore.map((x) => f(x)).join(' ')}, after ${r.loadavg.map((x) => f(x)).join(' ')}; ${os.cpus().length} CPUs, ${f(os.totalmem() / 2 ** 30, 1)} GiB RAM`);
  const full = STAGES.every((s) => r.steps[s] === DEFAULT_STEPS[s]);
  if (real) console.log(`${full ? 'measured at' : 'extrapolated to'} 25/25/7 steps: ${f(ours, 0)} s of sampling (+ ${f(load, 0)} s loading) vs PyTorch ≈ ${f(torch, 0)} s (${f(ours / torch)}×)${full ? '' : '; each stage\'s first step includes one-time set-up, so few steps overstate s/step'}`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const ci = argv.indexOf('--child');
  if (ci >= 0) return child(argv[ci + 1], parseArgs(argv));
  checkBenchArgs('pipeline', { string: ['model', 'prior-steps', 'decoder-steps', 'sr-steps'], boolean: ['tiny', 'keep-loaded', 'allow-slow'], positionals: false });
  const args = parseArgs(argv);
  const loadavgBefore = os.loadavg();
  const freeGiB = os.freemem() / 2 ** 30;
  console.log(`pipeline bench: ${args.model ? args.model : args.tiny ? 'models/karlo-tiny configs' : 'real Karlo configs (karlo_configs)'}, random weights, 1 prompt, steps ${args.steps.prior}/${args.steps.decoder}/${args.steps.super_res}, backend ${args.backend}${args.keepLoaded ? ', keepLoaded' : ''}; free memory ${f(freeGiB, 1)} GiB, load average ${loadavgBefore.map((x) => f(x)).join(' ')}`);
  const real = !args.tiny && !args.model;
  if (real) console.log(`PyTorch 1.13 CPU (PERF.md): text ${TORCH.text} s, prior ${TORCH.prior} s/step, decoder ${TORCH.decoder} s/step, super-res ${TORCH.super_res} s/step`);
  if (real && freeGiB < 9) console.log(`warning: only ${f(freeGiB, 1)} GiB free; the run needs about 8 GiB (one 4 GB prior or 2.8 GB UNet at a time plus activations)`);
  if (args.model) {
    report(await runChild(path.resolve(args.model), argv), false, loadavgBefore);
    return;
  }

  if (real && (args.backend === 'cpu' || args.backend === 'wasm') && !argv.includes('--allow-slow')) {
    // Same policy as the per-module benches: plain JS runs ~1 GFLOP/s (2/2/2 steps are ~20 TFLOP: hours), and the
    // 4 GB prior does not fit wasm's 4 GB heap.
    console.log(`${args.backend}: not run at real size (${args.backend === 'cpu' ? '~20 TFLOP at ~1 GFLOP/s would take hours' : 'the 4.09 GB prior does not fit the 4 GB wasm heap'}); --allow-slow to force, --tiny for the code path`);
    return;
  }
  const configDir = args.tiny ? TINY : REAL_CONFIGS;
  const tmp = os.tmpdir();
  const needGB = args.tiny ? 0.1 : 15;
  const st = fs.statfsSync(tmp);
  const freeDiskGB = (st.bavail * st.bsize) / 1e9;
  if (freeDiskGB < needGB) throw new Error(`${tmp}: ${f(freeDiskGB, 1)} GB free on disk, the random-weight folder needs about ${needGB} GB`);
  const dir = fs.mkdtempSync(path.join(tmp, 'karlo-pipeline-bench-'));
  const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
  const onSignal = (sig: NodeJS.Signals) => { running?.kill('SIGKILL'); cleanup(); process.kill(process.pid, sig); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const w = writeRandomKarloFolder(configDir, TINY, dir, (name, bytes, s) => console.log(`  wrote ${name} ${f(bytes / 1e9)} GB in ${f(s, 1)} s`));
    const params = Object.values(w.params).reduce((a, b) => a + b, 0);
    console.log(`wrote ${dir}: ${params.toLocaleString('en')} parameters, ${f(w.bytes / 1e9)} GB in ${f(w.seconds, 1)} s`);
    if (real) {
      const expected = JSON.parse(fs.readFileSync(path.join(REAL_CONFIGS, 'param_counts.json'), 'utf8')) as Record<string, number>;
      for (const [k, n] of Object.entries(w.params)) if (expected[k] !== n) throw new Error(`${k}: ${n} parameters != param_counts.json ${expected[k]}`);
      console.log('parameter counts = param_counts.json');
    }
    report(await runChild(dir, argv), real, loadavgBefore);
  } finally {
    cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

await main();
