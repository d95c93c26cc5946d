// Storages and tensor views of a PyTorch archive, and their materialisation into contiguous little-endian bytes.
// A tensor is (storage, element offset, shape, strides): views, transposes, column steps and stride-0 expands are
// all gathered element by element from the one storage record, read with positioned reads (only the span the
// view touches).
import type { SafetensorsDType } from '../safetensors.js';
import { DTYPE_SIZE } from '../safetensors.js';
import { TorchFileError } from './errors.js';
import { brief } from '../files.js';

/** Where a storage's bytes live: a zip record, or a span of a legacy (pre-1.6) stream. */
export interface StorageRecord {
  /** For messages: the record name ("archive/data/0") or stream position. */
  readonly name: string;
  /** Bytes. */
  readonly size: number;
  /** `length` bytes from `offset` (within the record). */
  read(offset: number, length: number): Uint8Array;
}

/**
 * torch.<X>Storage class names → element dtype (UntypedStorage holds bytes). A Map: names come from the file, and
 * an object literal would also "hold" constructor, toString, __proto__.
 */
export const STORAGE_DTYPES: ReadonlyMap<string, SafetensorsDType> = new Map(Object.entries({
  FloatStorage: 'F32', DoubleStorage: 'F64', HalfStorage: 'F16', BFloat16Storage: 'BF16', LongStorage: 'I64',
  IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL', UntypedStorage: 'U8',
} as const));

/** torch.<dtype> globals (used by _rebuild_tensor_v3) → dtype (a Map, as STORAGE_DTYPES). */
export const TORCH_DTYPES: ReadonlyMap<string, SafetensorsDType> = new Map(Object.entries({
  float32: 'F32', float: 'F32', float64: 'F64', double: 'F64', float16: 'F16', half: 'F16', bfloat16: 'BF16',
  int64: 'I64', long: 'I64', int32: 'I32', int: 'I32', int16: 'I16', short: 'I16', int8: 'I8', uint8: 'U8', bool: 'BOOL',
} as const));

/** PyTorch's name of a dtype (for reports). */
export const DTYPE_TORCH_NAME: Record<SafetensorsDType, string> = {
  F32: 'float32', F64: 'float64', F16: 'float16', BF16: 'bfloat16', I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};

export class TorchStorage {
  readonly isTorchStorage = true;
  constructor(
    readonly key: string,
    readonly dtype: SafetensorsDType,
    /** Elements (bytes for an untyped storage). */
    readonly numel: number,
    readonly location: string,
    readonly record: StorageRecord,
    readonly untyped: boolean,
  ) {}
}

export class TorchTensor {
  readonly isTorchTensor = true;
  /** True when pickled as torch.nn.Parameter. */
  isParameter = false;
  constructor(
    readonly storage: TorchStorage,
    /** In elements of `dtype`. */
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
    readonly dtype: SafetensorsDType,
    readonly requiresGrad: boolean,
  ) {}

  get numel(): number {
    let n = 1;
    for (const d of this.shape) n *= d;
    return n;
  }

  get contiguous(): boolean {
    let expected = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.stride[i] !== expected) return false;
      expected *= this.shape[i];
    }
    return true;
  }
}

/** A tensor as raw contiguous little-endian bytes in its own dtype. */
export interface RawTensor {
  dtype: SafetensorsDType;
  shape: number[];
  bytes: Uint8Array;
}

/** A short rendering of a size/stride argument for messages (never recurses into arbitrary structures). */
function show(v: unknown): string {
  if (Array.isArray(v) && v.length <= 16 && v.every((x) => typeof x === 'number' || typeof x === 'bigint')) return `[${v.join(', ')}]`;
  if (Array.isArray(v)) return `a sequence of ${v.length} items`;
  return typeof v === 'object' && v !== null ? 'an object' : String(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates a view against its storage (no allocation). `maxBytes` bounds the materialised size (the archive's
 * size: a stride-0 expand may be larger than its storage, but never larger than the file it came from).
 */
export function makeTensor(
  fail: (msg: string) => never, storage: TorchStorage, offset: unknown, size: unknown, stride: unknown,
  requiresGrad: unknown, dtype: SafetensorsDType, maxBytes: number,
): TorchTensor {
  if (!isNonNegInt(offset)) fail(`tensor storage offset ${show(offset)} is not a non-negative integer`);
  if (!Array.isArray(size) || !size.every(isNonNegInt)) fail(`tensor size ${show(size)} is not a tuple of non-negative integers`);
  if (!Array.isArray(stride) || !stride.every(isNonNegInt) || stride.length !== (size as unknown[]).length) {
    fail(`tensor stride ${show(stride)} does not match size ${show(size)}`);
  }
  const shape = [...(size as number[])];
  const strides = [...(stride as number[])];
  const es = DTYPE_SIZE[dtype];
  // Elements of `dtype` the storage holds (an untyped storage is bytes).
  let storageElems = storage.numel;
  if (storage.untyped || storage.dtype !== dtype) {
    const bytes = storage.numel * DTYPE_SIZE[storage.dtype];
    if (bytes % es) fail(`storage "${storage.key}" holds ${bytes} bytes, not a whole number of ${dtype} elements`);
    storageElems = bytes / es;
  }
  let numel = 1;
  let maxIndex = offset as number;
  for (let i = 0; i < shape.length; i++) {
    numel *= shape[i];
    maxIndex += (shape[i] - 1) * strides[i];
  }
  if (numel > 0) {
    if (!Number.isSafeInteger(maxIndex) || maxIndex >= storageElems) {
      fail(`tensor view (offset ${offset}, size ${brief(shape)}, stride ${brief(strides)}) reaches element ${maxIndex} of storage "${storage.key}", which has ${storageElems}`);
    }
    if (numel * es > maxBytes) fail(`tensor of size ${brief(shape)} would need ${numel * es} bytes, more than the file holds`);
  }
  return new TorchTensor(storage, offset as number, shape, strides, dtype, requiresGrad === true);
}

/** Reads a tensor into contiguous little-endian bytes (one positioned read of the span its view covers). */
export function materialize(file: string, t: TorchTensor, bigEndian: boolean, what: string): RawTensor {
  const es = DTYPE_SIZE[t.dtype];
  const n = t.numel;
  const shape = [...t.shape];
  if (n === 0) return { dtype: t.dtype, shape, bytes: new Uint8Array(0) };
  let maxIndex = t.offset;
  for (let i = 0; i < shape.length; i++) maxIndex += (shape[i] - 1) * t.stride[i];
  const spanBytes = (maxIndex - t.offset + 1) * es;
  let src: Uint8Array;
  try {
    src = t.storage.record.read(t.offset * es, spanBytes);
  } catch (err) {
    if (err instanceof TorchFileError) throw new TorchFileError(file, `${what}: ${err.message.startsWith(file) ? err.message.slice(file.length + 2) : err.message}`);
    throw err;
  }
  if (src.length !== spanBytes) throw new TorchFileError(file, `${what}: storage "${t.storage.key}" is shorter than the view needs`);
  let out: Uint8Array;
  if (t.contiguous) {
    out = src;
  } else {
    out = new Uint8Array(n * es);
    const nd = shape.length;
    const idx = new Array<number>(nd).fill(0);
    let srcElem = 0;
    for (let k = 0; k < n; k++) {
      const s = srcElem * es;
      for (let b = 0; b < es; b++) out[k * es + b] = src[s + b];
      // Advance the multi-index (last dimension fastest), keeping srcElem = Σ idx·stride.
      for (let d = nd - 1; d >= 0; d--) {
        idx[d]++;
        srcElem += t.stride[d];
        if (idx[d] < shape[d]) break;
        srcElem -= t.stride[d] * shape[d];
        idx[d] = 0;
      }
    }
  }
  if (bigEndian && es > 1) {
    if (out === src) out = src.slice();
    for (let k = 0; k < out.length; k += es) out.subarray(k, k + es).reverse();
  }
  return { dtype: t.dtype, shape, bytes: out };
}
