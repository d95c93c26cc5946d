// Releasing a backend's cached memory without knowing which backend runs: a backend that keeps recyclable buffers
// (native: its buffer pool) registers a trimmer when it is set up; callers (the pipeline's stage runner, training
// loops) call trimBackendMemory() when a stage ends.

const trimmers = new Set<() => void>();

/** Called by a backend at registration: `trim` lets the garbage collector have its free cached buffers. */
export function registerMemoryTrimmer(trim: () => void): void {
  trimmers.add(trim);
}

/** Lets the garbage collector have every registered backend's free cached buffers. No-op when none registered. */
export function trimBackendMemory(): void {
  for (const t of trimmers) t();
}
