// `karlo inspect PATH [--json]`: tensors (name, dtype, shape) and parameter counts of a .safetensors file, a sharded
// index, a component folder or a diffusers pipeline folder. Reads headers only. Bad input: one line, exit 2.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CommandModule } from 'yargs';
import { inspectPath, type InspectResult, type InspectDetails } from '../../io/inspect.js';
import { UsageError } from '../errors.js';
import { DTYPE_SIZE, numel, type SafetensorsDType } from '../../io/safetensors.js';
import { formatBytes } from '../progress.js';
import { readPngText } from '../../io/png.js';
import { PROVENANCE_KEY, formatProvenance, parseProvenance, type Provenance } from '../../pipeline/provenance.js';
import { jsonText, printable } from '../../io/files.js';

interface Args {
  path: string;
  json?: boolean;
  tensors?: boolean;
  filter?: string;
}

/** A glob over tensor names: `*` any run of characters (dots included), `?` one character; the whole name must match. */
export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/** Keeps the tensors whose name matches; parameter counts are recomputed over what is kept. */
export function filterResult(r: InspectResult, glob: string): InspectResult {
  const re = globToRegExp(glob);
  const components = r.components.map((c) => {
    const tensors = c.tensors.filter((t) => re.test(t.name));
    return { ...c, tensors, parameters: tensors.reduce((a, t) => a + numel(t.shape), 0) };
  });
  return { components, parameters: components.reduce((a, c) => a + c.parameters, 0) };
}

/** Bytes on disk per dtype (F32, F16, BF16, ...), over every component. */
export function bytesPerDtype(r: InspectResult): Record<string, number> {
  const out: Record<string, number> = Object.create(null);
  for (const c of r.components) {
    for (const t of c.tensors) {
      const size = Object.prototype.hasOwnProperty.call(DTYPE_SIZE, t.dtype) ? DTYPE_SIZE[t.dtype as SafetensorsDType] : 0;
      out[t.dtype] = (out[t.dtype] ?? 0) + numel(t.shape) * size;
    }
  }
  return out;
}

const count = (n: number) => n.toLocaleString('en-US');

export function formatInspect(p: string, r: InspectResult, d: InspectDetails, showTensors = true): string[] {
  const lines: string[] = [];
  const what = d.kind === 'pipeline' ? `pipeline folder${d.pipelineClass ? ` (${d.pipelineClass})` : ''}`
    : d.kind === 'component' ? 'component folder' : d.kind === 'sharded' ? 'sharded checkpoint'
    : d.kind === 'torch' ? 'PyTorch file (read by the safe torch reader: no code runs)' : 'safetensors file';
  // Names come from the files: printed escaped (no terminal escape sequences, no line breaks).
  lines.push(`${printable(p)}: ${what}`);
  for (const c of r.components) {
    const files = (d.files[c.name] ?? []).map((f) => printable(path.relative(process.cwd(), f) || f));
    lines.push('');
    lines.push(`${printable(c.name)}${c.class ? ` (${printable(c.class)})` : ''}: ${count(c.parameters)} parameters in ${c.tensors.length} tensors${files.length ? ` [${files.join(', ')}]` : ''}`);
    if (!showTensors) continue;
    const names = c.tensors.map((t) => printable(t.name));
    const w = Math.max(0, ...names.map((n) => n.length));
    c.tensors.forEach((t, i) => lines.push(`  ${names[i].padEnd(w)}  ${t.dtype.padEnd(4)}  [${t.shape.join(', ')}]`));
  }
  for (const s of d.skipped) lines.push(`${printable(s.name)}${s.class ? ` (${printable(s.class)})` : ''}: ${s.why}`);
  lines.push('');
  const w = Math.max(5, ...r.components.map((c) => printable(c.name).length));
  for (const c of r.components) lines.push(`${printable(c.name).padEnd(w)}  ${count(c.parameters).padStart(15)}`);
  lines.push(`${'total'.padEnd(w)}  ${count(r.parameters).padStart(15)} parameters`);
  const bytes = bytesPerDtype(r);
  const kinds = Object.keys(bytes).sort();
  if (kinds.length) lines.push(`bytes: ${kinds.map((k) => `${k} ${formatBytes(bytes[k])}`).join(', ')}${kinds.length > 1 ? ` (total ${formatBytes(kinds.reduce((a, k) => a + bytes[k], 0))})` : ''}`);
  return lines;
}

/** `karlo inspect image.png`: the provenance karlo generate wrote into it (the "parameters" tEXt chunk). */
function inspectPng(file: string, json: boolean): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new UsageError(`${file}: no such file`);
  }
  if (!st.isFile()) throw new UsageError(`${file}: not a regular file`);
  if (st.size > 256 * 2 ** 20) throw new UsageError(`${file}: ${st.size} bytes is too large for a karlo PNG`);
  let texts: Record<string, string>;
  try {
    texts = readPngText(fs.readFileSync(file), file);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const raw = texts[PROVENANCE_KEY];
  if (raw === undefined) throw new UsageError(`${file}: no "${PROVENANCE_KEY}" text chunk: not made by karlo generate (or its metadata was stripped)`);
  let p: Provenance;
  try {
    p = parseProvenance(raw, file);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (json) console.log(JSON.stringify({ kind: 'png', file, parameters: p }));
  else console.log([`${file}: PNG made by karlo generate`, ...formatProvenance(p).map((l) => `  ${l}`), `  re-run: karlo generate --from ${file} --out NEW.png`].join('\n'));
}

const command: CommandModule<object, Args> = {
  command: 'inspect <path>',
  describe: 'list tensors (name, dtype, shape) and parameter counts of a .safetensors file, component folder or pipeline folder',
  builder: (y) => y
    .positional('path', { type: 'string', demandOption: true, describe: '.safetensors file, *.safetensors.index.json, PyTorch .pt/.ckpt/.bin/.pth/TorchScript file, component or pipeline folder, or a PNG made by karlo generate' })
    .option('json', { type: 'boolean', default: false, describe: 'print {"components": [{name, class, parameters, tensors: [{name, dtype, shape}]}], "parameters"}' })
    .option('tensors', { type: 'boolean', default: true, describe: 'list every tensor (--no-tensors: counts only)' })
    .option('filter', { type: 'string', describe: 'only tensors whose name matches GLOB (* any characters, ? one), e.g. "down_blocks.*.attentions.*"' }) as never,
  handler: (argv) => {
    if (/\.png$/i.test(argv.path)) return inspectPng(argv.path, Boolean(argv.json));
    let out: ReturnType<typeof inspectPath>;
    try {
      out = inspectPath(argv.path);
    } catch (e) {
      // Every failure here is about the user's file: one line, no stack trace.
      throw new UsageError((e as Error).message.split('\n').join(' '));
    }
    const result = argv.filter !== undefined ? filterResult(out.result, String(argv.filter)) : out.result;
    if (argv.json) {
      const r = result;
      console.log(jsonText({
        components: r.components.map((c) => ({
          name: c.name, class: c.class, parameters: c.parameters,
          tensors: c.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
        })),
        parameters: r.parameters,
        bytesPerDtype: bytesPerDtype(r),
      }));
    } else {
      console.log(formatInspect(argv.path, result, out.details, argv.tensors !== false).join('\n'));
    }
  },
};

export default command;
