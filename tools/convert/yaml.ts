// The YAML subset Karlo's config files use: nested mappings by indentation, `- item` block lists, `[a, b]` flow
// lists, plain / quoted scalars (int, float, bool, null, string) and `#` comments. Anything else is an error
// naming the file and line (no anchors, tags, multi-line strings or flow mappings).

import { printable } from '../../src/io/files.js';

/** Deepest nesting accepted (Karlo's configs are 4 deep). */
const MAX_DEPTH = 64;

export type YamlValue = string | number | boolean | null | YamlValue[] | { [k: string]: YamlValue };

interface Line { indent: number; text: string; no: number }

export function parseYaml(text: string, file: string): YamlValue {
  const lines: Line[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = stripComment(raw);
    if (t.trim() === '' || t.trim() === '---') return;
    if (/^\t/.test(t)) throw new Error(`${file}:${i + 1}: tabs are not allowed for indentation`);
    lines.push({ indent: t.length - t.trimStart().length, text: t.trim(), no: i + 1 });
  });
  let p = 0;
  const err = (l: Line, msg: string) => new Error(`${file}:${l.no}: ${msg}`);

  const block = (indent: number, depth = 0): YamlValue => {
    const first = lines[p];
    if (depth > MAX_DEPTH) throw err(first, `refused: nested more than ${MAX_DEPTH} levels deep`);
    if (first.text.startsWith('- ') || first.text === '-') {
      const out: YamlValue[] = [];
      while (p < lines.length && lines[p].indent === indent && (lines[p].text.startsWith('- ') || lines[p].text === '-')) {
        const l = lines[p++];
        const rest = l.text.slice(1).trim();
        if (rest === '') {
          if (p < lines.length && lines[p].indent > indent) out.push(block(lines[p].indent, depth + 1));
          else out.push(null);
        } else if (/^[^'"[][^:]*:(\s|$)/.test(rest)) {
          throw err(l, 'mappings inside list items are not supported');
        } else {
          out.push(scalar(rest, l));
        }
      }
      return out;
    }
    const out: { [k: string]: YamlValue } = {};
    while (p < lines.length && lines[p].indent === indent) {
      const l = lines[p++];
      const m = /^("[^"]*"|'[^']*'|[^:]+?)\s*:(?:\s+(.*))?$/.exec(l.text);
      if (!m) throw err(l, 'expected "key: value"');
      const key = unquote(m[1]);
      if (Object.prototype.hasOwnProperty.call(out, key)) throw err(l, `duplicate key "${printable(key)}"`);
      // Keys are own data properties, whatever their name (`__proto__` too: never a prototype).
      const set = (v: YamlValue) => { Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true }); };
      const rest = (m[2] ?? '').trim();
      if (rest === '') {
        if (p < lines.length && lines[p].indent > indent) set(block(lines[p].indent, depth + 1));
        else if (p < lines.length && lines[p].indent === indent && lines[p].text.startsWith('- ')) set(block(indent, depth + 1));
        else set(null);
      } else {
        set(scalar(rest, l));
      }
    }
    if (p < lines.length && lines[p].indent > indent) throw err(lines[p], 'unexpected indentation');
    return out;
  };

  const scalar = (s: string, l: Line): YamlValue => {
    if (s.startsWith('[')) {
      if (!s.endsWith(']')) throw err(l, 'unterminated flow list');
      const inner = s.slice(1, -1).trim();
      return inner === '' ? [] : inner.split(',').map((x) => scalar(x.trim(), l));
    }
    if (s.startsWith('{') || s.startsWith('&') || s.startsWith('*') || s.startsWith('!') || s.startsWith('|') || s.startsWith('>')) {
      throw err(l, `unsupported YAML syntax (${s[0]})`);
    }
    if (s.startsWith('"') || s.startsWith("'")) {
      if (s.length < 2 || s[s.length - 1] !== s[0]) throw err(l, 'unterminated string');
      return unquote(s);
    }
    if (/^[-+]?\d+$/.test(s)) return Number(s);
    if (/^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$/.test(s)) return Number(s);
    if (/^(true|True|TRUE)$/.test(s)) return true;
    if (/^(false|False|FALSE)$/.test(s)) return false;
    if (/^(null|Null|NULL|~)$/.test(s)) return null;
    return s;
  };

  if (lines.length === 0) return null;
  const v = block(lines[0].indent);
  if (p < lines.length) throw err(lines[p], 'unexpected content (bad indentation?)');
  return v;
}

function unquote(s: string): string {
  if ((s.startsWith('"') && s.endsWith('"')) || (s.startsWith("'") && s.endsWith("'"))) return s.slice(1, -1);
  return s.trim();
}

function stripComment(line: string): string {
  let q: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (q) { if (c === q) q = null; continue; }
    if (c === '"' || c === "'") q = c;
    else if (c === '#' && (i === 0 || /\s/.test(line[i - 1]))) return line.slice(0, i);
  }
  return line;
}
