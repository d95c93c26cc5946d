// Issue 18 items 2-4 (PyTorch reader): pickles that share one object many times over are read as a DAG (bounded
// time and memory, shared references stay shared), calls that copy a shared object over and over stop at the work
// budget, deep nesting (lists, modules, _rebuild_from_type_v2) ends in a clear refusal instead of a stack overflow,
// and storage / dtype names that are JavaScript property names (constructor, toString, __proto__) are refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PickleWriter, writeZip, TorchCheckpoint, TorchFileError, PyDict } from '../src/io/torch/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hard-torch-'));

/** Zips a pickle as archive/data.pkl (+ storages) and opens it; returns the checkpoint or the error. */
function archive(name: string, pkl: Uint8Array, storages: Record<string, Uint8Array> = {}): string {
  const file = path.join(tmp, name);
  writeZip(file, [
    { name: 'archive/data.pkl', data: pkl },
    ...Object.entries(storages).map(([k, d]) => ({ name: `archive/data/${k}`, data: d })),
    { name: 'archive/version', data: Buffer.from('3\n') },
  ]);
  return file;
}

/** Runs fn; asserts it ends within `ms` (a hang would not end at all: the reproductions hung before the fix). */
function timed<T>(what: string, fn: () => T, ms = 2000): T {
  const t0 = performance.now();
  const v = fn();
  const dt = performance.now() - t0;
  assert.ok(dt < ms, `${what}: took ${dt.toFixed(0)} ms`);
  return v;
}

function refused(file: string, re: RegExp, what: string): void {
  timed(what, () => {
    try {
      const ck = TorchCheckpoint.open(file);
      try { ck.tensors(); ck.stateDict(); } finally { ck.close(); }
    } catch (e) {
      assert.instance(e, TorchFileError, `${what}: ${(e as Error).stack}`);
      assert.ok((e as Error).message.startsWith(file), (e as Error).message);
      assert.match((e as Error).message, re, what);
      assert.not.match((e as Error).message, /\n/);
      return;
    }
    assert.unreachable(`${what}: accepted`);
  });
}

/** The reproduction: list i = [list i-1, list i-1], 40 levels (2^40 paths, 40 objects). */
function sharedLists(levels: number, leaf: (w: PickleWriter) => void): Uint8Array {
  const w = new PickleWriter().proto(2);
  leaf(w);
  w.put(); // memo 0 = the leaf
  for (let i = 1; i <= levels; i++) w.emptyList().mark().op(0x68, i - 1).op(0x68, i - 1).appends().put();
  return w.stop().bytes();
}

/** A float32 tensor of one element in storage "0" (pushes _rebuild_tensor_v2(...)). */
function tensorLeaf(w: PickleWriter, storageType = 'FloatStorage', module = 'torch'): void {
  w.global('torch._utils', '_rebuild_tensor_v2').mark();
  w.mark().str('storage').global(module, storageType).str('0').str('cpu').int(1).tuple().binpersid();
  w.int(0).ints([1]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
}

test('shared references: a 40-level DAG of one list (2^40 paths) is read in bounded time, sharing kept', () => {
  const plain = archive('dag.pt', sharedLists(40, (w) => w.emptyList()));
  const withTensor = archive('dag-tensor.pt', sharedLists(40, tensorLeaf), { 0: new Uint8Array(4) });
  for (const f of [plain, withTensor]) {
    const before = process.memoryUsage().rss;
    const ck = timed(f, () => TorchCheckpoint.open(f));
    try {
      const names = timed(`${f} tensors()`, () => ck.tensors());
      const root = ck.root as unknown[][];
      assert.is(root[0], root[1], 'the two items of the top list are one object (shared, not copied)');
      // the tensor sits twice in the bottom list: both slots are named, under the first path to that list
      assert.equal([...names.keys()], f === withTensor ? ['0', '1'].map((k) => [...Array(39).fill('0'), k].join('/')) : []);
    } finally {
      ck.close();
    }
    assert.ok(process.memoryUsage().rss - before < 256 * 2 ** 20, 'RSS growth under 256 MB');
  }
});

test('shared references, TorchScript form: a module shared 2^40 ways is walked once', () => {
  const w = new PickleWriter().proto(2);
  // module 0: a leaf module with one tensor attribute
  w.global('__torch__.M', 'M').emptyTuple().newobj().emptyDict().mark().str('weight');
  tensorLeaf(w);
  w.setitems().build().put();
  for (let i = 1; i <= 40; i++) {
    w.global('__torch__.M', 'M').emptyTuple().newobj().emptyDict().mark().str('a').op(0x68, i - 1).str('b').op(0x68, i - 1).setitems().build().put();
  }
  const f = archive('dag-ts.pt', w.stop().bytes(), { 0: new Uint8Array(4) });
  const ck = timed(f, () => TorchCheckpoint.open(f));
  try {
    const sd = timed('stateDict()', () => ck.stateDict());
    assert.equal([...sd.keys()], [`${'a.'.repeat(40)}weight`]);
  } finally {
    ck.close();
  }
});

test('work budget: OrderedDict / set / torch.Size / _codecs.encode of one shared object, called over and over, are refused', () => {
  for (const [fn, mod, arg] of [['OrderedDict', 'collections', 'pairs'], ['set', 'builtins', 'list'], ['Size', 'torch', 'list'], ['encode', '_codecs', 'str']] as const) {
    const w = new PickleWriter().proto(2);
    if (arg === 'str') w.str('x'.repeat(100_000)).put();
    else {
      w.emptyList().put().mark();
      for (let i = 0; i < 50_000; i++) (arg === 'pairs' ? w.mark().int(i & 0xff).int(0).tuple() : w.int(i & 0xff));
      w.appends();
    }
    // 20,000 calls each copying the 50,000-item list (10^9 copies) or the 100,000-character string
    w.emptyList().mark();
    for (let i = 0; i < 20_000; i++) {
      w.global(mod, fn).op(0x68, 0);
      if (arg === 'str') w.str('latin1').op(0x86); else w.op(0x85);
      w.reduce();
    }
    w.appends();
    const f = archive(`bomb-${fn}.pt`, w.stop().bytes());
    refused(f, /copy more than \d+ items/, `${mod}.${fn} bomb`);
  }
});

test('deep nesting: 200,000 nested _rebuild_from_type_v2 calls, 300,000 nested lists and modules are refused clearly', () => {
  const n = 200_000;
  const w = new PickleWriter().proto(2);
  w.global('torch._tensor', '_rebuild_from_type_v2').put();
  w.op(0x68, 0);
  for (let i = 0; i < n; i++) w.mark().op(0x68, 0).none();
  w.emptyTuple();
  for (let i = 0; i < n; i++) w.none().tuple();
  w.reduce();
  refused(archive('rebuild-deep.pt', w.stop().bytes()), /_rebuild_from_type_v2 nested more than \d+ deep/, 'nested _rebuild_from_type_v2');

  const l = new PickleWriter().proto(2);
  const depth = 300_000;
  for (let i = 0; i < depth; i++) l.emptyList();
  for (let i = 1; i < depth; i++) l.op(0x61); // APPEND
  refused(archive('lists-deep.pt', l.stop().bytes()), /nested more than 200 deep/, 'nested lists');

  const m = new PickleWriter().proto(2);
  for (let i = 0; i < 10_000; i++) m.global('__torch__.M', 'M').emptyTuple().newobj().emptyDict().str('sub');
  m.none();
  for (let i = 0; i < 10_000; i++) m.op(0x73).build(); // SETITEM, BUILD
  refused(archive('modules-deep.pt', m.stop().bytes()), /nested more than 200 deep/, 'nested modules');
});

test('property-name storage types and dtypes (constructor, toString, __proto__, ...) are refused, zip and legacy', () => {
  for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']) {
    const w = new PickleWriter().proto(2);
    tensorLeaf(w, name);
    refused(archive(`storage-${name}.pt`, w.stop().bytes(), { 0: new Uint8Array(4) }), /unsupported storage type torch\./, `storage torch.${name}`);
    // _rebuild_tensor_v3 with dtype torch.<name>
    const v = new PickleWriter().proto(2);
    v.global('torch._utils', '_rebuild_tensor_v3').mark();
    v.mark().str('storage').global('torch', 'UntypedStorage').str('0').str('cpu').int(4).tuple().binpersid();
    v.int(0).ints([1]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().global('torch', name).tuple().reduce();
    refused(archive(`dtype-${name}.pt`, v.stop().bytes(), { 0: new Uint8Array(4) }), /unsupported dtype/, `dtype torch.${name}`);
  }
  // legacy stream: the storage type of a persistent id
  const p = (fn: (w: PickleWriter) => void) => { const w = new PickleWriter().proto(2); fn(w); return w.stop().bytes(); };
  const legacy = path.join(tmp, 'legacy-proto.pt');
  const body = p((w) => {
    w.global('torch._utils', '_rebuild_tensor_v2').mark();
    w.mark().str('storage').global('torch', 'constructor').str('0').str('cpu').int(1).none().tuple().binpersid();
    w.int(0).ints([1]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
  });
  fs.writeFileSync(legacy, Buffer.concat([
    p((w) => w.long(0x1950a86a20f9469cfc6cn)), p((w) => w.int(1001)), p((w) => w.emptyDict()), body,
    p((w) => w.emptyList().mark().str('0').appends()), Buffer.alloc(12),
  ]));
  refused(legacy, /unsupported storage type torch\.constructor/, 'legacy storage torch.constructor');
});

test('convert: the issue\'s 604-byte ViT-L-14.pt ends in one line, exit 2, within seconds', () => {
  const rel = path.join(tmp, 'R');
  fs.mkdirSync(rel);
  fs.writeFileSync(path.join(rel, 'x'), '');
  writeZip(path.join(rel, 'ViT-L-14.pt'), [
    { name: 'archive/data.pkl', data: sharedLists(40, (w) => w.emptyList()) },
    { name: 'archive/version', data: Buffer.from('3\n') },
  ]);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'karlo.js'), 'convert', '--from-original', rel, '--only', 'text_encoder', '--out', path.join(tmp, 'O')], { encoding: 'utf8', timeout: 30_000 });
  assert.ok(performance.now() - t0 < 15_000, 'ends quickly');
  assert.is(r.status, 2, r.stderr);
  assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /ViT-L-14\.pt/);
  assert.not.ok(fs.existsSync(path.join(tmp, 'O')));
  void PyDict;
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
