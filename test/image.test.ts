// Image input (src/io/image.ts, src/io/png.ts decoding): every PNG and JPEG kind decodes to the RGB pixels PIL's
// Image.open(f).convert("RGB") gives (reference files made by test/fixtures/images/make_images.py with PIL 9.4),
// and bad or hostile files are one clear error naming the file, checked before memory is committed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ImageError, decodeImage, readImage, toRgb } from '../src/io/image.js';
import { decodePng, encodePng } from '../src/io/png.js';
import { fixture } from './helpers.js';

const dir = fixture('images');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-image-'));

const CRC = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const v of b) c = CRC[(c ^ v) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
/** One PNG chunk with a correct CRC (length field as given, so it can lie). */
function chunk(type: string, body: Uint8Array, len = body.length): Buffer {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(len >>> 0, 0);
  out.write(type, 4, 'latin1');
  out.set(body, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}
const SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
function ihdr(w: number, h: number, depth = 8, ct = 2, interlace = 0): Buffer {
  const b = Buffer.alloc(13);
  b.writeUInt32BE(w, 0); b.writeUInt32BE(h, 4);
  b[8] = depth; b[9] = ct; b[12] = interlace;
  return chunk('IHDR', b);
}
const IEND = chunk('IEND', new Uint8Array(0));
function png(...chunks: Buffer[]): Buffer {
  return Buffer.concat([SIG, ...chunks]);
}
function writeTmp(name: string, data: Uint8Array): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, data);
  return f;
}

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, ImageError, `an ImageError, got ${(e as Error).name}: ${(e as Error).message}`);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected an error matching ${re}`);
}

test('PNG and JPEG of every kind decode to PIL convert("RGB") pixels, bit for bit', async () => {
  const kinds = ['rgb.png', 'rgba.png', 'grey.png', 'grey_alpha.png', 'grey1.png', 'palette4.png', 'palette8.png',
    'q95_444.jpg', 'q90_420.jpg', 'progressive.jpg', 'grey.jpg'];
  for (const k of kinds) {
    const ours = await readImage(path.join(dir, k));
    const ref = decodePng(fs.readFileSync(path.join(dir, `${k}.rgb.png`)));
    assert.equal([ours.width, ours.height, ref.channels], [37, 23, 3], k);
    let diff = 0;
    for (let i = 0; i < ref.data.length; i++) diff = Math.max(diff, Math.abs(ours.data[i] - ref.data[i]));
    assert.is(diff, 0, `${k}: max difference to PIL ${diff}`);
  }
});

test('Adam7-interlaced PNG decodes to the same pixels as the plain one (RGB 8-bit and grey 1-bit)', () => {
  const passes = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];
  const W = 13, H = 11;
  const rgb = Uint8Array.from({ length: W * H * 3 }, (_, i) => (i * 53 + (i >> 4)) % 256);
  const bits = Uint8Array.from({ length: W * H }, (_, i) => ((i * 7) % 5 < 2 ? 1 : 0));
  // Filter type 0 on every row; sub-byte samples packed MSB first, rows padded to whole bytes.
  const interlace = (get: (x: number, y: number) => number[], bitsPerPixel: number) => {
    const rows: number[] = [];
    for (const [xs, ys, dx, dy] of passes) {
      const pw = W > xs ? Math.ceil((W - xs) / dx) : 0, ph = H > ys ? Math.ceil((H - ys) / dy) : 0;
      if (!pw || !ph) continue;
      for (let y = 0; y < ph; y++) {
        rows.push(0);
        const row = new Uint8Array(Math.ceil((pw * bitsPerPixel) / 8));
        for (let x = 0; x < pw; x++) {
          const v = get(xs + x * dx, ys + y * dy);
          if (bitsPerPixel === 1) row[x >> 3] |= v[0] << (7 - (x & 7));
          else row.set(v, (x * bitsPerPixel) / 8);
        }
        rows.push(...row);
      }
    }
    return zlib.deflateSync(Uint8Array.from(rows));
  };
  const a = decodePng(png(ihdr(W, H, 8, 2, 1), chunk('IDAT', interlace((x, y) => Array.from(rgb.subarray((y * W + x) * 3, (y * W + x) * 3 + 3)), 24)), IEND));
  assert.equal(Array.from(a.data), Array.from(decodePng(encodePng({ width: W, height: H, channels: 3, data: rgb })).data));
  const g = decodePng(png(ihdr(W, H, 1, 0, 1), chunk('IDAT', interlace((x, y) => [bits[y * W + x]], 1)), IEND));
  assert.equal(Array.from(g.data), Array.from(bits, (v) => v * 255));
});

test('toRgb follows convert("RGB"): grey replicated, alpha dropped (not composited)', () => {
  assert.equal(Array.from(toRgb({ width: 2, height: 1, channels: 1, data: Uint8Array.from([7, 200]) }).data), [7, 7, 7, 200, 200, 200]);
  assert.equal(Array.from(toRgb({ width: 1, height: 1, channels: 4, data: Uint8Array.from([10, 20, 30, 0]) }).data), [10, 20, 30]);
});

test('bad files: one ImageError naming the file (missing, folder, empty, unknown format, CMYK, 16-bit, zero-size)', async () => {
  const missing = path.join(tmp, 'nope.png');
  await rejects(readImage(missing), /nope\.png: no such file/);
  await rejects(readImage(tmp), /is a folder/);
  await rejects(readImage(writeTmp('empty.png', new Uint8Array(0))), /empty\.png: empty file/);
  await rejects(readImage(writeTmp('text.jpg', Buffer.from('hello, not an image'))), /text\.jpg: not a PNG or JPEG/);
  await rejects(readImage(path.join(dir, 'cmyk.jpg')), /cmyk\.jpg: CMYK\/YCCK JPEG \(4 components\) is not supported/);
  await rejects(readImage(writeTmp('deep.png', png(ihdr(4, 4, 16, 2), chunk('IDAT', zlib.deflateSync(Buffer.alloc(4 * 25))), IEND))), /deep\.png: 16-bit RGB PNG is not supported/);
  await rejects(readImage(writeTmp('zero.png', png(ihdr(0, 5), IEND))), /zero\.png: zero-size image \(0x5\)/);
  await rejects(readImage(tmp + '/../' + path.basename(tmp) + '/empty.png', { maxBytes: -1 }), /empty\.png: 0 bytes exceeds/);
  // JPEG frame headers we refuse before decoding: 12-bit, 2 components, zero height, lossless, too many pixels.
  const sof = (marker: number, precision: number, h: number, w: number, nc: number) => {
    const body = [precision, h >> 8, h & 255, w >> 8, w & 255, nc, ...Array.from({ length: nc }, (_, i) => [i + 1, 0x11, 0]).flat()];
    return Buffer.from([0xff, 0xd8, 0xff, marker, 0, body.length + 2, ...body, 0xff, 0xd9]);
  };
  await rejects(decodeImage(sof(0xc0, 12, 8, 8, 3), 'a.jpg'), /a\.jpg: 12-bit JPEG is not supported/);
  await rejects(decodeImage(sof(0xc0, 8, 8, 8, 2), 'b.jpg'), /b\.jpg: JPEG with 2 components/);
  await rejects(decodeImage(sof(0xc0, 8, 0, 8, 3), 'c.jpg'), /c\.jpg: zero-size JPEG/);
  await rejects(decodeImage(sof(0xc3, 8, 8, 8, 3), 'd.jpg'), /d\.jpg: lossless JPEG/);
  await rejects(decodeImage(sof(0xc2, 8, 60000, 60000, 3), 'e.jpg'), /e\.jpg: 60000x60000 = 3600000000 pixels exceeds the limit/);
  // A truncated JPEG: libjpeg's error is caught, and the decoder still works afterwards.
  const good = fs.readFileSync(path.join(dir, 'q90_420.jpg'));
  await rejects(decodeImage(good.subarray(0, 200), 'cut.jpg'), /cut\.jpg: cannot decode JPEG/);
  assert.is((await decodeImage(good, 'again.jpg')).width, 37);
});

test('hostile PNGs: IHDR length, chunk lengths, size bound before inflating, inflation capped (issue 18 item 11)', () => {
  const err = (b: Uint8Array, re: RegExp, limits = {}) => {
    try {
      decodePng(b, 'x.png', limits);
    } catch (e) {
      assert.ok(!(e instanceof RangeError), `not a RangeError: ${(e as Error).message}`);
      assert.match((e as Error).message, re);
      return;
    }
    assert.unreachable(`expected ${re}`);
  };
  err(png(chunk('IHDR', Uint8Array.from([0, 1])), IEND), /x\.png: IHDR chunk has 2 bytes, expected 13/);
  err(png(chunk('IDAT', new Uint8Array(3)), IEND), /x\.png: the first chunk is IDAT, expected IHDR/);
  err(png(ihdr(2, 2), ihdr(2, 2), IEND), /more than one IHDR/);
  // A length that points past the end of the file, and one past 2^31-1: checked before reading.
  err(png(ihdr(2, 2), chunk('IDAT', new Uint8Array(4), 1000), IEND), /truncated IDAT chunk \(length 1000/);
  err(png(ihdr(2, 2), chunk('IDAT', new Uint8Array(4), 0xffffffff)), /IDAT chunk length 4294967295 exceeds/);
  err(png(ihdr(2, 2)).subarray(0, 15), /truncated chunk header/);
  err(png(ihdr(2, 2)).subarray(0, 20), /truncated IHDR chunk/);
  err(png(ihdr(2, 2), chunk('IDAT', zlib.deflateSync(Buffer.alloc(2 * 7)))), /no IEND/);
  // 100000×100000 declared with a few bytes of data: refused from the header, nothing allocated.
  err(png(ihdr(100000, 100000), chunk('IDAT', zlib.deflateSync(Buffer.alloc(10))), IEND), /100000x100000 = 10000000000 pixels exceeds the limit of 100000000/);
  err(png(ihdr(50, 50), IEND), /2500 pixels exceeds the limit of 1000/, { maxPixels: 1000 });
  // A zlib bomb: 4×4 RGB holds 52 bytes, the stream inflates to 50 MB; capped at 52 bytes, not inflated.
  const bomb = zlib.deflateSync(Buffer.alloc(50_000_000), { level: 9 });
  const t0 = performance.now();
  err(png(ihdr(4, 4), chunk('IDAT', bomb), IEND), /inflates to more than the 52 bytes a 4x4 RGB image holds/);
  assert.ok(performance.now() - t0 < 2000);
  err(png(ihdr(4, 4), chunk('IDAT', zlib.deflateSync(Buffer.alloc(20))), IEND), /image data has 20 bytes, expected 52/);
  err(png(ihdr(4, 4), chunk('IDAT', Uint8Array.from([1, 2, 3, 4, 5])), IEND), /corrupt image data/);
  err(png(ihdr(4, 4, 8, 3), chunk('IDAT', zlib.deflateSync(Buffer.alloc(20))), IEND), /palette image without a PLTE/);
  err(png(ihdr(4, 4, 8, 2, 2)), /unknown interlace method 2/);
  err(png(ihdr(4, 4, 8, 5)), /invalid PNG colour type 5/);
  err(png(ihdr(4, 4, 4, 2)), /invalid bit depth 4 for colour type 2/);
  err(png(ihdr(1, 1), chunk('IDAT', zlib.deflateSync(Buffer.from([9, 0, 0, 0]))), IEND), /bad filter type 9 on row 0/);
});

test('truncated and bit-flipped PNGs: always an Error naming the file, never a crash or a RangeError', async () => {
  const good = fs.readFileSync(path.join(dir, 'palette4.png'));
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const cases: Uint8Array[] = [];
  for (let n = 0; n < good.length; n += 7) cases.push(good.subarray(0, n));
  for (let i = 0; i < 300; i++) {
    const b = Uint8Array.from(good);
    b[Math.floor(rnd() * b.length)] ^= 1 << Math.floor(rnd() * 8);
    cases.push(b);
  }
  for (const b of cases) {
    try {
      await decodeImage(b, 'f.png');
    } catch (e) {
      assert.instance(e, ImageError, (e as Error).message);
      assert.ok((e as Error).message.startsWith('f.png: '), (e as Error).message);
    }
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
