// A batch output folder: DIR/<index>-<hash8>.png files and DIR/manifest.jsonl, one line per image written.
// A job is done when the manifest has a line for each of its images and the files exist. Images are written
// first (temporary file + rename), then their manifest lines in one append; a crash between the two leaves a
// complete PNG without a line (the job is redone and the PNG replaced by identical bytes), a crash during the
// append leaves a torn last line, which the next open drops. One writer at a time (a lock file with the pid).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeFileAtomic } from '../io/png.js';
import { imageFileName, type BatchJob } from './jobs.js';

export const MANIFEST = 'manifest.jsonl';
const LOCK = '.karlo-batch.lock';

/** One manifest line: one image. */
export interface ManifestEntry {
  index: number;
  /** Image number within the job (0 … numImagesPerPrompt-1). */
  image: number;
  file: string;
  hash: string;
  prompt: string;
  seed: string;
  settings: BatchJob['spec']['settings'];
  model: string;
  meta?: Record<string, unknown>;
  /** Who made it and how long it took (not part of the identity). */
  worker: string;
  backend: string;
  seconds: number;
  created: string;
}

/** Who made a job's images: written into the manifest next to each image. */
export interface RenderInfo {
  worker: string;
  backend: string;
  seconds: number;
}

export class OutputDirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OutputDirError';
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class OutputDir {
  readonly dir: string;
  readonly manifestFile: string;
  /** hash → image numbers with a manifest line whose file exists. */
  private readonly written = new Map<string, Set<number>>();
  private lockHeld = false;

  /** Opens (creating) the folder, takes its lock and reads the manifest. */
  constructor(dir: string) {
    this.dir = path.resolve(dir);
    if (fs.existsSync(this.dir) && !fs.statSync(this.dir).isDirectory()) throw new OutputDirError(`${dir}: --out must be a folder`);
    fs.mkdirSync(this.dir, { recursive: true });
    this.manifestFile = path.join(this.dir, MANIFEST);
    this.lock();
    try {
      this.removeStaleTemporaries();
      this.load();
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private lock(): void {
    const file = path.join(this.dir, LOCK);
    const me = `${process.pid} ${os.hostname()}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(file, me, { flag: 'wx' });
        this.lockHeld = true;
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      let owner = '';
      try { owner = fs.readFileSync(file, 'utf8').trim(); } catch { /* removed meanwhile */ }
      const [pidText, host] = owner.split(' ');
      const pid = Number(pidText);
      if (host === os.hostname() && Number.isInteger(pid) && pid > 0 && pidAlive(pid)) {
        throw new OutputDirError(`${this.dir}: another karlo batch (pid ${pid}) is writing this folder (lock ${file})`);
      }
      if (host !== undefined && host !== os.hostname()) {
        throw new OutputDirError(`${this.dir}: locked by a karlo batch on host ${host} (pid ${pidText}); remove ${file} if it is no longer running`);
      }
      // A stale lock (its process is gone): take it over.
      try { fs.unlinkSync(file); } catch { /* raced with another taker */ }
    }
    throw new OutputDirError(`${this.dir}: could not take the lock ${file}`);
  }

  /** Releases the lock (the folder stays as it is). */
  close(): void {
    if (!this.lockHeld) return;
    this.lockHeld = false;
    try { fs.unlinkSync(path.join(this.dir, LOCK)); } catch { /* already gone */ }
  }

  /** Temporary files of writers that died mid-write (kill -9): `.NAME.PID.TIME.tmp` whose PID is gone. */
  private removeStaleTemporaries(): void {
    for (const name of fs.readdirSync(this.dir)) {
      const m = /^\..+\.(\d+)\.\d+\.tmp$/.exec(name);
      if (m && (Number(m[1]) === process.pid || !pidAlive(Number(m[1])))) {
        try { fs.unlinkSync(path.join(this.dir, name)); } catch { /* gone */ }
      }
    }
  }

  private load(): void {
    if (!fs.existsSync(this.manifestFile)) return;
    const text = fs.readFileSync(this.manifestFile, 'utf8');
    const all = text.split('\n');
    // A crash during an append leaves a torn last line (no newline): drop it, keep the rest.
    const torn = all[all.length - 1] !== '';
    if (torn) {
      all.pop();
      writeFileAtomic(this.manifestFile, Buffer.from(all.length ? `${all.join('\n')}\n` : ''));
    } else {
      all.pop();
    }
    for (let i = 0; i < all.length; i++) {
      if (all[i].trim() === '') continue;
      let e: ManifestEntry;
      try {
        e = JSON.parse(all[i]) as ManifestEntry;
      } catch (err) {
        throw new OutputDirError(`${this.manifestFile}:${i + 1}: not a JSON line (${(err as Error).message}); fix or remove that line`);
      }
      if (typeof e.hash !== 'string' || typeof e.file !== 'string' || !Number.isInteger(e.image)) {
        throw new OutputDirError(`${this.manifestFile}:${i + 1}: not a manifest entry (needs hash, file, image)`);
      }
      if (path.basename(e.file) !== e.file) throw new OutputDirError(`${this.manifestFile}:${i + 1}: file ${JSON.stringify(e.file)} must be a plain name`);
      if (!fs.existsSync(path.join(this.dir, e.file))) continue;
      let s = this.written.get(e.hash);
      if (!s) this.written.set(e.hash, (s = new Set()));
      s.add(e.image);
    }
  }

  isDone(job: BatchJob): boolean {
    const s = this.written.get(job.hash);
    return !!s && s.size >= job.spec.settings.numImagesPerPrompt;
  }

  /** Jobs of the batch not done yet, in order. */
  pending(jobs: BatchJob[]): BatchJob[] {
    return jobs.filter((j) => !this.isDone(j));
  }

  /**
   * Writes a job's PNGs (atomically) and then their manifest lines (one append). Returns false, writing nothing,
   * when the job is already done (a result delivered twice is written once).
   */
  write(job: BatchJob, pngs: Uint8Array[], info: RenderInfo): { written: boolean; files: string[] } {
    const n = job.spec.settings.numImagesPerPrompt;
    const files = Array.from({ length: n }, (_, k) => imageFileName(job.index, job.hash, k, n));
    if (this.isDone(job)) return { written: false, files };
    if (pngs.length !== n) throw new OutputDirError(`job ${job.hash.slice(0, 8)} (${job.where}): got ${pngs.length} images, expected ${n}`);
    for (let k = 0; k < n; k++) writeFileAtomic(path.join(this.dir, files[k]), pngs[k]);
    const created = new Date().toISOString();
    const lines = files.map((file, k) => {
      const e: ManifestEntry = {
        index: job.index, image: k, file, hash: job.hash, prompt: job.spec.prompt, seed: job.spec.seed,
        settings: job.spec.settings, model: job.spec.model, ...(job.meta ? { meta: job.meta } : {}),
        worker: info.worker, backend: info.backend, seconds: Math.round(info.seconds * 1000) / 1000, created,
      };
      return `${JSON.stringify(e)}\n`;
    }).join('');
    fs.appendFileSync(this.manifestFile, lines);
    this.written.set(job.hash, new Set(files.map((_, k) => k)));
    return { written: true, files };
  }
}

/** Reads a batch folder's manifest (for `karlo eval`): entries whose files exist, in manifest order. */
export function readManifest(dir: string): ManifestEntry[] {
  const file = path.join(dir, MANIFEST);
  if (!fs.existsSync(file)) throw new OutputDirError(`${file}: missing; is ${dir} a karlo batch output folder?`);
  const out: ManifestEntry[] = [];
  const all = fs.readFileSync(file, 'utf8').split('\n');
  for (let i = 0; i < all.length; i++) {
    if (all[i].trim() === '') continue;
    let e: ManifestEntry;
    try {
      e = JSON.parse(all[i]) as ManifestEntry;
    } catch {
      if (i === all.length - 1) break; // torn last line
      throw new OutputDirError(`${file}:${i + 1}: not a JSON line`);
    }
    if (typeof e.file !== 'string' || typeof e.prompt !== 'string' || path.basename(e.file) !== e.file) {
      throw new OutputDirError(`${file}:${i + 1}: not a manifest entry (needs file, prompt)`);
    }
    if (fs.existsSync(path.join(dir, e.file))) out.push(e);
  }
  return out;
}
