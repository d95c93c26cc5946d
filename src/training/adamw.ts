// AdamW with torch.optim.AdamW's semantics (torch 1.13, single-tensor path: amsgrad, maximize and foreach off).
// Per parameter that HAS a gradient (one without is skipped entirely: no step count, no decay, no state):
//   step += 1
//   p = p · (1 − lr·wd)                                  decoupled weight decay
//   m = m·β1 + (1 − β1)·g
//   v = v·β2 + (1 − β2)·g·g
//   p = p + (−lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps)      bc1 = 1 − β1^step, bc2 = 1 − β2^step
// The scalars are computed in float64 (as Python does) and rounded to float32 where torch hands them to a float32
// tensor op; the tensor ops are float32 elementwise ops in torch's order.
import * as tf from '@tensorflow/tfjs-core';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

export const ADAMW_DEFAULTS: Required<AdamWOptions> = { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 };

/** What a checkpoint keeps: tensors `exp_avg.<param>` / `exp_avg_sq.<param>` and per-parameter step counts. */
export interface AdamWState {
  /** Number of step() calls. */
  step: number;
  /** torch's per-parameter `step` (parameters skipped for lack of a gradient lag behind). */
  paramSteps: Record<string, number>;
  /** `exp_avg.<param>` and `exp_avg_sq.<param>` (caller owns them when returned by state()). */
  tensors: Map<string, tf.Tensor>;
  options: Required<AdamWOptions>;
}

const f = Math.fround;

export class AdamW {
  readonly options: Required<AdamWOptions>;
  /** Number of step() calls. */
  stepCount = 0;
  private readonly params: Map<string, tf.Variable>;
  private readonly m = new Map<string, tf.Tensor>();
  private readonly v = new Map<string, tf.Tensor>();
  private readonly steps = new Map<string, number>();

  constructor(params: Map<string, tf.Variable>, opts: AdamWOptions = {}) {
    this.options = { ...ADAMW_DEFAULTS, ...opts };
    const { lr, betas, eps, weightDecay } = this.options;
    if (!(lr >= 0)) throw new Error(`AdamW: invalid learning rate ${lr}`);
    if (!(eps >= 0)) throw new Error(`AdamW: invalid eps ${eps}`);
    for (const b of betas) if (!(b >= 0 && b < 1)) throw new Error(`AdamW: invalid beta ${b} (must be in [0, 1))`);
    if (!(weightDecay >= 0)) throw new Error(`AdamW: invalid weight decay ${weightDecay}`);
    this.params = params;
  }

  /** The parameters it updates, by name. */
  get parameters(): Map<string, tf.Variable> {
    return this.params;
  }

  /**
   * One update of every parameter that has an entry in `grads` (others skipped entirely). `lr` overrides the
   * learning rate for this step (a schedule). grads are not disposed.
   */
  step(grads: Map<string, tf.Tensor>, lr = this.options.lr): void {
    for (const k of grads.keys()) if (!this.params.has(k)) throw new Error(`AdamW.step: gradient for unknown parameter "${k}"`);
    const [beta1, beta2] = this.options.betas;
    const { eps, weightDecay } = this.options;
    this.stepCount++;
    for (const [k, p] of this.params) {
      const g = grads.get(k);
      if (!g) continue;
      if (g.shape.join(',') !== p.shape.join(',')) throw new Error(`AdamW.step: gradient of "${k}" has shape [${g.shape}], the parameter [${p.shape}]`);
      const step = (this.steps.get(k) ?? 0) + 1;
      this.steps.set(k, step);
      const bc1 = 1 - beta1 ** step;
      const bc2 = 1 - beta2 ** step;
      const stepSize = lr / bc1;
      const bc2Sqrt = Math.sqrt(bc2);
      // One pass over the values instead of twelve tensor ops (~12 kernel calls per parameter tensor cost a
      // decoder step ~0.1 s): each line is the same float32 operation, in the same order, as the tensor ops
      // (Math.fround after every + − × ÷ √ rounds exactly as a float32 op does), so the result is bit for bit
      // what they gave; test/adamw.test.ts checks it against them.
      const pv = p.dataSync() as Float32Array, gv = g.dataSync() as Float32Array;
      const m0 = this.m.get(k)?.dataSync() as Float32Array | undefined, v0 = this.v.get(k)?.dataSync() as Float32Array | undefined;
      const n = pv.length;
      const mv = new Float32Array(n), vv = new Float32Array(n), nv = new Float32Array(n);
      const decay = f(1 - lr * weightDecay), b1 = f(beta1), c1 = f(1 - beta1), b2 = f(beta2), c2 = f(1 - beta2);
      const bc2s = f(bc2Sqrt), e = f(eps), ss = f(-stepSize);
      for (let i = 0; i < n; i++) {
        const gi = gv[i];
        const m1 = f(f((m0 ? m0[i] : 0) * b1) + f(gi * c1));
        const v1 = f(f((v0 ? v0[i] : 0) * b2) + f(f(gi * c2) * gi));
        const denom = f(f(f(Math.sqrt(v1)) / bc2s) + e);
        mv[i] = m1;
        vv[i] = v1;
        nv[i] = f(f(pv[i] * decay) + f(f(m1 * ss) / denom));
      }
      this.m.get(k)?.dispose();
      this.v.get(k)?.dispose();
      this.m.set(k, tf.tensor(mv, p.shape));
      this.v.set(k, tf.tensor(vv, p.shape));
      const next = tf.tensor(nv, p.shape);
      p.assign(next);
      next.dispose();
    }
  }

  /** A copy of the optimizer state (the caller owns the tensors). */
  state(): AdamWState {
    const tensors = new Map<string, tf.Tensor>();
    for (const [k, t] of this.m) tensors.set(`exp_avg.${k}`, t.clone());
    for (const [k, t] of this.v) tensors.set(`exp_avg_sq.${k}`, t.clone());
    return { step: this.stepCount, paramSteps: Object.fromEntries(this.steps), tensors, options: { ...this.options } };
  }

  /**
   * Restores a state() (tensors are copied; the caller keeps ownership). Every parameter named in it must exist
   * with the same shape, and each one with a step count needs both moments.
   */
  loadState(s: Pick<AdamWState, 'step' | 'paramSteps' | 'tensors'>): void {
    const m = new Map<string, tf.Tensor>();
    const v = new Map<string, tf.Tensor>();
    const fail = (msg: string) => {
      tf.dispose([...m.values(), ...v.values()]);
      throw new Error(`AdamW.loadState: ${msg}`);
    };
    for (const name of s.tensors.keys()) {
      const mm = /^(exp_avg|exp_avg_sq)\.(.+)$/.exec(name);
      if (!mm) fail(`unexpected tensor "${name}" (expected exp_avg.<param> or exp_avg_sq.<param>)`);
    }
    for (const [k, step] of Object.entries(s.paramSteps)) {
      const p = this.params.get(k);
      if (!p) fail(`state for unknown parameter "${k}"`);
      if (!Number.isInteger(step) || step < 1) fail(`parameter "${k}": invalid step ${step}`);
      for (const [kind, into] of [['exp_avg', m], ['exp_avg_sq', v]] as const) {
        const t = s.tensors.get(`${kind}.${k}`);
        if (!t) fail(`parameter "${k}" has a step count but no ${kind}`);
        if (t!.shape.join(',') !== p!.shape.join(',')) fail(`${kind}.${k} has shape [${t!.shape}], the parameter [${p!.shape}]`);
        into.set(k, tf.keep(tf.cast(t!, 'float32')));
      }
    }
    for (const name of s.tensors.keys()) {
      const k = name.replace(/^exp_avg(_sq)?\./, '');
      if (!(k in s.paramSteps)) fail(`tensor "${name}" without a step count for "${k}"`);
    }
    this.disposeState();
    for (const [k, t] of m) this.m.set(k, t);
    for (const [k, t] of v) this.v.set(k, t);
    for (const [k, step] of Object.entries(s.paramSteps)) this.steps.set(k, step);
    this.stepCount = s.step;
  }

  private disposeState(): void {
    tf.dispose([...this.m.values(), ...this.v.values()]);
    this.m.clear();
    this.v.clear();
    this.steps.clear();
  }

  /** Frees the moments (the parameters belong to the model). */
  dispose(): void {
    this.disposeState();
  }
}
