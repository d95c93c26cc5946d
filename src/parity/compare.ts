// Tensor comparison with the project's tolerance rule: max |ours − ref| ≤ atol · max(1, max |ref|) (scaleByMax),
// or ≤ atol + rtol · |ref| elementwise when rtol is given.
export interface Comparison {
  name: string;
  maxAbs: number;
  maxRel: number;
  maxRef: number;
  allowed: number;
  argmax: number;
  ok: boolean;
  /** Reference tensor shape, when the caller knows it (printed by `karlo parity`). */
  shape?: number[];
  /** Number of reference elements compared. */
  size?: number;
}

export function compareArrays(
  name: string,
  ours: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: { atol?: number; rtol?: number; scaleByMax?: boolean } = {},
): Comparison {
  if (ours.length !== ref.length) {
    return { name, maxAbs: Infinity, maxRel: Infinity, maxRef: NaN, allowed: 0, argmax: -1, ok: false };
  }
  const atol = tol.atol ?? 1e-4;
  const rtol = tol.rtol ?? 0;
  const scale = tol.scaleByMax ?? rtol === 0;
  let maxAbs = 0, maxRel = 0, maxRef = 0, argmax = 0;
  let elementwiseOk = true;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i];
    const d = Math.abs(ours[i] - r);
    if (!(d <= maxAbs) ) { maxAbs = Number.isNaN(d) ? Infinity : d; argmax = i; }
    const a = Math.abs(r);
    if (a > maxRef) maxRef = a;
    const rel = d / Math.max(a, 1e-12);
    if (a > 1e-6 && rel > maxRel) maxRel = rel;
    if (rtol && !(d <= atol + rtol * a)) elementwiseOk = false;
  }
  const allowed = scale ? atol * Math.max(1, maxRef) : atol;
  const ok = rtol ? elementwiseOk : maxAbs <= allowed;
  return { name, maxAbs, maxRel, maxRef, allowed, argmax, ok, size: ref.length };
}
