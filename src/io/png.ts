// PNG encoding (8-bit greyscale / RGB / RGBA) and decoding (every PNG kind with at most 8 bits per sample,
// interlaced or not) with node:zlib, and atomic writes. Decoding treats the file as hostile (see decodePng).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { assertReplaceable, removeStaleWriteTemps, trackTemporary } from './files.js';

export interface RawImage {
  width: number;
  height: number;
  /** 1 (grey), 3 (RGB) or 4 (RGBA) */
  channels: 1 | 3 | 4;
  /** Row-major, interleaved channels, length width·height·channels. */
  data: Uint8Array;
}

const SIGNATURE = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const COLOR_TYPE: Record<number, number> = { 1: 0, 3: 2, 4: 6 };
const CHANNELS_OF: Record<number, 1 | 3 | 4> = { 0: 1, 2: 3, 6: 4 };

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Uint8Array, crc = 0xffffffff): number {
  for (let i = 0; i < buf.length; i++) crc = CRC_TABLE[(crc ^ buf[i]) & 0xff] ^ (crc >>> 8);
  return crc;
}

function chunk(type: string, body: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, 'latin1');
  Buffer.from(body.buffer, body.byteOffset, body.byteLength).copy(out, 8);
  const crc = crc32(out.subarray(4, 8 + body.length)) ^ 0xffffffff;
  out.writeUInt32BE(crc >>> 0, 8 + body.length);
  return out;
}

/**
 * A tEXt chunk: a Latin-1 keyword (1-79 characters) and a Latin-1 text. Characters beyond Latin-1 are refused:
 * callers with Unicode text escape it first (provenance writes ASCII JSON).
 */
function textChunk(keyword: string, text: string): Buffer {
  if (!/^[\x20-\x7e\xa1-\xff]{1,79}$/.test(keyword) || /^ | $|  /.test(keyword)) throw new Error(`encodePng: bad tEXt keyword ${JSON.stringify(keyword)}`);
  if (/[^\x00-\xff]/.test(text) || text.includes('\0')) throw new Error(`encodePng: tEXt "${keyword}" must be Latin-1 without NUL characters`);
  return chunk('tEXt', Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0]), Buffer.from(text, 'latin1')]));
}

/**
 * The tEXt chunks of a PNG (keyword → text, Latin-1), read without decoding the image. Chunk lengths are checked
 * against the buffer; at most `maxBytes` of text in all (default 1 MB). Not a PNG, or a chunk past the end: an error
 * naming `what`.
 */
export function readPngText(buf: Uint8Array, what = 'PNG', maxBytes = 1 << 20): Record<string, string> {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 8 || !b.subarray(0, 8).equals(Buffer.from(SIGNATURE))) throw new Error(`${what}: not a PNG file (bad signature)`);
  const out: Record<string, string> = Object.create(null);
  let total = 0;
  for (let pos = 8; pos + 8 <= b.length;) {
    const len = b.readUInt32BE(pos);
    const type = b.toString('latin1', pos + 4, pos + 8);
    if (len > b.length - pos - 12) throw new Error(`${what}: chunk "${type.replace(/[^\x20-\x7e]/g, '?')}" at byte ${pos} runs past the end of the file`);
    if (type === 'tEXt') {
      total += len;
      if (total > maxBytes) throw new Error(`${what}: more than ${maxBytes} bytes of tEXt chunks`);
      const body = b.subarray(pos + 8, pos + 8 + len);
      const nul = body.indexOf(0);
      if (nul > 0) out[body.toString('latin1', 0, nul)] = body.toString('latin1', nul + 1);
    }
    if (type === 'IEND') break;
    pos += 12 + len;
  }
  return out;
}

/** Encodes an 8-bit image as PNG (filter type 0 on every row; zlib does the work), with optional tEXt chunks. */
export function encodePng(img: RawImage, text: Record<string, string> = {}): Buffer {
  const { width, height, channels, data } = img;
  if (!(Number.isInteger(width) && width > 0 && Number.isInteger(height) && height > 0)) throw new Error(`encodePng: bad size ${width}x${height}`);
  if (!(channels in COLOR_TYPE)) throw new Error(`encodePng: channels must be 1, 3 or 4, got ${channels}`);
  const stride = width * channels;
  if (data.length !== stride * height) throw new Error(`encodePng: data has ${data.length} bytes, expected ${stride * height} (${width}x${height}x${channels})`);
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0;
    raw.set(data.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = COLOR_TYPE[channels];
  ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0; // deflate, adaptive filtering, no interlace
  const texts = Object.entries(text).map(([k, v]) => textChunk(k, v));
  return Buffer.concat([SIGNATURE, chunk('IHDR', ihdr), ...texts, chunk('IDAT', zlib.deflateSync(raw, { level: 6 })), chunk('IEND', new Uint8Array(0))]);
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Limits applied before any pixel memory is allocated (the header is read first). */
export interface PngLimits {
  /** Largest width·height accepted (default 100 megapixels, as jpeg-js's default). */
  maxPixels?: number;
}

export const DEFAULT_MAX_PIXELS = 100_000_000;

/** Valid bit depths per colour type (PNG spec table 11.1). */
const DEPTHS: Record<number, number[]> = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };
/** Samples per pixel per colour type (palette: one index). */
const SAMPLES: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const COLOUR_NAME: Record<number, string> = { 0: 'grey', 2: 'RGB', 3: 'palette', 4: 'grey+alpha', 6: 'RGBA' };
/** Adam7 passes: x start, y start, x step, y step. */
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];

/** Undoes the row filters of one (sub-)image in place of `out` (rows of `rowBytes`), reading from raw at `pos`. */
function unfilter(raw: Uint8Array, pos: number, rows: number, rowBytes: number, bpp: number, out: Uint8Array, what: string): void {
  for (let y = 0; y < rows; y++) {
    const f = raw[pos + y * (rowBytes + 1)];
    const src = pos + y * (rowBytes + 1) + 1;
    const dst = y * rowBytes;
    for (let x = 0; x < rowBytes; x++) {
      const v = raw[src + x];
      const a = x >= bpp ? out[dst + x - bpp] : 0;
      const up = y > 0 ? out[dst - rowBytes + x] : 0;
      const c = x >= bpp && y > 0 ? out[dst - rowBytes + x - bpp] : 0;
      let r: number;
      switch (f) {
        case 0: r = v; break;
        case 1: r = v + a; break;
        case 2: r = v + up; break;
        case 3: r = v + ((a + up) >> 1); break;
        case 4: r = v + paeth(a, up, c); break;
        default: throw new Error(`${what}: bad filter type ${f} on row ${y}`);
      }
      out[dst + x] = r & 0xff;
    }
  }
}

/**
 * Decodes a PNG to 8-bit samples: grey (1 channel), RGB (3) or RGBA (4). Accepts every 8-bit-or-less kind PIL
 * reads: grey at 1/2/4/8 bits (scaled to 0–255 as PIL does), RGB, RGBA, grey+alpha (returned as RGBA with the grey
 * replicated), palette at 1/2/4/8 bits (expanded to RGB through PLTE; tRNS ignored, as convert("RGB") does;
 * indices past the palette are black), interlaced (Adam7) or not. 16-bit samples are refused.
 * Every length in the file is treated as hostile: chunk lengths are checked against the file before reading,
 * IHDR must be exactly 13 bytes and first, the size is checked against `limits.maxPixels` BEFORE inflating, and
 * inflation is bounded by zlib's maxOutputLength to exactly the bytes the header allows. Errors start with `what`.
 */
export function decodePng(buf: Uint8Array, what = 'PNG', limits: PngLimits = {}): RawImage {
  const maxPixels = limits.maxPixels ?? DEFAULT_MAX_PIXELS;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 8 || !b.subarray(0, 8).equals(SIGNATURE)) throw new Error(`${what}: not a PNG file (bad signature)`);
  let pos = 8;
  let hdr: { width: number; height: number; depth: number; ct: number; interlace: number } | undefined;
  let palette: Uint8Array | undefined;
  const idat: Buffer[] = [];
  let sawEnd = false;
  while (pos < b.length) {
    if (pos + 12 > b.length) throw new Error(`${what}: truncated chunk header at byte ${pos} (file has ${b.length} bytes)`);
    const len = b.readUInt32BE(pos);
    const type = b.toString('latin1', pos + 4, pos + 8);
    if (!/^[A-Za-z]{4}$/.test(type)) throw new Error(`${what}: bad chunk type ${JSON.stringify(type)} at byte ${pos}`);
    if (len > 0x7fffffff) throw new Error(`${what}: ${type} chunk length ${len} exceeds PNG's limit of 2^31-1`);
    if (len > b.length - pos - 12) throw new Error(`${what}: truncated ${type} chunk (length ${len}, ${b.length - pos - 12} bytes left)`);
    const body = b.subarray(pos + 8, pos + 8 + len);
    const crc = (crc32(b.subarray(pos + 4, pos + 8 + len)) ^ 0xffffffff) >>> 0;
    if (crc !== b.readUInt32BE(pos + 8 + len)) throw new Error(`${what}: CRC mismatch in ${type} chunk`);
    if (!hdr && type !== 'IHDR') throw new Error(`${what}: the first chunk is ${type}, expected IHDR`);
    if (type === 'IHDR') {
      if (hdr) throw new Error(`${what}: more than one IHDR chunk`);
      if (len !== 13) throw new Error(`${what}: IHDR chunk has ${len} bytes, expected 13`);
      const width = body.readUInt32BE(0), height = body.readUInt32BE(4);
      const depth = body[8], ct = body[9], interlace = body[12];
      if (width === 0 || height === 0) throw new Error(`${what}: zero-size image (${width}x${height})`);
      if (width > 0x7fffffff || height > 0x7fffffff) throw new Error(`${what}: size ${width}x${height} exceeds PNG's limit of 2^31-1`);
      if (!(ct in DEPTHS)) throw new Error(`${what}: invalid PNG colour type ${ct}`);
      if (!DEPTHS[ct].includes(depth)) throw new Error(`${what}: invalid bit depth ${depth} for colour type ${ct} (${COLOUR_NAME[ct]})`);
      if (depth === 16) throw new Error(`${what}: 16-bit ${COLOUR_NAME[ct]} PNG is not supported; convert it to 8 bits per sample`);
      if (body[10] !== 0 || body[11] !== 0) throw new Error(`${what}: unknown compression/filter method ${body[10]}/${body[11]}`);
      if (interlace > 1) throw new Error(`${what}: unknown interlace method ${interlace}`);
      if (width * height > maxPixels) throw new Error(`${what}: ${width}x${height} = ${width * height} pixels exceeds the limit of ${maxPixels}`);
      hdr = { width, height, depth, ct, interlace };
    } else if (type === 'PLTE') {
      if (len % 3 !== 0 || len === 0 || len > 768) throw new Error(`${what}: PLTE chunk has ${len} bytes (a multiple of 3, at most 768, expected)`);
      palette = Uint8Array.from(body);
    } else if (type === 'IDAT') {
      idat.push(body);
    } else if (type === 'IEND') {
      sawEnd = true;
      break;
    }
    pos += 12 + len;
  }
  if (!hdr) throw new Error(`${what}: incomplete PNG (no IHDR chunk)`);
  if (!sawEnd) throw new Error(`${what}: incomplete PNG (no IEND chunk)`);
  if (!idat.length) throw new Error(`${what}: no image data (no IDAT chunk)`);
  const { width, height, depth, ct, interlace } = hdr;
  if (ct === 3 && !palette) throw new Error(`${what}: palette image without a PLTE chunk`);
  const samples = SAMPLES[ct];
  const bitsPerPixel = samples * depth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const passes = interlace ? ADAM7 : [[0, 0, 1, 1]];
  const sizes = passes.map(([xs, ys, dx, dy]) => {
    const w = width > xs ? Math.ceil((width - xs) / dx) : 0;
    const h = height > ys ? Math.ceil((height - ys) / dy) : 0;
    return { w, h, rowBytes: Math.ceil((w * bitsPerPixel) / 8) };
  });
  const expected = sizes.reduce((s, p) => s + (p.w && p.h ? (p.rowBytes + 1) * p.h : 0), 0);
  let raw: Buffer;
  try {
    raw = zlib.inflateSync(Buffer.concat(idat), { maxOutputLength: expected });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
      throw new Error(`${what}: image data inflates to more than the ${expected} bytes a ${width}x${height} ${COLOUR_NAME[ct]} image holds`);
    }
    throw new Error(`${what}: corrupt image data (${err.message})`);
  }
  if (raw.length !== expected) throw new Error(`${what}: image data has ${raw.length} bytes, expected ${expected} (truncated?)`);

  const outCh: 1 | 3 | 4 = ct === 0 ? 1 : ct === 2 || ct === 3 ? 3 : 4;
  const out = new Uint8Array(width * height * outCh);
  const maxV = (1 << depth) - 1;
  let off = 0;
  passes.forEach(([xs, ys, dx, dy], pi) => {
    const { w, h, rowBytes } = sizes[pi];
    if (!w || !h) return;
    const rows = new Uint8Array(rowBytes * h);
    unfilter(raw, off, h, rowBytes, bpp, rows, what);
    off += (rowBytes + 1) * h;
    for (let y = 0; y < h; y++) {
      const row = y * rowBytes;
      for (let x = 0; x < w; x++) {
        const o = ((ys + y * dy) * width + xs + x * dx) * outCh;
        if (depth < 8) {
          const bit = x * depth;
          const v = (rows[row + (bit >> 3)] >> (8 - depth - (bit & 7))) & maxV;
          if (ct === 0) out[o] = (v * 255) / maxV;
          else writePalette(out, o, palette!, v);
        } else if (ct === 3) {
          writePalette(out, o, palette!, rows[row + x]);
        } else if (ct === 4) {
          const g = rows[row + 2 * x];
          out[o] = g; out[o + 1] = g; out[o + 2] = g; out[o + 3] = rows[row + 2 * x + 1];
        } else {
          for (let c = 0; c < samples; c++) out[o + c] = rows[row + x * samples + c];
        }
      }
    }
  });
  return { width, height, channels: outCh, data: out };
}

function writePalette(out: Uint8Array, o: number, palette: Uint8Array, index: number): void {
  if (3 * index + 2 < palette.length) {
    out[o] = palette[3 * index]; out[o + 1] = palette[3 * index + 1]; out[o + 2] = palette[3 * index + 2];
  } else {
    out[o] = 0; out[o + 1] = 0; out[o + 2] = 0;
  }
}

/** Writes a file atomically: to a temporary file in the same folder, then rename (no half-written outputs). */
export function writeFileAtomic(file: string, data: Uint8Array): void {
  // Only an absent path or a regular file is ever replaced (never /dev/null, a FIFO, a socket, a link, a folder).
  assertReplaceable(file);
  removeStaleWriteTemps(file, (line) => process.stderr.write(`karlo: ${line}\n`));
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const untrack = trackTemporary(tmp); // removed on SIGINT/SIGTERM/exit if still there
  try {
    fs.writeFileSync(tmp, data, { flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  } finally {
    untrack();
  }
}

/** Writes a PNG atomically, with optional tEXt chunks (e.g. the provenance "parameters"). */
export function writePng(file: string, img: RawImage, text: Record<string, string> = {}): void {
  writeFileAtomic(file, encodePng(img, text));
}

export function readPng(file: string, limits: PngLimits = {}): RawImage {
  return decodePng(fs.readFileSync(file), file, limits);
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Float image(s) in [0, 1], NHWC with 3 channels (the pipeline's output), → 8-bit RGB as diffusers'
 * numpy_to_pil does: round(clip(x, 0, 1)·255). `index` picks one image of the batch.
 */
export function floatToRgb8(data: Float32Array | ArrayLike<number>, shape: readonly number[], index = 0): RawImage {
  if (shape.length !== 4 || shape[3] !== 3) throw new Error(`floatToRgb8: expected NHWC images with 3 channels, got shape [${shape}]`);
  const [n, h, w] = shape;
  if (index < 0 || index >= n) throw new Error(`floatToRgb8: image ${index} out of range (batch ${n})`);
  const size = h * w * 3;
  const out = new Uint8Array(size);
  const off = index * size;
  for (let i = 0; i < size; i++) {
    const v = data[off + i];
    // float32 product, then numpy's round-half-to-even; NaN → 0 explicitly.
    out[i] = Number.isNaN(v) ? 0 : roundHalfEven(Math.fround(Math.fround(Math.min(1, Math.max(0, v))) * 255));
  }
  return { width: w, height: h, channels: 3, data: out };
}
