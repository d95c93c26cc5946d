// Research hooks over the Module output-hook system: capture module outputs (and attention probabilities), and
// edit them on the way (activation patching, head ablation, steering). Everything here builds ordinary
// OutputHooks (src/layers/module.ts): install them with `model.setOutputHook(hook)` or per component through
// UnCLIPPipeline.generate({ outputHooks }).
//
// Paths are module paths as in the state dict (`transformer_blocks.19`, `down_blocks.1.attentions.0`), plus the
// extra outputs some modules report: `<attention>.probs` (attention probabilities, opt-in), `res_samples.{j}` of
// down blocks, the prior's `predicted_image_embedding`, text_proj's `text_encoder_hidden_states` and
// `additive_clip_time_embeddings`. UNet feature maps are NCHW at the hook, like PyTorch.
import * as tf from '@tensorflow/tfjs-core';
import { hookWants, type OutputHook } from '../layers/module.js';

/** An edit of one output: returns the replacement (same shape) or nothing to leave it. */
export type Edit = (t: tf.Tensor, path: string) => tf.Tensor | void;

/**
 * A glob over dotted paths: `*` matches any run of characters (dots included), `?` one character; a list is
 * comma separated. `down_blocks.*.attentions.*.probs`, `transformer_blocks.1?`, `*`.
 */
export function globMatcher(globs: string | string[]): (path: string) => boolean {
  const list = (Array.isArray(globs) ? globs : globs.split(',')).map((g) => g.trim()).filter(Boolean);
  if (!list.length) return () => false;
  const res = list.map((g) => new RegExp(`^${g.split('').map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&'))).join('')}$`));
  return (p) => res.some((r) => r.test(p));
}

/**
 * One hook from edits by path (exact paths or globs) and an optional observer. Edits run first; the observer sees
 * the edited output. Only paths an edit or the observer wants are reported at all.
 */
export function makeHook(spec: { edits?: Record<string, Edit>; observe?: OutputHook }): OutputHook {
  const edits = Object.entries(spec.edits ?? {}).map(([g, e]) => ({ match: globMatcher([g]), edit: e }));
  const observe = spec.observe;
  const hook: OutputHook = (p, t) => {
    let cur = t;
    for (const { match, edit } of edits) {
      if (!match(p)) continue;
      const r = edit(cur, p);
      if (r instanceof tf.Tensor) {
        if (r.shape.join(',') !== cur.shape.join(',')) throw new Error(`edit for "${p}" returned shape [${r.shape}]; the output "${p}" has shape [${cur.shape}]`);
        cur = r;
      }
    }
    const o = observe?.(p, cur);
    if (o instanceof tf.Tensor) return o;
    return cur === t ? undefined : cur;
  };
  hook.wants = (p) => edits.some((e) => e.match(p)) || (observe !== undefined && hookWants(observe, p));
  return hook;
}

/** Number of heads of an attention-probabilities tensor [B, heads, queries, keys], checked. */
function headsOf(t: tf.Tensor, path: string): number {
  if (t.rank !== 4) throw new Error(`head edits apply to attention probabilities [B, heads, queries, keys]; "${path}" has shape [${t.shape}] (use a "<attention path>.probs" path)`);
  return t.shape[1]!;
}

/**
 * Scales the given heads' attention probabilities by `factor` (0 ablates them): since a head's output is
 * probs·V, this scales that head's contribution before the output projection. Use on `<attention>.probs`.
 */
export function scaleHeads(heads: number[], factor = 0): Edit {
  return (t, path) => {
    const n = headsOf(t, path);
    for (const h of heads) {
      if (!Number.isInteger(h) || h < 0 || h >= n) throw new Error(`"${path}" has ${n} heads (0..${n - 1}); head ${h} was given`);
    }
    const scale = new Float32Array(n).fill(1);
    for (const h of heads) scale[h] = factor;
    return tf.tidy(() => tf.mul(t, tf.tensor4d(scale, [1, n, 1, 1])));
  };
}

/** Ablates (zeroes) the given heads; all heads when `heads` is omitted. */
export function zeroHeads(heads?: number[]): Edit {
  return (t, path) => scaleHeads(heads ?? Array.from({ length: headsOf(t, path) }, (_, i) => i), 0)(t, path);
}

/** Replaces the output with `x` (e.g. one captured from another prompt); the caller keeps owning `x`. */
export function replaceWith(x: tf.Tensor): Edit {
  return (t, path) => {
    if (x.isDisposed) throw new Error(`the replacement for "${path}" was disposed`);
    if (x.shape.join(',') !== t.shape.join(',')) throw new Error(`replacement for "${path}" has shape [${x.shape}]; the output "${path}" has shape [${t.shape}]`);
    return x;
  };
}

/**
 * Adds alpha·direction to the output (steering). `direction` broadcasts against the output: the full shape, or
 * e.g. [C] for a token sequence [B, L, C], [1, C, 1, 1] for an NCHW feature map.
 */
export function addDirection(direction: tf.Tensor, alpha = 1): Edit {
  return (t, path) => {
    let shape: number[];
    try {
      shape = tf.broadcast_util.assertAndGetBroadcastShape(t.shape, direction.shape);
    } catch {
      shape = [];
    }
    if (shape.join(',') !== t.shape.join(',')) throw new Error(`direction of shape [${direction.shape}] does not broadcast to the output "${path}" of shape [${t.shape}]`);
    return tf.tidy(() => tf.add(t, tf.mul(direction, alpha)));
  };
}

/**
 * Captures copies of the outputs whose paths match, one entry per call (a model called at every denoising step
 * gives one entry per step). The tensors are kept (tf.keep) until dispose().
 */
export class Capture {
  private readonly store = new Map<string, tf.Tensor[]>();
  readonly hook: OutputHook;
  constructor(globs: string | string[]) {
    const match = globMatcher(globs);
    this.hook = (p, t) => {
      let list = this.store.get(p);
      if (!list) this.store.set(p, (list = []));
      list.push(tf.keep(t.clone()));
    };
    this.hook.wants = match;
  }
  paths(): string[] {
    return [...this.store.keys()];
  }
  /** The i-th capture of `path` (default: the last one); throws naming the path when there is none. */
  get(path: string, i = -1): tf.Tensor {
    const list = this.store.get(path);
    if (!list?.length) throw new Error(`nothing captured at "${path}"${this.store.size ? ` (captured: ${this.paths().slice(0, 8).join(', ')}${this.store.size > 8 ? ', …' : ''})` : ''}`);
    const t = list[i < 0 ? list.length + i : i];
    if (!t) throw new Error(`"${path}" was captured ${list.length} times; call ${i} does not exist`);
    return t;
  }
  all(path: string): tf.Tensor[] {
    return this.store.get(path) ?? [];
  }
  dispose(): void {
    for (const l of this.store.values()) tf.dispose(l);
    this.store.clear();
  }
}

/**
 * Several hooks as one: each is called for the paths it wants (hookWants rules); the first tensor one of them
 * returns replaces the output and is what the later hooks see.
 */
export function combineHooks(...hooks: (OutputHook | undefined)[]): OutputHook {
  const list = hooks.filter((h): h is OutputHook => h !== undefined);
  const hook: OutputHook = (p, t) => {
    let cur = t;
    for (const h of list) {
      if (!hookWants(h, p)) continue;
      const r = h(p, cur);
      if (r instanceof tf.Tensor && cur === t) cur = r;
    }
    return cur === t ? undefined : cur;
  };
  hook.wants = (p) => list.some((h) => hookWants(h, p));
  return hook;
}
