// Gradient clipping by global norm with torch.nn.utils.clip_grad_norm_ semantics (norm_type 2, torch 1.13):
//   total = ‖(‖g_1‖₂, …, ‖g_n‖₂)‖₂ over every gradient; coef = max_norm / (total + 1e-6), clamped to at most 1;
//   every gradient is multiplied by coef (also when coef is 1). Returns the total norm (before clipping).
import * as tf from '@tensorflow/tfjs-core';

export interface ClippedGrads {
  /** New tensors (the caller owns them); the input gradients are left as they are. */
  grads: Map<string, tf.Tensor>;
  /** The total norm before clipping. */
  totalNorm: number;
}

export function clipGradNorm(grads: Map<string, tf.Tensor>, maxNorm: number): ClippedGrads {
  if (!(maxNorm > 0)) throw new Error(`clipGradNorm: max norm must be positive, got ${maxNorm}`);
  if (grads.size === 0) return { grads: new Map(), totalNorm: 0 };
  // Per-tensor norms in float32 (torch.norm of each gradient), then the norm of those norms.
  const totalNorm = tf.tidy(() => {
    const norms = [...grads.values()].map((g) => tf.norm(g));
    return tf.norm(tf.stack(norms)).dataSync()[0];
  });
  const coef = Math.min(Math.fround(maxNorm / Math.fround(totalNorm + 1e-6)), 1);
  const out = new Map<string, tf.Tensor>();
  for (const [k, g] of grads) out.set(k, tf.mul(g, Math.fround(coef)));
  return { grads: out, totalNorm };
}
