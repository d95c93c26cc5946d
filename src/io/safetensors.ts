// Safetensors reader and writer (our own parser).
// Format: u64-LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?},
// then the raw little-endian data; offsets are relative to the end of the header.
// The reader reads tensors lazily with positioned reads, so files over 4 GB work and no Buffer
// ever holds more than one tensor.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileRefusedError, assertReplaceable, brief, openRegularFile, parseJsonText, printable, trackTemporary } from './files.js';

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_SIZE: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Whether a name from a file is one of the dtypes (own keys only: never constructor, toString, __proto__). */
export function isDType(d: unknown): d is SafetensorsDType {
  return typeof d === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, d);
}

export function isFloatDType(d: SafetensorsDType): boolean {
  return d === 'F64' || d === 'F32' || d === 'F16' || d === 'BF16';
}

import type { TensorData } from '../layers/module.js';

export type { TensorData };

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

/** Error naming the file (and tensor) at fault. */
export class SafetensorsError extends Error {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'SafetensorsError';
  }
}

const MAX_HEADER = 100 * 1024 * 1024;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------- element decoders ----------

const f16Table = (() => {
  // Precomputed float16 -> float32 for all 65536 bit patterns (exact).
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    let v: number;
    if (e === 0) v = m * 2 ** -24;
    else if (e === 31) v = m ? NaN : Infinity;
    else v = (1 + m / 1024) * 2 ** (e - 15);
    t[h] = s * v;
  }
  return t;
})();

export function decodeF16(src: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let i = 0; i < count; i++) out[i] = f16Table[dv.getUint16(2 * i, true)];
  return out;
}

export function decodeBF16(src: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const u32 = new Uint32Array(out.buffer);
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let i = 0; i < count; i++) u32[i] = dv.getUint16(2 * i, true) << 16;
  return out;
}

/** Converts raw little-endian bytes of `dtype` to float32/int32. `what` names the tensor in errors. */
export function decodeBytes(bytes: Uint8Array, dtype: SafetensorsDType, count: number, what: string, file = ''): TensorData['data'] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32': {
      const out = new Float32Array(count);
      new Uint8Array(out.buffer).set(bytes.subarray(0, count * 4));
      return out;
    }
    case 'F16': return decodeF16(bytes, count);
    case 'BF16': return decodeBF16(bytes, count);
    case 'F64': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(8 * i, true);
      return out;
    }
    case 'I64': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        const v = dv.getBigInt64(8 * i, true);
        if (v > 2147483647n || v < -2147483648n) {
          throw file ? new SafetensorsError(file, `${what}: I64 value ${v} at element ${i} does not fit in int32`)
            : new Error(`${what}: I64 value ${v} at element ${i} does not fit in int32`);
        }
        out[i] = Number(v);
      }
      return out;
    }
    case 'I32': {
      const out = new Int32Array(count);
      new Uint8Array(out.buffer).set(bytes.subarray(0, count * 4));
      return out;
    }
    case 'I16': { const out = new Int32Array(count); for (let i = 0; i < count; i++) out[i] = dv.getInt16(2 * i, true); return out; }
    case 'I8': { const out = new Int32Array(count); for (let i = 0; i < count; i++) out[i] = dv.getInt8(i); return out; }
    case 'U8': { const out = new Int32Array(count); for (let i = 0; i < count; i++) out[i] = bytes[i]; return out; }
    case 'BOOL': { const out = new Int32Array(count); for (let i = 0; i < count; i++) out[i] = bytes[i] ? 1 : 0; return out; }
  }
}

// ---------- reader ----------

export class SafetensorsFile {
  readonly file: string;
  readonly metadata: Record<string, string>;
  /** Tensors in header order. */
  readonly tensors: Map<string, TensorInfo>;
  readonly size: number;
  private fd: number | null;

  private constructor(file: string, fd: number, size: number, tensors: Map<string, TensorInfo>, metadata: Record<string, string>) {
    this.file = file;
    this.fd = fd;
    this.size = size;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  /** Opens and validates the header; reads no tensor data. */
  static open(file: string): SafetensorsFile {
    let fd: number;
    let size: number;
    try {
      ({ fd, size } = openRegularFile(file, 'safetensors file'));
    } catch (e) {
      throw new SafetensorsError(file, (e as FileRefusedError).reason ?? (e as Error).message);
    }
    try {
      if (size < 8) throw new SafetensorsError(file, `file is ${size} bytes, too short for a safetensors header`);
      const lenBuf = Buffer.alloc(8);
      fs.readSync(fd, lenBuf, 0, 8, 0);
      const headerLen = lenBuf.readBigUInt64LE(0);
      if (headerLen > BigInt(Math.min(MAX_HEADER, size - 8))) {
        throw new SafetensorsError(file, `header length ${headerLen} exceeds the file (${size} bytes) or the 100 MB limit: not a safetensors file?`);
      }
      const n = Number(headerLen);
      const hbuf = Buffer.alloc(n);
      fs.readSync(fd, hbuf, 0, n, 8);
      let text: string;
      try {
        text = STRICT_UTF8.decode(hbuf);
      } catch {
        throw new SafetensorsError(file, 'header is not valid UTF-8 (a tensor name or metadata holds invalid bytes)');
      }
      let header: Record<string, unknown>;
      try {
        header = parseJsonText(text, file, 'safetensors header') as Record<string, unknown>;
      } catch (e) {
        throw new SafetensorsError(file, `header is not valid JSON${(e as FileRefusedError).reason.replace(/^invalid JSON/, '').replace(/ \(.*\)$/, '')}`);
      }
      if (header === null || typeof header !== 'object' || Array.isArray(header)) {
        throw new SafetensorsError(file, 'header is not a JSON object');
      }
      const problems = headerProblems(text);
      if (problems.duplicate !== null) throw new SafetensorsError(file, problems.duplicate);
      const dataStart = 8 + n;
      const tensors = new Map<string, TensorInfo>();
      let metadata: Record<string, string> = {};
      for (const [name, raw] of Object.entries(header)) {
        if (name === '__metadata__') {
          if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
            throw new SafetensorsError(file, '__metadata__ must be an object of strings');
          }
          metadata = raw as Record<string, string>;
          continue;
        }
        tensors.set(name, validateEntry(file, name, raw, dataStart, size));
      }
      // After the entry checks (which word a bad shape or offset better): integers written as 2.0, 1e3, -0.
      if (problems.number !== null) throw new SafetensorsError(file, problems.number);
      // The data region must be tiled exactly: no overlaps, no gaps, nothing after the last tensor
      // (what the reference safetensors library enforces).
      const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
      let pos = dataStart;
      for (let i = 0; i < sorted.length; i++) {
        const t = sorted[i];
        if (t.begin < pos) throw new SafetensorsError(file, `tensor "${t.name}" overlaps tensor "${sorted[i - 1].name}"`);
        if (t.begin > pos) {
          throw new SafetensorsError(file, `tensor "${t.name}" starts at data offset ${t.begin - dataStart}, leaving a gap of ${t.begin - pos} bytes after ${i ? `tensor "${sorted[i - 1].name}"` : 'the header'} (offsets must tile the data region)`);
        }
        pos = t.end;
      }
      if (pos !== size) {
        throw new SafetensorsError(file, `${size - pos} bytes after the last tensor are not covered by any tensor (offsets must tile the data region)`);
      }
      return new SafetensorsFile(file, fd, size, tensors, metadata);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(this.file, `no tensor named "${name}"`);
    return t;
  }

  /** Raw bytes of one tensor (positioned read). */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    const buf = Buffer.allocUnsafe(t.end - t.begin);
    this.readInto(name, buf);
    return buf;
  }

  /** Positioned read of one tensor's bytes into dst (exactly its byte length), in chunks of at most 1 GiB. */
  private readInto(name: string, dst: Uint8Array): void {
    const t = this.info(name);
    if (this.fd === null) throw new SafetensorsError(this.file, 'file is closed');
    const len = t.end - t.begin;
    let done = 0;
    while (done < len) {
      const chunk = Math.min(len - done, 1 << 30);
      const got = fs.readSync(this.fd, dst, done, chunk, t.begin + done);
      if (got <= 0) throw new SafetensorsError(this.file, `tensor "${name}": unexpected end of file`);
      done += got;
    }
  }

  /** One tensor, widened to float32 (floats) or int32 (integers, bool). */
  read(name: string): TensorData {
    const t = this.info(name);
    const count = numel(t.shape);
    // F32/I32 need no conversion: read straight into the result (no second copy of a large tensor).
    if (t.dtype === 'F32' || t.dtype === 'I32') {
      const data = t.dtype === 'F32' ? new Float32Array(count) : new Int32Array(count);
      this.readInto(name, new Uint8Array(data.buffer));
      return { dtype: t.dtype === 'F32' ? 'float32' : 'int32', shape: [...t.shape], data };
    }
    const data = decodeBytes(this.readBytes(name), t.dtype, count, `tensor "${name}"`, this.file);
    return { dtype: data instanceof Float32Array ? 'float32' : 'int32', shape: [...t.shape], data };
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

/**
 * The first top-level key of a JSON object text that occurs twice, or null. JSON.parse keeps the last duplicate
 * silently, so a file naming a tensor twice would otherwise load one of them without a word. The text must be
 * valid JSON (checked before).
 */
export function duplicateKey(text: string): string | null {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \\ */ ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */ && depth === 1) {
      expectKey = true;
    }
  }
  return null;
}

/**
 * What JSON.parse cannot see in a header text (valid JSON, checked before), as the reference library refuses it:
 * a key twice in one object (a tensor named twice; a field twice inside an entry), and numbers that are not written
 * as integers (`2.0`, `1e3`, `-0`: shapes and offsets are integers, and nothing else in a header is a number).
 * Returns the message, or null.
 */
export function headerProblem(text: string): string | null {
  const p = headerProblems(text);
  return p.duplicate ?? p.number;
}

/** headerProblem's two kinds of finding, the first of each. */
export function headerProblems(text: string): { duplicate: string | null; number: string | null } {
  let number: string | null = null;
  interface Frame { obj: boolean; keys: Set<string>; expectKey: boolean; lastKey: string | null }
  const stack: Frame[] = [];
  const where = () => (stack.length >= 2 && stack[0].lastKey !== null ? `tensor "${printable(stack[0].lastKey)}": ` : '');
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const top = stack[stack.length - 1];
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      if (top && top.obj && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) {
          return {
            number,
            duplicate: stack.length === 1 ? `header names tensor "${printable(key)}" more than once`
              : `${where()}field "${printable(key)}" appears more than once in one header object`,
          };
        }
        top.keys.add(key);
        top.lastKey = key;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      stack.push({ obj: c === 0x7b, keys: new Set(), expectKey: c === 0x7b, lastKey: null });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      if (top?.obj) top.expectKey = true;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      let j = i;
      while (j < text.length && /[-+0-9.eE]/.test(text[j])) j++;
      const tok = text.slice(i, j);
      // (negative integers and integers beyond 2^53 are left to the entry checks, which name the field)
      if (number === null && (!/^-?(0|[1-9][0-9]*)$/.test(tok) || tok === '-0')) {
        number = `${where()}number ${tok.slice(0, 32)} is not a non-negative integer (shapes and offsets are integers)`;
      }
      i = j - 1;
    }
  }
  return { duplicate: null, number };
}

function validateEntry(file: string, name: string, raw: unknown, dataStart: number, size: number): TensorInfo {
  const bad = (msg: string) => new SafetensorsError(file, `tensor "${printable(name)}": ${msg}`);
  if (raw === null || typeof raw !== 'object') throw bad('header entry is not an object');
  const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (!isDType(e.dtype)) {
    throw bad(`unsupported dtype ${brief(e.dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
  }
  const dtype = e.dtype as SafetensorsDType;
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw bad(`shape ${brief(e.shape, 200)} is not a list of non-negative integers below 2^53`);
  }
  const shape = e.shape as number[];
  // Every dimension and the product of the non-zero ones must be exact (a 0 dimension does not excuse a 2^60 one).
  let nz = 1;
  for (const d of shape) if (d > 0) nz *= d;
  if (!Number.isSafeInteger(nz * DTYPE_SIZE[dtype])) throw bad(`shape ${brief(shape, 200)} has more elements than can be addressed (beyond 2^53 bytes)`);
  if (!Array.isArray(e.data_offsets) || e.data_offsets.length !== 2 || !e.data_offsets.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw bad(`data_offsets ${brief(e.data_offsets)} is not [begin, end]`);
  }
  const [b, en] = e.data_offsets as number[];
  if (en < b) throw bad(`data_offsets end ${en} < begin ${b}`);
  const expected = numel(shape) * DTYPE_SIZE[dtype];
  if (en - b !== expected) throw bad(`holds ${en - b} bytes but ${dtype}${brief(shape, 200)} needs ${expected}`);
  if (dataStart + en > size) throw bad(`data ends at byte ${dataStart + en}, past the end of the file (${size} bytes): truncated file?`);
  return { name, dtype, shape, begin: dataStart + b, end: dataStart + en };
}

/** Reads every tensor of a (small) file. */
export function loadSafetensors(file: string): Map<string, TensorData> {
  const f = SafetensorsFile.open(file);
  try {
    const out = new Map<string, TensorData>();
    for (const name of f.names()) out.set(name, f.read(name));
    return out;
  } finally {
    f.close();
  }
}

// ---------- writer ----------

export interface TensorToWrite {
  dtype: SafetensorsDType;
  shape: number[];
  /** Raw little-endian bytes, or typed data that is converted (Float32Array → F32/F16/BF16, Int32Array → I32/I64/…). */
  data: Uint8Array | Float32Array | Int32Array | Float64Array | (() => Uint8Array | Float32Array | Int32Array | Float64Array);
}

function encode(name: string, t: TensorToWrite, data: Uint8Array | Float32Array | Int32Array | Float64Array): Uint8Array {
  const n = numel(t.shape);
  const size = DTYPE_SIZE[t.dtype];
  if (data instanceof Uint8Array && !(t.dtype === 'U8' || t.dtype === 'BOOL' || t.dtype === 'I8') ) {
    if (data.byteLength !== n * size) throw new Error(`tensor "${name}": ${data.byteLength} bytes given, ${t.dtype}${JSON.stringify(t.shape)} needs ${n * size}`);
    return data;
  }
  if (data.length !== n) throw new Error(`tensor "${name}": ${data.length} elements given, shape ${JSON.stringify(t.shape)} needs ${n}`);
  const out = new Uint8Array(n * size);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const v = data[i];
    switch (t.dtype) {
      case 'F32': dv.setFloat32(4 * i, v, true); break;
      case 'F64': dv.setFloat64(8 * i, v, true); break;
      case 'F16': dv.setUint16(2 * i, toF16Bits(v), true); break;
      case 'BF16': dv.setUint16(2 * i, toBF16Bits(v), true); break;
      case 'I64': dv.setBigInt64(8 * i, BigInt(Math.trunc(v)), true); break;
      case 'I32': dv.setInt32(4 * i, v, true); break;
      case 'I16': dv.setInt16(2 * i, v, true); break;
      case 'I8': dv.setInt8(i, v); break;
      case 'U8': dv.setUint8(i, v); break;
      case 'BOOL': dv.setUint8(i, v ? 1 : 0); break;
    }
  }
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits, round to nearest even (as torch). */
export function toBF16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 → float16 bits, round to nearest even. */
export function toF16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) { r = 0; e++; if (e >= 31) return sign | 0x7c00; }
  }
  return sign | (e << 10) | r;
}

/**
 * Writes a safetensors file atomically: to `file.tmp-<pid>` first, renamed into place at the end, so an
 * interrupted write never leaves a half-written file under the real name (the temporary file is also removed on
 * SIGINT/SIGTERM). Tensors are written one at a time (data may be a thunk), so files larger than memory or 4 GB
 * work. Only an absent path or a regular file is replaced.
 */
export function saveSafetensors(file: string, tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>, metadata: Record<string, string> = { format: 'pt' }): void {
  for (const _ of saveSafetensorsSteps(file, tensors, metadata)) { /* run to the end */ }
}

/** saveSafetensors as steps: yields after each tensor (a caller may await between steps to stay interruptible). */
export function* saveSafetensorsSteps(file: string, tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>, metadata: Record<string, string> = { format: 'pt' }): Generator<void, void, void> {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  // No prototype: a tensor named __proto__ is an ordinary key here.
  const header = Object.create(null) as Record<string, unknown>;
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === '__metadata__') throw new Error(`${file}: "__metadata__" is reserved and cannot name a tensor`);
    if (!isDType(t.dtype)) throw new Error(`${file}: tensor "${name}": unsupported dtype ${t.dtype}`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(`${file}: tensor "${name}": shape ${JSON.stringify(t.shape)} is not a list of non-negative integers`);
    }
    const bytes = numel(t.shape) * DTYPE_SIZE[t.dtype];
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const hbuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(hbuf.length));
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  assertReplaceable(file);
  const tmp = `${file}.tmp-${process.pid}`;
  const untrack = trackTemporary(tmp);
  const fd = fs.openSync(tmp, 'w');
  let done = false;
  try {
    let pos = 0;
    const write = (b: Uint8Array) => {
      let done = 0;
      while (done < b.byteLength) {
        const n = fs.writeSync(fd, b, done, Math.min(b.byteLength - done, 1 << 30), pos);
        done += n;
        pos += n;
      }
    };
    write(lenBuf);
    write(hbuf);
    for (const [name, t] of entries) {
      const raw = typeof t.data === 'function' ? t.data() : t.data;
      write(encode(name, t, raw));
      yield;
    }
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
    done = true;
  } finally {
    // An error, or a caller that stopped the steps early: nothing half-written stays behind.
    if (!done) {
      try { fs.closeSync(fd); } catch { /* already closed */ }
      try { fs.unlinkSync(tmp); } catch { /* nothing to remove */ }
    }
    untrack();
  }
}
