// Reading input images (PNG, JPEG) as 8-bit RGB, height × width × 3, the way PIL's Image.open(f).convert("RGB")
// gives them to the CLIP image processor: grey is replicated to three channels, alpha is dropped (not composited),
// palette images go through their palette.
//
// Libraries. PNG: the project's own decoder (src/io/png.ts, on node:zlib): it already existed for the outputs, is
// ~200 lines we can read end to end, and lets us harden exactly where a hostile file bites (IHDR checked first,
// size bound before inflating, inflation capped with zlib's maxOutputLength); pngjs would add a dependency
// without adding any of those checks. PNG decoding is lossless, so any correct decoder equals PIL.
// JPEG: `@jsquash/jpeg` (Apache-2.0, maintained; the Squoosh app's build of MozJPEG's decoder to WebAssembly,
// 0.6 MB, no native build, runs on every Node). MozJPEG decodes with libjpeg-turbo's code (integer IDCT, "fancy"
// triangle chroma up-sampling, fixed-point YCbCr→RGB), which is what PIL links, so decoded pixels equal PIL's bit
// for bit (test/image.test.ts checks baseline 4:4:4, 4:2:0, progressive and grey JPEGs against PIL 9.4). The
// pure-JS `jpeg-js` was tried first and rejected: it replicates subsampled chroma, and on a 4:2:0 test image its
// pixels differed from PIL's by up to 100 levels (mean 12). `sharp` would also match, but brings a 30 MB libvips
// binary for two decoders. Before the decoder runs, our own marker scan reads the frame header, so CMYK/YCCK,
// 12-bit, lossless, arithmetic-coded, zero-size and oversized JPEGs are refused with a clear message instead of
// being decoded into something else or exhausting memory.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { decodePng, DEFAULT_MAX_PIXELS, type RawImage } from './png.js';

/** An image that cannot be used as input; the message starts with the file name. */
export class ImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImageError';
  }
}

/** 8-bit RGB, row-major, interleaved (HWC), length width·height·3. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export interface ImageReadOptions {
  /** Largest width·height accepted, checked from the header before decoding (default 100 megapixels). */
  maxPixels?: number;
  /** Largest file accepted (default 256 MiB). */
  maxBytes?: number;
}

const DEFAULT_MAX_BYTES = 256 * 1024 * 1024;
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** PIL convert("RGB") of a decoded image: grey → (v, v, v); RGBA → RGB (alpha dropped); RGB as is. */
export function toRgb(img: RawImage, what = 'image'): RgbImage {
  const { width, height, channels, data } = img;
  const n = width * height;
  if (data.length !== n * channels) throw new ImageError(`${what}: ${data.length} bytes for ${width}x${height}x${channels}`);
  if (channels === 3) return { width, height, data };
  if (channels !== 1 && channels !== 4) throw new ImageError(`${what}: ${channels} channels; 1 (grey), 3 (RGB) or 4 (RGBA) expected`);
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    if (channels === 1) {
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = data[i];
    } else {
      out[3 * i] = data[4 * i]; out[3 * i + 1] = data[4 * i + 1]; out[3 * i + 2] = data[4 * i + 2];
    }
  }
  return { width, height, data: out };
}

interface JpegFrame {
  marker: number;
  precision: number;
  width: number;
  height: number;
  componentIds: number[];
}

/** Walks the JPEG markers up to the frame header (SOFn), checking every segment length against the file. */
function scanJpeg(b: Uint8Array, what: string): JpegFrame {
  let pos = 2;
  const u16 = (p: number) => (b[p] << 8) | b[p + 1];
  for (;;) {
    if (pos >= b.length) throw new ImageError(`${what}: truncated JPEG (no frame header)`);
    if (b[pos] !== 0xff) throw new ImageError(`${what}: corrupt JPEG (expected a marker at byte ${pos})`);
    while (pos < b.length && b[pos] === 0xff) pos++; // fill bytes
    if (pos >= b.length) throw new ImageError(`${what}: truncated JPEG (no frame header)`);
    const m = b[pos++];
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; // no length
    if (m === 0xd9) throw new ImageError(`${what}: JPEG ends before its frame header`);
    if (pos + 2 > b.length) throw new ImageError(`${what}: truncated JPEG segment at byte ${pos}`);
    const len = u16(pos);
    if (len < 2 || pos + len > b.length) throw new ImageError(`${what}: JPEG segment 0x${m.toString(16)} has length ${len}, ${b.length - pos} bytes left`);
    const seg = pos + 2;
    if (m === 0xda) throw new ImageError(`${what}: JPEG scan data before the frame header`);
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      if (len < 8) throw new ImageError(`${what}: JPEG frame header has length ${len}`);
      const nf = b[seg + 5];
      if (len < 8 + 3 * nf) throw new ImageError(`${what}: JPEG frame header has length ${len} for ${nf} components`);
      const componentIds = Array.from({ length: nf }, (_, i) => b[seg + 6 + 3 * i]);
      return { marker: m, precision: b[seg], height: u16(seg + 1), width: u16(seg + 3), componentIds };
    }
    pos += len;
  }
}

async function decodeJpeg(b: Uint8Array, what: string, maxPixels: number): Promise<RgbImage> {
  const f = scanJpeg(b, what);
  if (f.marker === 0xc3 || f.marker === 0xc7 || f.marker === 0xcb || f.marker === 0xcf) throw new ImageError(`${what}: lossless JPEG is not supported`);
  if (f.marker >= 0xc9) throw new ImageError(`${what}: arithmetic-coded JPEG is not supported`);
  if (f.marker >= 0xc5) throw new ImageError(`${what}: hierarchical (differential) JPEG is not supported`);
  if (f.precision !== 8) throw new ImageError(`${what}: ${f.precision}-bit JPEG is not supported (8 bits per sample expected)`);
  const nc = f.componentIds.length;
  if (nc === 4) throw new ImageError(`${what}: CMYK/YCCK JPEG (4 components) is not supported; convert it to RGB`);
  if (nc !== 1 && nc !== 3) throw new ImageError(`${what}: JPEG with ${nc} components; 1 (grey) or 3 (colour) expected`);
  if (f.width === 0 || f.height === 0) throw new ImageError(`${what}: zero-size JPEG (${f.width}x${f.height})`);
  if (f.width * f.height > maxPixels) throw new ImageError(`${what}: ${f.width}x${f.height} = ${f.width * f.height} pixels exceeds the limit of ${maxPixels}`);
  const dec = await mozjpeg();
  dec.messages.length = 0;
  let img: { width: number; height: number; data: Uint8ClampedArray | Uint8Array } | null;
  try {
    img = dec.module.decode(b, false);
  } catch (e) {
    // libjpeg's error_exit ends in an emscripten exit(1) (an ExitStatus); the module stays usable.
    const why = dec.messages.join('; ') || (e as Error).message || String(e);
    throw new ImageError(`${what}: cannot decode JPEG (${why})`);
  }
  if (!img) throw new ImageError(`${what}: cannot decode JPEG (${dec.messages.join('; ') || 'decoder returned nothing'})`);
  if (img.width !== f.width || img.height !== f.height || img.data.length !== img.width * img.height * 4) {
    throw new ImageError(`${what}: JPEG decoded to ${img.width}x${img.height} (${img.data.length} bytes), header says ${f.width}x${f.height}`);
  }
  // The decoder returns RGBA (alpha 255); grey is already replicated (libjpeg's grey → RGB output).
  const n = img.width * img.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    out[3 * i] = img.data[4 * i]; out[3 * i + 1] = img.data[4 * i + 1]; out[3 * i + 2] = img.data[4 * i + 2];
  }
  return { width: img.width, height: img.height, data: out };
}

interface MozJpegModule {
  decode(data: Uint8Array, preserveOrientation: boolean): { width: number; height: number; data: Uint8ClampedArray } | null;
}

let mozjpegPromise: Promise<{ module: MozJpegModule; messages: string[] }> | undefined;

/**
 * The MozJPEG WebAssembly decoder, instantiated once from the package's .wasm file (its own loader would fetch
 * a URL, which Node cannot do for file: URLs). libjpeg's warnings and errors are collected instead of printed.
 */
function mozjpeg(): Promise<{ module: MozJpegModule; messages: string[] }> {
  mozjpegPromise ??= (async () => {
    const require = createRequire(import.meta.url);
    const wasmFile = require.resolve('@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm');
    const wasm = new WebAssembly.Module(fs.readFileSync(wasmFile));
    const factory = (await import('@jsquash/jpeg/codec/dec/mozjpeg_dec.js' as string)).default as (opts: Record<string, unknown>) => Promise<MozJpegModule>;
    const messages: string[] = [];
    const module = await factory({
      noInitialRun: true,
      print: (m: string) => messages.push(m),
      printErr: (m: string) => messages.push(m),
      instantiateWasm: (imports: WebAssembly.Imports, done: (i: WebAssembly.Instance) => void) => {
        const instance = new WebAssembly.Instance(wasm, imports);
        done(instance);
        return instance.exports;
      },
    });
    return { module, messages };
  })();
  mozjpegPromise.catch(() => { mozjpegPromise = undefined; });
  return mozjpegPromise;
}

/** Decodes PNG or JPEG bytes (told apart by their signature) to RGB. Errors are ImageErrors starting with `what`. */
export async function decodeImage(bytes: Uint8Array, what = 'image', opts: ImageReadOptions = {}): Promise<RgbImage> {
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (bytes.length === 0) throw new ImageError(`${what}: empty file (0 bytes), not an image`);
  if (bytes.length >= 8 && PNG_SIGNATURE.every((v, i) => bytes[i] === v)) {
    let raw: RawImage;
    try {
      raw = decodePng(bytes, what, { maxPixels });
    } catch (e) {
      throw new ImageError((e as Error).message.startsWith(what) ? (e as Error).message : `${what}: ${(e as Error).message}`);
    }
    return toRgb(raw, what);
  }
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return await decodeJpeg(bytes, what, maxPixels);
  throw new ImageError(`${what}: not a PNG or JPEG file (unrecognised signature)`);
}

/**
 * Reads an image file as RGB. One ImageError naming the file for: no such file, a folder, an empty or oversized
 * file, an unknown format, a corrupt or unsupported PNG/JPEG (16-bit, CMYK, ...).
 */
export async function readImage(file: string, opts: ImageReadOptions = {}): Promise<RgbImage> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK); // non-blocking: a FIFO is refused below, not waited on
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ImageError(`${file}: no such file`);
    if (code === 'EISDIR') throw new ImageError(`${file}: is a folder, not an image file`);
    throw new ImageError(`${file}: cannot open (${(e as Error).message})`);
  }
  let bytes: Buffer;
  try {
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) throw new ImageError(`${file}: is a folder, not an image file`);
    if (!st.isFile()) throw new ImageError(`${file}: not a regular file`);
    if (st.size > maxBytes) throw new ImageError(`${file}: ${st.size} bytes exceeds the limit of ${maxBytes} for an image file`);
    bytes = Buffer.alloc(st.size);
    let got = 0;
    while (got < st.size) {
      const n = fs.readSync(fd, bytes, got, st.size - got, got);
      if (n === 0) break;
      got += n;
    }
    bytes = bytes.subarray(0, got);
  } catch (e) {
    if (e instanceof ImageError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EISDIR') throw new ImageError(`${file}: is a folder, not an image file`);
    throw new ImageError(`${file}: cannot read (${(e as Error).message})`);
  } finally {
    fs.closeSync(fd);
  }
  return decodeImage(bytes, file, opts);
}
