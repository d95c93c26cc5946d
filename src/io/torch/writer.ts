// Writing torch.save-format archives (zip + protocol-2 pickle), for tests, benchmarks and exporting weights that
// PyTorch loads with torch.load (a diffusers `.bin`). Tensors are written one at a time (data may be a thunk) with
// 64-byte aligned STORED records like torch's writer; ZIP64 records are used when sizes or offsets need them
// (or always, with `zip64: true`).
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import type { SafetensorsDType } from '../safetensors.js';
import { DTYPE_SIZE, isDType } from '../safetensors.js';

/** Builds pickle bytes opcode by opcode (protocol 2). Public so tests can craft arbitrary (hostile) pickles. */
export class PickleWriter {
  private parts: number[] = [];
  private memo = 0;
  op(...bytes: number[]): this {
    this.parts.push(...bytes);
    return this;
  }
  raw(b: Uint8Array): this {
    for (const x of b) this.parts.push(x);
    return this;
  }
  proto(p = 2) { return this.op(0x80, p); }
  stop() { return this.op(0x2e); }
  mark() { return this.op(0x28); }
  none() { return this.op(0x4e); }
  bool(b: boolean) { return this.op(b ? 0x88 : 0x89); }
  int(v: number) {
    if (Number.isInteger(v) && v >= 0 && v < 256) return this.op(0x4b, v);
    if (Number.isInteger(v) && v >= 0 && v < 65536) return this.op(0x4d, v & 0xff, v >> 8);
    if (Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31) {
      const b = Buffer.alloc(4);
      b.writeInt32LE(v);
      return this.op(0x4a, ...b);
    }
    return this.long(BigInt(v));
  }
  long(v: bigint) {
    const bytes: number[] = [];
    let x = v;
    do {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
    } while (!((x === 0n && (bytes[bytes.length - 1] & 0x80) === 0) || (x === -1n && (bytes[bytes.length - 1] & 0x80) !== 0)));
    return this.op(0x8a, bytes.length, ...bytes);
  }
  float(v: number) {
    const b = Buffer.alloc(8);
    b.writeDoubleBE(v);
    return this.op(0x47, ...b);
  }
  str(s: string) {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    return this.op(0x58, ...len).raw(b);
  }
  global(module: string, name: string) {
    return this.op(0x63).raw(Buffer.from(`${module}\n${name}\n`, 'latin1'));
  }
  emptyTuple() { return this.op(0x29); }
  tuple() { return this.op(0x74); }
  emptyDict() { return this.op(0x7d); }
  emptyList() { return this.op(0x5d); }
  setitems() { return this.op(0x75); }
  appends() { return this.op(0x65); }
  reduce() { return this.op(0x52); }
  build() { return this.op(0x62); }
  newobj() { return this.op(0x81); }
  binpersid() { return this.op(0x51); }
  put() {
    const i = this.memo++;
    return i < 256 ? this.op(0x71, i) : this.op(0x72, i & 0xff, (i >> 8) & 0xff, (i >> 16) & 0xff, i >>> 24);
  }
  /** A tuple of ints. */
  ints(xs: number[]) {
    this.mark();
    for (const x of xs) this.int(x);
    return this.tuple();
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

export const STORAGE_CLASS: Record<SafetensorsDType, string> = {
  F32: 'FloatStorage', F64: 'DoubleStorage', F16: 'HalfStorage', BF16: 'BFloat16Storage', I64: 'LongStorage',
  I32: 'IntStorage', I16: 'ShortStorage', I8: 'CharStorage', U8: 'ByteStorage', BOOL: 'BoolStorage',
};

export interface TensorToSave {
  dtype: SafetensorsDType;
  shape: number[];
  /** Raw little-endian bytes (numel × element size), or a thunk producing them (called once, while writing). */
  data: Uint8Array | (() => Uint8Array);
}

/**
 * Pickles `OrderedDict(name → _rebuild_tensor_v2(storage key i, 0, shape, contiguous stride, False, OrderedDict()))`,
 * wrapped as `{"state_dict": ...}` when `lightning` (Karlo's .ckpt layout). Returns the pickle and the storage order.
 */
export function pickleStateDict(names: string[], tensors: Map<string, { dtype: SafetensorsDType; shape: number[] }>, lightning = false): Uint8Array {
  const w = new PickleWriter().proto(2);
  if (lightning) w.emptyDict().put().mark().str('epoch').int(0).str('global_step').int(0).str('state_dict');
  w.global('collections', 'OrderedDict').put().emptyTuple().reduce().put().mark();
  names.forEach((name, i) => {
    const t = tensors.get(name)!;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const stride: number[] = [];
    let s = 1;
    for (let d = t.shape.length - 1; d >= 0; d--) { stride[d] = s; s *= t.shape[d]; }
    w.str(name);
    w.global('torch._utils', '_rebuild_tensor_v2').put();
    w.mark();
    w.mark().str('storage').global('torch', STORAGE_CLASS[t.dtype]).put().str(String(i)).str('cpu').int(numel).tuple().binpersid();
    w.int(0).ints(t.shape).ints(stride).bool(false);
    w.global('collections', 'OrderedDict').emptyTuple().reduce();
    w.tuple().reduce().put();
  });
  w.setitems();
  if (lightning) w.setitems();
  return w.stop().bytes();
}

export interface ZipRecord {
  name: string;
  data: Uint8Array | (() => Uint8Array);
  /** Known size (required for thunks, so offsets can be planned without materialising data). */
  size?: number;
}

/**
 * Writes a zip of STORED records like torch's writer: data 64-byte aligned via a local extra field, CRC-32s,
 * ZIP64 fields when needed (or for every entry with `zip64: true`). `crc: false` writes zero CRCs for the `data/`
 * records (synthetic multi-GB files; our reader checks the CRCs of pickles and small records only).
 */
export function writeZip(file: string, records: ZipRecord[], opts: { zip64?: boolean; crc?: boolean } = {}): void {
  const fd = fs.openSync(file, 'w');
  try {
    let pos = 0;
    const write = (b: Uint8Array) => {
      let done = 0;
      while (done < b.length) {
        const n = fs.writeSync(fd, b, done, Math.min(b.length - done, 1 << 30), pos);
        done += n;
        pos += n;
      }
    };
    const central: Buffer[] = [];
    for (const r of records) {
      const name = Buffer.from(r.name, 'utf8');
      const data = typeof r.data === 'function' ? r.data() : r.data;
      const size = data.length;
      const crc = opts.crc === false && r.name.includes('/data/') ? 0 : zlib.crc32(data) >>> 0;
      const headerOfs = pos;
      const need64 = opts.zip64 || size >= 0xffffffff || headerOfs >= 0xffffffff;
      // Local header: ZIP64 extra (sizes) when needed, then FB padding so the data starts 64-byte aligned.
      const z64Local = need64 ? Buffer.alloc(20) : Buffer.alloc(0);
      if (need64) {
        z64Local.writeUInt16LE(1, 0);
        z64Local.writeUInt16LE(16, 2);
        z64Local.writeBigUInt64LE(BigInt(size), 4);
        z64Local.writeBigUInt64LE(BigInt(size), 12);
      }
      let extraLen = z64Local.length;
      const base = headerOfs + 30 + name.length + extraLen;
      let pad = (64 - ((base + 4) % 64)) % 64;
      const fb = Buffer.alloc(4 + pad);
      fb.writeUInt16LE(0x4246, 0); // 'FB'
      fb.writeUInt16LE(pad, 2);
      extraLen += fb.length;
      const lh = Buffer.alloc(30);
      lh.writeUInt32LE(0x04034b50, 0);
      lh.writeUInt16LE(need64 ? 45 : 20, 4);
      lh.writeUInt16LE(0, 6);
      lh.writeUInt16LE(0, 8);
      lh.writeUInt32LE(crc, 14);
      lh.writeUInt32LE(need64 ? 0xffffffff : size, 18);
      lh.writeUInt32LE(need64 ? 0xffffffff : size, 22);
      lh.writeUInt16LE(name.length, 26);
      lh.writeUInt16LE(extraLen, 28);
      write(lh);
      write(name);
      write(z64Local);
      write(fb);
      if (pos % 64) throw new Error('alignment bug');
      if (size > 0) write(data);
      // Central directory entry: ZIP64 extra with size, compressed size, header offset.
      const z64c = need64 ? Buffer.alloc(28) : Buffer.alloc(0);
      if (need64) {
        z64c.writeUInt16LE(1, 0);
        z64c.writeUInt16LE(24, 2);
        z64c.writeBigUInt64LE(BigInt(size), 4);
        z64c.writeBigUInt64LE(BigInt(size), 12);
        z64c.writeBigUInt64LE(BigInt(headerOfs), 20);
      }
      const ch = Buffer.alloc(46);
      ch.writeUInt32LE(0x02014b50, 0);
      ch.writeUInt16LE(need64 ? 45 : 20, 4);
      ch.writeUInt16LE(need64 ? 45 : 20, 6);
      ch.writeUInt32LE(crc, 16);
      ch.writeUInt32LE(need64 ? 0xffffffff : size, 20);
      ch.writeUInt32LE(need64 ? 0xffffffff : size, 24);
      ch.writeUInt16LE(name.length, 28);
      ch.writeUInt16LE(z64c.length, 30);
      ch.writeUInt32LE(need64 ? 0xffffffff : headerOfs, 42);
      central.push(ch, name, z64c);
    }
    const cdOfs = pos;
    for (const b of central) write(b);
    const cdSize = pos - cdOfs;
    const n = records.length;
    const need64 = opts.zip64 || cdOfs >= 0xffffffff || n >= 0xffff;
    if (need64) {
      const z = Buffer.alloc(56);
      const z64Ofs = pos;
      z.writeUInt32LE(0x06064b50, 0);
      z.writeBigUInt64LE(44n, 4);
      z.writeUInt16LE(45, 12);
      z.writeUInt16LE(45, 14);
      z.writeBigUInt64LE(BigInt(n), 24);
      z.writeBigUInt64LE(BigInt(n), 32);
      z.writeBigUInt64LE(BigInt(cdSize), 40);
      z.writeBigUInt64LE(BigInt(cdOfs), 48);
      write(z);
      const loc = Buffer.alloc(20);
      loc.writeUInt32LE(0x07064b50, 0);
      loc.writeBigUInt64LE(BigInt(z64Ofs), 8);
      loc.writeUInt32LE(1, 16);
      write(loc);
    }
    const e = Buffer.alloc(22);
    e.writeUInt32LE(0x06054b50, 0);
    e.writeUInt16LE(need64 ? 0xffff : n, 8);
    e.writeUInt16LE(need64 ? 0xffff : n, 10);
    e.writeUInt32LE(need64 ? 0xffffffff : cdSize, 12);
    e.writeUInt32LE(need64 ? 0xffffffff : cdOfs, 16);
    write(e);
    fs.closeSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/**
 * torch.save(state_dict) (or a Lightning-style {"state_dict": ...} with `lightning`) to `file`: loadable by
 * torch.load and by TorchCheckpoint. Tensors are written in the given order, one at a time.
 */
export function saveTorchStateDict(file: string, tensors: Map<string, TensorToSave>, opts: { lightning?: boolean; prefix?: string; zip64?: boolean; crc?: boolean } = {}): void {
  const names = [...tensors.keys()];
  const prefix = opts.prefix ?? 'archive';
  for (const [n, t] of tensors) {
    if (!isDType(t.dtype)) throw new Error(`tensor "${n}": unsupported dtype ${t.dtype}`);
  }
  const records: ZipRecord[] = [{ name: `${prefix}/data.pkl`, data: pickleStateDict(names, tensors, opts.lightning) }];
  names.forEach((n, i) => {
    const t = tensors.get(n)!;
    const expected = t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[t.dtype];
    records.push({
      name: `${prefix}/data/${i}`,
      size: expected,
      data: () => {
        const b = typeof t.data === 'function' ? t.data() : t.data;
        if (b.length !== expected) throw new Error(`tensor "${n}": ${b.length} bytes given, ${t.dtype}${JSON.stringify(t.shape)} needs ${expected}`);
        return b;
      },
    });
  });
  records.push({ name: `${prefix}/version`, data: Buffer.from('3\n') });
  writeZip(file, records, opts);
}

/**
 * The legacy (pre-1.6) torch.save stream: magic-number, protocol (1001) and sys_info pickles, the object pickle
 * (`OrderedDict` of `_rebuild_tensor_v2` with 6-tuple persistent ids), the storage-key list, then each storage as an
 * int64 element count and its bytes. For tests of the legacy reader.
 */
export function saveLegacyStateDict(file: string, tensors: Map<string, TensorToSave>): void {
  const head = new PickleWriter();
  head.proto(2).long(0x1950a86a20f9469cfc6cn).stop();
  head.proto(2).int(1001).stop();
  head.proto(2).emptyDict().mark().str('protocol_version').int(1001).str('little_endian').bool(true)
    .str('type_sizes').emptyDict().mark().str('short').int(2).str('int').int(4).str('long').int(4).setitems().setitems().stop();
  head.proto(2).global('collections', 'OrderedDict').emptyTuple().reduce().mark();
  const names = [...tensors.keys()];
  names.forEach((name, i) => {
    const t = tensors.get(name)!;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const stride: number[] = [];
    let s = 1;
    for (let d = t.shape.length - 1; d >= 0; d--) { stride[d] = s; s *= t.shape[d]; }
    head.str(name).global('torch._utils', '_rebuild_tensor_v2').mark();
    head.mark().str('storage').global('torch', STORAGE_CLASS[t.dtype]).str(String(i)).str('cpu').int(numel).none().tuple().binpersid();
    head.int(0).ints(t.shape).ints(stride).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
  });
  head.setitems().stop();
  head.proto(2).emptyList().mark();
  names.forEach((_, i) => head.str(String(i)));
  head.appends().stop();
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, head.bytes());
    for (const n of names) {
      const t = tensors.get(n)!;
      const b = typeof t.data === 'function' ? t.data() : t.data;
      const count = Buffer.alloc(8);
      count.writeBigInt64LE(BigInt(t.shape.reduce((a, x) => a * x, 1)));
      fs.writeSync(fd, count);
      fs.writeSync(fd, b);
    }
  } finally {
    fs.closeSync(fd);
  }
}
