// JSON written the way diffusers / transformers write config.json (json.dumps(indent=2, sort_keys=True) + "\n"),
// including Python's float spelling (0.0, 1e-05), so converted configs read the same as the reference's.

/** A number that Python wrote as a float (`0.0`, not `0`). */
export class PyFloat {
  constructor(readonly value: number) {}
}
export const pyFloat = (v: number) => new PyFloat(v);

export type JsonValue = string | number | boolean | null | PyFloat | JsonValue[] | { [k: string]: JsonValue };

/** Python's repr() of a float. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, expStr] = x.toExponential().split('e');
  const exp = Number(expStr);
  if (exp < -4 || exp >= 16) {
    const m = mant.includes('.') ? mant : mant; // shortest digits already
    return `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  const s = String(x);
  if (s.includes('e')) {
    // JS switches to exponent form below 1e-6 only; Python stays positional down to 1e-4.
    const digits = mant.replace('-', '').replace('.', '');
    const neg = x < 0 ? '-' : '';
    return `${neg}0.${'0'.repeat(-exp - 1)}${digits}`;
  }
  return s.includes('.') ? s : `${s}.0`;
}

export function toPythonJson(v: JsonValue, indent = 0): string {
  const pad = '  '.repeat(indent + 1);
  const end = '  '.repeat(indent);
  if (v instanceof PyFloat) return pyFloatRepr(v.value);
  if (v === null) return 'null';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : pyFloatRepr(v);
  if (typeof v === 'string' || typeof v === 'boolean') return JSON.stringify(v);
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return `[\n${v.map((x) => pad + toPythonJson(x, indent + 1)).join(',\n')}\n${end}]`;
  }
  const keys = Object.keys(v).sort();
  if (keys.length === 0) return '{}';
  return `{\n${keys.map((k) => `${pad}${JSON.stringify(k)}: ${toPythonJson(v[k], indent + 1)}`).join(',\n')}\n${end}}`;
}

/** Parses JSON written by toPythonJson / Python back to plain values (floats become numbers). */
export function plain(v: JsonValue): unknown {
  return JSON.parse(JSON.stringify(v, (_k, x) => (x instanceof PyFloat ? x.value : x)));
}
