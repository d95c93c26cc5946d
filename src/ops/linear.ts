// Linear (x·Wᵀ + b with torch's [out, in] weight layout), a backend-agnostic op with a per-backend path.
import * as tf from '@tensorflow/tfjs-core';

/** x [N, in], weight [out, in], optional bias [out] → [N, out]. */
export function linear(x: tf.Tensor2D, weight: tf.Tensor2D, bias?: tf.Tensor): tf.Tensor2D {
  // tfjs-backend-wasm 4.22: a transposeB matMul runs ~10x slower than a plain one, and a transposeB fused matMul
  // adds its bias to the wrong elements. There, transpose the weight (cheap next to the product) instead.
  return (tf.getBackend() === 'wasm'
    ? tf.fused.matMul({ a: x, b: tf.transpose(weight) as tf.Tensor2D, bias })
    : tf.fused.matMul({ a: x, b: weight, transposeB: true, bias })) as tf.Tensor2D;
}
