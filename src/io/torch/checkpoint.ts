// PyTorch checkpoints (torch.save zip archives, Lightning .ckpt, TorchScript archives, legacy pre-1.6 streams) read
// without Python.
// The pickle is decoded by our data-only unpickler; tensors stay lazy (storage record + view) until read, so a
// 4 GB checkpoint costs its pickle in memory plus one tensor at a time.
import * as fs from 'node:fs';
import type { SafetensorsDType, TensorData } from '../safetensors.js';
import { DTYPE_SIZE, decodeBytes } from '../safetensors.js';
import type { TensorSource } from '../../layers/module.js';
import { TorchFileError } from './errors.js';
import { FileRefusedError, openRegularFile } from '../files.js';
import { PickleTruncatedError, PyDict, PyGlobal, PyObject, PySet, describe, isTuple, unpickle, unpickleAt, type UnpickleHooks } from './pickle.js';
import { STORAGE_DTYPES, TORCH_DTYPES, TorchStorage, TorchTensor, makeTensor, materialize, type RawTensor } from './tensor.js';
import { ZipArchive } from './zip.js';

export interface TorchOpenOptions {
  /**
   * What a REDUCE (a call) of a callable outside the whitelist does: 'refuse' (default) stops with an error naming
   * it; 'placeholder' records it as an inert PyObject (still nothing runs). Names of dangerous callables
   * (os.system, builtins.eval, subprocess.*, ...) are refused either way.
   */
  unknownCalls?: 'refuse' | 'placeholder';
}

/** Containers nested deeper than this in a pickle are refused (a state dict is 2-3 deep, TorchScript modules ~10). */
const MAX_WALK_DEPTH = 200;
/** Nesting of `_rebuild_from_type_v2` (a Tensor subclass around a rebuilder; one level in real files). */
const MAX_REBUILD_NESTING = 4;

interface ContainerInfo {
  prefix: string;
  kind: 'pickle' | 'torchscript';
  version: string | null;
  bigEndian: boolean;
  root: unknown;
}

export class TorchCheckpoint {
  readonly file: string;
  /** The archive's top folder (`archive`, or the file stem for torch.save(path) / TorchScript). */
  readonly prefix: string;
  /** 'torchscript' when the archive holds TorchScript code (torch.jit.save). */
  readonly kind: 'pickle' | 'torchscript';
  readonly version: string | null;
  readonly bigEndian: boolean;
  /** The unpickled top object (PyDict / PyObject / tuple / ...). */
  readonly root: unknown;
  /** Storages by key (a key shared by several tensors = tied or viewed weights). */
  readonly storages = new Map<string, TorchStorage>();
  /** Bytes in the file (bounds every allocation: a stride-0 view may not expand beyond it). */
  private readonly fileSize: number;
  private zip: ZipArchive | null = null;
  /** The open file of a legacy stream (its storages are read from it on demand). */
  private legacyFdValue: number | null = null;
  private readonly closers: (() => void)[] = [];
  private stateDictCache: Map<string, TorchTensor> | null = null;

  private constructor(file: string, fileSize: number, init: (ck: TorchCheckpoint) => ContainerInfo) {
    this.file = file;
    this.fileSize = fileSize;
    const c = init(this);
    this.prefix = c.prefix;
    this.kind = c.kind;
    this.version = c.version;
    this.bigEndian = c.bigEndian;
    this.root = c.root;
  }

  /**
   * Opens a checkpoint and unpickles its object tree (tensor data is read later, on demand): a torch.save zip
   * archive (torch >= 1.6, Lightning .ckpt, TorchScript), or the legacy pre-1.6 stream.
   */
  static open(file: string, opts: TorchOpenOptions = {}): TorchCheckpoint {
    let fd: number;
    let size: number;
    try {
      ({ fd, size } = openRegularFile(file, 'checkpoint'));
    } catch (e) {
      throw new TorchFileError(file, (e as FileRefusedError).reason ?? (e as Error).message);
    }
    const head = Buffer.alloc(Math.min(size, 512));
    fs.readSync(fd, head, 0, head.length, 0);
    if (head.length >= 2 && head[0] === 0x80 && head[1] <= 5) {
      try {
        return new TorchCheckpoint(file, size, (ck) => ck.initLegacy(fd, size, opts));
      } catch (e) {
        fs.closeSync(fd);
        throw e;
      }
    }
    fs.closeSync(fd);
    if (head.length >= 262 && head.toString('latin1', 257, 262) === 'ustar') {
      throw new TorchFileError(file, 'a tar archive: the pre-0.4 torch.save tar format is not supported; re-save it with torch >= 1.6');
    }
    const zip = ZipArchive.open(file);
    try {
      return new TorchCheckpoint(file, zip.size, (ck) => ck.initZip(zip, opts));
    } catch (e) {
      zip.close();
      throw e;
    }
  }

  private initZip(zip: ZipArchive, opts: TorchOpenOptions): ContainerInfo {
    const file = this.file;
    this.zip = zip;
    this.closers.push(() => zip.close());
    if (zip.entries.length === 0) throw new TorchFileError(file, 'zip archive is empty');
    const first = zip.entries[0].name;
    const slash = first.indexOf('/');
    if (slash <= 0) throw new TorchFileError(file, `first zip entry "${first}" is not inside a top folder: not a PyTorch archive`);
    const prefix = first.slice(0, slash);
    const rec = (name: string) => zip.get(`${prefix}/${name}`);
    const pkl = rec('data.pkl');
    if (!pkl) throw new TorchFileError(file, `no "${prefix}/data.pkl" record: not a PyTorch checkpoint (entries: ${zip.entries.slice(0, 5).map((e) => e.name).join(', ')}${zip.entries.length > 5 ? ', ...' : ''})`);
    const kind = rec('constants.pkl') || zip.entries.some((e) => e.name.startsWith(`${prefix}/code/`)) ? 'torchscript' : 'pickle';
    const small = (name: string) => {
      const e = rec(name);
      if (!e) return null;
      const b = zip.readAll(e, 1024);
      zip.checkCrc(e, b);
      return b.toString('utf8').trim();
    };
    const version = small('version') ?? small('.data/version');
    const bo = small('byteorder');
    if (bo !== null && bo !== 'little' && bo !== 'big') throw new TorchFileError(file, `byteorder record is "${bo}", expected "little" or "big"`);
    const data = zip.readAll(pkl, zip.size);
    zip.checkCrc(pkl, data);
    const root = unpickle(data, file, `${prefix}/data.pkl`, {
      persistentLoad: (pid, fail) => this.persistentLoad(prefix, pid, fail),
      reduce: (fn, args, fail, charge) => this.reduce(fn, args, fail, charge, opts),
    });
    return { prefix, kind, version, bigEndian: bo === 'big', root };
  }

  /**
   * The legacy stream (torch < 1.6, or _use_new_zipfile_serialization=False): pickles of the magic number, the
   * protocol version (1001) and sys_info, then the object pickle, then the list of storage keys, then each storage
   * as an int64 element count followed by its raw bytes. Storages are located by walking those counts (positioned
   * reads only); their bytes are read on demand.
   */
  private initLegacy(fd: number, size: number, opts: TorchOpenOptions): ContainerInfo {
    const file = this.file;
    this.legacyFdValue = fd;
    this.closers.push(() => fs.closeSync(fd));
    const readAt = (pos: number, len: number, what: string): Buffer => {
      if (pos < 0 || pos + len > size) throw new TorchFileError(file, `${what}: bytes [${pos}, ${pos + len}) lie outside the file (${size} bytes)`);
      const b = Buffer.allocUnsafeSlow(len);
      let done = 0;
      while (done < len) {
        const n = fs.readSync(fd, b, done, Math.min(len - done, 1 << 30), pos + done);
        if (n <= 0) throw new TorchFileError(file, `${what}: unexpected end of file`);
        done += n;
      }
      return b;
    };
    const roots = new Map<string, { dtype: SafetensorsDType; numel: number; offset: number | null }>();
    const noCalls: UnpickleHooks = {
      persistentLoad: (_pid, fail) => fail('unexpected persistent id in a header pickle'),
      reduce: (fn, _args, fail) => fail(`refused: a header pickle calls ${fn.qualname}`),
    };
    // The pickles are at the start; read a growing prefix until they all parse.
    let len = Math.min(size, 1 << 20);
    for (;;) {
      const buf = readAt(0, len, 'legacy header');
      roots.clear();
      this.storages.clear();
      try {
        const magic = unpickleAt(buf, 0, file, 'legacy magic number', noCalls);
        if (magic.value !== 0x1950a86a20f9469cfc6cn) throw new TorchFileError(file, 'not a PyTorch file: a pickle without torch.save\'s magic number (and not a zip archive)');
        const proto = unpickleAt(buf, magic.end, file, 'legacy protocol version', noCalls);
        if (proto.value !== 1001) throw new TorchFileError(file, `legacy protocol version ${String(proto.value)} is not 1001`);
        const sys = unpickleAt(buf, proto.end, file, 'legacy sys_info', noCalls);
        const bigEndian = sys.value instanceof PyDict && sys.value.get('little_endian') === false;
        const main = unpickleAt(buf, sys.end, file, 'legacy object pickle', {
          persistentLoad: (pid, fail) => this.legacyPersistentLoad(pid, fail, roots, size),
          reduce: (fn, args, fail, charge) => this.reduce(fn, args, fail, charge, opts),
        });
        const keys = unpickleAt(buf, main.end, file, 'legacy storage keys', noCalls);
        if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === 'string')) throw new TorchFileError(file, 'legacy storage key list is not a list of strings');
        // Locate each storage: int64 element count, then the bytes.
        let pos = keys.end;
        for (const key of keys.value as string[]) {
          const r = roots.get(key);
          if (!r) throw new TorchFileError(file, `legacy storage key "${key}" is not used by the object pickle`);
          if (r.offset !== null) throw new TorchFileError(file, `legacy storage key "${key}" is listed twice`);
          const h = readAt(pos, 8, `storage "${key}" header`);
          const numel = bigEndian ? h.readBigInt64BE(0) : h.readBigInt64LE(0);
          if (numel !== BigInt(r.numel)) throw new TorchFileError(file, `storage "${key}": the stream holds ${numel} elements, the pickle says ${r.numel}`);
          r.offset = pos + 8;
          pos = r.offset + r.numel * DTYPE_SIZE[r.dtype];
          if (pos > size) throw new TorchFileError(file, `storage "${key}" runs past the end of the file (${size} bytes): truncated file?`);
        }
        return { prefix: '', kind: 'pickle', version: 'legacy 1001', bigEndian, root: main.value };
      } catch (e) {
        if (e instanceof PickleTruncatedError && len < size) {
          len = Math.min(size, len * 4);
          continue;
        }
        throw e;
      }
    }
  }

  private legacyPersistentLoad(pid: unknown, fail: (m: string) => never, roots: Map<string, { dtype: SafetensorsDType; numel: number; offset: number | null }>, size: number): unknown {
    if (!isTuple(pid) || pid.length < 2) fail(`persistent id ${describe(pid)} is not a tuple`);
    const t = pid as unknown[];
    if (t[0] === 'module') return t[1]; // a pickled container class: its name only
    if (t[0] !== 'storage' || t.length !== 6) fail('legacy persistent id is not (\'storage\', type, key, location, numel, view)');
    const [, type, key, location, numel, view] = t;
    if (!(type instanceof PyGlobal) || type.module !== 'torch' || !STORAGE_DTYPES.has(type.name)) fail(`unsupported storage type ${type instanceof PyGlobal ? type.qualname : describe(type)}`);
    if (typeof key !== 'string' || key.length > 64) fail(`storage key ${typeof key === 'string' ? 'too long' : describe(key)}`);
    if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) fail(`storage "${key}": element count ${String(numel)} is invalid`);
    const dtype = STORAGE_DTYPES.get((type as PyGlobal).name)!;
    const es = DTYPE_SIZE[dtype];
    if ((numel as number) * es > size) fail(`storage "${key}" of ${numel} elements is larger than the file`);
    let r = roots.get(key as string);
    if (!r) {
      r = { dtype, numel: numel as number, offset: null };
      roots.set(key as string, r);
    } else if (r.dtype !== dtype || r.numel !== numel) {
      fail(`storage "${key}" is used with two different types or sizes`);
    }
    const root = r;
    const rootRecord = (base: number, bytes: number, name: string) => ({
      name,
      size: bytes,
      read: (offset: number, length: number): Uint8Array => {
        if (root.offset === null) throw new TorchFileError(this.file, `storage "${key}" has no data in the file (missing from the storage key list)`);
        if (offset < 0 || base + offset + length > root.numel * es) throw new TorchFileError(this.file, `read outside storage "${key}"`);
        const pos = root.offset + base + offset;
        const b = Buffer.allocUnsafeSlow(length);
        let done = 0;
        const fd = this.legacyFd();
        while (done < length) {
          const n = fs.readSync(fd, b, done, Math.min(length - done, 1 << 30), pos + done);
          if (n <= 0) throw new TorchFileError(this.file, `storage "${key}": unexpected end of file`);
          done += n;
        }
        return b;
      },
    });
    const loc = typeof location === 'string' ? location : String(location);
    if (view === null) {
      let s = this.storages.get(key as string);
      if (!s) {
        s = new TorchStorage(key as string, dtype, numel as number, loc, rootRecord(0, (numel as number) * es, `storage ${key}`), false);
        this.storages.set(key as string, s);
      }
      return s;
    }
    if (!isTuple(view) || view.length !== 3) fail(`storage "${key}": view metadata ${describe(view)} is not (key, offset, size)`);
    const [viewKey, vOffset, vSize] = view as unknown[];
    if (typeof viewKey !== 'string' || typeof vOffset !== 'number' || typeof vSize !== 'number' || !Number.isSafeInteger(vOffset) || !Number.isSafeInteger(vSize) || vOffset < 0 || vSize < 0 || vOffset + vSize > (numel as number)) {
      fail(`storage "${key}": view ${describe(view)} does not fit its ${numel} elements`);
    }
    let s = this.storages.get(viewKey as string);
    if (!s) {
      s = new TorchStorage(viewKey as string, dtype, vSize as number, loc, rootRecord((vOffset as number) * es, (vSize as number) * es, `storage ${key}[${vOffset}:${(vOffset as number) + (vSize as number)}]`), false);
      this.storages.set(viewKey as string, s);
    }
    return s;
  }

  private legacyFd(): number {
    if (this.legacyFdValue === null) throw new TorchFileError(this.file, 'file is closed');
    return this.legacyFdValue;
  }

  private persistentLoad(prefix: string, pid: unknown, fail: (m: string) => never): TorchStorage {
    if (!isTuple(pid) || pid.length !== 5 || pid[0] !== 'storage') fail(`persistent id ${describe(pid)} is not ('storage', type, key, location, numel)`);
    const [, type, key, location, numel] = pid as unknown[];
    if (!(type instanceof PyGlobal) || type.module !== 'torch' || !STORAGE_DTYPES.has(type.name)) {
      fail(`unsupported storage type ${type instanceof PyGlobal ? type.qualname : describe(type)}`);
    }
    if (typeof key !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(key)) fail(`storage key ${typeof key === 'string' ? JSON.stringify(key.slice(0, 64)) : describe(key)} is not a plain name`);
    if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) fail(`storage "${key}": element count ${String(numel)} is invalid`);
    const g = type as PyGlobal;
    const dtype = STORAGE_DTYPES.get(g.name)!;
    const existing = this.storages.get(key as string);
    if (existing) {
      if (existing.dtype !== dtype || existing.numel !== numel) fail(`storage "${key}" is used as ${g.name}[${numel}] and as ${existing.dtype}[${existing.numel}]`);
      return existing;
    }
    const entryName = `${prefix}/data/${key}`;
    const zip = this.zip!;
    const entry = zip.get(entryName);
    if (!entry) fail(`storage "${key}": no record "${entryName}" in the archive`);
    const bytes = (numel as number) * DTYPE_SIZE[dtype];
    if (entry!.size !== bytes) fail(`storage "${key}": record "${entryName}" holds ${entry!.size} bytes, ${g.name} of ${numel} elements needs ${bytes}`);
    const e = entry!;
    const record = {
      name: e.name,
      size: e.size,
      read: (offset: number, length: number) => (e.method === 0 ? zip.readRange(e, offset, length) : zip.readAll(e).subarray(offset, offset + length)),
    };
    const s = new TorchStorage(key as string, dtype, numel as number, typeof location === 'string' ? location : String(location), record, g.name === 'UntypedStorage');
    this.storages.set(key as string, s);
    return s;
  }

  private reduce(fn: PyGlobal, args: readonly unknown[], fail: (m: string) => never, charge: (n: number) => void, opts: TorchOpenOptions, nesting = 0): unknown {
    const q = fn.qualname;
    const storageArg = (v: unknown) => {
      if (!(v instanceof TorchStorage)) fail(`${q}: first argument is a ${describe(v)}, not a storage`);
      return v as TorchStorage;
    };
    switch (q) {
      case 'collections.OrderedDict': {
        const d = new PyDict();
        if (args.length > 1) fail('OrderedDict takes at most one argument');
        if (args.length === 1) {
          const items = args[0];
          if (!Array.isArray(items)) fail(`OrderedDict(${describe(items)}) is not supported`);
          charge((items as unknown[]).length);
          for (const kv of items as unknown[]) {
            if (!Array.isArray(kv) || kv.length !== 2) fail('OrderedDict items must be pairs');
            d.set((kv as unknown[])[0], (kv as unknown[])[1]);
          }
        }
        return d;
      }
      case 'torch._utils._rebuild_tensor': // (storage, offset, size, stride)
      case 'torch._utils._rebuild_tensor_v2': { // (storage, offset, size, stride, requires_grad, hooks[, metadata])
        if (args.length < 4 || args.length > 7) fail(`${q} takes 4 to 7 arguments, got ${args.length}`);
        const s = storageArg(args[0]);
        return makeTensor(fail, s, args[1], args[2], args[3], args[4], s.dtype, this.fileSize);
      }
      case 'torch._utils._rebuild_tensor_v3': { // (storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])
        if (args.length < 7 || args.length > 8) fail(`${q} takes 7 or 8 arguments, got ${args.length}`);
        const s = storageArg(args[0]);
        const dt = args[6];
        if (!(dt instanceof PyGlobal) || dt.module !== 'torch' || !TORCH_DTYPES.has(dt.name)) fail(`${q}: unsupported dtype ${describe(dt)}`);
        return makeTensor(fail, s, args[1], args[2], args[3], args[4], TORCH_DTYPES.get((dt as PyGlobal).name)!, this.fileSize);
      }
      case 'torch._utils._rebuild_parameter': // (data, requires_grad, hooks)
      case 'torch._utils._rebuild_parameter_with_state': { // (data, requires_grad, hooks, state)
        const t = args[0];
        if (!(t instanceof TorchTensor)) fail(`${q}: data is a ${describe(t)}, not a tensor`);
        const tt = t as TorchTensor;
        const p = new TorchTensor(tt.storage, tt.offset, tt.shape, tt.stride, tt.dtype, args[1] === true);
        p.isParameter = true;
        return p;
      }
      case 'torch._tensor._rebuild_from_type_v2': { // (func, type, args, state): a Tensor subclass around func(*args)
        const [f, , a] = args;
        if (!(f instanceof PyGlobal) || !isTuple(a)) fail(`${q}: malformed arguments`);
        if (nesting >= MAX_REBUILD_NESTING) fail(`refused: ${q} nested more than ${MAX_REBUILD_NESTING} deep`);
        return this.reduce(f as PyGlobal, a as unknown[], fail, charge, opts, nesting + 1);
      }
      case 'torch.Size':
        if (args.length !== 1 || !Array.isArray(args[0])) fail('torch.Size takes one tuple');
        charge((args[0] as unknown[]).length);
        return Object.freeze([...(args[0] as unknown[])]);
      case 'torch.device':
        if (!args.every((a) => typeof a === 'string' || typeof a === 'number')) fail('torch.device takes a string and an index');
        return args.map(String).join(':');
      case '_codecs.encode': { // how protocol 2 pickles bytes: encode(str, 'latin1')
        const [s, enc] = args;
        if (typeof s !== 'string') fail('_codecs.encode of a non-string');
        charge((s as string).length);
        return enc === 'latin1' || enc === 'latin-1' ? new Uint8Array(Buffer.from(s as string, 'latin1')) : new TextEncoder().encode(s as string);
      }
      case 'builtins.set':
      case 'builtins.frozenset':
        if (args.length && !Array.isArray(args[0])) fail(`${q}(${describe(args[0])}) is not supported`);
        if (args.length) charge((args[0] as unknown[]).length);
        return new PySet(args.length ? [...(args[0] as unknown[])] : [], fn.name === 'frozenset');
      case 'builtins.bytearray':
        return args.length && args[0] instanceof Uint8Array ? args[0] : new Uint8Array(0);
      default:
        if (opts.unknownCalls === 'placeholder') return new PyObject(fn, args, 'REDUCE');
        return fail(`refused: the pickle calls ${q}(...), which is not on this reader's whitelist (tensor rebuilders, OrderedDict, torch.Size, _codecs.encode, set); nothing was executed`);
    }
  }

  /**
   * The weights: the `state_dict` of a Lightning checkpoint, the module tree of a TorchScript archive
   * (attribute paths joined by dots = torch's state_dict()), a plain dict of tensors, or a tuple/list of tensors
   * (named "0", "1", ...).
   */
  stateDict(): Map<string, TorchTensor> {
    if (this.stateDictCache) return this.stateDictCache;
    const out = new Map<string, TorchTensor>();
    const r = this.root;
    if (r instanceof PyDict && r.get('state_dict') instanceof PyDict) {
      for (const [k, v] of r.get('state_dict') as PyDict) if (v instanceof TorchTensor) out.set(keyName(k), v);
    } else if (isTorchScriptModule(r)) {
      this.walkModule(r as PyObject, '', out, 0, new Set());
    } else if (r instanceof PyDict) {
      for (const [k, v] of r) if (v instanceof TorchTensor) out.set(keyName(k), v);
      if (out.size === 0) throw new TorchFileError(this.file, `no state_dict: the top-level dict holds no tensors (keys: ${[...r.keys()].slice(0, 10).map(keyName).join(', ')})`);
    } else if (Array.isArray(r) || r instanceof TorchTensor) {
      return this.tensors();
    } else {
      throw new TorchFileError(this.file, `no state_dict: the pickle holds a ${describe(r)}`);
    }
    this.stateDictCache = out;
    return out;
  }

  /**
   * Every tensor reachable from the top object. Entries of a top-level `state_dict` keep their keys; anything else
   * is named by its path joined with "/" (`optimizer_states/0/state/0/exp_avg`); TorchScript modules by dotted
   * attribute paths. A tensor held by two containers gets both names; a container reachable by several paths (a
   * shared reference) is walked once, under the first path, so a pickle that shares one list many times over is a
   * DAG walk of its size, not a tree expansion.
   */
  tensors(): Map<string, TorchTensor> {
    const out = new Map<string, TorchTensor>();
    const r = this.root;
    if (isTorchScriptModule(r)) {
      this.walkModule(r as PyObject, '', out, 0, new Set());
      return out;
    }
    if (r instanceof TorchTensor) {
      out.set('0', r);
      return out;
    }
    const seen = new Set<unknown>();
    // An explicit stack (no recursion): [value, name, depth].
    const todo: [unknown, string, number][] = [[r, '', 0]];
    const pushAll = (items: [unknown, string, number][]) => { for (let i = items.length - 1; i >= 0; i--) todo.push(items[i]); };
    while (todo.length) {
      const [v, name, depth] = todo.pop()!;
      if (v instanceof TorchTensor) { if (!out.has(name)) out.set(name, v); continue; }
      if (v === null || typeof v !== 'object' || seen.has(v)) continue;
      if (depth > MAX_WALK_DEPTH) throw new TorchFileError(this.file, `data.pkl: refused: objects nested more than ${MAX_WALK_DEPTH} deep at "${shortName(name)}"`);
      seen.add(v);
      const join = (k: string) => (name === '' ? k : `${name}/${k}`);
      const next: [unknown, string, number][] = [];
      if (v instanceof PyDict) {
        for (const [k, x] of v) {
          if (depth === 0 && k === 'state_dict' && x instanceof PyDict) {
            for (const [sk, sx] of x) if (sx instanceof TorchTensor) out.set(keyName(sk), sx);
            continue;
          }
          next.push([x, join(keyName(k)), depth + 1]);
        }
      } else if (Array.isArray(v)) {
        v.forEach((x, i) => next.push([x, join(String(i)), depth + 1]));
      } else if (v instanceof PyObject) {
        if (v.items) for (const [k, x] of v.items) next.push([x, join(keyName(k)), depth + 1]);
        if (v.list) v.list.forEach((x, i) => next.push([x, join(String(i)), depth + 1]));
        if (v.state !== undefined) next.push([v.state, name, depth + 1]);
      }
      pushAll(next);
    }
    return out;
  }

  private walkModule(root: PyObject, rootPrefix: string, out: Map<string, TorchTensor>, rootDepth: number, seen: Set<unknown>): void {
    // Each module once (a submodule shared by several parents is named by its first path), without recursion.
    const todo: [PyObject, string, number][] = [[root, rootPrefix, rootDepth]];
    while (todo.length) {
      const [m, prefix, depth] = todo.pop()!;
      if (seen.has(m)) continue;
      if (depth > MAX_WALK_DEPTH) throw new TorchFileError(this.file, `data.pkl: refused: modules nested more than ${MAX_WALK_DEPTH} deep at "${shortName(prefix)}"`);
      seen.add(m);
      const st = m.state;
      if (!(st instanceof PyDict)) continue;
      const next: [PyObject, string, number][] = [];
      for (const [k, v] of st) {
        const name = `${prefix}${keyName(k)}`;
        if (v instanceof TorchTensor) { if (!out.has(name)) out.set(name, v); }
        else if (isTorchScriptModule(v)) next.push([v as PyObject, `${name}.`, depth + 1]);
      }
      for (let i = next.length - 1; i >= 0; i--) todo.push(next[i]);
    }
  }

  /** A tensor (by state-dict name or object) as contiguous little-endian bytes in its own dtype. */
  readRaw(t: string | TorchTensor): RawTensor {
    const [name, tensor] = this.resolve(t);
    return materialize(this.file, tensor, this.bigEndian, `tensor "${name}"`);
  }

  /** A tensor widened like safetensors reads: floats → float32 (F64 rounded), integers/bool → int32. */
  read(t: string | TorchTensor): TensorData {
    const [name, tensor] = this.resolve(t);
    const raw = materialize(this.file, tensor, this.bigEndian, `tensor "${name}"`);
    let data: TensorData['data'];
    try {
      data = decodeBytes(raw.bytes, raw.dtype, tensor.numel, `tensor "${name}"`);
    } catch (e) {
      throw new TorchFileError(this.file, (e as Error).message);
    }
    return { dtype: data instanceof Float32Array ? 'float32' : 'int32', shape: raw.shape, data };
  }

  private resolve(t: string | TorchTensor): [string, TorchTensor] {
    if (t instanceof TorchTensor) return [`storage ${t.storage.key}`, t];
    const x = this.stateDict().get(t) ?? this.tensors().get(t);
    if (!x) throw new TorchFileError(this.file, `no tensor named "${t}"`);
    return [t, x];
  }

  close(): void {
    for (const c of this.closers.splice(0)) c();
    this.legacyFdValue = null;
  }
}

function isTorchScriptModule(v: unknown): boolean {
  return v instanceof PyObject && v.cls.module.startsWith('__torch__');
}

/** A dict key as a name component (tuple keys rendered at most 8 deep and about 256 characters long in all). */
export function keyName(k: unknown): string {
  let left = 256;
  const render = (x: unknown, depth: number): string => {
    if (left <= 0) return '...';
    let s: string;
    if (isTuple(x)) {
      if (depth > 8) s = '(...)';
      else {
        s = '(';
        for (let i = 0; i < x.length; i++) {
          if (left <= 0) { s += '...'; break; }
          s += (i ? ', ' : '') + render(x[i], depth + 1);
        }
        s += ')';
      }
    } else if (typeof x === 'string') s = x.length > left ? `${x.slice(0, left)}...` : x;
    else if (typeof x === 'number' || typeof x === 'bigint') s = String(x);
    else if (x === true) s = 'True';
    else if (x === false) s = 'False';
    else if (x === null) s = 'None';
    else s = describe(x);
    left -= s.length + 2;
    return s;
  };
  if (typeof k === 'string') return k;
  return render(k, 0);
}

/** The end of a long path, for messages. */
function shortName(name: string): string {
  return name.length > 120 ? `...${name.slice(-120)}` : name;
}

/**
 * A checkpoint's state dict as a TensorSource, so a Module can load a .ckpt/.pt/.th directly. With `prefix`
 * ("model."), only keys under it, with the prefix removed.
 */
export function torchSource(file: string, opts: TorchOpenOptions & { prefix?: string } = {}): TensorSource & { close(): void; checkpoint: TorchCheckpoint } {
  const ck = TorchCheckpoint.open(file, opts);
  const prefix = opts.prefix ?? '';
  const map = new Map<string, TorchTensor>();
  for (const [k, t] of ck.stateDict()) if (k.startsWith(prefix)) map.set(k.slice(prefix.length), t);
  const get = (n: string) => {
    const t = map.get(n);
    if (!t) throw new TorchFileError(file, `no tensor named "${prefix}${n}"`);
    return t;
  };
  return {
    checkpoint: ck,
    names: () => [...map.keys()],
    shape: (n) => [...get(n).shape],
    read: (n) => {
      try {
        return ck.read(get(n));
      } catch (e) {
        if (e instanceof TorchFileError) throw new TorchFileError(file, `tensor "${prefix}${n}": ${e.message.slice(file.length + 2)}`);
        throw e;
      }
    },
    describe: (n?: string) => (n ? `${file} (${prefix}${n})` : file),
    close: () => ck.close(),
  };
}
