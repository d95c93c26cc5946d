// Safetensors reader under hostile input: every malformed case of the format gets our own typed error naming the
// file (and tensor); a seeded fuzz run of mutated files never escapes with a RangeError/TypeError, never hangs and
// never allocates more than the file holds; files past 4 GiB read by positioned reads; fixture files round-trip.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import fsDefault from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { SafetensorsFile, SafetensorsError, saveSafetensors, loadSafetensors, duplicateKey, DTYPE_SIZE, type SafetensorsDType } from '../src/io/safetensors.js';
import { FIXTURES } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-st-err-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;

/** Writes a file from a header (object or raw JSON text), data bytes and an optional header-length override. */
function rawFile(header: unknown, data: Uint8Array | number = 0, lenOverride?: bigint): string {
  const f = path.join(tmp, `m${counter++}.safetensors`);
  const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(h.length));
  fs.writeFileSync(f, Buffer.concat([len, h, typeof data === 'number' ? Buffer.alloc(data) : data]));
  return f;
}

function expectError(f: string, re: RegExp, tensor?: string): void {
  try {
    SafetensorsFile.open(f).close();
  } catch (e) {
    assert.instance(e, SafetensorsError, `${(e as Error).message}`);
    const msg = (e as Error).message;
    assert.ok(msg.startsWith(f), `names the file: ${msg}`);
    if (tensor) assert.ok(msg.includes(`"${tensor}"`), `names tensor ${tensor}: ${msg}`);
    assert.match(msg, re);
    return;
  }
  assert.unreachable(`${f} opened without error (expected ${re})`);
}

const ok = (extra: Record<string, unknown> = {}) => ({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, ...extra });

test('a well-formed hand-made file opens (control for the malformed cases)', () => {
  const f = rawFile(ok({ __metadata__: { format: 'pt' } }), 8);
  const st = SafetensorsFile.open(f);
  assert.equal(st.names(), ['a']);
  assert.equal(st.metadata, { format: 'pt' });
  st.close();
});

test('header length beyond the file or over 100 MB', () => {
  expectError(rawFile(ok(), 8, 10_000n), /header length 10000 exceeds the file/);
  expectError(rawFile(ok(), 8, 2n ** 64n - 1n), /header length .* exceeds/);
  // A real (sparse) 120 MB file whose header claims 110 MB: refused before any allocation.
  const f = path.join(tmp, 'hugeheader.safetensors');
  const fd = fs.openSync(f, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(110n * 1024n * 1024n);
  fs.writeSync(fd, len, 0, 8, 0);
  fs.ftruncateSync(fd, 120 * 1024 * 1024);
  fs.closeSync(fd);
  expectError(f, /100 MB limit/);
  fs.unlinkSync(f);
});

test('header not JSON, not an object, bad __metadata__', () => {
  expectError(rawFile('{"a": {"dtype": "F32",', 0), /not valid JSON/);
  expectError(rawFile('', 0), /not valid JSON/);
  expectError(rawFile('[1, 2]', 0), /not a JSON object/);
  expectError(rawFile('null', 0), /not a JSON object/);
  expectError(rawFile('"text"', 0), /not a JSON object/);
  expectError(rawFile(ok({ __metadata__: { n: 5 } }), 8), /__metadata__ must be an object of strings/);
  expectError(rawFile(ok({ __metadata__: ['x'] }), 8), /__metadata__ must be an object of strings/);
  expectError(rawFile({ a: 7 }, 0), /"a".*not an object/, 'a');
});

test('unknown dtype', () => {
  expectError(rawFile({ w: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, 1), /unsupported dtype "F8_E4M3"/, 'w');
  expectError(rawFile({ w: { dtype: 42, shape: [1], data_offsets: [0, 1] } }, 1), /unsupported dtype 42/, 'w');
  expectError(rawFile({ w: { shape: [1], data_offsets: [0, 1] } }, 1), /unsupported dtype/, 'w');
});

test('negative, non-integer or non-list shapes', () => {
  expectError(rawFile({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), /shape \[-1\]/, 'w');
  expectError(rawFile({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4), /shape \[1.5\]/, 'w');
  expectError(rawFile({ w: { dtype: 'F32', shape: ['2'], data_offsets: [0, 8] } }, 8), /shape/, 'w');
  expectError(rawFile({ w: { dtype: 'F32', shape: 2, data_offsets: [0, 8] } }, 8), /shape/, 'w');
  expectError(rawFile({ w: { dtype: 'F32', shape: [1e300, 1e300], data_offsets: [0, 8] } }, 8), /below 2\^53/, 'w');
});

test('shape x dtype size differing from the byte length', () => {
  expectError(rawFile({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8), /holds 8 bytes but F32\[3\] needs 12/, 'w');
  expectError(rawFile({ w: { dtype: 'F16', shape: [2, 2], data_offsets: [0, 16] } }, 16), /needs 8/, 'w');
});

test('offsets out of range, reversed, overlapping, leaving gaps or trailing bytes', () => {
  expectError(rawFile({ w: { dtype: 'U8', shape: [16], data_offsets: [0, 16] } }, 8), /past the end of the file/, 'w');
  expectError(rawFile({ w: { dtype: 'U8', shape: [0], data_offsets: [8, 4] } }, 8), /end 4 < begin 8/, 'w');
  expectError(rawFile({ w: { dtype: 'U8', shape: [1], data_offsets: [-1, 0] } }, 8), /data_offsets/, 'w');
  expectError(rawFile({ w: { dtype: 'U8', shape: [1], data_offsets: [0] } }, 8), /data_offsets/, 'w');
  expectError(rawFile({ w: { dtype: 'U8', shape: [1], data_offsets: [2 ** 60, 2 ** 60 + 1] } }, 8), /data_offsets|past the end/, 'w');
  expectError(rawFile({ a: { dtype: 'U8', shape: [6], data_offsets: [0, 6] }, b: { dtype: 'U8', shape: [4], data_offsets: [4, 8] } }, 8), /overlaps/);
  expectError(rawFile({ a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] }, b: { dtype: 'U8', shape: [2], data_offsets: [6, 8] } }, 8), /"b".*gap of 2 bytes/);
  expectError(rawFile({ a: { dtype: 'U8', shape: [4], data_offsets: [4, 8] } }, 8), /"a".*gap of 4 bytes after the header/);
  expectError(rawFile({ a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] } }, 8), /4 bytes after the last tensor/);
  expectError(rawFile({}, 3), /3 bytes after the last tensor/);
});

test('duplicate tensor names (JSON.parse would silently keep the last)', () => {
  const h = '{"w": {"dtype":"U8","shape":[4],"data_offsets":[0,4]}, "w": {"dtype":"U8","shape":[4],"data_offsets":[4,8]}}';
  expectError(rawFile(h, 8), /names tensor "w" more than once/);
  const esc = '{"a\\"b": {"dtype":"U8","shape":[4],"data_offsets":[0,4]}, "a\\u0022b": {"dtype":"U8","shape":[4],"data_offsets":[4,8]}}';
  expectError(rawFile(esc, 8), /more than once/);
  // Keys inside entries and metadata are not tensor names.
  assert.is(duplicateKey('{"a": {"dtype": "x", "n": {"dtype": 1}}, "b": ["a", "a"], "__metadata__": {"a": "a"}}'), null);
  assert.is(duplicateKey('{"x\\\\": 1, "x\\\\": 2}'), 'x\\');
});

test('I64 outside int32 is a SafetensorsError naming file and tensor; missing file names it', () => {
  const buf = new Uint8Array(8);
  new DataView(buf.buffer).setBigInt64(0, -(2n ** 35n), true);
  const f = rawFile({ step: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, buf);
  const st = SafetensorsFile.open(f);
  try {
    st.read('step');
    assert.unreachable('no error');
  } catch (e) {
    assert.instance(e, SafetensorsError);
    assert.match((e as Error).message, new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: tensor "step": I64 value -34359738368`));
  }
  st.close();
  expectError(path.join(tmp, 'nope.safetensors'), /cannot open/);
});

test('the writer refuses what it cannot write faithfully, naming the file and tensor, leaving no file behind', () => {
  const f = path.join(tmp, 'w.safetensors');
  assert.throws(() => saveSafetensors(f, { __metadata__: { dtype: 'F32', shape: [1], data: new Float32Array(1) } }), /reserved/);
  assert.throws(() => saveSafetensors(f, { w: { dtype: 'F32', shape: [-1], data: new Float32Array(0) } }), /"w": shape \[-1\]/);
  assert.throws(() => saveSafetensors(f, { w: { dtype: 'F8' as SafetensorsDType, shape: [1], data: new Float32Array(1) } }), /"w": unsupported dtype F8/);
  assert.throws(() => saveSafetensors(f, { w: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), /"w": 2 elements given/);
  assert.not.ok(fs.existsSync(f));
  assert.is(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-')).length, 0);
});

// ---------- fuzz ----------

/** xorshift32, seeded: the fuzz cases are the same on every run. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  return { next, int: (n: number) => next() % n, pick: <T>(a: T[]) => a[next() % a.length] };
}

test('fuzz: 2,400 mutated files fail only with SafetensorsError, quickly, allocating no more than the file holds', () => {
  const base = path.join(tmp, 'base.safetensors');
  saveSafetensors(base, {
    f32: { dtype: 'F32', shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i - 5.5) },
    f16: { dtype: 'F16', shape: [5], data: Float32Array.from([1, 2, -3, 0.5, 65504]) },
    bf16: { dtype: 'BF16', shape: [2], data: Float32Array.from([1, -2]) },
    i64: { dtype: 'I64', shape: [3], data: Int32Array.from([-1, 7, 2147483647]) },
    u8: { dtype: 'U8', shape: [2, 3], data: Int32Array.from([0, 1, 2, 3, 254, 255]) },
    bool: { dtype: 'BOOL', shape: [4], data: Int32Array.from([0, 1, 1, 0]) },
    empty: { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) },
    scalar: { dtype: 'F64', shape: [], data: Float64Array.from([3.25]) },
  }, { format: 'pt', note: 'fuzz base' });
  const good = fs.readFileSync(base);
  const hlen = Number(good.readBigUInt64LE(0));
  const headerText = good.subarray(8, 8 + hlen).toString('utf8');
  const r = rng(20261125);
  const f = path.join(tmp, 'fuzz.safetensors');

  // Spy on allocations: nothing may ask for more bytes than the file under test has.
  const origAlloc = Buffer.alloc;
  const origUnsafe = Buffer.allocUnsafe;
  let maxAlloc = 0;
  Buffer.alloc = ((n: number, ...rest: unknown[]) => { maxAlloc = Math.max(maxAlloc, n); return (origAlloc as (...a: unknown[]) => Buffer)(n, ...rest); }) as typeof Buffer.alloc;
  Buffer.allocUnsafe = ((n: number) => { maxAlloc = Math.max(maxAlloc, n); return origUnsafe(n); }) as typeof Buffer.allocUnsafe;

  const kinds = new Map<string, number>();
  let opened = 0;
  let rejected = 0;
  try {
    for (let i = 0; i < 2400; i++) {
      let bytes: Buffer;
      const kind = r.pick(['truncate', 'flip-header', 'flip-any', 'length', 'offsets', 'shape', 'dtype', 'junk', 'append']);
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      if (kind === 'truncate') {
        bytes = good.subarray(0, r.int(good.length));
      } else if (kind === 'flip-header' || kind === 'flip-any') {
        bytes = Buffer.from(good);
        const span = kind === 'flip-header' ? 8 + hlen : good.length;
        for (let k = 1 + r.int(4); k > 0; k--) bytes[r.int(span)] ^= 1 << r.int(8);
      } else if (kind === 'length') {
        bytes = Buffer.from(good);
        const choices = [0n, 1n, BigInt(hlen - 1), BigInt(hlen + 1), BigInt(good.length), 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n, BigInt(r.next()), 100n * 1024n * 1024n + 1n];
        bytes.writeBigUInt64LE(r.pick(choices));
      } else {
        // Edit the JSON header, then rebuild a consistent length field (and keep the data region).
        const h = JSON.parse(headerText) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
        const names = Object.keys(h).filter((n) => n !== '__metadata__');
        const t = h[r.pick(names)];
        const big = () => r.pick([0, 1, 7, 8, 2 ** 31, 2 ** 32 + 3, 2 ** 53 - 1, 2 ** 53 + 2, -1, 1.5, r.next()]);
        if (kind === 'offsets') t.data_offsets[r.int(2)] = big();
        else if (kind === 'shape') {
          if (r.int(3) === 0) t.shape.push(big()); else if (t.shape.length) t.shape[r.int(t.shape.length)] = big(); else t.shape = [big()];
        } else if (kind === 'dtype') t.dtype = r.pick([...Object.keys(DTYPE_SIZE), 'F8', 'c64', '', 'f32']);
        let text = JSON.stringify(h);
        if (kind === 'junk') {
          const at = r.int(text.length);
          text = text.slice(0, at) + r.pick(['"', '{', '}', ',', ':', '\\', '\u0000', '[', 'null', '"x":{}', 'e9']) + text.slice(at);
        }
        const hb = Buffer.from(text);
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(hb.length));
        bytes = Buffer.concat([len, hb, good.subarray(8 + hlen)]);
        if (kind === 'append') bytes = Buffer.concat([bytes, Buffer.alloc(1 + r.int(9))]);
      }
      fs.writeFileSync(f, bytes);
      maxAlloc = 0;
      const t0 = performance.now();
      try {
        const st = SafetensorsFile.open(f);
        try {
          for (const n of st.names()) st.read(n);
        } finally {
          st.close();
        }
        opened++;
      } catch (e) {
        if (!(e instanceof SafetensorsError)) {
          throw new Error(`fuzz case ${i} (${kind}): escaped with ${(e as Error).name}: ${(e as Error).message}`);
        }
        rejected++;
      }
      const ms = performance.now() - t0;
      if (ms > 1000) throw new Error(`fuzz case ${i} (${kind}) took ${ms.toFixed(0)} ms`);
      if (maxAlloc > Math.max(bytes.length, 8)) throw new Error(`fuzz case ${i} (${kind}): allocated ${maxAlloc} bytes for a ${bytes.length}-byte file`);
    }
  } finally {
    Buffer.alloc = origAlloc;
    Buffer.allocUnsafe = origUnsafe;
  }
  assert.is(opened + rejected, 2400);
  assert.ok(rejected > 1500, `most mutations are rejected (${rejected})`);
  assert.ok(kinds.size === 9, 'every mutation kind ran');
});

// ---------- past 4 GiB ----------

const FAR = 2 ** 32 + 4096; // data offset of the far tensor: past 4 GiB

function farHeader(): Buffer {
  const h = Buffer.from(JSON.stringify({
    hole: { dtype: 'U8', shape: [FAR], data_offsets: [0, FAR] },
    far: { dtype: 'F32', shape: [4], data_offsets: [FAR, FAR + 16] },
  }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h]);
}
const farValues = Float32Array.from([1.5, -2, 3e-8, 65504]);

test('a sparse file over 4 GiB: the tensor past 4 GiB is read by a positioned read', () => {
  const f = path.join(tmp, 'sparse4g.safetensors');
  const head = farHeader();
  const fd = fs.openSync(f, 'w');
  try {
    fs.writeSync(fd, head, 0, head.length, 0);
    fs.ftruncateSync(fd, head.length + FAR + 16);
    fs.writeSync(fd, new Uint8Array(farValues.buffer), 0, 16, head.length + FAR);
  } finally {
    fs.closeSync(fd);
  }
  const stat = fs.statSync(f);
  assert.is(stat.size, head.length + FAR + 16);
  // This filesystem makes sparse files (else the virtual-file test below still proves the offset arithmetic).
  console.log(`  sparse file: ${stat.size} bytes, ${stat.blocks * 512} on disk`);
  const st = SafetensorsFile.open(f);
  try {
    assert.is(st.info('far').begin, head.length + FAR);
    assert.equal(st.info('hole').shape, [FAR]);
    assert.equal(st.read('far').data, farValues);
  } finally {
    st.close();
    fs.unlinkSync(f);
  }
});

test('a virtual 4 GiB+ file (fs calls faked): offsets past 2^32 reach readSync exactly', () => {
  const head = farHeader();
  const size = head.length + FAR + 16;
  const orig = { openSync: fsDefault.openSync, fstatSync: fsDefault.fstatSync, readSync: fsDefault.readSync, closeSync: fsDefault.closeSync };
  const positions: number[] = [];
  const FD = 987654;
  Object.assign(fsDefault, {
    openSync: (p: string, ...a: unknown[]) => (p === 'virtual.safetensors' ? FD : (orig.openSync as (...x: unknown[]) => number)(p, ...a)),
    fstatSync: (fd: number, ...a: unknown[]) => (fd === FD ? { size, isFile: (): boolean => true } : (orig.fstatSync as (...x: unknown[]) => fs.Stats)(fd, ...a)),
    closeSync: (fd: number) => (fd === FD ? undefined : orig.closeSync(fd)),
    readSync: (fd: number, buf: Uint8Array, off: number, len: number, pos: number) => {
      if (fd !== FD) return (orig.readSync as (...x: unknown[]) => number)(fd, buf, off, len, pos);
      positions.push(pos);
      for (let i = 0; i < len; i++) {
        const p = pos + i;
        buf[off + i] = p < head.length ? head[p] : p >= head.length + FAR ? new Uint8Array(farValues.buffer)[p - head.length - FAR] : 0;
      }
      return len;
    },
  });
  syncBuiltinESMExports();
  try {
    const st = SafetensorsFile.open('virtual.safetensors');
    assert.equal(st.read('far').data, farValues);
    assert.is(positions.at(-1), head.length + FAR);
    st.close();
  } finally {
    Object.assign(fsDefault, orig);
    syncBuiltinESMExports();
  }
});

// ---------- fixtures round trip ----------

function fixtureFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...fixtureFiles(p));
    else if (e.name.endsWith('.safetensors')) out.push(p);
  }
  return out;
}

test('every fixture .safetensors file: read, written back (raw and decoded), re-read: same tensors', () => {
  const files = fixtureFiles(FIXTURES);
  assert.ok(files.length >= 10, `found ${files.length} fixture files`);
  let n = 0;
  for (const file of files) {
    const src = SafetensorsFile.open(file);
    try {
      const raw: Record<string, { dtype: SafetensorsDType; shape: number[]; data: Uint8Array }> = {};
      for (const name of src.names()) {
        const t = src.info(name);
        raw[name] = { dtype: t.dtype, shape: t.shape, data: src.readBytes(name) };
      }
      const out = path.join(tmp, 'rt.safetensors');
      saveSafetensors(out, raw, src.metadata);
      const back = SafetensorsFile.open(out);
      assert.equal(back.names().sort(), src.names().sort(), file);
      assert.equal(back.metadata, src.metadata, file);
      for (const name of src.names()) {
        assert.is(back.info(name).dtype, src.info(name).dtype);
        assert.equal(back.info(name).shape, src.info(name).shape);
        assert.ok(Buffer.from(back.readBytes(name)).equals(Buffer.from(raw[name].data)), `${file}: ${name} bytes`);
        n++;
      }
      back.close();
      // Decoded values written back (float32 as F32, int32 as the file's integer dtype) read the same.
      const decoded = loadSafetensors(file);
      const out2 = path.join(tmp, 'rt2.safetensors');
      const canWrite = (d: SafetensorsDType) => d === 'F32' || d === 'I64' || d === 'I32' || d === 'U8';
      saveSafetensors(out2, Object.fromEntries([...decoded].filter(([k]) => canWrite(src.info(k).dtype)).map(([k, t]) => [k, { dtype: src.info(k).dtype, shape: t.shape, data: t.data }])));
      const again = loadSafetensors(out2);
      for (const [k, t] of again) assert.equal(t.data, decoded.get(k)!.data, `${file}: ${k} decoded`);
    } finally {
      src.close();
    }
  }
  console.log(`  round-tripped ${n} tensors in ${files.length} fixture files`);
});

test.run();
