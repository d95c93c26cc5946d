// `karlo generate ... --report run.html`: the CLI side of the run report (src/internals/report.ts): the output
// path checked before the run, the collectors wrapped around the call's options, the page written atomically.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from './errors.js';
import { writeFileAtomic } from '../io/png.js';
import { ReportCollector, type ReportContext } from '../internals/report.js';
import type { GenerateOptions, GenerateResult, UnCLIPPipeline } from '../pipeline/unclip_pipeline.js';

/** Validates --report (a file in an existing folder; an existing file only with --force). */
export function reportTarget(file: string | undefined, force?: boolean): string | undefined {
  if (file === undefined) return undefined;
  const f = String(file);
  if (!f.trim()) throw new UsageError('--report must name an .html file');
  const dir = path.dirname(path.resolve(f));
  if (!fs.existsSync(dir)) throw new UsageError(`--report ${f}: folder ${dir} does not exist`);
  if (fs.existsSync(f)) {
    if (!fs.statSync(f).isFile()) throw new UsageError(`--report ${f}: exists and is not a regular file`);
    if (!force) throw new UsageError(`${f} exists; pass --force to overwrite it`);
  }
  return f;
}

export class RunReport {
  private readonly collector: ReportCollector;
  constructor(readonly file: string, pipe: UnCLIPPipeline, ctx: ReportContext, opts: GenerateOptions) {
    this.collector = new ReportCollector(pipe, ctx, opts);
  }

  /** The call's options with the report's collectors (o itself without a report). */
  static wrap(r: RunReport | undefined, o: GenerateOptions): GenerateOptions {
    return r ? r.collector.options(o) : o;
  }

  /** Writes the page; returns its path. */
  finish(result: GenerateResult): string {
    try {
      writeFileAtomic(this.file, Buffer.from(this.collector.html(result), 'utf8'));
    } finally {
      this.collector.dispose();
    }
    return this.file;
  }
}
