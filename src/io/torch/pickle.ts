// A data-only unpickler: the opcode subset that PyTorch's weights-only unpickler accepts (protocol 2) plus the
// protocol 3-5 opcodes, defensively. It never imports or calls anything: GLOBAL yields an inert PyGlobal name,
// NEWOBJ an inert PyObject record; REDUCE (a function call in Python) is handed to the caller's `reduce` hook,
// which implements the few whitelisted callables (torch's tensor rebuilders, OrderedDict, ...) and refuses the
// rest. Names of well-known dangerous callables (os.system, builtins.eval, subprocess.*, ...) are refused as soon
// as the GLOBAL opcode names them. Every length is checked against the bytes left, so no allocation exceeds the
// pickle's own size.
import { TorchFileError } from './errors.js';

/** A module-level name (class or function) named by GLOBAL / STACK_GLOBAL: just the name, nothing imported. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualname(): string {
    return `${this.module}.${this.name}`;
  }
}

/** An instance of a class we do not implement (Lightning, OmegaConf, TorchScript modules): inert data. */
export class PyObject {
  /** BUILD state (for TorchScript modules: the attribute dict). */
  state: unknown = undefined;
  /** SETITEM(S) applied to it (dict subclasses). */
  items: Map<unknown, unknown> | null = null;
  /** APPEND(S) applied to it (list subclasses). */
  list: unknown[] | null = null;
  constructor(readonly cls: PyGlobal, readonly args: readonly unknown[], readonly how: 'NEWOBJ' | 'REDUCE' = 'NEWOBJ') {}
}

/** dict / collections.OrderedDict (insertion order kept; `attrs` holds a BUILD state such as `_metadata`). */
export class PyDict extends Map<unknown, unknown> {
  attrs: unknown = undefined;
}

/** set / frozenset. */
export class PySet {
  constructor(readonly items: unknown[], readonly frozen: boolean) {}
}

/** Tuples are frozen arrays (lists are plain arrays). */
export function isTuple(v: unknown): v is readonly unknown[] {
  return Array.isArray(v) && Object.isFrozen(v);
}

export interface UnpickleHooks {
  /** BINPERSID: resolves a persistent id (torch: a storage). */
  persistentLoad(pid: unknown, fail: (msg: string) => never): unknown;
  /**
   * REDUCE: a call of `fn` with `args`; implement the whitelist, refuse the rest via `fail`. `charge(n)` counts
   * work the call does beyond the opcode itself (items copied), against the pickle's work budget.
   */
  reduce(fn: PyGlobal, args: readonly unknown[], fail: (msg: string) => never, charge: (n: number) => void): unknown;
}

// Modules whose every name is refused, and single names refused, the moment a GLOBAL names them.
const DENIED_MODULES = [
  'os', 'posix', 'nt', 'subprocess', 'sys', 'shutil', 'importlib', 'runpy', 'socket', 'ctypes', 'pickle', '_pickle',
  'marshal', 'pty', 'code', 'codeop', 'commands', 'webbrowser', 'multiprocessing', 'asyncio', 'pdb', 'timeit',
  'platform', 'signal', 'threading', '_thread', 'urllib', 'http', 'ftplib', 'smtplib', 'telnetlib', 'tempfile',
  'io', '_io', 'zipimport', 'pkgutil', 'site', 'sysconfig', 'types', 'operator', 'functools', 'dill', 'cloudpickle', 'joblib', 'numpy.testing', 'torch.hub', 'torch.jit',
  'torch.serialization', 'torch.package', 'torch.ops', 'torch._ops', 'torch.utils.cpp_extension', 'torch.cuda',
  'torch.distributed', 'torch.multiprocessing', 'torch.fx', 'torch._dynamo', 'torch.compiler',
];
const DENIED_NAMES = new Set([
  'builtins.eval', 'builtins.exec', 'builtins.compile', 'builtins.__import__', 'builtins.open', 'builtins.getattr',
  'builtins.setattr', 'builtins.delattr', 'builtins.globals', 'builtins.locals', 'builtins.vars', 'builtins.input',
  'builtins.breakpoint', 'builtins.exit', 'builtins.quit', 'builtins.help',
  '__builtin__.eval', '__builtin__.exec', '__builtin__.execfile', '__builtin__.compile', '__builtin__.__import__',
  '__builtin__.open', '__builtin__.file', '__builtin__.getattr', '__builtin__.setattr', '__builtin__.apply',
  '__builtin__.input', '__builtin__.raw_input',
  'torch.load', 'torch.save', 'torch.compile', 'torch.classes',
]);

/** Why a global is refused outright, or null when it may appear as an inert name. */
export function deniedGlobal(module: string, name: string): string | null {
  const full = `${module}.${name}`;
  if (DENIED_NAMES.has(full)) return `${full} can run code`;
  for (const m of DENIED_MODULES) {
    if (module === m || module.startsWith(`${m}.`)) return `module ${module} can run code or touch the system`;
  }
  if (name.includes('\n') || module.includes('\n')) return 'malformed name';
  return null;
}

const MAX_DEPTH_MARKS = 1 << 20;

/**
 * Work budget of one pickle, in units of one item copied or one opcode run: a pickle can name one memoized object
 * many times (that is how shared references stay shared, and costs nothing), but a call that copies its argument
 * (OrderedDict(items), set(items), torch.Size(t), _codecs.encode(s)) repeated over one large memoized object costs
 * a copy each time. Legitimate pickles stay far below this (about one unit per byte).
 */
export function pickleWorkBudget(bytes: number): number {
  return 4 * bytes + (1 << 20);
}

/** The pickle ran past the end of the bytes given (a caller reading a stream may retry with more). */
export class PickleTruncatedError extends TorchFileError {}

/**
 * Unpickles `data` (the `record` of `file`, for error messages). Returns the top object. Throws TorchFileError on
 * any malformed input or refused global.
 */
export function unpickle(data: Uint8Array, file: string, record: string, hooks: UnpickleHooks): unknown {
  return unpickleAt(data, 0, file, record, hooks).value;
}

/** Unpickles the pickle starting at byte `start`; also returns the byte after its STOP (pickles in a stream). */
export function unpickleAt(data: Uint8Array, start: number, file: string, record: string, hooks: UnpickleHooks): { value: unknown; end: number } {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const n = data.length;
  let pos = start;
  let opPos = 0;
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();
  const budget = pickleWorkBudget(n - start);
  let work = 0;
  const charge = (k: number) => {
    work += k;
    if (work > budget) {
      fail(`refused: the pickle's calls copy more than ${budget} items in all (the same object copied over and over: a decompression bomb?)`);
    }
  };
  const utf8 = new TextDecoder('utf-8');
  const latin1 = new TextDecoder('latin1');

  const fail = (msg: string): never => {
    throw new TorchFileError(file, `${record}: ${msg} (opcode at byte ${opPos})`);
  };
  const truncated = (msg: string): never => {
    throw new PickleTruncatedError(file, `${record}: ${msg} (opcode at byte ${opPos})`);
  };
  const need = (k: number) => {
    if (k < 0) fail(`negative length ${k}`);
    if (pos + k > n) truncated(`needs ${k} more bytes but the pickle ends at byte ${n} (truncated or corrupt)`);
  };
  const u8 = () => { need(1); return data[pos++]; };
  const u16 = () => { need(2); const v = dv.getUint16(pos, true); pos += 2; return v; };
  const u32 = () => { need(4); const v = dv.getUint32(pos, true); pos += 4; return v; };
  const i32 = () => { need(4); const v = dv.getInt32(pos, true); pos += 4; return v; };
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`length ${v} is out of range`);
    return Number(v);
  };
  const bytes = (k: number) => { need(k); const b = data.subarray(pos, pos + k); pos += k; return b; };
  const line = () => {
    const start = pos;
    while (pos < n && data[pos] !== 0x0a) pos++;
    if (pos >= n) truncated('GLOBAL name is not terminated by a newline');
    const s = latin1.decode(data.subarray(start, pos));
    pos++;
    return s;
  };
  const pop = () => {
    if (stack.length === 0) fail('stack underflow');
    return stack.pop();
  };
  const top = () => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = () => {
    const items = stack;
    const prev = marks.pop();
    if (prev === undefined) fail('no MARK on the stack');
    stack = prev!;
    return items;
  };
  const long = (b: Uint8Array): number | bigint => {
    if (b.length === 0) return 0;
    if (b.length > 4096) fail(`integer of ${b.length} bytes is too large`);
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const global = (module: string, name: string) => {
    const why = deniedGlobal(module, name);
    if (why !== null) fail(`refused: the pickle names ${module}.${name} (${why}); this reader executes nothing and does not accept it`);
    return new PyGlobal(module, name);
  };
  const setItems = (target: unknown, kv: unknown[]) => {
    if (kv.length % 2) fail('SETITEMS with an odd number of items');
    let m: Map<unknown, unknown>;
    if (target instanceof PyDict) m = target;
    else if (target instanceof PyObject) m = target.items ??= new Map();
    else return fail(`SETITEM on a ${describe(target)}`);
    for (let i = 0; i < kv.length; i += 2) {
      const k = kv[i];
      if (k !== null && typeof k === 'object' && !isTuple(k) && !(k instanceof PyGlobal)) fail(`unhashable dict key (${describe(k)})`);
      m.set(k, kv[i + 1]);
    }
  };
  const append = (target: unknown, items: unknown[]) => {
    if (Array.isArray(target) && !Object.isFrozen(target)) { for (const x of items) target.push(x); return; }
    if (target instanceof PyObject) { const l = (target.list ??= []); for (const x of items) l.push(x); return; }
    fail(`APPEND to a ${describe(target)}`);
  };
  const tuple = (items: unknown[]) => Object.freeze(items);

  for (;;) {
    opPos = pos;
    if (pos >= n) truncated('the pickle ends without a STOP opcode');
    const op = data[pos++];
    switch (op) {
      case 0x80: { const p = u8(); if (p > 5) fail(`unsupported pickle protocol ${p}`); break; } // PROTO
      case 0x95: u64(); break; // FRAME: a length hint only
      case 0x2e: { // STOP
        const v = pop();
        return { value: v, end: pos };
      }
      case 0x28: // MARK
        if (marks.length >= MAX_DEPTH_MARKS) fail('too many nested MARKs');
        marks.push(stack);
        stack = [];
        break;
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4a: stack.push(i32()); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: { const k = u8(); stack.push(long(bytes(k))); break; } // LONG1
      case 0x8b: { const k = i32(); if (k < 0) fail('negative LONG4 length'); stack.push(long(bytes(k))); break; } // LONG4
      case 0x47: { need(8); stack.push(dv.getFloat64(pos, false)); pos += 8; break; } // BINFLOAT (big-endian)
      case 0x58: { const k = u32(); stack.push(utf8.decode(bytes(k))); break; } // BINUNICODE
      case 0x8c: { const k = u8(); stack.push(utf8.decode(bytes(k))); break; } // SHORT_BINUNICODE
      case 0x8d: { const k = u64(); stack.push(utf8.decode(bytes(k))); break; } // BINUNICODE8
      case 0x55: { const k = u8(); stack.push(latin1.decode(bytes(k))); break; } // SHORT_BINSTRING
      case 0x54: { const k = i32(); if (k < 0) fail('negative BINSTRING length'); stack.push(latin1.decode(bytes(k))); break; } // BINSTRING
      case 0x42: { const k = u32(); stack.push(bytes(k).slice()); break; } // BINBYTES
      case 0x43: { const k = u8(); stack.push(bytes(k).slice()); break; } // SHORT_BINBYTES
      case 0x8e: { const k = u64(); stack.push(bytes(k).slice()); break; } // BINBYTES8
      case 0x96: { const k = u64(); stack.push(bytes(k).slice()); break; } // BYTEARRAY8
      case 0x7d: stack.push(new PyDict()); break; // EMPTY_DICT
      case 0x64: { const items = popMark(); const d = new PyDict(); setItems(d, items); stack.push(d); break; } // DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: { const items = popMark(); stack.push(items); break; } // LIST
      case 0x29: stack.push(tuple([])); break; // EMPTY_TUPLE
      case 0x74: { const items = popMark(); stack.push(tuple(items)); break; } // TUPLE
      case 0x85: { const a = pop(); stack.push(tuple([a])); break; } // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); stack.push(tuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push(tuple([a, b, c])); break; } // TUPLE3
      case 0x8f: stack.push(new PySet([], false)); break; // EMPTY_SET
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof PySet) || s.frozen) fail(`ADDITEMS to a ${describe(s)}`);
        for (const x of items) (s as PySet).items.push(x);
        break;
      }
      case 0x91: { const items = popMark(); stack.push(new PySet(items, true)); break; } // FROZENSET
      case 0x61: { const v = pop(); append(top(), [v]); break; } // APPEND
      case 0x65: { const items = popMark(); append(top(), items); break; } // APPENDS
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; } // SETITEMS
      case 0x68: { const i = u8(); if (!memo.has(i)) fail(`BINGET ${i}: nothing memoized there`); stack.push(memo.get(i)); break; } // BINGET
      case 0x6a: { const i = u32(); if (!memo.has(i)) fail(`LONG_BINGET ${i}: nothing memoized there`); stack.push(memo.get(i)); break; } // LONG_BINGET
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x63: { const m = line(); const nm = line(); stack.push(global(m, nm)); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const nm = pop();
        const m = pop();
        if (typeof m !== 'string' || typeof nm !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(global(m as string, nm as string));
        break;
      }
      case 0x51: { const pid = pop(); stack.push(hooks.persistentLoad(pid, fail)); break; } // BINPERSID
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        if (!isTuple(args)) fail(`REDUCE arguments are a ${describe(args)}, not a tuple`);
        if (!(fn instanceof PyGlobal)) fail(`REDUCE calls a ${describe(fn)}, not a named global`);
        charge(1);
        stack.push(hooks.reduce(fn as PyGlobal, args as unknown[], fail, charge));
        break;
      }
      case 0x81: { // NEWOBJ: cls.__new__(cls, *args): an inert record (no constructor runs)
        const args = pop();
        const cls = pop();
        if (!isTuple(args)) fail(`NEWOBJ arguments are a ${describe(args)}, not a tuple`);
        if (!(cls instanceof PyGlobal)) fail(`NEWOBJ on a ${describe(cls)}, not a class name`);
        stack.push(newObject(cls as PyGlobal, args as unknown[]));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop();
        const args = pop();
        const cls = pop();
        if (!isTuple(args) || !(kwargs instanceof PyDict)) fail('NEWOBJ_EX needs an argument tuple and a keyword dict');
        if (!(cls instanceof PyGlobal)) fail(`NEWOBJ_EX on a ${describe(cls)}, not a class name`);
        stack.push(newObject(cls as PyGlobal, args as unknown[]));
        break;
      }
      case 0x62: { // BUILD: obj.__setstate__(state) → recorded, never run
        const state = pop();
        const obj = top();
        if (obj instanceof PyObject) obj.state = state;
        else if (obj instanceof PyDict) obj.attrs = state;
        else if (obj !== null && typeof obj === 'object' && 'isTorchTensor' in obj) { /* tensor state (hooks, names): ignored */ }
        else fail(`BUILD on a ${describe(obj)}`);
        break;
      }
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')}${op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : ''} (text-protocol, extension and out-of-band opcodes are not accepted)`);
    }
  }
}

function newObject(cls: PyGlobal, args: readonly unknown[]): unknown {
  if (cls.module === 'collections' && cls.name === 'OrderedDict' && args.length === 0) return new PyDict();
  if ((cls.module === 'builtins' || cls.module === '__builtin__') && cls.name === 'dict' && args.length === 0) return new PyDict();
  if ((cls.module === 'builtins' || cls.module === '__builtin__') && cls.name === 'list' && args.length === 0) return [];
  return new PyObject(cls, args, 'NEWOBJ');
}

/** A short description of a value's kind, for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'None';
  if (v === undefined) return 'nothing';
  if (isTuple(v)) return 'tuple';
  if (Array.isArray(v)) return 'list';
  if (v instanceof PyDict) return 'dict';
  if (v instanceof PyGlobal) return `global ${v.qualname}`;
  if (v instanceof PyObject) return `${v.cls.qualname} object`;
  if (v instanceof PySet) return 'set';
  if (v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'object' && 'isTorchTensor' in (v as object)) return 'tensor';
  if (typeof v === 'object' && 'isTorchStorage' in (v as object)) return 'storage';
  return typeof v === 'bigint' ? 'int' : typeof v;
}
