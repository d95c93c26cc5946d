// Which library runs GEMMs on the native backend (src/backend/native/index.ts gemmLibrary): OpenBLAS forced below
// an AVX-512 CPU by OPENBLAS_CORETYPE (its AVX2 kernels, ~half of oneDNN's rate on 2048³) is not chosen by auto.
// Pure: no addon needed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gemmLibrary, openblasForcedBelowCpu } from '../src/backend/native/index.js';

const avx512 = new Set(['fma', 'avx2', 'avx512f', 'avx512_bf16']);
const avx2Only = new Set(['fma', 'avx2']);

test('openblasForcedBelowCpu: a pre-AVX-512 core type on an AVX-512 CPU, and nothing else', () => {
  assert.match(openblasForcedBelowCpu({ OPENBLAS_CORETYPE: 'Haswell' }, avx512)!, /OPENBLAS_CORETYPE=Haswell restricts OpenBLAS/);
  assert.match(openblasForcedBelowCpu({ OPENBLAS_CORETYPE: 'zen' }, avx512)!, /zen/);
  assert.is(openblasForcedBelowCpu({ OPENBLAS_CORETYPE: 'SkylakeX' }, avx512), null);
  assert.is(openblasForcedBelowCpu({ OPENBLAS_CORETYPE: 'cooperlake' }, avx512), null);
  assert.is(openblasForcedBelowCpu({ OPENBLAS_CORETYPE: 'Haswell' }, avx2Only), null);
  assert.is(openblasForcedBelowCpu({}, avx512), null);
});

test('gemmLibrary: auto becomes dnnl when OpenBLAS is forced below the CPU; explicit choices are kept', () => {
  assert.is(gemmLibrary({ OPENBLAS_CORETYPE: 'Haswell' }, avx512), 'dnnl');
  assert.is(gemmLibrary({ OPENBLAS_CORETYPE: 'Haswell', KARLO_NATIVE_GEMM: 'auto' }, avx512), 'dnnl');
  assert.is(gemmLibrary({}, avx512), 'auto');
  assert.is(gemmLibrary({ OPENBLAS_CORETYPE: 'Haswell' }, avx2Only), 'auto');
  assert.is(gemmLibrary({ OPENBLAS_CORETYPE: 'Haswell', KARLO_NATIVE_GEMM: 'openblas' }, avx512), 'openblas');
  assert.is(gemmLibrary({ KARLO_NATIVE_GEMM: 'onednn' }, avx512), 'dnnl');
  assert.throws(() => gemmLibrary({ KARLO_NATIVE_GEMM: 'mkl' }, avx512), /KARLO_NATIVE_GEMM=mkl: expected auto, dnnl or openblas/);
});

test.run();
