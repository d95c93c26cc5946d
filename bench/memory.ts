// Peak-RSS probes the benchmarks share (Linux /proc; NaN / false elsewhere).
import * as fs from 'node:fs';

/** Process peak RSS so far, MB (getrusage; never reset). */
export const maxRssMB = (): number => process.resourceUsage().maxRSS / 1024;

/** Resets the kernel's peak-RSS counter (VmHWM); false where /proc/self/clear_refs is not writable. */
export function resetPeakRss(): boolean {
  try { fs.writeFileSync('/proc/self/clear_refs', '5'); return true; } catch { return false; }
}

/** VmHWM (peak since the last reset) or VmRSS (now) from /proc/self/status, MB. */
export function statusMB(field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
