// The one kernel a convolution's gradient needs that tfjs-backend-wasm 4.22 lacks: Conv2DBackpropFilter (dL/dW of
// Conv2D, NHWC). Without it no UNet trains on wasm. It runs as im2col in JS (the patches of x, [N·OH·OW, KH·KW·Cin])
// followed by the backend's own BatchMatMul kernel (XNNPACK): dW = patchesᵀ · dy, reshaped to [KH, KW, Cin, Cout].
import { backend_util, getKernel, registerKernel, util, type KernelFunc, type NamedAttrMap, type TensorInfo } from '@tensorflow/tfjs-core';

interface WasmBackendLike {
  readSync(dataId: unknown): backend_util.BackendValues;
  makeOutput(shape: number[], dtype: 'float32', memoryOffset?: number, values?: backend_util.BackendValues): TensorInfo;
  disposeData(dataId: unknown): boolean;
}

const conv2DBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as {
    strides: [number, number] | number; pad: 'valid' | 'same' | number | backend_util.ExplicitPadding; dataFormat: 'NHWC' | 'NCHW';
    dimRoundingMode?: 'floor' | 'round' | 'ceil'; filterShape: [number, number, number, number];
  };
  if (dataFormat !== 'NHWC') throw new Error(`Conv2DBackpropFilter on wasm: only NHWC is supported, got ${dataFormat}`);
  const b = backend as unknown as WasmBackendLike;
  const ci = backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode, false, 'channelsLast');
  const { batchSize: N, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW, outChannels: O,
    filterHeight: KH, filterWidth: KW, strideHeight: SH, strideWidth: SW } = ci;
  const pt = ci.padInfo.top;
  const pl = ci.padInfo.left;
  const xv = b.readSync(x.dataId) as Float32Array;
  const rows = N * OH * OW;
  const K = KH * KW * C;
  const patches = new Float32Array(rows * K);
  for (let n = 0; n < N; n++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const r = ((n * OH + oh) * OW + ow) * K;
        for (let kh = 0; kh < KH; kh++) {
          const h = oh * SH + kh - pt;
          if (h < 0 || h >= H) continue;
          for (let kw = 0; kw < KW; kw++) {
            const w = ow * SW + kw - pl;
            if (w < 0 || w >= W) continue;
            const src = ((n * H + h) * W + w) * C;
            patches.set(xv.subarray(src, src + C), r + (kh * KW + kw) * C);
          }
        }
      }
    }
  }
  const a = b.makeOutput([1, rows, K], 'float32', undefined, patches);
  const d = { dataId: dy.dataId, shape: [1, rows, O], dtype: dy.dtype } as TensorInfo;
  const mm = getKernel('BatchMatMul', 'wasm').kernelFunc({ inputs: { a, b: d }, backend, attrs: { transposeA: true, transposeB: false } as unknown as NamedAttrMap }) as TensorInfo;
  b.disposeData(a.dataId);
  util.assert(util.sizeFromShape(mm.shape) === util.sizeFromShape(filterShape), () => 'Conv2DBackpropFilter on wasm: size mismatch');
  return { dataId: mm.dataId, shape: [...filterShape], dtype: 'float32' } as TensorInfo;
};

/** Registers the missing wasm gradient kernels (idempotent; harmless when wasm is never used). */
export function registerWasmGradientKernels(): void {
  if (!getKernel('Conv2DBackpropFilter', 'wasm')) {
    registerKernel({ kernelName: 'Conv2DBackpropFilter', backendName: 'wasm', kernelFunc: conv2DBackpropFilter });
  }
}
