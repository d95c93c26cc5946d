// The one place every reader opens a file, and every writer decides what it may replace.
//
// Readers: only regular files are opened (a FIFO, a device such as /dev/zero behind a symlink, a socket or a
// folder is refused before a byte is read: the open is non-blocking, so a FIFO without a writer cannot hang it);
// text files (configs, vocabularies, merges, indexes) are read only up to a size bound, and as strict UTF-8.
// Messages name the file and say why; they never quote the content of a file they refused.
//
// Writers: an output path is replaced only when it is absent or a regular file (never a device, FIFO, socket,
// symlink or folder). Temporary outputs are tracked, removed on SIGINT/SIGTERM/SIGHUP and at exit, and the
// leftovers of processes that died without cleaning up (`kill -9`, power loss) are found by their pid and removed
// at the next run.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A file that a reader refuses to open or read (not a regular file, too large, not UTF-8, invalid JSON). */
export class FileRefusedError extends Error {
  /** The message without the file name. */
  readonly reason: string;
  constructor(readonly file: string, message: string) {
    super(`${printable(file)}: ${message}`);
    this.reason = message;
    this.name = 'FileRefusedError';
  }
}

/** Default bound for text files (config.json, vocab.json, merges.txt, index files): real ones are at most a few MB. */
export const MAX_TEXT_BYTES = 64 * 1024 * 1024;

/** What kind of file-system object a stat describes, in words. */
export function kindOf(st: fs.Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

/**
 * Opens `file` read-only if it is a regular file (symlinks are followed; what they point to must be a regular
 * file). Non-blocking open: a FIFO is refused instead of waiting for a writer. Returns the descriptor and size;
 * the caller closes it.
 */
export function openRegularFile(file: string, what = 'file'): { fd: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | (fs.constants.O_NOCTTY ?? 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new FileRefusedError(file, code === 'ENOENT' ? `cannot open ${what}: it does not exist` : `cannot open ${what} (${code ?? (e as Error).message})`);
  }
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    throw new FileRefusedError(file, `cannot stat ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new FileRefusedError(file, `${what} is ${kindOf(st)}, not a regular file; refused`);
  }
  return { fd, size: st.size };
}

/** Throws unless `file` is a regular file (following symlinks); no descriptor is kept. */
export function assertRegularFile(file: string, what = 'file'): number {
  const { fd, size } = openRegularFile(file, what);
  fs.closeSync(fd);
  return size;
}

/** Reads all of a regular file of at most `maxBytes` bytes (it may not grow past that while read). */
export function readRegularFile(file: string, opts: { maxBytes?: number; what?: string } = {}): Buffer {
  const what = opts.what ?? 'file';
  const max = opts.maxBytes ?? MAX_TEXT_BYTES;
  const { fd, size } = openRegularFile(file, what);
  try {
    if (size > max) throw new FileRefusedError(file, `${what} is ${size} bytes, more than the ${max} bytes allowed for it; refused`);
    const buf = Buffer.allocUnsafe(Math.min(max, size) + 1);
    let done = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, done, buf.length - done, done);
      if (n <= 0) break;
      done += n;
      if (done > max) throw new FileRefusedError(file, `${what} grew past the ${max} bytes allowed for it while being read; refused`);
      if (done === buf.length) break;
    }
    return buf.subarray(0, done);
  } finally {
    fs.closeSync(fd);
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** A regular text file (strict UTF-8, a leading BOM dropped) of at most `maxBytes`. */
export function readTextFile(file: string, opts: { maxBytes?: number; what?: string } = {}): string {
  const b = readRegularFile(file, opts);
  let s: string;
  try {
    s = UTF8.decode(b);
  } catch {
    throw new FileRefusedError(file, `${opts.what ?? 'file'} is not valid UTF-8 text; refused`);
  }
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

/** Line and column (1-based) of a character offset, for messages that must not quote the text. */
function lineCol(text: string, pos: number): string {
  let line = 1;
  let col = 1;
  for (let i = 0; i < pos && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) { line++; col = 1; } else col++;
  }
  return `line ${line}, column ${col}`;
}

/**
 * Offset of the first JSON syntax error in `text` (text.length when it ends early), found by a small iterative
 * scanner (no recursion, linear time). Only used to word an error: JSON.parse decides validity.
 */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const n = text.length;
  const ws = () => { while (i < n && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++; };
  const str = (): boolean => {
    if (text[i] !== '"') return false;
    i++;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) { i++; return true; }
      if (c < 0x20) return false;
      if (c === 0x5c) {
        const e = text[i + 1];
        if (e === 'u') { if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) { i++; return false; } i += 6; continue; }
        if (!e || !'"\\/bfnrt'.includes(e)) { i++; return false; }
        i += 2;
        continue;
      }
      i++;
    }
    return false;
  };
  const scalar = (): boolean => {
    if (text[i] === '"') return str();
    const m = /^(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null)/.exec(text.slice(i, i + 400));
    if (!m) return false;
    i += m[0].length;
    return true;
  };
  // stack of containers: '{' or '['; state: expecting a value
  const stack: string[] = [];
  ws();
  for (;;) {
    // a value
    ws();
    if (i >= n) return n;
    if (text[i] === '{' || text[i] === '[') {
      const open = text[i++];
      ws();
      if ((open === '{' && text[i] === '}') || (open === '[' && text[i] === ']')) { i++; }
      else {
        stack.push(open);
        if (open === '{') { if (!str()) return Math.min(i, n); ws(); if (text[i] !== ':') return Math.min(i, n); i++; }
        continue;
      }
    } else if (!scalar()) return Math.min(i, n);
    // after a value: close containers or go on with ','
    for (;;) {
      ws();
      if (stack.length === 0) return i < n ? i : -1;
      const top = stack[stack.length - 1];
      if (i >= n) return n;
      if (text[i] === (top === '{' ? '}' : ']')) { stack.pop(); i++; continue; }
      if (text[i] !== ',') return i;
      i++;
      ws();
      if (top === '{') { if (!str()) return Math.min(i, n); ws(); if (text[i] !== ':') return Math.min(i, n); i++; }
      break;
    }
  }
}

/** JSON.parse with an error that gives the position only (V8's messages quote the text around the fault). */
export function parseJsonText(text: string, file: string, what = 'JSON file'): unknown {
  try {
    return JSON.parse(text);
  } catch {
    const at = jsonErrorOffset(text);
    const where = text.trim() === '' ? ' (empty)' : at >= text.length || at < 0 ? ' (it ends early)' : ` at ${lineCol(text, at)}`;
    throw new FileRefusedError(file, `invalid JSON${where} (${what}; its content is not shown)`);
  }
}

/** A regular JSON file of at most `maxBytes`, parsed. */
export function readJsonFile(file: string, opts: { maxBytes?: number; what?: string } = {}): unknown {
  return parseJsonText(readTextFile(file, opts), file, opts.what);
}

/** Own enumerable property of a parsed JSON object / record, never an inherited one (`__proto__`, `toString`). */
export function own<T>(obj: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
}

// ---------- printing names that came from files or the command line ----------

/**
 * A name safe to print on a terminal: control characters (C0, DEL, C1), line and paragraph separators and
 * bidirectional overrides are written as \n, \t, \xNN or \u{NNNN}; backslashes are doubled only when something
 * was escaped, so ordinary names print unchanged.
 */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  const bad = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/;
  if (!bad.test(s)) return s;
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else if (bad.test(ch)) out += `\\u{${c.toString(16)}}`;
    else out += ch;
  }
  return out;
}

/** JSON.stringify of a name, with C1 controls and separators escaped too (JSON.stringify leaves them raw). */
export function jsonName(s: string): string {
  return JSON.stringify(s).replace(/[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A value from a file for a message: JSON, cut to `max` characters (a 50 MB string is not repeated back). */
export function brief(v: unknown, max = 80): string {
  let s: string;
  try { s = String(JSON.stringify(v)); } catch { s = typeof v; }
  return s.length > max ? `${s.slice(0, max)}... (${s.length} characters)` : s;
}

/** JSON.stringify(v) with C1 controls, separators and bidi controls escaped too (safe to print on a terminal). */
export function jsonText(v: unknown): string {
  return JSON.stringify(v).replace(/[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// ---------- outputs ----------

/**
 * Why `file` may not be replaced by an output, or null when it may (absent, or a regular file). Only regular files
 * are ever replaced: a device (/dev/null), FIFO, socket, folder or symbolic link at the path is refused.
 */
export function whyNotReplaceable(file: string): string | null {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return `cannot check it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
  }
  if (st.isFile()) return null;
  return `is ${kindOf(st)}; only regular files are ever replaced`;
}

/** Throws a one-line error unless `file` is absent or a regular file. */
export function assertReplaceable(file: string, what = 'output'): void {
  const why = whyNotReplaceable(file);
  if (why !== null) throw new FileRefusedError(file, `${what} ${why}`);
}

// ---------- temporary outputs: cleanup on signals and at the next run ----------

const tracked = new Set<string>();
let handlersInstalled = false;
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function removeTracked(): string[] {
  const removed: string[] = [];
  for (const p of tracked) {
    try {
      if (fs.existsSync(p)) {
        fs.rmSync(p, { recursive: true, force: true });
        removed.push(p);
      }
    } catch { /* best effort while exiting */ }
  }
  tracked.clear();
  return removed;
}

function onSignal(sig: NodeJS.Signals): void {
  // A command with its own handler (batch, worker, train: finish the current job first) keeps control; what is
  // still tracked when it exits is removed by the exit hook.
  if (process.listenerCount(sig) > 1) return;
  const removed = removeTracked();
  for (const p of removed) process.stderr.write(`karlo: interrupted (${sig}); removed partial output ${printable(p)}\n`);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
  // Die of the same signal (exit status 128 + n), as without a handler.
  process.kill(process.pid, sig);
}

/**
 * Tracks a temporary output (file or folder) so that SIGINT/SIGTERM/SIGHUP and process exit remove it; returns
 * the function that stops tracking it (call it once the output is renamed into place or removed). The signal
 * handler runs when the event loop is free: long synchronous work must yield (await) now and then to be
 * interruptible; a signal that arrives during a synchronous write is handled right after it.
 */
export function trackTemporary(p: string): () => void {
  if (!handlersInstalled) {
    handlersInstalled = true;
    for (const s of SIGNALS) process.on(s, onSignal);
    process.on('exit', () => { removeTracked(); });
  }
  const abs = path.resolve(p);
  tracked.add(abs);
  return () => { tracked.delete(abs); };
}

/** Whether a process with this pid exists (EPERM: it exists but belongs to someone else). */
export function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes leftovers of dead processes next to `target`: entries of its folder named `.<base>.<tag>-<pid>` (and
 * `.<base>.<tag>-<pid>.<anything>`) for each tag (e.g. `partial`, `old`), whose pid is no running process.
 * `log` is told about each removal. Returns the removed paths.
 */
export function removeStaleTemporaries(target: string, tags: readonly string[], log: (line: string) => void = () => {}): string[] {
  const dir = path.dirname(path.resolve(target));
  const base = path.basename(target);
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return []; }
  const removed: string[] = [];
  for (const n of names) {
    if (!n.startsWith(`.${base}.`)) continue;
    const rest = n.slice(base.length + 2);
    for (const tag of tags) {
      const m = new RegExp(`^${tag}-(\\d+)(?:\\..*)?$`).exec(rest);
      if (!m) continue;
      const pid = Number(m[1]);
      if (pid === process.pid || pidAlive(pid)) break;
      const p = path.join(dir, n);
      try {
        fs.rmSync(p, { recursive: true, force: true });
        removed.push(p);
        log(`removed ${printable(p)}, left behind by process ${pid} (no longer running)`);
      } catch (e) {
        log(`could not remove ${printable(p)} left behind by process ${pid}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      break;
    }
  }
  return removed;
}

const scannedForWriteTemps = new Set<string>();

/**
 * Temporary files of atomic writes (`.<name>.<pid>.<time>.tmp`, png.ts's writeFileAtomic) in the folder of `file`
 * left by processes that no longer run: removed, each logged. Each folder is scanned once per process.
 */
export function removeStaleWriteTemps(file: string, log: (line: string) => void = () => {}): string[] {
  const dir = path.dirname(path.resolve(file));
  if (scannedForWriteTemps.has(dir)) return [];
  scannedForWriteTemps.add(dir);
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return []; }
  const removed: string[] = [];
  for (const n of names) {
    const m = /^\..+\.(\d+)\.\d+\.tmp$/.exec(n);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || pidAlive(pid)) continue;
    const p = path.join(dir, n);
    try {
      if (!fs.lstatSync(p).isFile()) continue;
      fs.rmSync(p, { force: true });
      removed.push(p);
      log(`removed ${printable(p)}, left behind by process ${pid} (no longer running)`);
    } catch { /* not ours to remove */ }
  }
  return removed;
}
