// The kernels the `native` backend runs in the addon instead of tfjs-backend-cpu's JS, one file per kernel or per
// family (tfjs-style: a kernel is found by its name). Each one handles the float32 cases the addon supports and
// hands anything else (other dtypes, NCHW, empty tensors, an attribute the library rejects) to the cpu kernel of
// the same name, so results never depend on what is supported.
// Gradients: tfjs registers gradient functions per kernel NAME, for every backend, so each kernel here keeps the
// gradient tfjs-core defines for it (built from ops that run on this backend again); the fused GroupNorm op has its
// own analytic gradient (src/ops/group_norm.ts). test/grads_native.test.ts checks every one against the cpu backend.
import type { KernelConfig, KernelFunc } from '@tensorflow/tfjs-core';
import type { NativeAddon } from '../addon.js';
import { kernelContext, type NativeKernelOptions } from './context.js';
import { matMulKernels } from './MatMul.js';
import { conv2DKernels } from './Conv2D.js';
import { binaryKernels } from './binary.js';
import { powKernel, unaryKernels } from './unary.js';
import { reduceKernels } from './reduce.js';
import { softmaxKernel } from './Softmax.js';
import { groupNormGradKernel, groupNormKernel } from './GroupNorm.js';
import { transposeKernel } from './Transpose.js';
import { resizeNearestNeighborKernel } from './ResizeNearestNeighbor.js';
import { splitVKernel } from './SplitV.js';
import { concatKernel } from './Concat.js';
import { avgPoolGradKernel } from './AvgPoolGrad.js';

export type { NativeKernelOptions } from './context.js';

/** Every native kernel config for `backendName` (registered by ../index.ts). */
export function nativeKernelConfigs(addon: NativeAddon, backendName: string, cpuKernels: Map<string, KernelFunc>,
  opts: NativeKernelOptions): KernelConfig[] {
  const ctx = kernelContext(addon, backendName, cpuKernels, opts);
  return [
    ...matMulKernels(ctx),
    ...conv2DKernels(ctx),
    ...binaryKernels(ctx),
    ...unaryKernels(ctx),
    powKernel(ctx),
    ...reduceKernels(ctx),
    softmaxKernel(ctx),
    groupNormKernel(ctx),
    groupNormGradKernel(ctx),
    transposeKernel(ctx),
    resizeNearestNeighborKernel(ctx),
    splitVKernel(ctx),
    concatKernel(ctx),
    avgPoolGradKernel(ctx),
  ];
}
