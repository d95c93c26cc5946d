// Learning-rate schedules as diffusers defines them (optimization.py), with torch LambdaLR's indexing: the
// learning rate of optimizer step k (k = 0 for the first step) is base_lr · λ(k).
//   constant              λ(k) = 1
//   constant_with_warmup  λ(k) = k / max(1, warmup) while k < warmup, then 1
//   cosine                get_cosine_schedule_with_warmup(num_cycles = 0.5):
//                         λ(k) = k / max(1, warmup) while k < warmup, else with p = (k − warmup) / max(1, total − warmup):
//                         max(0, 0.5·(1 + cos(π · num_cycles · 2 · p)))

export type LrScheduleKind = 'constant' | 'constant_with_warmup' | 'cosine';
export const LR_SCHEDULES: LrScheduleKind[] = ['constant', 'constant_with_warmup', 'cosine'];

export interface LrScheduleOptions {
  kind: LrScheduleKind;
  baseLr: number;
  warmupSteps?: number;
  /** Total optimizer steps (cosine). */
  totalSteps?: number;
  /** Cosine cycles (diffusers default 0.5: one half-cosine from base_lr to 0). */
  numCycles?: number;
}

/** The multiplier λ(step). */
export function lrLambda(opts: Omit<LrScheduleOptions, 'baseLr'>, step: number): number {
  const warmup = opts.warmupSteps ?? 0;
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error(`lr schedule: warmup steps must be a non-negative integer, got ${warmup}`);
  if (!Number.isInteger(step) || step < 0) throw new Error(`lr schedule: step must be a non-negative integer, got ${step}`);
  switch (opts.kind) {
    case 'constant':
      return 1;
    case 'constant_with_warmup':
      return step < warmup ? step / Math.max(1, warmup) : 1;
    case 'cosine': {
      const total = opts.totalSteps;
      if (total === undefined || !Number.isInteger(total) || total < 1) throw new Error(`lr schedule: cosine needs total steps (a positive integer), got ${total}`);
      if (step < warmup) return step / Math.max(1, warmup);
      const progress = (step - warmup) / Math.max(1, total - warmup);
      const cycles = opts.numCycles ?? 0.5;
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress)));
    }
    default:
      throw new Error(`lr schedule: unknown kind "${(opts as { kind: string }).kind}" (choose ${LR_SCHEDULES.join(', ')})`);
  }
}

/** The learning rate of optimizer step `step` (0-based). */
export function learningRate(opts: LrScheduleOptions, step: number): number {
  if (!(opts.baseLr >= 0)) throw new Error(`lr schedule: invalid base learning rate ${opts.baseLr}`);
  return opts.baseLr * lrLambda(opts, step);
}

/** A step → learning-rate function (validates the options once). */
export function lrSchedule(opts: LrScheduleOptions): (step: number) => number {
  learningRate(opts, 0);
  return (step) => learningRate(opts, step);
}
