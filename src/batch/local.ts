// A batch on this machine: one pipeline kept loaded, the pending jobs one after another, each written as soon
// as it is done (so an interrupted batch resumes where it stopped).
import type { UnCLIPPipeline } from '../pipeline/unclip_pipeline.js';
import type { BatchJob } from './jobs.js';
import type { OutputDir } from './output.js';
import { renderJob } from './render.js';

export interface LocalProgress {
  job: BatchJob;
  files: string[];
  seconds: number;
  /** Jobs finished in this run, and the jobs this run had to do. */
  done: number;
  total: number;
}

export async function runLocal(
  pipe: UnCLIPPipeline, jobs: BatchJob[], out: OutputDir,
  opts: { worker: string; onDone?: (p: LocalProgress) => void; shouldStop?: () => boolean },
): Promise<{ done: number; stopped: boolean }> {
  const seen = new Set<string>();
  const todo = out.pending(jobs).filter((j) => !seen.has(j.hash) && seen.add(j.hash));
  let done = 0;
  for (const job of todo) {
    if (opts.shouldStop?.()) return { done, stopped: true };
    const r = await renderJob(pipe, job.spec);
    const w = out.write(job, r.pngs, { worker: opts.worker, backend: r.backend, seconds: r.seconds });
    done++;
    opts.onDone?.({ job, files: w.files, seconds: r.seconds, done, total: todo.length });
  }
  return { done, stopped: false };
}
