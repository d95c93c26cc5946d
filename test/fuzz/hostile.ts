// Hostile-input families for test/hardening_fuzz.test.ts (not a test file itself: it runs in a child process so that
// a hang is caught by a timeout and the RSS of each case can be measured from a small baseline).
//   node --expose-gc --import tsx test/fuzz/hostile.ts FAMILY[,FAMILY...] SEED
// prints one JSON line per case: {"case", "ms", "growthMB" (null when no new peak), "outcome", "message"}; before
// each case a line {"start": case} so that the parent can name a case that never ends.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PickleWriter, writeZip, TorchCheckpoint } from '../../src/io/torch/index.js';
import { SafetensorsFile } from '../../src/io/safetensors.js';
import { readJson } from '../../src/io/weights.js';
import { CLIPTokenizer } from '../../src/tokenizer/clip_tokenizer.js';
import { UnCLIPScheduler } from '../../src/samplers/unclip_scheduler.js';
import { readKarloConfigs, CONFIG_FILES } from '../../tools/convert/hparams.js';
import { inspectPath } from '../../src/io/inspect.js';
import { unet2dConditionConfig } from '../../src/models/unet2d_condition.js';
import { openModelFolder } from '../../src/io/model_folder.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hostile-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** mulberry32 */
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
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}

let currentFamily = '';
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

function run(caseName: string, fn: () => unknown): void {
  const name = `${currentFamily}: ${caseName}`;
  process.stdout.write(`${JSON.stringify({ start: name })}\n`);
  gc();
  const rss0 = process.memoryUsage().rss;
  const peak0 = process.resourceUsage().maxRSS;
  const t0 = performance.now();
  let outcome = 'ok';
  let message = '';
  try {
    fn();
  } catch (e) {
    outcome = (e as Error).constructor?.name ?? 'Error';
    message = String((e as Error).message ?? e);
    if (e instanceof RangeError && /call stack/.test(message)) outcome = 'StackOverflow';
  }
  const ms = performance.now() - t0;
  const peak1 = process.resourceUsage().maxRSS;
  const growthMB = peak1 > peak0 ? (peak1 * 1024 - rss0) / 2 ** 20 : null;
  process.stdout.write(`${JSON.stringify({ case: name, ms, growthMB, outcome, message: message.slice(0, 400) })}\n`);
}

/** Zips a pickle as archive/data.pkl (+ storages). */
function archive(name: string, pkl: Uint8Array, storages: Record<string, Uint8Array> = {}): string {
  const file = path.join(tmp, name);
  writeZip(file, [
    { name: 'archive/data.pkl', data: pkl },
    ...Object.entries(storages).map(([k, d]) => ({ name: `archive/data/${k}`, data: d })),
    { name: 'archive/version', data: Buffer.from('3\n') },
  ]);
  return file;
}

function readAll(file: string): void {
  const ck = TorchCheckpoint.open(file);
  try {
    for (const [, t] of ck.tensors()) ck.read(t);
    ck.stateDict();
  } finally {
    ck.close();
  }
}

function tensorLeaf(w: PickleWriter, storageType = 'FloatStorage'): void {
  w.global('torch._utils', '_rebuild_tensor_v2').mark();
  w.mark().str('storage').global('torch', storageType).str('0').str('cpu').int(1).tuple().binpersid();
  w.int(0).ints([1]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
}

const get = (w: PickleWriter, i: number) => (i < 256 ? w.op(0x68, i) : w.op(0x6a, i & 0xff, (i >> 8) & 0xff, (i >> 16) & 0xff, i >>> 24));

// ---------- families ----------

/** Random DAGs of shared containers: each level holds k references to the previous one (k^levels paths). */
function sharedReferences(seed: number): void {
  const r = rng(seed);
  for (let c = 0; c < 40; c++) {
    const levels = 5 + r.int(56);
    const fan = 2 + r.int(5);
    const kind = r.pick(['list', 'tuple', 'dict', 'odict', 'module', 'object', 'set'] as const);
    const w = new PickleWriter().proto(2);
    if (r.int(2)) tensorLeaf(w); else w.emptyList();
    w.put();
    for (let i = 1; i <= levels; i++) {
      if (kind === 'list') { w.emptyList().mark(); for (let k = 0; k < fan; k++) get(w, i - 1); w.appends(); }
      else if (kind === 'tuple') { w.mark(); for (let k = 0; k < fan; k++) get(w, i - 1); w.tuple(); }
      else if (kind === 'dict') { w.emptyDict().mark(); for (let k = 0; k < fan; k++) { w.str(`k${k}`); get(w, i - 1); } w.setitems(); }
      else if (kind === 'odict') { w.global('collections', 'OrderedDict').mark().mark(); for (let k = 0; k < fan; k++) { w.mark().str(`k${k}`); get(w, i - 1); w.tuple(); } w.op(0x6c).tuple().reduce(); }
      else if (kind === 'set') { w.global('builtins', 'set').mark().mark(); for (let k = 0; k < fan; k++) get(w, i - 1); w.op(0x6c).tuple().reduce(); }
      else { w.global(kind === 'module' ? '__torch__.M' : 'lightning.X', 'M').emptyTuple().newobj().emptyDict().mark(); for (let k = 0; k < fan; k++) { w.str(`m${k}`); get(w, i - 1); } w.setitems().build(); }
      w.put();
    }
    const f = archive(`dag-${c}.pt`, w.stop().bytes(), { 0: new Uint8Array(4) });
    run(`shared ${kind} levels=${levels} fan=${fan}`, () => readAll(f));
  }
}

/** Calls that copy one memoized object, over and over. */
function copyBombs(seed: number): void {
  const r = rng(seed);
  for (let c = 0; c < 20; c++) {
    const fn = r.pick([['collections', 'OrderedDict', 'pairs'], ['builtins', 'set', 'list'], ['builtins', 'frozenset', 'list'], ['torch', 'Size', 'list'], ['_codecs', 'encode', 'str']] as const);
    const size = 1000 + r.int(60_000);
    const calls = 100 + r.int(30_000);
    const w = new PickleWriter().proto(2);
    if (fn[2] === 'str') w.str('y'.repeat(size * 2)).put();
    else {
      w.emptyList().put().mark();
      for (let i = 0; i < size; i++) (fn[2] === 'pairs' ? w.mark().int(i & 0xff).int(0).tuple() : w.int(i & 0xff));
      w.appends();
    }
    w.emptyList().mark();
    for (let i = 0; i < calls; i++) {
      w.global(fn[0], fn[1]).op(0x68, 0);
      if (fn[2] === 'str') w.str('latin1').op(0x86); else w.op(0x85);
      w.reduce();
    }
    w.appends();
    const bytes = w.stop().bytes();
    if (bytes.length > 1 << 20) continue;
    const f = archive(`bomb-${c}.pt`, bytes);
    run(`copy ${fn[1]} size=${size} calls=${calls}`, () => readAll(f));
  }
}

/** Deeply nested structures of every kind the reader walks or calls. */
function deepNesting(seed: number): void {
  const r = rng(seed);
  for (let c = 0; c < 24; c++) {
    const depth = r.pick([150, 250, 1000, 30_000, 150_000]);
    const kind = r.pick(['lists', 'tuples', 'dicts', 'modules', 'rebuild', 'parameter', 'state'] as const);
    const w = new PickleWriter().proto(2);
    if (kind === 'lists') { for (let i = 0; i < depth; i++) w.emptyList(); for (let i = 1; i < depth; i++) w.op(0x61); }
    else if (kind === 'tuples') { for (let i = 0; i < depth; i++) w.mark(); w.none(); for (let i = 0; i < depth; i++) w.tuple(); }
    else if (kind === 'dicts') { for (let i = 0; i < depth; i++) w.emptyDict().str('k'); w.none(); for (let i = 0; i < depth; i++) w.op(0x73); }
    else if (kind === 'modules') { for (let i = 0; i < depth; i++) w.global('__torch__.M', 'M').emptyTuple().newobj().emptyDict().str('sub'); w.none(); for (let i = 0; i < depth; i++) w.op(0x73).build(); }
    else if (kind === 'rebuild') {
      w.global('torch._tensor', '_rebuild_from_type_v2').put().op(0x68, 0);
      for (let i = 0; i < depth; i++) w.mark().op(0x68, 0).none();
      w.emptyTuple();
      for (let i = 0; i < depth; i++) w.none().tuple();
      w.reduce();
    } else if (kind === 'parameter') {
      tensorLeaf(w);
      w.put();
      for (let i = 1; i <= Math.min(depth, 20_000); i++) {
        w.global('torch._utils', '_rebuild_parameter').mark();
        get(w, i - 1);
        w.bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce().put();
      }
    } else {
      for (let i = 0; i < depth; i++) w.global('lightning.X', 'S').emptyTuple().newobj();
      w.none();
      for (let i = 0; i < depth; i++) w.build();
    }
    const bytes = w.stop().bytes();
    if (bytes.length > 1 << 20) continue;
    const f = archive(`deep-${c}.pt`, bytes, { 0: new Uint8Array(4) });
    run(`deep ${kind} depth=${depth}`, () => readAll(f));
  }
}

const PROP_NAMES = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'isPrototypeOf', 'propertyIsEnumerable', 'toLocaleString', '__lookupGetter__'];

/** JavaScript property names wherever a name from a file selects something. */
function propertyNames(seed: number): void {
  const r = rng(seed);
  for (const name of PROP_NAMES) {
    const w = new PickleWriter().proto(2);
    tensorLeaf(w, name);
    const f1 = archive(`p-storage-${name}.pt`, w.stop().bytes(), { 0: new Uint8Array(4) });
    run(`storage torch.${name}`, () => readAll(f1));
    const v = new PickleWriter().proto(2);
    v.global('torch._utils', '_rebuild_tensor_v3').mark();
    v.mark().str('storage').global('torch', 'UntypedStorage').str('0').str('cpu').int(4).tuple().binpersid();
    v.int(0).ints([1]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().global('torch', name).tuple().reduce();
    const f2 = archive(`p-dtype-${name}.pt`, v.stop().bytes(), { 0: new Uint8Array(4) });
    run(`dtype torch.${name}`, () => readAll(f2));
    // safetensors dtype, and a tensor named like a property
    const st = (hdr: object, n: string) => {
      const h = Buffer.from(JSON.stringify(hdr));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(h.length));
      const f = path.join(tmp, n);
      fs.writeFileSync(f, Buffer.concat([len, h, Buffer.alloc(4)]));
      return f;
    };
    const f3 = st({ t: { dtype: name, shape: [1], data_offsets: [0, 4] } }, `p-${name}.safetensors`);
    run(`safetensors dtype ${name}`, () => SafetensorsFile.open(f3).close());
    const f4 = st(JSON.parse(`{${JSON.stringify(name)}: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}`), `p-key-${name}.safetensors`);
    run(`safetensors tensor named ${name}`, () => { const s = SafetensorsFile.open(f4); try { if (!s.has(name)) throw new Error('lost'); s.read(name); } finally { s.close(); } });
    // configs with such keys
    run(`unet config key ${name}`, () => unet2dConditionConfig(JSON.parse(`{${JSON.stringify(name)}: {"sample_size": 9999999}}`), 'config.json'));
    const yamlDir = path.join(tmp, `y-${name}`);
    fs.mkdirSync(yamlDir);
    for (const f of Object.values(CONFIG_FILES)) fs.writeFileSync(path.join(yamlDir, f), `model:\n  hparams:\n    ${name}:\n      x: 1\n    ${r.int(2) ? name : 'a'}: 2\n`);
    run(`yaml key ${name}`, () => readKarloConfigs(yamlDir));
    const tokDir = path.join(tmp, `t-${name}`);
    fs.mkdirSync(tokDir);
    fs.writeFileSync(path.join(tokDir, 'tokenizer_config.json'), JSON.stringify({ added_tokens_decoder: JSON.parse(`{${JSON.stringify(name)}: {"content": "x"}}`), [name]: 1 }));
    run(`tokenizer added token id ${name}`, () => CLIPTokenizer.fromDir(tokDir).encode(['&constructor; &toString; x']));
    const modelDir = path.join(tmp, `m-${name}`);
    fs.mkdirSync(modelDir);
    fs.writeFileSync(path.join(modelDir, 'model_index.json'), `{"_class_name": "UnCLIPPipeline", ${JSON.stringify(name)}: ["diffusers", "X"]}`);
    run(`model_index component ${name}`, () => { openModelFolder(modelDir); });
    run(`inspect component ${name}`, () => inspectPath(modelDir));
  }
}

/** FIFO, /dev/zero link, folder in the place of every kind of file a reader opens. */
function nonRegularFiles(seed: number): void {
  void seed;
  const kinds: Record<string, (p: string) => void> = {
    fifo: (p) => execFileSync('mkfifo', [p]),
    zero: (p) => fs.symlinkSync('/dev/zero', p),
    urandom: (p) => fs.symlinkSync('/dev/urandom', p),
    folder: (p) => fs.mkdirSync(p),
  };
  let n = 0;
  const place = (name: string, kind: string, siblings: Record<string, string> = {}) => {
    const d = path.join(tmp, `nr${n++}`);
    fs.mkdirSync(d);
    for (const [f, src] of Object.entries(siblings)) fs.copyFileSync(src, path.join(d, f));
    const p = path.join(d, name);
    kinds[kind](p);
    return p;
  };
  const tok = path.join(ROOT, 'models', 'karlo-tiny', 'tokenizer');
  const tokFiles = ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json'];
  for (const kind of Object.keys(kinds)) {
    const st = place('model.safetensors', kind);
    run(`${kind} safetensors`, () => SafetensorsFile.open(st));
    const pt = place('ViT-L-14.pt', kind);
    run(`${kind} checkpoint`, () => TorchCheckpoint.open(pt));
    const cfg = place('config.json', kind);
    run(`${kind} config.json`, () => readJson(cfg));
    const sch = place('scheduler_config.json', kind);
    run(`${kind} scheduler_config.json`, () => UnCLIPScheduler.fromDir(path.dirname(sch)));
    for (const f of tokFiles) {
      const p = place(f, kind, Object.fromEntries(tokFiles.filter((x) => x !== f).map((x) => [x, path.join(tok, x)])));
      run(`${kind} tokenizer ${f}`, () => CLIPTokenizer.fromDir(path.dirname(p)));
    }
    const y = place(CONFIG_FILES.decoder, kind);
    for (const f of Object.values(CONFIG_FILES)) if (f !== CONFIG_FILES.decoder) fs.writeFileSync(path.join(path.dirname(y), f), 'model:\n  hparams:\n    a: 1\n');
    run(`${kind} karlo yaml`, () => readKarloConfigs(path.dirname(y)));
    if (kind !== 'folder') {
      const w = place('diffusion_pytorch_model.safetensors', kind);
      fs.writeFileSync(path.join(path.dirname(w), 'config.json'), '{}');
      run(`${kind} inspect component folder`, () => inspectPath(path.dirname(w)));
      run(`${kind} inspect path`, () => inspectPath(w));
    }
  }
}

/** Mutated tokenizer files and configs. */
function tokenizerFiles(seed: number): void {
  const r = rng(seed);
  const VALUES = [null, [], {}, '', -1, 0, 1, 1.5, 1e300, 5e7, 1e9, 1e30, 'x', 'x'.repeat(10_000), true, { content: '' }, { content: 'a' }, { content: null }, [1, 2]];
  const SPECIALS = { '<|startoftext|>': 0, '<|endoftext|>': 1 };
  for (let c = 0; c < 70; c++) {
    const d = path.join(tmp, `tok${c}`);
    fs.mkdirSync(d);
    const vocab: Record<string, unknown> = { ...SPECIALS, 'a</w>': 2, a: 3, 'b</w>': 4, b: 5 };
    let merges = '#version: 0.2\na </w>\nb </w>\n';
    const config: Record<string, unknown> = {};
    const special: Record<string, unknown> = {};
    const what = r.int(6);
    const key = r.pick(['bos_token', 'eos_token', 'pad_token', 'unk_token', 'model_max_length', 'added_tokens_decoder', '__proto__', 'constructor']);
    const val = r.pick(VALUES);
    if (what === 0) vocab[r.pick(['a', 'zz', '__proto__', 'constructor', ''])] = val;
    else if (what === 1) merges = r.pick(['', '#v\n', '#v\na b c\n', '#v\n\n\n', '#v\n b\n', `#v\n${'a '.repeat(5000)}\n`, '#v\na\tb\n', '#v\n\u0000 \u0000\n']);
    else if (what === 2) config[key] = val;
    else if (what === 3) special[key] = val;
    else if (what === 4) config.added_tokens_decoder = { [r.pick(['5', '-1', '1e3', 'x', '99999999999999999999', '__proto__'])]: val };
    else config.model_max_length = r.pick([5e7, 1e9, 1e17, 1e30, -1, 0, 1, 2, 77, 16384, 16385, 1.5]);
    const text = (x: unknown) => (r.int(10) === 0 ? JSON.stringify(x).slice(0, -1) : JSON.stringify(x));
    fs.writeFileSync(path.join(d, 'vocab.json'), what === 0 && r.int(3) === 0 ? text(r.pick(VALUES)) : text(vocab));
    fs.writeFileSync(path.join(d, 'merges.txt'), merges);
    fs.writeFileSync(path.join(d, 'tokenizer_config.json'), text(config));
    fs.writeFileSync(path.join(d, 'special_tokens_map.json'), text(special));
    const prompt = r.pick(['a b', 'a '.repeat(3000), 'b'.repeat(3000), '', '<|startoftext|>a<|endoftext|>', 'x\u0000y']);
    run(`tokenizer case ${c} (${['vocab', 'merges', 'config', 'special map', 'added tokens', 'model_max_length'][what]})`, () => {
      const t = CLIPTokenizer.fromDir(d);
      t.encode([prompt]);
      t.encode([prompt], { padding: 'longest' });
    });
  }
}

const FAMILIES: Record<string, (seed: number) => void> = { sharedReferences, copyBombs, deepNesting, propertyNames, nonRegularFiles, tokenizerFiles };

// FAMILY may be a comma-separated list; each case's name is prefixed with its family.
const [families, seedArg] = process.argv.slice(2);
for (const family of families.split(',')) {
  if (!Object.prototype.hasOwnProperty.call(FAMILIES, family)) {
    process.stderr.write(`unknown family ${family}\n`);
    process.exit(2);
  }
  currentFamily = family;
  FAMILIES[family](Number(seedArg ?? 1));
}
