import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SafetensorsFile, saveSafetensors, loadSafetensors, toF16Bits, toBF16Bits, decodeF16, decodeBF16 } from '../src/io/safetensors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-st-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('safetensors round trip keeps every dtype, shape and value', () => {
  const f = path.join(tmp, 'a.safetensors');
  const f32 = Float32Array.from([1.5, -2.25, 3e-8, 65504]);
  saveSafetensors(f, {
    a: { dtype: 'F32', shape: [2, 2], data: f32 },
    h: { dtype: 'F16', shape: [4], data: f32 },
    b: { dtype: 'BF16', shape: [4], data: Float32Array.from([1, -2, 0.5, 3]) },
    d: { dtype: 'F64', shape: [2], data: Float64Array.from([0.1, -7]) },
    i: { dtype: 'I64', shape: [3], data: Int32Array.from([-5, 0, 2147483647]) },
    m: { dtype: 'U8', shape: [3], data: Int32Array.from([0, 1, 255]) },
    z: { dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
  });
  const st = loadSafetensors(f);
  assert.equal([...st.get('a')!.data], [...f32]);
  assert.equal(st.get('a')!.shape, [2, 2]);
  assert.equal([...st.get('h')!.data], [1.5, -2.25, 2 ** -24, 65504]);
  assert.equal([...st.get('b')!.data], [1, -2, 0.5, 3]);
  assert.equal(st.get('d')!.data[0], Math.fround(0.1));
  assert.equal([...st.get('i')!.data], [-5, 0, 2147483647]);
  assert.equal(st.get('i')!.dtype, 'int32');
  assert.equal([...st.get('m')!.data], [0, 1, 255]);
  assert.equal(st.get('z')!.shape, [0, 5]);
  assert.is(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-')).length, 0);
});

test('f16/bf16 encoders round to nearest even and decode exactly', () => {
  assert.is(toF16Bits(1), 0x3c00);
  assert.is(toF16Bits(65520), 0x7c00); // overflows to inf
  assert.is(toF16Bits(2 ** -24), 1);
  assert.is(toF16Bits(1 + 2 ** -11), 0x3c00); // tie → even
  assert.is(toF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.is(toBF16Bits(1 + 2 ** -8), 0x3f80);
  const u = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x0001]).buffer);
  assert.equal([...decodeF16(u, 3)], [1, -2, 2 ** -24]);
  assert.equal([...decodeBF16(new Uint8Array(new Uint16Array([0x3f80, 0xc000]).buffer), 2)], [1, -2]);
});

test('I64 values outside int32 are an error naming the tensor', () => {
  const f = path.join(tmp, 'big.safetensors');
  const buf = new Uint8Array(8);
  new DataView(buf.buffer).setBigInt64(0, 2n ** 40n, true);
  saveSafetensors(f, { step: { dtype: 'I64', shape: [1], data: buf } });
  const st = SafetensorsFile.open(f);
  assert.throws(() => st.read('step'), /step.*does not fit in int32/);
  st.close();
});

test('corrupt files give errors that name the file and the tensor', () => {
  const f = path.join(tmp, 'c.safetensors');
  saveSafetensors(f, { w: { dtype: 'F32', shape: [4], data: new Float32Array(4) } });
  const full = fs.readFileSync(f);
  fs.writeFileSync(f, full.subarray(0, full.length - 4));
  assert.throws(() => SafetensorsFile.open(f), (e: Error) => e.message.includes(f) && e.message.includes('"w"') && /truncated/.test(e.message));
  fs.writeFileSync(f, Buffer.from([1, 2, 3]));
  assert.throws(() => SafetensorsFile.open(f), /too short/);
  const bad = Buffer.alloc(8 + 16);
  bad.writeBigUInt64LE(16n);
  bad.write('{"w": {"dtype":', 8);
  fs.writeFileSync(f, bad);
  assert.throws(() => SafetensorsFile.open(f), /not valid JSON/);
  const hdr = Buffer.from(JSON.stringify({ w: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }));
  const b2 = Buffer.alloc(8); b2.writeBigUInt64LE(BigInt(hdr.length));
  fs.writeFileSync(f, Buffer.concat([b2, hdr, Buffer.alloc(1)]));
  assert.throws(() => SafetensorsFile.open(f), /"w".*unsupported dtype "F8"/);
  assert.throws(() => SafetensorsFile.open(path.join(tmp, 'missing.safetensors')), /missing\.safetensors: cannot open/);
});

test('reads tensors lazily at their offsets (header only on open)', () => {
  const f = path.join(tmp, 'lazy.safetensors');
  saveSafetensors(f, { a: { dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) }, b: { dtype: 'F32', shape: [1], data: Float32Array.from([7]) } });
  const st = SafetensorsFile.open(f);
  assert.equal(st.names(), ['a', 'b']);
  assert.equal([...st.read('b').data], [7]);
  assert.throws(() => st.read('nope'), /no tensor named "nope"/);
  st.close();
});

test.run();
