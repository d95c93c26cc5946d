// The one progress reporter of the CLI (generate, convert, train, vary, and future long commands), on stderr.
//
//   const p = new Progress();                    // options: stream, tty, everySeconds, now (tests)
//   p.begin('decoder', 25);                      // a stage of 25 steps ('byte' unit: sizes and MB/s)
//   for (...) { ...; p.tick(); }                 // or p.update(doneSoFar)
//   p.end();                                     // final line with the time taken
//   p.log('a note');                             // a line that does not break the bar
//
// On a terminal: one bar per stage, redrawn in place at most 10 times a second, with the rate as steps/s, or as
// s/step when slower than one step a second, and an ETA. Not on a terminal (piped, logged): a line when a stage
// begins, a line at least every `everySeconds` (10) while it runs, and a line when it ends, so a log never goes
// quiet for minutes. Lines are written between ticks: during one long synchronous step (a real-size super-res step)
// nothing can be printed, so such steps give one line each.
import type { Writable } from 'node:stream';

export type ProgressUnit = 'step' | 'byte' | (string & {});

export interface ProgressOptions {
  /** Where to write (default process.stderr). */
  stream?: Writable & { isTTY?: boolean; columns?: number };
  /** Redraw in place (default: the stream is a TTY). */
  tty?: boolean;
  /** Without a TTY, the longest quiet interval in seconds (default 10). */
  everySeconds?: number;
  /** Clock in seconds (tests). */
  now?: () => number;
}

/** 12.3 MB, 1.20 GB, 512 B. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
}

/** 4.2s, 3m07s, 1h05m. */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s - 60 * m)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** The rate of `done` units in `seconds`: "2.50 steps/s", or "3.2 s/step" below one per second; bytes as MB/s. */
export function formatRate(done: number, seconds: number, unit: ProgressUnit = 'step'): string {
  if (!(seconds > 0) || done <= 0) return unit === 'byte' ? '? B/s' : `? ${unit}s/s`;
  if (unit === 'byte') return `${formatBytes(done / seconds)}/s`;
  const perSecond = done / seconds;
  return perSecond >= 1 ? `${perSecond.toFixed(2)} ${unit}s/s` : `${(seconds / done).toFixed(1)} s/${unit}`;
}

export class Progress {
  private readonly stream: Writable;
  private readonly tty: boolean;
  private readonly every: number;
  private readonly now: () => number;
  private label = '';
  private unit: ProgressUnit = 'step';
  private total = 0;
  private done = 0;
  private started = 0;
  private lastDraw = -Infinity;
  private drawn = false; // a TTY bar is on the current line
  private detail = ''; // extra text after the rate (e.g. train's loss and learning rate)
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(opts: ProgressOptions = {}) {
    const stream = opts.stream ?? process.stderr;
    this.stream = stream;
    this.tty = opts.tty ?? Boolean((stream as { isTTY?: boolean }).isTTY);
    this.every = opts.everySeconds ?? 10;
    this.now = opts.now ?? (() => performance.now() / 1000);
  }

  /** Starts a stage of `total` units (steps, or bytes with unit 'byte'). Ends the previous one if still open. */
  begin(label: string, total: number, unit: ProgressUnit = 'step'): void {
    if (this.label) this.end();
    this.label = label;
    this.total = Math.max(0, total);
    this.unit = unit;
    this.done = 0;
    this.started = this.now();
    this.lastDraw = -Infinity;
    if (this.tty) this.draw(true);
    else {
      this.line(`${this.label}: ${this.count(0)}`);
      this.lastDraw = this.started;
      // Between ticks the event loop may be free (loading, awaiting): keep the log alive then too.
      this.timer = setInterval(() => this.heartbeat(), this.every * 1000);
      this.timer.unref?.();
    }
  }

  /** The unit of the open stage, or undefined when none is open. */
  get current(): ProgressUnit | undefined {
    return this.label ? this.unit : undefined;
  }

  /** Extra text shown after the rate on the following lines (e.g. "loss 0.12 lr 1e-4"); '' for none. */
  setDetail(text: string): void {
    this.detail = text;
  }

  /** Advances by n units. */
  tick(n = 1): void {
    this.update(this.done + n);
  }

  /** Sets the units done so far. */
  update(done: number): void {
    if (!this.label) return;
    this.done = Math.min(Math.max(0, done), this.total || done);
    if (this.tty) this.draw(false);
    else this.heartbeat();
  }

  /** Ends the stage: a final line with the time taken (and `summary`). */
  end(summary?: string): void {
    if (!this.label) return;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.total) this.done = this.total;
    const elapsed = this.now() - this.started;
    const text = `${this.head()}  ${formatRate(this.done, elapsed, this.unit)}${this.extra()}  took ${formatSeconds(elapsed)}${summary ? `  ${summary}` : ''}`;
    if (this.tty) {
      this.stream.write(`\r\x1b[K${text}\n`);
      this.drawn = false;
    } else {
      this.line(text);
    }
    this.label = '';
    this.detail = '';
  }

  /** A line of its own (the bar, if any, is redrawn after it). */
  log(text: string): void {
    if (this.tty && this.drawn) {
      this.stream.write(`\r\x1b[K${text}\n`);
      this.drawn = false;
      this.draw(true);
    } else {
      this.line(text);
    }
  }

  private heartbeat(): void {
    if (!this.label) return;
    const t = this.now();
    if (t - this.lastDraw < this.every) return;
    this.lastDraw = t;
    this.line(this.status(t));
  }

  private count(done: number): string {
    if (this.unit === 'byte') return `${formatBytes(done)}${this.total ? ` / ${formatBytes(this.total)}` : ''}`;
    return `${done}/${this.total} ${this.unit}s`;
  }

  private head(): string {
    return `${this.label}: ${this.count(this.done)}`;
  }

  private status(t: number): string {
    const elapsed = t - this.started;
    const rate = this.done > 0 && elapsed > 0 ? this.done / elapsed : 0;
    const eta = this.total && this.done < this.total && rate > 0 ? `  ETA ${formatSeconds((this.total - this.done) / rate)}` : '';
    return `${this.head()}  ${formatRate(this.done, elapsed, this.unit)}${this.extra()}${eta}`;
  }

  private draw(force: boolean): void {
    const t = this.now();
    if (!force && t - this.lastDraw < 0.1 && this.done < this.total) return;
    this.lastDraw = t;
    const width = 24;
    const frac = this.total ? this.done / this.total : 0;
    const filled = Math.round(width * frac);
    const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
    const elapsed = t - this.started;
    const rate = this.done > 0 && elapsed > 0 ? this.done / elapsed : 0;
    const eta = this.total && this.done < this.total ? `  ETA ${rate > 0 ? formatSeconds((this.total - this.done) / rate) : '?'}` : '';
    this.stream.write(`\r\x1b[K${this.label.padEnd(12)} ${bar} ${this.count(this.done)}  ${formatRate(this.done, elapsed, this.unit)}${this.extra()}${eta}`);
    this.drawn = true;
  }

  private extra(): string {
    return this.detail ? `  ${this.detail}` : '';
  }

  private line(text: string): void {
    this.stream.write(`${text}\n`);
  }
}
