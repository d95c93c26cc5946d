// GroupNorm (+ SiLU), a backend-agnostic composite op with a native fast path: one native pass (the
// KarloGroupNorm kernel, registered by the native backend) where tfjs would chain many JS kernels. On every other
// backend (and for what the addon does not take) the same thing from tfjs ops; gradients are analytic.
import * as tf from '@tensorflow/tfjs-core';

export const GROUP_NORM_KERNEL = 'KarloGroupNorm';
/** Its gradient as one kernel (registered by the native backend next to it); tfjs ops where it is missing. */
export const GROUP_NORM_GRAD_KERNEL = 'KarloGroupNormGrad';

/** torch.nn.GroupNorm from tfjs ops on channels-last x ([N, ..., C]), then SiLU if asked. */
export function groupNormComposite(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, groups: number, eps: number,
  silu = false): tf.Tensor {
  return tf.tidy(() => {
    const c = x.shape[x.rank - 1];
    const xg = tf.reshape(x, [x.shape[0], -1, groups, c / groups]);
    const { mean, variance } = tf.moments(xg, [1, 3], true);
    const xn = tf.reshape(tf.mul(tf.sub(xg, mean), tf.rsqrt(tf.add(variance, eps))), x.shape);
    const z = tf.add(tf.mul(xn, weight), bias);
    return silu ? tf.mul(z, tf.sigmoid(z)) : z;
  });
}

/**
 * GroupNorm (+ optional SiLU) on channels-last x [N, ..., C] with per-channel weight and bias: torch's
 * `F.group_norm` (and `F.silu` after it). On the native backend one two-pass kernel (the statistics in double);
 * elsewhere tfjs ops. Differentiable with respect to x, weight and bias.
 */
export function groupNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, groups: number, eps: number,
  opts: { silu?: boolean } = {}): tf.Tensor {
  const silu = !!opts.silu;
  const c = x.shape[x.rank - 1];
  if (x.rank < 2 || c % groups !== 0) throw new Error(`groupNorm: x [${x.shape}] has ${c} channels, not divisible into ${groups} groups`);
  const native = tf.getBackend() === 'native' && x.dtype === 'float32' && tf.getKernel(GROUP_NORM_KERNEL, 'native') !== undefined;
  if (!native) return groupNormComposite(x, weight, bias, groups, eps, silu);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xx, w, b] = args as tf.Tensor[];
    const save = args[3] as tf.GradSaveFunc;
    save([xx, w, b]);
    const value = tf.engine().runKernel(GROUP_NORM_KERNEL, { x: xx, weight: w, bias: b }, { groups, eps, silu }) as tf.Tensor;
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => (tf.getKernel(GROUP_NORM_GRAD_KERNEL, 'native') && tf.getBackend() === 'native'
        ? tf.engine().runKernel(GROUP_NORM_GRAD_KERNEL, { dy, x: saved[0], weight: saved[1], bias: saved[2] }, { groups, eps, silu }) as tf.Tensor[]
        : groupNormGrad(dy, saved[0], saved[1], saved[2], groups, eps, silu)),
    };
  });
  return f(x, weight, bias);
}

/** d/dx, d/dweight, d/dbias of groupNorm (+ SiLU) for upstream gradient dy, from tfjs ops. */
export function groupNormGrad(dy: tf.Tensor, x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, groups: number, eps: number,
  silu: boolean): tf.Tensor[] {
  return tf.tidy(() => {
    const shape = x.shape;
    const c = shape[shape.length - 1];
    const gShape = [shape[0], -1, groups, c / groups];
    const xg = tf.reshape(x, gShape);
    const { mean, variance } = tf.moments(xg, [1, 3], true);
    const rstd = tf.rsqrt(tf.add(variance, eps));
    const xhat = tf.reshape(tf.mul(tf.sub(xg, mean), rstd), shape);
    let dz = dy;
    if (silu) {
      const z = tf.add(tf.mul(xhat, w), b);
      const s = tf.sigmoid(z);
      dz = tf.mul(dy, tf.mul(s, tf.add(1, tf.mul(z, tf.sub(1, s)))));
    }
    const lead = shape.slice(0, -1).map((_, i) => i);
    const dw = tf.reshape(tf.sum(tf.mul(dz, xhat), lead), w.shape);
    const db = tf.reshape(tf.sum(dz, lead), b.shape);
    const dxhat = tf.reshape(tf.mul(dz, w), gShape);
    const xhatG = tf.reshape(xhat, gShape);
    const m1 = tf.mean(dxhat, [1, 3], true);
    const m2 = tf.mean(tf.mul(dxhat, xhatG), [1, 3], true);
    const dx = tf.reshape(tf.mul(rstd, tf.sub(tf.sub(dxhat, m1), tf.mul(xhatG, m2))), shape);
    return [dx, dw, db];
  });
}
