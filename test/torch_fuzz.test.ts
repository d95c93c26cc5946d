// Seeded fuzzing of the PyTorch checkpoint reader: 2,400 mutated files (container level: zip archives and legacy
// streams with byte flips, truncation, directory/header corruption; pickle level: mutated data.pkl re-zipped with
// valid CRCs). Every outcome is either a successful read of every tensor or a TorchFileError naming the file;
// nothing hangs, and no buffer larger than the file is ever requested.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fixture } from './helpers.js';
import { TorchCheckpoint, TorchFileError, ZipArchive } from '../src/io/torch/index.js';
import { saveLegacyStateDict, writeZip, type ZipRecord } from '../src/io/torch/writer.js';
import { SafetensorsFile } from '../src/io/safetensors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-fuzz-'));

/** mulberry32: a small seeded generator, so every run mutates the same way. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int };
}

interface Stats { ok: number; refused: number; maxAlloc: number; slowest: number }

/** Opens and fully reads `file`; any failure must be a TorchFileError naming it. Tracks Buffer allocation sizes. */
function exercise(file: string, stats: Stats, what: string): void {
  const size = fs.statSync(file).size;
  const orig = Buffer.allocUnsafeSlow;
  let maxAlloc = 0;
  (Buffer as { allocUnsafeSlow: typeof Buffer.allocUnsafeSlow }).allocUnsafeSlow = (n: number) => {
    maxAlloc = Math.max(maxAlloc, n);
    if (n > size) throw new Error(`FUZZ: allocation of ${n} bytes for a ${size}-byte file (${what})`);
    return orig(n);
  };
  const t0 = performance.now();
  try {
    const ck = TorchCheckpoint.open(file);
    try {
      for (const [, t] of ck.tensors()) {
        ck.readRaw(t);
        ck.read(t);
      }
      ck.stateDict();
    } finally {
      ck.close();
    }
    stats.ok++;
  } catch (e) {
    if (!(e instanceof TorchFileError) || !e.message.startsWith(file)) {
      throw new Error(`${what}: not a TorchFileError naming the file: ${(e as Error).stack}`);
    }
    stats.refused++;
  } finally {
    Buffer.allocUnsafeSlow = orig;
  }
  stats.slowest = Math.max(stats.slowest, performance.now() - t0);
  stats.maxAlloc = Math.max(stats.maxAlloc, maxAlloc);
}

const BASES = ['extra-storage-cases.ckpt', 'ViT-L-14_stats.th', 'prior-ckpt-step=01000000-of-01000000.ckpt'].map((f) => fixture('original_ckpt', 'original', f));

test('container-level fuzz: 1,200 zip and legacy-stream files with flipped bytes, truncations, corrupted headers/directories', () => {
  const r = rng(20240601);
  const stats: Stats = { ok: 0, refused: 0, maxAlloc: 0, slowest: 0 };
  const file = path.join(tmp, 'zip.ckpt');
  // A legacy (pre-1.6) stream holding the extra-storage tensors, as a third base.
  const legacy = path.join(tmp, 'legacy.pt');
  const exp = SafetensorsFile.open(fixture('original_ckpt', 'expected', 'extra-storage-cases.expected.safetensors'));
  saveLegacyStateDict(legacy, new Map(exp.names().map((n) => [n, { dtype: exp.info(n).dtype, shape: exp.info(n).shape, data: exp.readBytes(n) }])));
  exp.close();
  const bases = [BASES[0], BASES[1], legacy]; // the small ones: fast
  for (let i = 0; i < 1200; i++) {
    const base = fs.readFileSync(bases[i % 3]);
    let b = Buffer.from(base);
    const kind = r.int(5);
    if (kind === 0) {
      // Random flips anywhere.
      for (let k = 1 + r.int(8); k > 0; k--) b[r.int(b.length)] ^= 1 << r.int(8);
    } else if (kind === 1) {
      // Truncate.
      b = b.subarray(0, r.int(b.length));
    } else if (kind === 2) {
      // Corrupt the tail: the end records and the central directory.
      const tail = Math.min(b.length, 400);
      for (let k = 1 + r.int(6); k > 0; k--) b[b.length - 1 - r.int(tail)] = r.int(256);
    } else if (kind === 3) {
      // Overwrite a 32-bit field of a central-directory entry (sizes, offsets) with an extreme value.
      let p = b.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
      for (let k = r.int(10); k > 0 && p > 0; k--) p = b.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), p - 1);
      if (p >= 0) {
        const field = [16, 20, 24, 28, 30, 42][r.int(6)];
        const v = [0xffffffff, 0, 0x7fffffff, r.int(2 ** 32), b.length][r.int(5)];
        if (field === 28 || field === 30) b.writeUInt16LE(v & 0xffff, p + field);
        else b.writeUInt32LE(v >>> 0, p + field);
      }
    } else {
      // Corrupt a local header (name/extra lengths shift the data offset).
      const p = b.indexOf(Buffer.from([0x50, 0x4b, 0x03, 0x04]), r.int(b.length));
      if (p >= 0) b.writeUInt16LE(r.int(65536), p + 26 + 2 * r.int(2));
    }
    fs.writeFileSync(file, b);
    exercise(file, stats, `zip case ${i} (kind ${kind})`);
  }
  console.log(`  container fuzz: ${stats.ok} read fully, ${stats.refused} refused with TorchFileError; largest buffer ${stats.maxAlloc} B; slowest ${stats.slowest.toFixed(1)} ms`);
  assert.is(stats.ok + stats.refused, 1200);
  assert.ok(stats.refused > 300, `most mutations are caught (${stats.refused})`);
  assert.ok(stats.slowest < 2000, `no case takes long (${stats.slowest.toFixed(0)} ms)`);
});

/** The records of an archive, so a mutated data.pkl can be re-zipped with correct CRCs. */
function records(file: string): { prefix: string; recs: ZipRecord[]; pkl: Buffer } {
  const z = ZipArchive.open(file);
  try {
    const recs = z.entries.map((e) => ({ name: e.name, data: z.readAll(e) }));
    const prefix = z.entries[0].name.split('/')[0];
    return { prefix, recs, pkl: recs.find((r) => r.name === `${prefix}/data.pkl`)!.data as Buffer };
  } finally {
    z.close();
  }
}

const OPCODES = [0x28, 0x2e, 0x30, 0x31, 0x32, 0x4e, 0x88, 0x89, 0x4a, 0x4b, 0x4d, 0x8a, 0x8b, 0x47, 0x58, 0x8c, 0x8d, 0x55, 0x54, 0x42, 0x43, 0x8e, 0x96,
  0x7d, 0x64, 0x5d, 0x6c, 0x29, 0x74, 0x85, 0x86, 0x87, 0x8f, 0x90, 0x91, 0x61, 0x65, 0x73, 0x75, 0x68, 0x6a, 0x71, 0x72, 0x94, 0x63, 0x93, 0x51, 0x52, 0x81, 0x92, 0x62, 0x95, 0x80,
  0x49, 0x46, 0x69, 0x6f, 0x82, 0x97];

test('pickle-level fuzz: 1,200 mutated data.pkl streams (re-zipped, valid CRCs)', () => {
  const r = rng(77);
  const stats: Stats = { ok: 0, refused: 0, maxAlloc: 0, slowest: 0 };
  const sources = BASES.map(records);
  const file = path.join(tmp, 'pkl.ckpt');
  for (let i = 0; i < 1200; i++) {
    const src = sources[i % 3];
    let p = Buffer.from(src.pkl);
    const kind = r.int(6);
    if (kind === 0) {
      for (let k = 1 + r.int(4); k > 0; k--) p[r.int(p.length)] = r.int(256);
    } else if (kind === 1) {
      // Replace an opcode-looking byte with another opcode (changes structure, not just values).
      for (let k = 1 + r.int(3); k > 0; k--) p[r.int(p.length)] = OPCODES[r.int(OPCODES.length)];
    } else if (kind === 2) {
      p = p.subarray(0, r.int(p.length));
    } else if (kind === 3) {
      // Duplicate or delete a slice.
      const a = r.int(p.length);
      const n = 1 + r.int(40);
      p = r.int(2) ? Buffer.concat([p.subarray(0, a), p.subarray(a, a + n), p.subarray(a)]) : Buffer.concat([p.subarray(0, a), p.subarray(a + n)]);
    } else if (kind === 4) {
      // Enlarge integers: shapes, strides, offsets, memo indices, lengths.
      for (let k = 1 + r.int(3); k > 0; k--) {
        const at = p.indexOf(0x4b, r.int(p.length)); // BININT1
        if (at >= 0 && at + 1 < p.length) p[at + 1] = [0, 1, 255, r.int(256)][r.int(4)];
      }
    } else {
      // Rename a GLOBAL (unknown / dangerous names must be refused or inert).
      const at = p.indexOf(Buffer.from('torch'), r.int(p.length));
      if (at >= 0) Buffer.from(['os\nsy', 'subpr', 'built', 'numpy', 'xxxxx'][r.int(5)]).copy(p, at);
    }
    writeZip(file, src.recs.map((rec) => (rec.name === `${src.prefix}/data.pkl` ? { name: rec.name, data: p } : rec)));
    exercise(file, stats, `pickle case ${i} (kind ${kind})`);
  }
  console.log(`  pickle fuzz: ${stats.ok} read fully, ${stats.refused} refused with TorchFileError; largest buffer ${stats.maxAlloc} B; slowest ${stats.slowest.toFixed(1)} ms`);
  assert.is(stats.ok + stats.refused, 1200);
  assert.ok(stats.refused > 300, `most mutations are caught (${stats.refused})`);
  assert.ok(stats.slowest < 2000, `no case takes long (${stats.slowest.toFixed(0)} ms)`);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
