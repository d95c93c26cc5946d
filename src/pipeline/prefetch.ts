// Hidden loading: the next stage's weights are read, checked and converted to their tfjs layout in a worker thread
// while the current stage computes, so that loading them when the stage starts is mostly handing over ready
// arrays. Memory: the worker holds at most `budgetBytes` of tensors nobody has taken yet; once the stage that
// needs them starts loading (source()), the budget is lifted and the worker reads the rest ahead of the loader.
// The values are the file's bytes, moved unchanged (the OIHW → HWIO copy is the same permutation as
// Parameter.setFromTorch's), so a model loaded from a prefetched source is bit-identical to one read directly.
//
// The loader reads synchronously (TensorSource.read), so the main thread takes the worker's messages with
// receiveMessageOnPort and, when the tensor it wants is not there yet, blocks on an Atomics counter the worker bumps
// after each message: no event-loop turn is needed, and a stage whose denoising loop never yields still gets the
// prefetched tensors. Worker and loader claim tensors from one shared counter: when the loader would wait for a
// tensor the worker has not started, it reads the next unclaimed one itself, so at load time two threads read.
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { TensorData, TensorSource } from '../layers/module.js';
import { SafetensorsFile, numel } from '../io/safetensors.js';
import { countNonFinite } from '../io/weights.js';
import { oihwToHwio } from '../layers/module.js';
import * as fs from 'node:fs';

/** One tensor of a prefetch plan: its name and whether the parameter stores it as a conv filter (HWIO). */
export interface PrefetchItem { name: string; conv2d: boolean }

/** A tensor as the prefetcher hands it out: already in the parameter's tfjs layout when `layout` says so. */
export type PrefetchedTensor = TensorData & { layout?: 'tfjs'; nonFinite?: number };

/**
 * What a prefetch did: bytes the worker read, bytes the loader's thread read through the shared counter (at load
 * time, beside the worker), bytes read directly (not planned: other dtypes, or read twice), seconds the loader
 * spent in read() for planned tensors (waiting or reading).
 */
export interface PrefetchStats { file: string; prefetchedBytes: number; loaderBytes: number; directBytes: number; waitedSeconds: number }

// Counters shared with the worker (Int32 slots): messages posted, demand (budget lifted), KiB of the worker's
// tensors taken by the loader, a wake-up generation the worker waits on, stop, the next unclaimed task.
const POSTED = 0, DEMAND = 1, TAKEN_KIB = 2, WAKE = 3, STOP = 4, NEXT = 5;

// The worker: plain JavaScript (runs the same from the TypeScript sources and from dist/), node built-ins only.
const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { port, file, tasks, budget, duty } = workerData;
// Before the loader asks, this thread only takes what the computing stage leaves: lowest priority (on Linux
// setpriority applies to the calling thread alone), and busy at most a duty share of the time (a process already
// at nice 19 cannot go lower).
try { require('node:os').setPriority(19); } catch {}
const ctl = new Int32Array(workerData.ctl);
// The hot loops live in functions: V8 optimises those, not loops at a script's top level.
function countNonFinite(a) {
  let n = 0;
  for (let i = 0; i < a.length; i++) { const v = a[i]; if (v !== v || v === Infinity || v === -Infinity) n++; }
  return n;
}
// PyTorch [O, I, kh, kw] -> tfjs [kh, kw, I, O], as Parameter.setFromTorch does it, counting non-finite values
// in the same pass
function oihwToHwio(src, shape, counted) {
  const O = shape[0], I = shape[1], K = shape[2] * shape[3];
  const out = new Float32Array(src.length);
  let n = 0;
  for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) {
    const s0 = (o * I + i) * K;
    for (let k = 0; k < K; k++) {
      const v = src[s0 + k];
      if (v !== v || v === Infinity || v === -Infinity) n++;
      out[(k * I + i) * O + o] = v;
    }
  }
  counted.n = n;
  return out;
}
const held = () => produced - Atomics.load(ctl, ${TAKEN_KIB}) * 1024;
let produced = 0;
let fd;
try {
  fd = fs.openSync(file, 'r');
  for (;;) {
    if (Atomics.load(ctl, ${STOP})) break;
    const peek = tasks[Atomics.load(ctl, ${NEXT})];
    if (!peek) break;
    if (!Atomics.load(ctl, ${DEMAND}) && held() + (peek.end - peek.begin) > budget) {
      Atomics.wait(ctl, ${WAKE}, Atomics.load(ctl, ${WAKE}), 200);
      continue;
    }
    const t = tasks[Atomics.add(ctl, ${NEXT}, 1)];
    if (!t) break;
    const started = performance.now();
    const bytes = t.end - t.begin;
    const src = new Float32Array(bytes / 4);
    const u8 = new Uint8Array(src.buffer);
    for (let done = 0; done < bytes;) {
      const got = fs.readSync(fd, u8, done, Math.min(bytes - done, 1 << 30), t.begin + done);
      if (got <= 0) throw new Error('unexpected end of file reading ' + t.name);
      done += got;
    }
    const counted = { n: 0 };
    const out = t.conv2d ? oihwToHwio(src, t.shape, counted) : src;
    const nonFinite = t.conv2d ? counted.n : countNonFinite(src);
    produced += bytes;
    port.postMessage({ name: t.name, buffer: out.buffer, nonFinite, layout: t.conv2d ? 'tfjs' : undefined }, [out.buffer]);
    Atomics.add(ctl, ${POSTED}, 1);
    Atomics.notify(ctl, ${POSTED});
    if (!Atomics.load(ctl, ${DEMAND}) && duty < 1) {
      // rest (duty⁻¹ − 1) × the time that tensor took; the loader's demand wakes it
      Atomics.wait(ctl, ${WAKE}, Atomics.load(ctl, ${WAKE}), (performance.now() - started) * (1 / duty - 1));
    }
  }
} catch (e) {
  port.postMessage({ error: String(e && e.message || e) });
  Atomics.add(ctl, ${POSTED}, 1);
  Atomics.notify(ctl, ${POSTED});
} finally {
  if (fd !== undefined) fs.closeSync(fd);
  port.postMessage({ done: true });
  Atomics.add(ctl, ${POSTED}, 1);
  Atomics.notify(ctl, ${POSTED});
  port.close();
}
`;

interface Planned { index: number; begin: number; shape: number[]; bytes: number; conv2d: boolean }

/** One file being prefetched by its own worker. */
class FilePrefetch {
  readonly planned = new Map<string, Planned>();
  private readonly received = new Map<string, { data: Float32Array; nonFinite: number; layout?: 'tfjs' }>();
  private readonly ctl = new Int32Array(new SharedArrayBuffer(4 * 8));
  private readonly order: string[] = [];
  /** Tensors the loader's thread read itself (claimed from the shared counter), not counted against the budget. */
  private readonly own = new Set<string>();
  private readonly port: MessagePort;
  private readonly worker: Worker;
  private finished = false;
  private error: string | undefined;
  readonly stats: PrefetchStats;

  constructor(readonly file: string, items: PrefetchItem[], budgetBytes: number, duty: number) {
    this.stats = { file, prefetchedBytes: 0, loaderBytes: 0, directBytes: 0, waitedSeconds: 0 };
    // Validate the header on this thread (the reader's checks); the worker only reads F32 data ranges.
    const f = SafetensorsFile.open(file);
    const tasks: { name: string; begin: number; end: number; shape: number[]; conv2d: boolean }[] = [];
    try {
      for (const it of items) {
        if (!f.has(it.name)) continue;
        const info = f.info(it.name);
        if (info.dtype !== 'F32') continue; // other dtypes are widened by the normal reader
        if (it.conv2d && info.shape.length !== 4) continue;
        this.planned.set(it.name, { index: tasks.length, begin: info.begin, shape: [...info.shape], bytes: info.end - info.begin, conv2d: it.conv2d });
        this.order.push(it.name);
        tasks.push({ name: it.name, begin: info.begin, end: info.end, shape: [...info.shape], conv2d: it.conv2d });
      }
    } finally {
      f.close();
    }
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { port: port2, file, tasks, budget: budgetBytes, duty, ctl: this.ctl.buffer },
      transferList: [port2],
    });
    this.worker.unref();
    this.worker.on('error', (e) => { this.error ??= e.message; this.finished = true; });
  }

  /** Lifts the memory budget: the stage that needs these weights is loading now. */
  demand(): void {
    Atomics.store(this.ctl, DEMAND, 1);
    this.wake();
  }

  private wake(): void {
    Atomics.add(this.ctl, WAKE, 1);
    Atomics.notify(this.ctl, WAKE);
  }

  private drain(): boolean {
    let got = false;
    for (;;) {
      const m = receiveMessageOnPort(this.port)?.message as
        | { name: string; buffer: ArrayBuffer; nonFinite: number; layout?: 'tfjs' } | { error: string } | { done: true } | undefined;
      if (!m) return got;
      got = true;
      if ('error' in m) this.error ??= m.error;
      else if ('done' in m) this.finished = true;
      else this.received.set(m.name, { data: new Float32Array(m.buffer), nonFinite: m.nonFinite, layout: m.layout });
    }
  }

  /** The planned tensor `name`, waiting for the worker if needed; undefined when the worker failed or skipped it. */
  take(name: string): PrefetchedTensor | undefined {
    const p = this.planned.get(name);
    if (!p) return undefined;
    const t0 = performance.now();
    this.demand();
    for (;;) {
      const r = this.received.get(name);
      if (r) {
        this.received.delete(name);
        this.planned.delete(name);
        if (this.own.delete(name)) this.stats.loaderBytes += p.bytes;
        else {
          Atomics.add(this.ctl, TAKEN_KIB, Math.ceil(p.bytes / 1024));
          this.stats.prefetchedBytes += p.bytes;
        }
        this.wake();
        this.stats.waitedSeconds += (performance.now() - t0) / 1000;
        const shape = p.conv2d ? [p.shape[2], p.shape[3], p.shape[1], p.shape[0]] : p.shape;
        return { dtype: 'float32', shape: r.layout === 'tfjs' ? shape : p.shape, data: r.data, nonFinite: r.nonFinite, ...(r.layout ? { layout: r.layout } : {}) };
      }
      if (this.drain()) continue;
      if (this.finished || this.error) {
        this.planned.delete(name);
        return undefined;
      }
      // Not ready: rather than wait, read the next unclaimed tensor here (it is `name` itself when the worker has
      // not got that far, else one needed soon after).
      if (Atomics.load(this.ctl, NEXT) < this.order.length) {
        const k = Atomics.add(this.ctl, NEXT, 1);
        if (k < this.order.length) {
          this.readHere(this.order[k]);
          continue;
        }
      }
      const seen = Atomics.load(this.ctl, POSTED);
      if (!this.drain()) Atomics.wait(this.ctl, POSTED, seen, 1000);
    }
  }

  /** Reads one planned tensor on this thread, as the worker would (checked, conv filters to HWIO). */
  private readHere(name: string): void {
    const p = this.planned.get(name)!;
    const data = new Float32Array(p.bytes / 4);
    const u8 = new Uint8Array(data.buffer);
    const fd = (this.fd ??= fs.openSync(this.file, 'r'));
    for (let done = 0; done < p.bytes;) {
      const got = fs.readSync(fd, u8, done, Math.min(p.bytes - done, 1 << 30), p.begin + done);
      if (got <= 0) throw new Error(`${this.file}: unexpected end of file reading "${name}"`);
      done += got;
    }
    const nonFinite = countNonFinite(data);
    this.own.add(name);
    this.received.set(name, p.conv2d ? { data: oihwToHwio(data, p.shape), nonFinite, layout: 'tfjs' } : { data, nonFinite });
  }

  private fd: number | undefined;

  /** Stops the worker and drops what it read that nobody took. */
  dispose(): void {
    Atomics.store(this.ctl, STOP, 1);
    this.wake();
    this.drain();
    this.received.clear();
    this.planned.clear();
    this.own.clear();
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    this.port.close();
    void this.worker.terminate();
  }

  get failure(): string | undefined {
    return this.error;
  }
}

/**
 * Prefetches weight files in worker threads. start() begins reading a file (in `items` order, at most
 * `budgetBytes` of untaken tensors held); source() gives the TensorSource a loader reads it through (prefetched
 * tensors first, the file directly for the rest), and lifts the budget.
 */
export class WeightPrefetcher {
  private readonly files = new Map<string, FilePrefetch>();

  /**
   * `duty`: the share of time a worker may be busy before its file is asked for (the rest it sleeps), so that a
   * computing stage keeps its cores; 1: no throttle. Workers also run at the lowest priority until then.
   */
  constructor(readonly duty = 0.25) {
    if (!(duty > 0 && duty <= 1)) throw new RangeError(`duty must be in (0, 1], got ${duty}`);
  }

  /** Starts prefetching `file` (a no-op when already started). */
  start(file: string, items: PrefetchItem[], budgetBytes: number): void {
    if (this.files.has(file)) return;
    this.files.set(file, new FilePrefetch(file, items, Math.max(0, budgetBytes), this.duty));
  }

  has(file: string): boolean {
    return this.files.has(file);
  }

  /**
   * A source over `file` whose reads take the prefetched tensors (tfjs layout for conv filters: `layout: 'tfjs'`,
   * non-finite values already counted) and read the others from the file. close() stops the worker, frees what it
   * still holds, and reports the stats. undefined when `file` is not being prefetched.
   */
  source(file: string): (TensorSource & { close(): PrefetchStats; files: string[] }) | undefined {
    const p = this.files.get(file);
    if (!p) return undefined;
    p.demand();
    const direct = SafetensorsFile.open(file);
    return {
      files: [file],
      names: () => direct.names(),
      shape: (n) => direct.info(n).shape,
      read: (n) => {
        const t = p.take(n);
        if (t) return t;
        const d = direct.read(n);
        p.stats.directBytes += numel(d.shape) * 4;
        return d;
      },
      describe: () => file,
      close: () => {
        direct.close();
        p.dispose();
        this.files.delete(file);
        return p.stats;
      },
    };
  }

  /** Stops every worker and frees what they hold. */
  dispose(): void {
    for (const p of this.files.values()) p.dispose();
    this.files.clear();
  }
}
