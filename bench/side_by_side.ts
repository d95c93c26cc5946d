// Ours next to PyTorch, measured in the same run on the same folder: the PyTorch side (bench/torch/unclip_driver.py:
// diffusers' UnCLIPPipeline, or one component's forward) run as a child process, and the pure parts of the report
// (image difference statistics, the side-by-side table, the message when no usable PyTorch is found), which
// test/side_by_side.test.ts checks without torch.
import { spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const DRIVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'torch', 'unclip_driver.py');

export type Stage = 'text' | 'prior' | 'decoder' | 'super_res';
export const SIDE_STAGES: Stage[] = ['text', 'prior', 'decoder', 'super_res'];
const STAGE_LABEL: Record<Stage, string> = { text: 'text encoder', prior: 'prior', decoder: 'decoder + text_proj', super_res: 'super-res' };

/** One side's figures for one stage. */
export interface StageFigures { loadSeconds: number; runSeconds: number; steps: number; secondsPerStep: number; peakRssMB: number | null }

/** One side of the comparison. */
export interface SideFigures { stages: Record<Stage, StageFigures>; totalSeconds: number; peakRssMB: number }

/** How far apart two images are, on the [0, 1] scale of output_type="np". */
export interface ImageDifference {
  values: number;
  /** max |a − b| in units of 1/255. */
  max255: number;
  /** mean |a − b| in units of 1/255. */
  mean255: number;
  /** Values whose |a − b| exceeds 2/255, and their share of all values. */
  over2: number;
  shareOver2: number;
  /** 10·log10(1 / MSE) on [0, 1]; Infinity when equal. */
  psnr: number;
  /** Values that are NaN or infinite in either image. */
  nonFinite: number;
}

/** Difference statistics of two images of the same size (float values in [0, 1]). */
export function imageDifference(a: ArrayLike<number>, b: ArrayLike<number>): ImageDifference {
  if (a.length !== b.length) throw new Error(`images differ in size: ${a.length} vs ${b.length} values`);
  if (a.length === 0) throw new Error('empty images');
  let max = 0, sum = 0, sq = 0, over = 0, bad = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!Number.isFinite(d)) { bad++; continue; }
    if (d > max) max = d;
    sum += d;
    sq += d * d;
    // 2/255 on the same scale as the values (a comparison in float64, no rounding to 8-bit).
    if (d * 255 > 2) over++;
  }
  const n = a.length - bad;
  const mse = n ? sq / n : NaN;
  return {
    values: a.length, max255: max * 255, mean255: n ? (sum / n) * 255 : NaN, over2: over, shareOver2: over / a.length,
    psnr: mse === 0 ? Infinity : 10 * Math.log10(1 / mse), nonFinite: bad,
  };
}

/** One line on the difference, e.g. "max 0.84/255, mean 0.05/255; 0 of 196,608 values (0.000%) differ by more than 2/255; PSNR 71.2 dB". */
export function describeDifference(d: ImageDifference): string {
  const pct = (100 * d.shareOver2).toFixed(3);
  const psnr = d.psnr === Infinity ? 'identical' : `PSNR ${d.psnr.toFixed(1)} dB`;
  const bad = d.nonFinite ? `; ${d.nonFinite.toLocaleString('en')} values not finite` : '';
  return `max ${d.max255.toFixed(2)}/255, mean ${d.mean255.toFixed(3)}/255; ${d.over2.toLocaleString('en')} of ${d.values.toLocaleString('en')} values (${pct}%) differ by more than 2/255; ${psnr}${bad}`;
}

const f = (x: number | null | undefined, d = 2) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));
const gb = (mb: number | null | undefined) => (mb === null || mb === undefined ? '-' : (mb / 1024).toFixed(2));

/**
 * The side-by-side table (markdown): per stage steps, load s, s/step and peak RSS of both sides and ours/PyTorch
 * per step; a total row (sampling s, loading s, process peak RSS, ratio of sampling time). `torch` undefined: the
 * PyTorch columns show '-'.
 */
export function sideBySideTable(ours: SideFigures, torch?: SideFigures): string {
  const rows = [
    '| stage | steps | ours: load s | ours: s/step | ours: peak RSS GB | PyTorch: load s | PyTorch: s/step | PyTorch: peak RSS GB | ours / PyTorch (s/step) |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  let oRun = 0, oLoad = 0, tRun = 0, tLoad = 0;
  for (const s of SIDE_STAGES) {
    const o = ours.stages[s], t = torch?.stages[s];
    oRun += o.runSeconds; oLoad += o.loadSeconds;
    if (t) { tRun += t.runSeconds; tLoad += t.loadSeconds; }
    const steps = t && t.steps !== o.steps ? `${o.steps} (PyTorch ${t.steps})` : String(o.steps);
    rows.push(`| ${STAGE_LABEL[s]} | ${steps} | ${f(o.loadSeconds, 1)} | ${f(o.secondsPerStep)} | ${gb(o.peakRssMB)} | ${f(t?.loadSeconds, 1)} | ${f(t?.secondsPerStep)} | ${gb(t?.peakRssMB)} | ${t ? f(o.secondsPerStep / t.secondsPerStep) : '-'} |`);
  }
  rows.push(`| **total** (sampling; loading) | | **${f(oLoad, 1)}** | **${f(oRun, 1)} s** | ${gb(ours.peakRssMB)} | **${torch ? f(tLoad, 1) : '-'}** | **${torch ? `${f(tRun, 1)} s` : '-'}** | ${gb(torch?.peakRssMB)} | **${torch ? f(oRun / tRun) : '-'}** |`);
  return rows.join('\n');
}

/** Sampling seconds of one side at other step counts (per-step figures × steps, text encoder once). */
export function extrapolate(side: SideFigures, steps: Record<Exclude<Stage, 'text'>, number>): number {
  return side.stages.text.runSeconds + SIDE_STAGES.filter((s): s is Exclude<Stage, 'text'> => s !== 'text')
    .reduce((a, s) => a + side.stages[s].secondsPerStep * steps[s], 0);
}

/** Why the PyTorch side cannot run, and what to do about it. */
export function torchUnavailableMessage(python: string, error: string): string {
  const last = error.trim().split('\n').filter((l) => l.trim()).pop() ?? 'no output';
  const missing = /No module named '([\w.]+)'/.exec(error)?.[1]?.split('.')[0];
  let fix: string;
  if (/ENOENT|not found|No such file/i.test(error) && !missing) {
    fix = `no such interpreter; name one with KARLO_TORCH_PYTHON=/path/to/python3 (one with torch, e.g. Debian's /usr/bin/python3 after apt-get install -y python3-torch)`;
  } else if (missing === 'torch') {
    fix = 'this python3 has no torch: apt-get install -y python3-torch (Debian), or name another interpreter with KARLO_TORCH_PYTHON';
  } else if (missing === 'diffusers' || missing === 'transformers' || missing === 'huggingface_hub' || missing === 'safetensors') {
    fix = `${missing} is not importable: put diffusers 0.25.1, transformers and huggingface_hub on PYTHONPATH (the reference environment: export KARLO_REF_VENDOR=DIR; . ../shared/ref/env.sh, see ../shared/ref/ENV.md)`;
  } else {
    fix = 'see the error above; the side-by-side needs torch, diffusers 0.25.1 and transformers in that interpreter (../shared/ref/ENV.md)';
  }
  return `PyTorch side skipped (${python}: ${last}): ${fix}.`;
}

/** The interpreter the PyTorch side runs: $KARLO_TORCH_PYTHON, else $PY (the reference env.sh sets it), else python3. */
export function torchPython(env: NodeJS.ProcessEnv = process.env): string {
  return env.KARLO_TORCH_PYTHON || env.PY || 'python3';
}

/**
 * The environment both sides run under in a side-by-side: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed (some
 * machines here force OpenBLAS's AVX2 kernels with them, on AVX-512 CPUs too; ../shared/ref/ENV.md).
 */
export function sideBySideEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out = { ...env };
  delete out.OPENBLAS_CORETYPE;
  delete out.OPENBLAS_L2_SIZE;
  return out;
}

export interface DriverRun { result: Record<string, unknown> | null; error: string; code: number | null }

/** Runs the driver with `args`; stderr lines are passed to onLine (progress). Resolves with its RESULT. */
export function runDriver(args: string[], onLine?: (line: string) => void, python = torchPython()): Promise<DriverRun> {
  return new Promise((resolve) => {
    let p;
    try {
      p = spawn(python, [DRIVER, ...args], { env: sideBySideEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      resolve({ result: null, error: (e as Error).message, code: null });
      return;
    }
    let out = '', err = '', partial = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => {
      err += d;
      partial += d;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines) onLine?.(l);
    });
    const kill = () => p.kill('SIGTERM');
    process.once('exit', kill);
    p.on('error', (e) => { process.off('exit', kill); resolve({ result: null, error: e.message, code: null }); });
    p.on('close', (code) => {
      process.off('exit', kill);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      resolve({ result: line && code === 0 ? JSON.parse(line.slice(7)) as Record<string, unknown> : null, error: err.slice(-4000), code });
    });
  });
}

/** Checks that the interpreter has torch, diffusers and transformers: their versions, or why not (a message). */
export async function probeTorch(python = torchPython()): Promise<{ versions: Record<string, unknown> } | { why: string }> {
  const r = await runDriver(['probe'], undefined, python);
  return r.result ? { versions: r.result } : { why: torchUnavailableMessage(python, r.error || `exit ${r.code}`) };
}

/** Threads both sides use: KARLO_NATIVE_THREADS when set (the native backend's own setting), else every core. */
export function sideThreads(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.KARLO_NATIVE_THREADS);
  return Number.isInteger(n) && n > 0 ? n : os.cpus().length;
}

/** --steps N or P/D/S (P,D,S): [prior, decoder, super-res]; each an integer ≥ 2. */
export function parseSteps(v: string): [number, number, number] {
  const parts = v.split(/[/,]/).map((x) => x.trim());
  if (parts.length !== 1 && parts.length !== 3) throw new Error(`--steps takes N or P/D/S (three counts), got "${v}"`);
  const n = parts.map(Number);
  for (const x of n) if (!Number.isInteger(x) || x < 2) throw new Error(`--steps: each count must be an integer ≥ 2 (UnCLIPScheduler divides by steps − 1), got "${v}"`);
  return (n.length === 1 ? [n[0], n[0], n[0]] : n) as [number, number, number];
}

/** Inputs of one component forward in the driver's `forward` mode (shapes as PyTorch takes them). */
export type ForwardInputs = Record<string, { shape: number[]; kind: 'randn' | 'bool' | 'int' | `int:${number}`; value?: number }>;

export interface TorchForward { torch: string; threads: number; loadSeconds: number; firstSeconds: number; warmSeconds: number | null; peakRssMB: number }

/**
 * One component's forward in PyTorch on the bench's own random-weight folder (`dir/component` or `dir`), same
 * threads as ours: the first call and the median of `repeat` more. Or why PyTorch could not run.
 */
export async function torchForward(dir: string, component: string, inputs: ForwardInputs, repeat: number): Promise<TorchForward | { why: string }> {
  const probe = await probeTorch();
  if ('why' in probe) return probe;
  const r = await runDriver(['forward', '--model', dir, '--component', component, '--inputs', JSON.stringify(inputs),
    '--threads', String(sideThreads()), '--repeat', String(repeat)]);
  if (!r.result) return { why: `PyTorch forward failed (exit ${r.code}): ${r.error.trim().split('\n').slice(-3).join(' | ')}` };
  return r.result as unknown as TorchForward;
}

/** The seconds a forward is compared at: the warm median, else the first call. */
export const torchSeconds = (t: TorchForward): number => t.warmSeconds ?? t.firstSeconds;

/** One line about the PyTorch forward (or why there is none), for the per-stage benches. */
export function torchForwardLine(t: TorchForward | { why: string } | undefined, gflop: number): string {
  if (!t) return 'PyTorch: not timed (--compare-torch times the same weights and shapes in PyTorch, in this run)';
  if ('why' in t) return t.why;
  const s = torchSeconds(t);
  return `PyTorch ${t.torch} (${t.threads} threads, same weights and shapes, this run): load ${t.loadSeconds.toFixed(1)} s, first forward ${t.firstSeconds.toFixed(2)} s, ${t.warmSeconds === null ? 'no warm forward' : `warm ${t.warmSeconds.toFixed(2)} s`}: ${(gflop / s).toFixed(0)} GFLOP/s; peak RSS ${Math.round(t.peakRssMB)} MB`;
}
