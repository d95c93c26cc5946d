// Comparing two safetensors files tensor by tensor (`karlo parity OURS.safetensors REF.safetensors`): two traces
// (ours against one dumped from PyTorch with the README recipe), or a trace against a recorded fixture run
// (run*.safetensors uses the same cap.* / step.* names). Tensors present in both are compared with the project
// rule max |ours − ref| ≤ atol·max(1, max |ref|); a shape mismatch fails; names present on one side only are
// listed as notes. Nothing in common is an error.
import * as fs from 'node:fs';
import { SafetensorsFile } from '../io/safetensors.js';
import { compareArrays, type Comparison } from './compare.js';

export interface TraceCompareOptions {
  /** Default 1e-4 (scaled by max(1, max|ref|)). */
  atol?: number;
  log?: (line: string) => void;
}

export function compareTraceFiles(ours: string, ref: string, opts: TraceCompareOptions = {}): Comparison[] {
  for (const f of [ours, ref]) {
    if (!fs.existsSync(f)) throw new Error(`${f}: no such file`);
    if (!fs.statSync(f).isFile()) throw new Error(`${f}: not a file (two .safetensors files are compared)`);
  }
  const a = SafetensorsFile.open(ours);
  const b = SafetensorsFile.open(ref);
  const log = opts.log ?? (() => {});
  const atol = opts.atol ?? 1e-4;
  try {
    const an = new Set(a.names()), bn = new Set(b.names());
    const common = [...an].filter((n) => bn.has(n)).sort();
    if (!common.length) throw new Error(`${ours} and ${ref} have no tensor names in common (${an.size} and ${bn.size} tensors)`);
    const onlyA = [...an].filter((n) => !bn.has(n)), onlyB = [...bn].filter((n) => !an.has(n));
    if (onlyA.length) log(`only in ${ours} (${onlyA.length}): ${onlyA.slice(0, 6).join(', ')}${onlyA.length > 6 ? ', …' : ''}`);
    if (onlyB.length) log(`only in ${ref} (${onlyB.length}): ${onlyB.slice(0, 6).join(', ')}${onlyB.length > 6 ? ', …' : ''}`);
    const out: Comparison[] = [];
    for (const n of common) {
      const sa = a.info(n).shape, sb = b.info(n).shape;
      if (sa.join(',') !== sb.join(',')) {
        log(`${n}: shape [${sa}] vs reference [${sb}]`);
        out.push({ name: n, maxAbs: Infinity, maxRel: Infinity, maxRef: NaN, allowed: 0, argmax: -1, ok: false, shape: sb });
        continue;
      }
      const c = compareArrays(n, a.read(n).data, b.read(n).data, { atol, scaleByMax: true });
      out.push({ ...c, shape: sb });
    }
    return out;
  } finally {
    a.close();
    b.close();
  }
}
