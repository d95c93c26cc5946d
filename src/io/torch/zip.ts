// A read-only ZIP reader for PyTorch archives: the central directory (ZIP64 aware, for files of 4 GB and more),
// STORED entries read with positioned reads (never loading a multi-GB entry at once), DEFLATE entries inflated
// whole (only small ones: TorchScript's code/ files, a compressed pickle). Every offset and size is checked
// against the file size before anything is allocated, so a corrupt or hostile file fails with a TorchFileError
// instead of a huge allocation or a read past the end.
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { TorchFileError } from './errors.js';
import { FileRefusedError, openRegularFile } from '../files.js';

export interface ZipEntry {
  name: string;
  /** 0 = STORED, 8 = DEFLATE. */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  localHeaderOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

/** Largest DEFLATE entry we inflate in memory (pickles and TorchScript sources are small). */
export const MAX_INFLATE = 512 * 1024 * 1024;

export class ZipArchive {
  readonly file: string;
  readonly size: number;
  /** Entries in central-directory order. */
  readonly entries: ZipEntry[];
  private readonly byName = new Map<string, ZipEntry>();
  private readonly dataOffsets = new Map<ZipEntry, number>();
  private fd: number | null;

  private constructor(file: string, fd: number, size: number, entries: ZipEntry[]) {
    this.file = file;
    this.fd = fd;
    this.size = size;
    this.entries = entries;
    for (const e of entries) {
      if (this.byName.has(e.name)) throw new TorchFileError(file, `zip: duplicate entry "${e.name}"`);
      this.byName.set(e.name, e);
    }
  }

  static open(file: string): ZipArchive {
    let fd: number;
    let size: number;
    try {
      ({ fd, size } = openRegularFile(file, 'checkpoint'));
    } catch (e) {
      throw new TorchFileError(file, (e as FileRefusedError).reason ?? (e as Error).message);
    }
    try {
      return new ZipArchive(file, fd, size, readCentralDirectory(file, fd, size));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  get(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** Absolute file offset of an entry's data: from the LOCAL header (its extra field differs from the central one). */
  dataOffset(e: ZipEntry): number {
    let off = this.dataOffsets.get(e);
    if (off !== undefined) return off;
    const h = this.pread(e.localHeaderOffset, 30, `local header of "${e.name}"`);
    if (h.readUInt32LE(0) !== SIG_LOCAL) throw new TorchFileError(this.file, `zip: entry "${e.name}": bad local header signature at byte ${e.localHeaderOffset}`);
    const nameLen = h.readUInt16LE(26);
    const extraLen = h.readUInt16LE(28);
    off = e.localHeaderOffset + 30 + nameLen + extraLen;
    if (off + e.compressedSize > this.size) {
      throw new TorchFileError(this.file, `zip: entry "${e.name}" (${e.compressedSize} bytes at ${off}) runs past the end of the file (${this.size} bytes): truncated file?`);
    }
    this.dataOffsets.set(e, off);
    return off;
  }

  /** `length` bytes of a STORED entry starting at `offset` within the entry. */
  readRange(e: ZipEntry, offset: number, length: number): Buffer {
    if (e.method !== 0) throw new TorchFileError(this.file, `zip: entry "${e.name}" is compressed (method ${e.method}); tensor data must be STORED`);
    if (offset < 0 || length < 0 || offset + length > e.size) {
      throw new TorchFileError(this.file, `zip: read of bytes [${offset}, ${offset + length}) is outside entry "${e.name}" (${e.size} bytes)`);
    }
    return this.pread(this.dataOffset(e) + offset, length, `entry "${e.name}"`);
  }

  /** The whole entry, inflated when compressed. */
  readAll(e: ZipEntry, maxSize = Number.MAX_SAFE_INTEGER): Buffer {
    if (e.size > maxSize) throw new TorchFileError(this.file, `zip: entry "${e.name}" is ${e.size} bytes, more than the ${maxSize} allowed for it`);
    if (e.method === 0) {
      if (e.compressedSize !== e.size) throw new TorchFileError(this.file, `zip: STORED entry "${e.name}" has compressed size ${e.compressedSize} != size ${e.size}`);
      return this.readRange(e, 0, e.size);
    }
    if (e.method !== 8) throw new TorchFileError(this.file, `zip: entry "${e.name}" uses compression method ${e.method} (only STORED and DEFLATE are supported)`);
    // Never inflate beyond the file's own size (a zip bomb costs at most what the file would).
    if (e.size > Math.min(MAX_INFLATE, this.size)) throw new TorchFileError(this.file, `zip: compressed entry "${e.name}" claims ${e.size} bytes uncompressed, more than this reader inflates (${Math.min(MAX_INFLATE, this.size)})`);
    const raw = this.pread(this.dataOffset(e), e.compressedSize, `entry "${e.name}"`);
    let out: Buffer;
    try {
      out = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) });
    } catch (err) {
      throw new TorchFileError(this.file, `zip: cannot inflate entry "${e.name}": ${(err as Error).message}`);
    }
    if (out.length !== e.size) throw new TorchFileError(this.file, `zip: entry "${e.name}" inflates to ${out.length} bytes, the directory says ${e.size}`);
    return out;
  }

  /** Checks an entry's CRC-32 (cheap for pickles; catches corrupt files before parsing). */
  checkCrc(e: ZipEntry, data: Uint8Array): void {
    const crc = zlib.crc32(data) >>> 0;
    if (crc !== e.crc32) throw new TorchFileError(this.file, `zip: entry "${e.name}" fails its CRC-32 check (corrupt file)`);
  }

  private pread(pos: number, length: number, what: string): Buffer {
    if (this.fd === null) throw new TorchFileError(this.file, 'file is closed');
    if (pos < 0 || pos + length > this.size) throw new TorchFileError(this.file, `zip: ${what}: bytes [${pos}, ${pos + length}) lie outside the file (${this.size} bytes)`);
    return preadFully(this.file, this.fd, pos, length, what);
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

function preadFully(file: string, fd: number, pos: number, length: number, what: string): Buffer {
  const buf = Buffer.allocUnsafeSlow(length); // own ArrayBuffer (not the pool): safe to view as typed arrays
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, Math.min(length - done, 1 << 30), pos + done);
    if (n <= 0) throw new TorchFileError(file, `zip: ${what}: unexpected end of file`);
    done += n;
  }
  return buf;
}

function u64(file: string, b: Buffer, at: number, what: string): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new TorchFileError(file, `zip: ${what} ${v} is out of range`);
  return Number(v);
}

function readCentralDirectory(file: string, fd: number, size: number): ZipEntry[] {
  if (size < 22) throw new TorchFileError(file, `not a zip archive (${size} bytes): PyTorch files since 1.6 are zip archives`);
  // The end-of-central-directory record sits in the last 22 + 65535 (comment) bytes.
  const tailLen = Math.min(size, 22 + 65535 + 20);
  const tail = preadFully(file, fd, size - tailLen, tailLen, 'end of central directory');
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG_EOCD) { eocd = i; break; }
  }
  if (eocd < 0) {
    throw new TorchFileError(file, 'not a zip archive (no end-of-central-directory record): not a PyTorch checkpoint, or truncated');
  }
  let entries = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  const eocdAbs = size - tailLen + eocd;
  // ZIP64: a locator 20 bytes before the EOCD points at the ZIP64 EOCD record with 64-bit fields.
  if (eocd >= 20 && tail.readUInt32LE(eocd - 20) === SIG_ZIP64_LOCATOR) {
    const z64Offset = u64(file, tail, eocd - 20 + 8, 'ZIP64 EOCD offset');
    if (z64Offset + 56 > eocdAbs) throw new TorchFileError(file, `zip: ZIP64 end record offset ${z64Offset} is invalid`);
    const z = preadFully(file, fd, z64Offset, 56, 'ZIP64 end record');
    if (z.readUInt32LE(0) !== SIG_ZIP64_EOCD) throw new TorchFileError(file, `zip: bad ZIP64 end record signature at byte ${z64Offset}`);
    entries = u64(file, z, 32, 'ZIP64 entry count');
    cdSize = u64(file, z, 40, 'ZIP64 central directory size');
    cdOffset = u64(file, z, 48, 'ZIP64 central directory offset');
  } else if (entries === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    throw new TorchFileError(file, 'zip: the end record asks for ZIP64 but there is no ZIP64 locator (truncated file?)');
  }
  if (cdOffset + cdSize > eocdAbs) {
    throw new TorchFileError(file, `zip: central directory [${cdOffset}, ${cdOffset + cdSize}) overlaps the end record at ${eocdAbs}: truncated or corrupt file`);
  }
  if (entries * 46 > cdSize) throw new TorchFileError(file, `zip: ${entries} entries cannot fit in a ${cdSize}-byte central directory`);
  const cd = preadFully(file, fd, cdOffset, cdSize, 'central directory');
  const out: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < entries; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) {
      throw new TorchFileError(file, `zip: central directory entry ${i} is corrupt (at byte ${cdOffset + p})`);
    }
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc32 = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let uncompressed = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cd.length) throw new TorchFileError(file, `zip: central directory entry ${i} runs past the directory`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    if (flags & 1) throw new TorchFileError(file, `zip: entry "${name}" is encrypted`);
    // ZIP64 extended information (id 1): present fields are exactly those whose 32-bit value is saturated.
    let q = p + 46 + nameLen;
    const extraEnd = q + extraLen;
    while (q + 4 <= extraEnd) {
      const id = cd.readUInt16LE(q);
      const len = cd.readUInt16LE(q + 2);
      if (q + 4 + len > extraEnd) throw new TorchFileError(file, `zip: entry "${name}": extra field runs past its end`);
      if (id === 1) {
        let r = q + 4;
        const take = (what: string) => {
          if (r + 8 > q + 4 + len) throw new TorchFileError(file, `zip: entry "${name}": ZIP64 extra field too short for ${what}`);
          const v = u64(file, cd, r, `entry "${name}" ${what}`);
          r += 8;
          return v;
        };
        if (uncompressed === 0xffffffff) uncompressed = take('size');
        if (compressedSize === 0xffffffff) compressedSize = take('compressed size');
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = take('header offset');
      }
      q += 4 + len;
    }
    if (localHeaderOffset + 30 > cdOffset || localHeaderOffset + 30 + compressedSize > cdOffset) {
      throw new TorchFileError(file, `zip: entry "${name}" (${compressedSize} bytes at ${localHeaderOffset}) overlaps the central directory: corrupt file`);
    }
    if (method === 0 && compressedSize !== uncompressed) {
      throw new TorchFileError(file, `zip: STORED entry "${name}" has compressed size ${compressedSize} != size ${uncompressed}`);
    }
    out.push({ name, method, compressedSize, size: uncompressed, crc32, localHeaderOffset });
    p = end;
  }
  return out;
}
