// An exponential moving average of the trained weights, as diffusers' EMAModel keeps one for its training scripts'
// --use_ema (defaults: no warm-up schedule, update_after_step 0, min_decay 0):
//   update k (k = 1, 2, ...): d_k = 0 for k = 1, else min(decay, (1 + (k − 1)) / (10 + (k − 1)))
//                             shadow −= (1 − d_k) · (shadow − param)          (float32, torch's order)
// so the first update copies the weights and the average ramps up over the first steps. The shadow starts as a
// copy of the weights. Values live in plain Float32Arrays in the parameters' tfjs layout (an average needs no
// gradient and no kernels: one pass per tensor, like AdamW).
import * as tf from '@tensorflow/tfjs-core';

const f = Math.fround;

export interface EmaState {
  decay: number;
  /** update() calls so far (diffusers' optimization_step). */
  updates: number;
}

/** diffusers EMAModel.get_decay for optimization step k (the k-th update). */
export function emaDecayAt(decay: number, k: number): number {
  const step = Math.max(0, k - 1);
  if (step <= 0) return 0;
  return Math.min((1 + step) / (10 + step), decay);
}

export class WeightEma {
  private readonly shadow = new Map<string, Float32Array>();
  updates: number;

  /** shadow: the averages to continue from (a resumed run); default a copy of the current weights. */
  constructor(private readonly vars: Map<string, tf.Variable>, readonly decay: number, init: { updates?: number; shadow?: Map<string, Float32Array> } = {}) {
    if (!(decay > 0 && decay < 1)) throw new Error(`EMA decay must be in (0, 1), got ${decay}`);
    this.updates = init.updates ?? 0;
    for (const [k, v] of vars) {
      const s = init.shadow ? init.shadow.get(k) : (v.dataSync() as Float32Array).slice();
      if (!s || s.length !== v.size) throw new Error(`EMA: no average of the right size for "${k}"`);
      this.shadow.set(k, s);
    }
  }

  /** One update from the current weights (call after each optimizer step). */
  update(): void {
    this.updates++;
    const omd = f(1 - emaDecayAt(this.decay, this.updates));
    for (const [k, v] of this.vars) {
      const s = this.shadow.get(k)!, p = v.dataSync() as Float32Array;
      for (let i = 0; i < s.length; i++) s[i] = f(s[i] - f(omd * f(s[i] - p[i])));
    }
  }

  /** The averages (tfjs layout, by parameter name); not copies. */
  averages(): ReadonlyMap<string, Float32Array> {
    return this.shadow;
  }

  state(): EmaState {
    return { decay: this.decay, updates: this.updates };
  }

  /**
   * Runs fn with the averages in the parameters, then puts the trained weights back (bit for bit): what a
   * checkpoint's component folder gets. Returns fn's result.
   */
  withAverages<T>(fn: () => T): T {
    const raw = new Map<string, tf.Tensor>();
    for (const [k, v] of this.vars) {
      raw.set(k, v.clone());
      const t = tf.tensor(this.shadow.get(k)!.slice(), v.shape, 'float32');
      v.assign(t);
      t.dispose();
    }
    try {
      return fn();
    } finally {
      for (const [k, v] of this.vars) v.assign(raw.get(k)!);
      tf.dispose([...raw.values()]);
    }
  }
}
