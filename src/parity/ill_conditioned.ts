// Ill-conditioned elements of a recorded UnCLIPPipeline run, found from the reference tensors alone.
import type { TensorData } from '../io/safetensors.js';
import type { StageName } from '../pipeline/types.js';
import type { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';

/** One stage's ill-conditioned elements: indices (sample layout), the first step they occur at, the channels. */
export interface IllConditioned {
  fromStep: number;
  set: Set<number>;
  channels?: number;
}

/** A recorded scheduler step: its index label, scheduler folder name, timestep and stage. */
export interface RecordedStep {
  index: string;
  scheduler: string;
  t: number;
  stage: StageName;
}

// Ill-conditioned elements. An epsilon-predicting step with clip_sample computes
// x0 = clamp((x − sqrt(1−ᾱ_t)·ε) / sqrt(ᾱ_t), ±range); where x0 is not clamped, prev_sample moves by
// J = predOriginalCoeff·sqrt(1−ᾱ_t)/sqrt(ᾱ_t) per unit of ε: ≈ 1.4e4 at t = 999 (ᾱ_999 ≈ 2.4e-9), so a
// one-ulp difference in the model output (float32 summation order) changes such an element by > 1e-3 in the
// reference itself. Those elements, found from the reference tensors alone, are compared separately from
// the step where it happens on (same stage and index, and the final image for the super-res stage).
export function illConditionedElements(steps: RecordedStep[], names: Set<string>, refData: (name: string) => TensorData,
  schedulerFor: (name: string) => UnCLIPScheduler): Record<StageName, IllConditioned> {
  const flagged: Record<StageName, IllConditioned> = {
    prior: { fromStep: Infinity, set: new Set() }, decoder: { fromStep: Infinity, set: new Set() }, super_res: { fromStep: Infinity, set: new Set() },
  };
  const perStageIdx: Record<string, number> = {};
  const schedulers = new Map<string, UnCLIPScheduler>();
  for (const s of steps) {
    const i = perStageIdx[s.stage] = (perStageIdx[s.stage] ?? -1) + 1;
    const base = `step.${s.index}.${s.scheduler}.t${s.t}`;
    if (!names.has(`${base}.sample_in`) || !names.has(`${base}.model_output_after_cfg`)) continue;
    if (!schedulers.has(s.scheduler)) schedulers.set(s.scheduler, schedulerFor(s.scheduler));
    const sch = schedulers.get(s.scheduler)!;
    if (sch.config.prediction_type !== 'epsilon' || !sch.config.clip_sample) continue;
    const next = steps.find((x, k) => k > steps.indexOf(s) && x.stage === s.stage);
    const c = sch.coefficients(s.t, next ? next.t : undefined);
    const gain = Math.sqrt(c.betaProdT) / Math.sqrt(c.alphaProdT);
    const J = c.predOriginalCoeff * gain;
    if (J < 1e2) continue; // a 1e-5 model-output error stays below 1e-3
    const x = refData(`${base}.sample_in`);
    const eps = refData(`${base}.model_output_after_cfg`).data as Float32Array;
    const range = sch.config.clip_sample_range;
    let maxEps = 0;
    for (const v of eps) maxEps = Math.max(maxEps, Math.abs(v));
    const margin = gain * 1e-5 * Math.max(1, maxEps); // how far our x0 may be from the reference's
    const n = x.data.length;
    for (let k = 0; k < n; k++) {
      // model output may hold the variance channels after ε (decoder): ε has the sample's layout first
      const [b, ch] = [Math.floor(k / (n / x.shape[0])), x.shape[1]];
      const inner = k % (n / x.shape[0]);
      const ek = b * (eps.length / x.shape[0]) + inner;
      const x0 = ((x.data as Float32Array)[k] - Math.sqrt(c.betaProdT) * eps[ek]) / Math.sqrt(c.alphaProdT);
      if (Math.abs(x0) < range + margin) {
        flagged[s.stage].channels = ch;
        flagged[s.stage].set.add(k);
        flagged[s.stage].fromStep = Math.min(flagged[s.stage].fromStep, i);
      }
    }
  }
  return flagged;
}
