// The PyTorch checkpoint reader against the original_ckpt fixtures: every tensor of the TorchScript archive, the
// stats tuple and the storage edge cases reproduced byte for byte in its native dtype (and widened exactly);
// Lightning .ckpt structure; ZIP64 archives (also one with records past 4 GiB); refused and inert globals;
// errors that name the file and record.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { fixture, useBackend } from './helpers.js';
import { PriorTransformer, priorTransformerConfig } from '../src/models/prior_transformer.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { TorchCheckpoint, TorchFileError, PyDict, PyObject, torchSource } from '../src/io/torch/index.js';
import { PickleWriter, saveLegacyStateDict, saveTorchStateDict, writeZip, type TensorToSave } from '../src/io/torch/writer.js';

const ORIG = (f: string) => fixture('original_ckpt', 'original', f);
const EXP = (f: string) => fixture('original_ckpt', 'expected', f);
const manifest = JSON.parse(fs.readFileSync(fixture('original_ckpt', 'manifest.json'), 'utf8'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-torch-'));

/** Compares every tensor of an expected safetensors file with the checkpoint's tensors(): names, dtype, shape, bytes. */
function assertSameTensors(ck: TorchCheckpoint, expectedFile: string, rename: (n: string) => string = (n) => n) {
  const exp = SafetensorsFile.open(expectedFile);
  try {
    const ours = ck.tensors();
    const expectedNames = exp.names().map(rename).sort();
    assert.equal([...ours.keys()].sort(), expectedNames, 'tensor names');
    for (const n of exp.names()) {
      const t = ours.get(rename(n))!;
      const raw = ck.readRaw(t);
      const info = exp.info(n);
      assert.is(raw.dtype, info.dtype, `${n}: dtype`);
      assert.equal(raw.shape, info.shape, `${n}: shape`);
      assert.ok(Buffer.compare(Buffer.from(raw.bytes), Buffer.from(exp.readBytes(n))) === 0, `${n}: bytes differ`);
      // Widened like safetensors reads (F16/BF16 exact, F64 rounded once, ints to int32): identical arrays.
      const wide = ck.read(t);
      const expWide = exp.read(n);
      assert.is(wide.dtype, expWide.dtype, `${n}: widened dtype`);
      assert.ok(Buffer.compare(Buffer.from(wide.data.buffer, wide.data.byteOffset, wide.data.byteLength), Buffer.from(expWide.data.buffer, expWide.data.byteOffset, expWide.data.byteLength)) === 0, `${n}: widened values differ`);
    }
  } finally {
    exp.close();
  }
}

test('extra-storage-cases.ckpt: every tensor bit for bit (views, strides, stride 0, shared storages, all dtypes, 0-d, empty)', () => {
  const ck = TorchCheckpoint.open(ORIG('extra-storage-cases.ckpt'));
  try {
    assert.is(ck.prefix, 'archive');
    assertSameTensors(ck, EXP('extra-storage-cases.expected.safetensors'));
  } finally {
    ck.close();
  }
});

test('extra-storage-cases.ckpt: layout facts, shared storages, parameters and non-tensor values match the .json', () => {
  const facts = JSON.parse(fs.readFileSync(EXP('extra-storage-cases.expected.json'), 'utf8'));
  const ck = TorchCheckpoint.open(ORIG('extra-storage-cases.ckpt'));
  try {
    const ts = ck.tensors();
    const torchName: Record<string, string> = { F32: 'float32', F64: 'float64', F16: 'float16', BF16: 'bfloat16', I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool' };
    for (const [name, f] of Object.entries<any>(facts.tensors)) {
      const t = ts.get(name)!;
      assert.ok(t, name);
      assert.is(torchName[t.dtype], f.dtype, `${name} dtype`);
      assert.equal(t.shape, f.shape, `${name} shape`);
      assert.equal(t.stride, f.stride, `${name} stride`);
      assert.is(t.offset, f.storage_offset, `${name} offset`);
      assert.is(t.storage.numel, f.storage_numel, `${name} storage numel`);
      assert.is(t.contiguous, f.contiguous, `${name} contiguous`);
    }
    for (const group of facts.shared_storage_groups as string[][]) {
      const keys = new Set(group.map((n) => ts.get(n)!.storage.key));
      assert.is(keys.size, 1, `${group.join(', ')} share one storage`);
    }
    for (const [a, b] of facts.tensor_objects_pickled_once as string[][]) assert.ok(ts.get(a) === ts.get(b), `${a} and ${b} are one object (BINGET)`);
    for (const n of facts.parameter_objects as string[]) assert.ok(ts.get(n)!.isParameter, `${n} is a Parameter`);
    assert.not.ok(ts.get('emb.weight')!.isParameter);
    const root = ck.root as PyDict;
    const nt = facts.non_tensor_values;
    assert.is(root.get('epoch'), nt.epoch);
    assert.is(root.get('global_step'), nt.global_step);
    assert.is(root.get('pytorch-lightning_version'), nt['pytorch-lightning_version']);
    const hp = root.get('hyper_parameters') as PyDict;
    assert.is(hp.get('name'), 'tiny-ü ✓');
    assert.is(hp.get('lr'), 0.0001);
    assert.is(hp.get('big_int'), 2 ** 40);
    assert.is(hp.get('huge'), 2n ** 70n);
    assert.is(hp.get('neg'), -7);
    assert.equal(hp.get('flags'), [true, false, null]);
    assert.equal([...(hp.get('shape') as number[])], [1, 2, 3]);
    assert.equal(hp.get('empty'), []);
    assert.is((hp.get('nested') as PyDict).get('a'), 1);
    const groups = ((root.get('optimizer_states') as unknown[])[0] as PyDict).get('param_groups') as PyDict[];
    assert.is(groups[0].get('eps'), 1e-8);
    assert.equal([...(groups[0].get('betas') as number[])], [0.9, 0.999]);
    assert.equal(groups[0].get('params'), [0]);
    assert.is((root.get('ema_state') as PyDict).get('decay'), facts.ema_decay);
    // The state_dict's BUILD state (_metadata) is accepted and kept aside, not mistaken for tensors.
    assert.ok((root.get('state_dict') as PyDict).attrs instanceof PyDict);
  } finally {
    ck.close();
  }
});

test('ViT-L-14.pt (TorchScript): the module tree flattens to state_dict(), 53 tensors, native F16/F32/I64, constants ignored', () => {
  const ck = TorchCheckpoint.open(ORIG('ViT-L-14.pt'));
  try {
    assert.is(ck.kind, 'torchscript');
    assert.is(ck.prefix, 'ViT-L-14');
    assert.is(ck.version, '4');
    assert.is(ck.stateDict().size, 53);
    assertSameTensors(ck, EXP('ViT-L-14.state_dict.safetensors'));
    const fp16 = [...ck.stateDict()].filter(([, t]) => t.dtype === 'F16').map(([n]) => n).sort();
    assert.equal(fp16, [...manifest.clip_state_dict_fp16_keys].sort());
    // Storages come from data/ only (constants/ holds the causal mask etc.).
    for (const s of ck.storages.values()) assert.match(s.record.name, /^ViT-L-14\/data\//);
    assert.ok((ck.root as PyObject).cls.qualname.startsWith('__torch__.clip.model'));
  } finally {
    ck.close();
  }
});

test('ViT-L-14_stats.th: the (mean, std) tuple', () => {
  const ck = TorchCheckpoint.open(ORIG('ViT-L-14_stats.th'));
  try {
    assert.is(ck.prefix, 'ViT-L-14_stats');
    assertSameTensors(ck, EXP('ViT-L-14_stats.expected.safetensors'), (n) => n.split('.')[0]);
  } finally {
    ck.close();
  }
});

test('Lightning .ckpt files: prefix from the first entry, top-level keys, state_dict sizes and dtypes as in the manifest', () => {
  for (const [file, facts] of Object.entries<any>(manifest.checkpoints)) {
    const ck = TorchCheckpoint.open(ORIG(file));
    try {
      assert.is(ck.prefix, 'archive');
      assert.is(ck.kind, 'pickle');
      assert.equal([...(ck.root as PyDict).keys()], facts.top_level_keys, file);
      const sd = ck.stateDict();
      assert.is(sd.size, facts.n_tensors, file);
      let params = 0;
      for (const t of sd.values()) {
        assert.is(t.dtype, 'F32');
        assert.ok(t.contiguous && t.offset === 0);
        params += t.numel;
      }
      assert.is(params, facts.n_params, file);
      assert.is(new Set([...sd.values()].map((t) => t.storage.key)).size, sd.size, `${file}: own storage each`);
    } finally {
      ck.close();
    }
  }
});

test('torchSource: a checkpoint as a TensorSource (prefix stripped), errors name the file and key', () => {
  const src = torchSource(ORIG('improved-sr-ckpt-step=1.2M.ckpt'), { prefix: 'model_last_step.' });
  try {
    assert.is(src.names().length, 118);
    assert.ok(src.names().includes('out.2.weight'));
    assert.equal(src.shape('out.2.weight'), [3, 32, 3, 3]);
    const t = src.read('out.2.bias');
    assert.is(t.dtype, 'float32');
    assert.is(t.data.length, 3);
    assert.throws(() => src.read('nope'), (e: Error) => e instanceof TorchFileError && e.message.includes('improved-sr-ckpt-step=1.2M.ckpt') && e.message.includes('model_last_step.nope'));
  } finally {
    src.close();
  }
});

test('torchSource: a diffusers-style .bin (torch.save zip) loads strictly into our module, values identical', async () => {
  await useBackend('cpu');
  const dir = path.join(tmp, 'bin-prior');
  fs.mkdirSync(dir);
  const st = SafetensorsFile.open(fixture('prior', 'diffusion_pytorch_model.safetensors'));
  const tensors = new Map<string, TensorToSave>(st.names().map((n) => [n, { dtype: st.info(n).dtype, shape: st.info(n).shape, data: st.readBytes(n) }]));
  const bin = path.join(dir, 'diffusion_pytorch_model.bin');
  saveTorchStateDict(bin, tensors);
  const model = new PriorTransformer(priorTransformerConfig(JSON.parse(fs.readFileSync(fixture('prior', 'config.json'), 'utf8'))));
  const src = torchSource(bin);
  try {
    const report = model.loadStateDict(src, { strict: true });
    assert.equal(report, { missing: [], unexpected: [], misshaped: [] });
    for (const [k, p] of model.namedParameters()) {
      const ours = p.toTorch();
      assert.equal([...ours.dataSync()], [...st.read(k).data], k);
      ours.dispose();
    }
  } finally {
    src.close();
    st.close();
    model.dispose();
  }
});

// ----------------------------------------------------------------------------------------- written archives

function sampleTensors(): Map<string, TensorToSave> {
  const f32 = Float32Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);
  const i64 = new BigInt64Array([1n, -2n, 3n]);
  return new Map<string, TensorToSave>([
    ['a.weight', { dtype: 'F32', shape: [4, 6], data: new Uint8Array(f32.buffer) }],
    ['b.count', { dtype: 'I64', shape: [3], data: new Uint8Array(i64.buffer) }],
    ['c.empty', { dtype: 'F32', shape: [0, 5], data: new Uint8Array(0) }],
  ]);
}

test('ZIP64: an archive whose every record carries ZIP64 extra fields (and a ZIP64 end record) reads identically', () => {
  const plain = path.join(tmp, 'plain.pt');
  const z64 = path.join(tmp, 'zip64.pt');
  saveTorchStateDict(plain, sampleTensors());
  saveTorchStateDict(z64, sampleTensors(), { zip64: true, lightning: true });
  const a = TorchCheckpoint.open(plain);
  const b = TorchCheckpoint.open(z64);
  try {
    // Our writer really wrote ZIP64 records: saturated 32-bit fields in the end record.
    const buf = fs.readFileSync(z64);
    assert.is(buf.readUInt32LE(buf.length - 22 + 16), 0xffffffff);
    assert.is(buf.readUInt32LE(buf.length - 22 - 20), 0x07064b50);
    assert.equal([...b.stateDict().keys()], ['a.weight', 'b.count', 'c.empty']);
    for (const n of a.stateDict().keys()) {
      assert.ok(Buffer.compare(Buffer.from(a.readRaw(n).bytes), Buffer.from(b.readRaw(n).bytes)) === 0, n);
    }
    assert.equal([...b.read('a.weight').data].slice(0, 3), [-3, -2.5, -2]);
    assert.equal([...b.read('b.count').data], [1, -2, 3]);
  } finally {
    a.close();
    b.close();
  }
});

test('ZIP64 past 4 GiB: a record after a 4.3 GB (sparse) storage is found through 64-bit offsets', () => {
  const file = path.join(tmp, 'big.pt');
  const big = 4_400_000_000;
  // The 4.4 GB record is a hole in a sparse file: the writer seeks past it (CRC skipped; the reader never checks
  // tensor-data CRCs). Only the small tensor after it is read back.
  const pkl = new PickleWriter().proto(2).global('collections', 'OrderedDict').emptyTuple().reduce().mark();
  const tensor = (name: string, key: string, cls: string, numel: number, shape: number[]) => {
    pkl.str(name).global('torch._utils', '_rebuild_tensor_v2').mark();
    pkl.mark().str('storage').global('torch', cls).str(key).str('cpu').int(numel).tuple().binpersid();
    pkl.int(0).ints(shape).ints(shape.length === 1 ? [1] : [shape[1], 1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
  };
  tensor('huge', '0', 'ByteStorage', big, [big]);
  tensor('small', '1', 'FloatStorage', 4, [2, 2]);
  pkl.setitems().stop();
  const small = new Float32Array([1, 2, 3, 4]);
  writeSparseZip(file, [
    { name: 'archive/data.pkl', data: pkl.bytes() },
    { name: 'archive/data/0', hole: big },
    { name: 'archive/data/1', data: new Uint8Array(small.buffer) },
    { name: 'archive/version', data: Buffer.from('3\n') },
  ]);
  const ck = TorchCheckpoint.open(file);
  try {
    assert.ok(fs.statSync(file).size > 2 ** 32);
    assert.equal([...ck.read('small').data], [1, 2, 3, 4]);
    assert.equal(ck.stateDict().get('huge')!.shape, [big]);
  } finally {
    ck.close();
    fs.rmSync(file);
  }
});

/** writeZip, but a record may be a hole of `hole` zero bytes (left unwritten: sparse on disk). */
function writeSparseZip(file: string, recs: { name: string; data?: Uint8Array; hole?: number }[]) {
  const fd = fs.openSync(file, 'w');
  let pos = 0;
  const central: Buffer[] = [];
  const w = (b: Uint8Array) => { fs.writeSync(fd, b, 0, b.length, pos); pos += b.length; };
  for (const r of recs) {
    const name = Buffer.from(r.name);
    const size = r.hole ?? r.data!.length;
    const ofs = pos;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(45, 4);
    lh.writeUInt32LE(0xffffffff, 18);
    lh.writeUInt32LE(0xffffffff, 22);
    lh.writeUInt16LE(name.length, 26);
    const z = Buffer.alloc(20);
    z.writeUInt16LE(1, 0);
    z.writeUInt16LE(16, 2);
    z.writeBigUInt64LE(BigInt(size), 4);
    z.writeBigUInt64LE(BigInt(size), 12);
    lh.writeUInt16LE(z.length, 28);
    w(lh); w(name); w(z);
    if (r.hole) pos += r.hole; else w(r.data!);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt32LE(r.data ? zlib.crc32(r.data) >>> 0 : 0, 16);
    c.writeUInt32LE(0xffffffff, 20);
    c.writeUInt32LE(0xffffffff, 24);
    c.writeUInt16LE(name.length, 28);
    const cz = Buffer.alloc(28);
    cz.writeUInt16LE(1, 0);
    cz.writeUInt16LE(24, 2);
    cz.writeBigUInt64LE(BigInt(size), 4);
    cz.writeBigUInt64LE(BigInt(size), 12);
    cz.writeBigUInt64LE(BigInt(ofs), 20);
    c.writeUInt16LE(cz.length, 30);
    c.writeUInt32LE(0xffffffff, 42);
    central.push(c, name, cz);
  }
  const cdOfs = pos;
  for (const b of central) w(b);
  const cdSize = pos - cdOfs;
  const z64 = pos;
  const e64 = Buffer.alloc(56);
  e64.writeUInt32LE(0x06064b50, 0);
  e64.writeBigUInt64LE(44n, 4);
  e64.writeBigUInt64LE(BigInt(recs.length), 24);
  e64.writeBigUInt64LE(BigInt(recs.length), 32);
  e64.writeBigUInt64LE(BigInt(cdSize), 40);
  e64.writeBigUInt64LE(BigInt(cdOfs), 48);
  w(e64);
  const loc = Buffer.alloc(20);
  loc.writeUInt32LE(0x07064b50, 0);
  loc.writeBigUInt64LE(BigInt(z64), 8);
  loc.writeUInt32LE(1, 16);
  w(loc);
  const e = Buffer.alloc(22);
  e.writeUInt32LE(0x06054b50, 0);
  e.writeUInt16LE(0xffff, 8);
  e.writeUInt16LE(0xffff, 10);
  e.writeUInt32LE(0xffffffff, 12);
  e.writeUInt32LE(0xffffffff, 16);
  w(e);
  fs.closeSync(fd);
}

// ----------------------------------------------------------------------------------------- hostile pickles

function archiveWith(name: string, pickle: Uint8Array): string {
  const f = path.join(tmp, name);
  writeZip(f, [{ name: 'archive/data.pkl', data: pickle }, { name: 'archive/version', data: Buffer.from('3\n') }]);
  return f;
}

const canary = path.join(tmp, 'pwned');

function callPickle(module: string, fn: string, arg: string): Uint8Array {
  return new PickleWriter().proto(2).global(module, fn).mark().str(arg).tuple().reduce().stop().bytes();
}

test('pickles naming os.system, builtins.eval, subprocess.*, posix.system are refused before anything else happens', () => {
  const cases: [string, string][] = [['os', 'system'], ['builtins', 'eval'], ['builtins', 'exec'], ['subprocess', 'Popen'], ['subprocess', 'check_output'], ['posix', 'system'], ['__builtin__', 'eval'], ['nt', 'system'], ['importlib', 'import_module'], ['runpy', 'run_path']];
  for (const [m, f] of cases) {
    const file = archiveWith(`evil-${m}-${f}.pt`, callPickle(m, f, `touch ${canary}`));
    assert.throws(() => TorchCheckpoint.open(file), (e: Error) => e instanceof TorchFileError && e.message.includes(file) && e.message.includes(`${m}.${f}`) && e.message.includes('refused'), `${m}.${f}`);
    // Also refused in placeholder mode: dangerous names are never accepted.
    assert.throws(() => TorchCheckpoint.open(file, { unknownCalls: 'placeholder' }), (e: Error) => e instanceof TorchFileError);
  }
  // STACK_GLOBAL (protocol 4) is checked the same way.
  const w = new PickleWriter().proto(4).str('os').str('system').op(0x93).mark().str(`touch ${canary}`).tuple().reduce().stop();
  assert.throws(() => TorchCheckpoint.open(archiveWith('evil-stack.pt', w.bytes())), /refused.*os\.system/);
  assert.not.ok(fs.existsSync(canary), 'nothing ran');
});

test('a call of any callable outside the whitelist is refused with its name; placeholder mode records it inertly', () => {
  const file = archiveWith('unknown-call.pt', callPickle('numpy.core.multiarray', '_reconstruct', 'x'));
  assert.throws(() => TorchCheckpoint.open(file), (e: Error) => e instanceof TorchFileError && e.message.includes('numpy.core.multiarray._reconstruct') && e.message.includes('whitelist'));
  const ck = TorchCheckpoint.open(file, { unknownCalls: 'placeholder' });
  assert.ok(ck.root instanceof PyObject);
  assert.is((ck.root as PyObject).cls.qualname, 'numpy.core.multiarray._reconstruct');
  ck.close();
});

test('unknown classes (Lightning, OmegaConf, TorchScript) become inert placeholders via NEWOBJ + BUILD', () => {
  const w = new PickleWriter().proto(2).emptyDict().mark()
    .str('hyper_parameters').global('omegaconf.dictconfig', 'DictConfig').emptyTuple().newobj()
    .emptyDict().mark().str('_content').emptyDict().setitems().build()
    .str('cb').global('pytorch_lightning.utilities.parsing', 'AttributeDict').emptyTuple().newobj().mark().str('lr').float(0.5).setitems()
    .str('state_dict').global('collections', 'OrderedDict').emptyTuple().reduce()
    .setitems().stop();
  const ck = TorchCheckpoint.open(archiveWith('placeholders.pt', w.bytes()));
  const root = ck.root as PyDict;
  const hp = root.get('hyper_parameters') as PyObject;
  assert.is(hp.cls.qualname, 'omegaconf.dictconfig.DictConfig');
  assert.ok((hp.state as PyDict).has('_content'));
  assert.is((root.get('cb') as PyObject).items!.get('lr'), 0.5);
  assert.is(ck.stateDict().size, 0);
  ck.close();
});

test('errors name the file and the record or key: not a zip, truncated, missing storage record, wrong storage size, view out of range', () => {
  const notZip = path.join(tmp, 'not.zip');
  fs.writeFileSync(notZip, 'hello world, certainly not a zip archive');
  assert.throws(() => TorchCheckpoint.open(notZip), (e: Error) => e instanceof TorchFileError && e.message.startsWith(notZip) && /not a zip/.test(e.message));

  const good = path.join(tmp, 'good.pt');
  saveTorchStateDict(good, sampleTensors());
  const bytes = fs.readFileSync(good);
  const trunc = path.join(tmp, 'trunc.pt');
  fs.writeFileSync(trunc, bytes.subarray(0, bytes.length - 30));
  assert.throws(() => TorchCheckpoint.open(trunc), (e: Error) => e instanceof TorchFileError && e.message.startsWith(trunc));

  const storagePickle = (key: string, cls: string, numel: number, offset: number, shape: number[], stride: number[]) => new PickleWriter().proto(2)
    .global('collections', 'OrderedDict').emptyTuple().reduce().mark().str('w')
    .global('torch._utils', '_rebuild_tensor_v2').mark()
    .mark().str('storage').global('torch', cls).str(key).str('cpu').int(numel).tuple().binpersid()
    .int(offset).ints(shape).ints(stride).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce()
    .setitems().stop().bytes();
  const withData = (name: string, pkl: Uint8Array, data: Uint8Array) => {
    const f = path.join(tmp, name);
    writeZip(f, [{ name: 'archive/data.pkl', data: pkl }, { name: 'archive/data/0', data }, { name: 'archive/version', data: Buffer.from('3\n') }]);
    return f;
  };
  const four = new Uint8Array(16);
  const missing = withData('missing.pt', storagePickle('7', 'FloatStorage', 4, 0, [4], [1]), four);
  assert.throws(() => TorchCheckpoint.open(missing), (e: Error) => e.message.includes(missing) && e.message.includes('archive/data/7'));
  const wrongSize = withData('wrongsize.pt', storagePickle('0', 'FloatStorage', 5, 0, [5], [1]), four);
  assert.throws(() => TorchCheckpoint.open(wrongSize), (e: Error) => e.message.includes(wrongSize) && e.message.includes('storage "0"') && e.message.includes('16 bytes'));
  const outOfRange = withData('view.pt', storagePickle('0', 'FloatStorage', 4, 2, [2, 2], [2, 1]), four);
  assert.throws(() => TorchCheckpoint.open(outOfRange), (e: Error) => e.message.includes(outOfRange) && e.message.includes('reaches element 5'));
  const hugeExpand = withData('expand.pt', storagePickle('0', 'FloatStorage', 4, 0, [1e6, 1e6], [0, 0]), four);
  assert.throws(() => TorchCheckpoint.open(hugeExpand), (e: Error) => e.message.includes(hugeExpand) && e.message.includes('more than the file holds'));
  // A legitimate stride-0 expand is materialised.
  const expand = withData('expand-ok.pt', storagePickle('0', 'FloatStorage', 4, 1, [2, 3], [1, 0]), new Uint8Array(new Float32Array([9, 1, 2, 9]).buffer));
  const ck = TorchCheckpoint.open(expand);
  assert.equal([...ck.read('w').data], [1, 1, 1, 2, 2, 2]);
  assert.throws(() => ck.read('v'), (e: Error) => e.message.includes(expand) && e.message.includes('"v"'));
  ck.close();
});

test('protocol-4 pickles (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL), _rebuild_tensor_v3 on an UntypedStorage, Parameter via _rebuild_from_type_v2', () => {
  const f = path.join(tmp, 'p4.pt');
  const sbu = (w: PickleWriter, str: string) => { const b = Buffer.from(str); return w.op(0x8c, b.length).raw(b).op(0x94); };
  const w = new PickleWriter().proto(4).op(0x95, 0, 0, 0, 0, 0, 0, 0, 0);
  sbu(sbu(w, 'collections'), 'OrderedDict').op(0x93).op(0x94).emptyTuple().reduce().op(0x94).mark();
  // "h": _rebuild_tensor_v3(UntypedStorage of 8 bytes, offset 1, (2,), (1,), False, OrderedDict(), torch.float16)
  sbu(w, 'h');
  sbu(sbu(w, 'torch._utils'), '_rebuild_tensor_v3').op(0x93).mark();
  w.mark(); sbu(w, 'storage'); sbu(sbu(w, 'torch'), 'UntypedStorage').op(0x93); sbu(w, '0'); sbu(w, 'cpu'); w.int(8).tuple().binpersid();
  w.int(1).ints([2]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce();
  sbu(sbu(w, 'torch'), 'float16').op(0x93);
  w.tuple().reduce();
  // "p": a Parameter rebuilt through _rebuild_from_type_v2(_rebuild_parameter, Parameter, (tensor, True, OrderedDict()), {})
  sbu(w, 'p');
  w.global('torch._tensor', '_rebuild_from_type_v2').mark().global('torch._utils', '_rebuild_parameter').global('torch.nn.parameter', 'Parameter').mark();
  w.global('torch._utils', '_rebuild_tensor_v2').mark().mark().str('storage').global('torch', 'FloatStorage').str('1').str('cpu').int(2).tuple().binpersid();
  w.int(0).ints([2]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
  w.bool(true).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().emptyDict().tuple().reduce();
  w.setitems().stop();
  const half = Buffer.alloc(8);
  [0x3c00, 0x4000, 0xc000, 0x3800].forEach((h, i) => half.writeUInt16LE(h, 2 * i)); // 1, 2, -2, 0.5
  writeZip(f, [
    { name: 'archive/data.pkl', data: w.bytes() },
    { name: 'archive/data/0', data: half },
    { name: 'archive/data/1', data: new Uint8Array(new Float32Array([3, 4]).buffer) },
    { name: 'archive/version', data: Buffer.from('3\n') },
  ]);
  const ck = TorchCheckpoint.open(f);
  try {
    const h = ck.stateDict().get('h')!;
    assert.is(h.dtype, 'F16');
    assert.equal([...ck.read('h').data], [2, -2]);
    const p = ck.stateDict().get('p')!;
    assert.ok(p.isParameter && p.requiresGrad);
    assert.equal([...ck.read('p').data], [3, 4]);
  } finally {
    ck.close();
  }
});

test('legacy (pre-1.6) torch.save streams: every tensor of the extra-storage fixture, and storage views from the 6-tuple persistent id', () => {
  const f = path.join(tmp, 'legacy.pt');
  const exp = SafetensorsFile.open(EXP('extra-storage-cases.expected.safetensors'));
  const tensors = new Map<string, TensorToSave>(exp.names().map((n) => [n, { dtype: exp.info(n).dtype, shape: exp.info(n).shape, data: exp.readBytes(n) }]));
  saveLegacyStateDict(f, tensors);
  const ck = TorchCheckpoint.open(f);
  try {
    assert.is(ck.version, 'legacy 1001');
    assert.is(ck.stateDict().size, exp.names().length);
    for (const n of exp.names()) assert.ok(Buffer.compare(Buffer.from(ck.readRaw(n).bytes), Buffer.from(exp.readBytes(n))) === 0, n);
  } finally {
    ck.close();
    exp.close();
  }
  // A view: storage "v" = elements [2, 6) of root storage "0" (8 floats).
  const w = new PickleWriter();
  w.proto(2).long(0x1950a86a20f9469cfc6cn).stop().proto(2).int(1001).stop().proto(2).emptyDict().mark().str('little_endian').bool(true).setitems().stop();
  w.proto(2).emptyDict().mark().str('view').global('torch._utils', '_rebuild_tensor_v2').mark();
  w.mark().str('storage').global('torch', 'FloatStorage').str('0').str('cpu').int(8).mark().str('v').int(2).int(4).tuple().tuple().binpersid();
  w.int(1).ints([3]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce().setitems().stop();
  w.proto(2).emptyList().mark().str('0').appends().stop();
  const count = Buffer.alloc(8);
  count.writeBigInt64LE(8n);
  const f2 = path.join(tmp, 'legacy-view.pt');
  fs.writeFileSync(f2, Buffer.concat([w.bytes(), count, Buffer.from(new Float32Array([0, 1, 2, 3, 4, 5, 6, 7]).buffer)]));
  const ck2 = TorchCheckpoint.open(f2);
  assert.equal([...ck2.read('view').data], [3, 4, 5]);
  ck2.close();
  // Truncated data and a wrong element count are errors naming the file.
  const full = fs.readFileSync(f2);
  fs.writeFileSync(f2, full.subarray(0, full.length - 4));
  assert.throws(() => TorchCheckpoint.open(f2), (e: Error) => e instanceof TorchFileError && e.message.startsWith(f2) && /past the end/.test(e.message));
  const bad = Buffer.from(full);
  bad.writeBigInt64LE(9n, w.bytes().length);
  fs.writeFileSync(f2, bad);
  assert.throws(() => TorchCheckpoint.open(f2), (e: Error) => e instanceof TorchFileError && /holds 9 elements, the pickle says 8/.test(e.message));
});

test('big-endian archives (byteorder record "big") are swapped to little-endian', () => {
  const f = path.join(tmp, 'be.pt');
  const pkl = new PickleWriter().proto(2).global('collections', 'OrderedDict').emptyTuple().reduce().mark().str('w')
    .global('torch._utils', '_rebuild_tensor_v2').mark()
    .mark().str('storage').global('torch', 'FloatStorage').str('0').str('cpu').int(2).tuple().binpersid()
    .int(0).ints([2]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce()
    .setitems().stop().bytes();
  const be = Buffer.alloc(8);
  be.writeFloatBE(1.5, 0);
  be.writeFloatBE(-2, 4);
  writeZip(f, [{ name: 'x/data.pkl', data: pkl }, { name: 'x/byteorder', data: Buffer.from('big') }, { name: 'x/data/0', data: be }]);
  const ck = TorchCheckpoint.open(f);
  assert.is(ck.prefix, 'x');
  assert.equal([...ck.read('w').data], [1.5, -2]);
  ck.close();
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
