// PNG encoding and decoding (8-bit greyscale / RGB / RGBA, non-interlaced) with node:zlib, and atomic writes.
// Enough for the pipeline's outputs and for reading them back in tests; not a general PNG library.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

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

/** Encodes an 8-bit image as PNG (filter type 0 on every row; zlib does the work). */
export function encodePng(img: RawImage): Buffer {
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
  return Buffer.concat([SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw, { level: 6 })), chunk('IEND', new Uint8Array(0))]);
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Decodes an 8-bit, non-interlaced greyscale/RGB/RGBA PNG (all five row filters); other kinds are an error. */
export function decodePng(buf: Uint8Array, what = 'PNG'): RawImage {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 8 || !b.subarray(0, 8).equals(SIGNATURE)) throw new Error(`${what}: not a PNG file (bad signature)`);
  let pos = 8;
  let width = 0, height = 0, channels: 1 | 3 | 4 = 3;
  const idat: Buffer[] = [];
  let sawEnd = false;
  while (pos + 12 <= b.length) {
    const len = b.readUInt32BE(pos);
    const type = b.toString('latin1', pos + 4, pos + 8);
    if (pos + 12 + len > b.length) throw new Error(`${what}: truncated ${type} chunk`);
    const body = b.subarray(pos + 8, pos + 8 + len);
    const crc = (crc32(b.subarray(pos + 4, pos + 8 + len)) ^ 0xffffffff) >>> 0;
    if (crc !== b.readUInt32BE(pos + 8 + len)) throw new Error(`${what}: CRC mismatch in ${type} chunk`);
    if (type === 'IHDR') {
      width = body.readUInt32BE(0);
      height = body.readUInt32BE(4);
      const depth = body[8], ct = body[9], interlace = body[12];
      if (depth !== 8 || !(ct in CHANNELS_OF) || interlace !== 0) {
        throw new Error(`${what}: unsupported PNG (bit depth ${depth}, colour type ${ct}, interlace ${interlace}); only 8-bit grey/RGB/RGBA, non-interlaced`);
      }
      channels = CHANNELS_OF[ct];
    } else if (type === 'IDAT') {
      idat.push(body);
    } else if (type === 'IEND') {
      sawEnd = true;
      break;
    }
    pos += 12 + len;
  }
  if (!width || !sawEnd) throw new Error(`${what}: incomplete PNG (missing IHDR or IEND)`);
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  if (raw.length !== (stride + 1) * height) throw new Error(`${what}: image data has ${raw.length} bytes, expected ${(stride + 1) * height}`);
  const out = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const dst = y * stride;
    for (let x = 0; x < stride; x++) {
      const v = raw[src + x];
      const a = x >= channels ? out[dst + x - channels] : 0;
      const up = y > 0 ? out[dst - stride + x] : 0;
      const c = x >= channels && y > 0 ? out[dst - stride + x - channels] : 0;
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
  return { width, height, channels, data: out };
}

/** Writes a file atomically: to a temporary file in the same folder, then rename (no half-written outputs). */
export function writeFileAtomic(file: string, data: Uint8Array): void {
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
}

export function writePng(file: string, img: RawImage): void {
  writeFileAtomic(file, encodePng(img));
}

export function readPng(file: string): RawImage {
  return decodePng(fs.readFileSync(file), file);
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
