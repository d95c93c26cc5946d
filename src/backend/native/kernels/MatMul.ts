// BatchMatMul and _FusedMatMul in the addon (oneDNN matmul or OpenBLAS sgemm), with tfjs's batch broadcasting;
// _FusedMatMul fuses a per-channel bias and the activation into the GEMM epilogue when it can.
import { broadcast_util, util, type KernelConfig, type KernelFunc, type TensorInfo } from '@tensorflow/tfjs-core';
import { ACT } from '../addon.js';
import {
  biasAndActivation, broadcastStrides, channelBias, fusable,
  type Activation, type Args, type Backend, type KernelContext,
} from './context.js';

export function matMulKernels(ctx: KernelContext): KernelConfig[] {
  const { addon, alloc, allF32, count, cpu, f32, out, opts } = ctx;
  // OpenBLAS beat oneDNN matmul only on single large GEMMs (2048^3: 303 vs 275 GFLOP/s); oneDNN won on every Karlo
  // shape (the prior's [162,2048]x[2048,n]: 280-290 vs 220-235; batched attention: up to 1.7x).
  const useBlas = (batch: number, m: number, n: number, k: number) =>
    opts.gemm === 'openblas' || (opts.gemm === 'auto' && batch === 1 && Math.min(m, n, k) >= 1024);

  /** act(op(a)·op(b) + bias) with tfjs's batch broadcasting, or null when the addon should not take it. */
  function matmul(backend: Backend, a: TensorInfo, b: TensorInfo, transA: boolean, transB: boolean,
    bias: Float32Array | null, act: number, alpha: number): TensorInfo | null {
    const ra = a.shape.length;
    const rb = b.shape.length;
    const k = transA ? a.shape[ra - 2] : a.shape[ra - 1];
    const kb = transB ? b.shape[rb - 1] : b.shape[rb - 2];
    const m = transA ? a.shape[ra - 1] : a.shape[ra - 2];
    const n = transB ? b.shape[rb - 2] : b.shape[rb - 1];
    util.assert(k === kb, () => `Error in matMul: inner shapes (${k}) and (${kb}) of Tensors with shapes ${a.shape} and ` +
      `${b.shape} and transposeA=${transA} and transposeB=${transB} must match.`);
    const outerA = a.shape.slice(0, -2);
    const outerB = b.shape.slice(0, -2);
    const outer = broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
    const batch = util.sizeFromShape(outer);
    const batchA = util.sizeFromShape(outerA);
    const batchB = util.sizeFromShape(outerB);
    if (batch * m * n * k === 0) return null;
    const av = f32(backend, a);
    const bv = f32(backend, b);
    const res = alloc(batch * m * n);
    // oneDNN's batched matmul (one primitive over all heads) beats a loop of sgemm calls on every batched shape
    // measured on an idle machine (the prior's 64 heads of 81x81x64: 106 vs 51 GFLOP/s).
    const blas = useBlas(batch, m, n, k);
    if ((batchA === batch || batchA === 1) && (batchB === batch || batchB === 1)) {
      addon.matmul(av, bv, res, bias, batchA, batchB, m, n, k, transA, transB, act, alpha, blas);
    } else {
      // Broadcasting both ways (e.g. [2,1] against [1,3]): one call per output matrix.
      const R = outer.length;
      const sa = broadcastStrides(outerA, outer);
      const sb = broadcastStrides(outerB, outer);
      const idx = new Array<number>(R).fill(0);
      for (let i = 0; i < batch; i++) {
        let rem = i;
        for (let d = R - 1; d >= 0; d--) {
          idx[d] = rem % outer[d];
          rem = Math.floor(rem / outer[d]);
        }
        let ia = 0;
        let ib = 0;
        for (let d = 0; d < R; d++) {
          ia += idx[d] * sa[d];
          ib += idx[d] * sb[d];
        }
        addon.matmul(av.subarray(ia * m * k, (ia + 1) * m * k), bv.subarray(ib * k * n, (ib + 1) * k * n),
          res.subarray(i * m * n, (i + 1) * m * n), bias, 1, 1, m, n, k, transA, transB, act, alpha, blas);
      }
    }
    return out(backend, [...outer, m, n], res);
  }

  const batchMatMul: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { a, b } = inputs;
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    if (!allF32(a, b)) return cpu('BatchMatMul', args as unknown as Args);
    const r = matmul(backend, a, b, transposeA, transposeB, null, ACT.linear, 0);
    if (!r) return cpu('BatchMatMul', args as unknown as Args);
    count('BatchMatMul', true);
    return r;
  };

  const fusedMatMul: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as Args;
    const { a, b } = inputs;
    const bias = inputs.bias as TensorInfo | undefined;
    const prelu = inputs.preluActivationWeights as TensorInfo | undefined;
    const { transposeA, transposeB, activation, leakyreluAlpha } =
      attrs as { transposeA: boolean; transposeB: boolean; activation: Activation; leakyreluAlpha?: number };
    if (!allF32(a, b)) return cpu('_FusedMatMul', args as unknown as Args);
    const n = transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
    const nativeBias = channelBias(bias, n);
    const fuseAct = fusable(activation) && (nativeBias || !bias);
    const r = matmul(backend, a, b, transposeA, transposeB, nativeBias ? f32(backend, bias!) : null,
      fuseAct ? ACT[activation as keyof typeof ACT] : ACT.linear, leakyreluAlpha ?? 0.2);
    if (!r) return cpu('_FusedMatMul', args as unknown as Args);
    count('_FusedMatMul', true);
    if (fuseAct) return r;
    return biasAndActivation(ctx, backend, r, nativeBias ? undefined : bias, activation, prelu, leakyreluAlpha ?? 0.2);
  };

  return [ctx.config('BatchMatMul', batchMatMul), ctx.config('_FusedMatMul', fusedMatMul)];
}
