// What the real-size UNet benchmarks share: the --warm-steps option, timing the steps after the first, and running
// one backend in a child process.
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs-core';

/**
 * --warm-steps N: steps after the first (which also creates the oneDNN primitives and packs filters), whose mean is
 * what a pipeline step costs. Default 1 on the fast backends, 0 on the slow ones. Returns the count per backend.
 */
export function warmStepsOption(value: string | undefined): (backend: string) => number {
  if (value !== undefined) {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0 || n > 5) throw new Error(`--warm-steps must be an integer in [0, 5], got ${value}`);
    return () => n;
  }
  return (b) => (b === 'native' || b === 'tensorflow' ? 1 : 0);
}

/**
 * Runs steps 1..n of `step` (each gets the latents and returns the next, inside a tidy), reading each result back;
 * disposes the latents it replaces. Returns the final latents and the mean seconds per step (undefined for n = 0).
 */
export function timeLaterSteps<T extends tf.Tensor>(n: number, latents: T, step: (i: number, latents: T) => T):
  { latents: T; meanS: number | undefined } {
  let total = 0;
  for (let i = 1; i <= n; i++) {
    const t = performance.now();
    const next = tf.tidy(() => step(i, latents));
    next.dataSync();
    total += (performance.now() - t) / 1000;
    latents.dispose();
    latents = next;
  }
  return { latents, meanS: n ? total / n : undefined };
}

/**
 * After the first step (result `next`, read back as `out`): checks it is finite and that no tensor leaked (`base`:
 * the count before it), frees `prev`, then times steps 1..n (timeLaterSteps).
 */
export function afterFirstStep<T extends tf.Tensor>(out: ArrayLike<number>, prev: T, next: T, base: number, n: number,
  step: (i: number, latents: T) => T): { latents: T; meanS: number | undefined } {
  for (let i = 0; i < out.length; i++) if (!Number.isFinite(out[i])) throw new Error('non-finite values in the step result');
  prev.dispose();
  if (tf.memory().numTensors !== base) throw new Error(`tensor leak: ${tf.memory().numTensors - base} tensors after the step`);
  return timeLaterSteps(n, next, step);
}

/**
 * Runs `script --child <backend> ...args` once per backend (each in its own process); prints the table row `row`
 * makes of its JSON result and the JSON line itself, or one line saying why the child failed.
 */
export function runBackends<J>(script: string, cwd: string, backends: string[], argsFor: (backend: string) => string[],
  row: (result: J) => string): void {
  for (const b of backends) {
    const r = runChild(script, cwd, [b, ...argsFor(b)]);
    if ('failed' in r) {
      console.log(`${b.padEnd(9)} failed: ${r.failed}`);
      continue;
    }
    console.log(row(JSON.parse(r.line) as J));
    console.log(`          ${r.line}`);
  }
}

/** Runs `script --child ...args` under tsx with --expose-gc; returns its JSON result line, or why it failed. */
function runChild(script: string, cwd: string, args: string[]): { line: string } | { failed: string } {
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', script, '--child', ...args],
    { encoding: 'utf8', cwd, maxBuffer: 1 << 24 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (r.status !== 0 || !line) return { failed: (r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ') };
  return { line };
}
