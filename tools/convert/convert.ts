// `karlo convert --from-original`: Kakao Brain's original Karlo release (Lightning .ckpt files, OpenAI's CLIP
// TorchScript archive, the CLIP stats file) → a diffusers-layout folder our pipeline (and diffusers) loads.
// Memory: checkpoints are opened lazily (pickle only); every output tensor is read, remapped and written on its
// own (the fused qkv source is kept for the three q/k/v outputs), so peak memory is about the largest tensor
// plus the pickles, not a checkpoint. Output goes to a temporary folder renamed into place at the end.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUNDLED_MODEL_DIR } from '../../src/package_root.js';
import { saveSafetensorsSteps, decodeBytes, type TensorToWrite } from '../../src/io/safetensors.js';
import { pidAlive, printable, removeStaleTemporaries, trackTemporary } from '../../src/io/files.js';
import { TorchCheckpoint, type TorchOpenOptions } from '../../src/io/torch/checkpoint.js';
import type { TorchTensor } from '../../src/io/torch/tensor.js';
import { CONFIG_FILES, defaultHparams, readKarloConfigs, type KarloHparams } from './hparams.js';
import {
  planDecoder, planPrior, planSuperRes, planTextEncoder, planTextProj, type ComponentPlan, type PlanEntry, type Shapes,
} from './mapping.js';
import { toPythonJson, type JsonValue } from './pyjson.js';
import { DECODER_SCHEDULER, MODEL_INDEX, PRIOR_SCHEDULER, SPECIAL_TOKENS_MAP, SUPER_RES_SCHEDULER, TOKENIZER_CONFIG } from './static.js';

/** The release's file names (karlo@setup.sh). */
export const ORIGINAL_FILES = {
  prior: 'prior-ckpt-step=01000000-of-01000000.ckpt',
  decoder: 'decoder-ckpt-step=01000000-of-01000000.ckpt',
  superRes: 'improved-sr-ckpt-step=1.2M.ckpt',
  clip: 'ViT-L-14.pt',
  stats: 'ViT-L-14_stats.th',
} as const;

/** The bundled tokenizer vocabulary (identical to openai/clip-vit-large-patch14's vocab.json / merges.txt). */
export const TOKENIZER_DIR = path.join(BUNDLED_MODEL_DIR, 'tokenizer');

export interface ProgressEvent {
  component: string;
  index: number;
  count: number;
  tensorsDone: number;
  tensors: number;
  bytesDone: number;
  bytes: number;
}

export interface ConvertOptions extends TorchOpenOptions {
  from: string;
  out: string;
  /** Folder with Karlo's configs/*.yaml; default: the real Karlo values. */
  configs?: string;
  force?: boolean;
  /** Convert only these components (default: all, plus model_index.json, schedulers and tokenizer). */
  components?: readonly Component[];
  log?: (line: string) => void;
  onProgress?: (e: ProgressEvent) => void;
}

export interface ComponentReport {
  component: string;
  source: string;
  tensors: number;
  bytes: number;
  seconds: number;
}

export interface ConvertReport {
  out: string;
  hparamsSource: string;
  components: ComponentReport[];
  bytes: number;
  seconds: number;
}

/** The components a converted folder holds, in conversion order. */
export const COMPONENTS = ['prior', 'text_proj', 'decoder', 'super_res_first', 'super_res_last', 'text_encoder'] as const;
export type Component = (typeof COMPONENTS)[number];

type FileKey = keyof typeof ORIGINAL_FILES;
const NEEDS: Record<Component, FileKey[]> = {
  prior: ['prior', 'stats'], text_proj: ['decoder'], decoder: ['decoder'], super_res_first: ['superRes'],
  super_res_last: ['superRes'], text_encoder: ['clip'],
};

/** The release folder; checkpoints are opened on first use (pickle parsed, tensors still on disk). */
export interface OriginalRelease {
  dir: string;
  get(key: FileKey): TorchCheckpoint;
  close(): void;
}

/** Checks the files `components` need exist in `dir`; opens them lazily. */
export function openOriginal(dir: string, opts: TorchOpenOptions = {}, components: readonly Component[] = COMPONENTS): OriginalRelease {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`${dir}: not a folder (--from-original takes the folder holding Karlo's original files)`);
  const needed = [...new Set(components.flatMap((c) => NEEDS[c]))];
  const missing = needed.map((k) => ORIGINAL_FILES[k]).filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length) throw new Error(`${dir}: missing ${missing.join(', ')} (the original release has ${Object.values(ORIGINAL_FILES).join(', ')})`);
  const opened = new Map<FileKey, TorchCheckpoint>();
  return {
    dir,
    get(key) {
      let ck = opened.get(key);
      if (!ck) {
        ck = TorchCheckpoint.open(path.join(dir, ORIGINAL_FILES[key]), opts);
        opened.set(key, ck);
      }
      return ck;
    },
    close: () => {
      for (const c of opened.values()) c.close();
      opened.clear();
    },
  };
}

const shapesOf = (m: Map<string, TorchTensor>): Shapes => new Map([...m].map(([k, t]) => [k, t.shape]));

/** The clip_mean / clip_std tensors of ViT-L-14_stats.th (a tuple (mean, std)). */
function statsTensors(ck: TorchCheckpoint): [TorchTensor, TorchTensor] {
  const t = ck.stateDict();
  const mean = t.get('0');
  const std = t.get('1');
  if (!mean || !std || t.size !== 2) throw new Error(`${ck.file}: expected a tuple (clip_mean, clip_std), found tensors ${[...t.keys()].join(', ')}`);
  return [mean, std];
}

/** The plans (mapping + config, from shapes only) of `components`. */
export function planRelease(rel: OriginalRelease, hp: KarloHparams, components: readonly Component[] = COMPONENTS): ComponentPlan[] {
  const base = (k: FileKey) => ORIGINAL_FILES[k];
  const want = new Set(components);
  const plans: ComponentPlan[] = [];
  let prior: ComponentPlan | null = null;
  let textEncoder: ComponentPlan | null = null;
  if (want.has('prior')) {
    const [mean, std] = statsTensors(rel.get('stats'));
    prior = planPrior(shapesOf(rel.get('prior').stateDict()), base('prior'), [mean.shape, std.shape], base('stats'), hp);
    plans.push(prior);
  }
  if (want.has('decoder') || want.has('text_proj')) {
    const decShapes = shapesOf(rel.get('decoder').stateDict());
    const decoder = planDecoder(decShapes, base('decoder'), hp);
    const textProj = planTextProj(decShapes, base('decoder'), decoder.config, hp);
    if (textProj.config.time_embed_dim !== 4 * (decoder.config.block_out_channels as number[])[0]) {
      throw new Error(`${base('decoder')}: text projection time_embed_dim ${textProj.config.time_embed_dim} != the decoder's time embedding width`);
    }
    if (want.has('text_proj')) plans.push(textProj);
    if (want.has('decoder')) plans.push(decoder);
  }
  if (want.has('super_res_first') || want.has('super_res_last')) {
    const srShapes = shapesOf(rel.get('superRes').stateDict());
    if (want.has('super_res_first')) plans.push(planSuperRes(srShapes, base('superRes'), 'model_first_steps.', hp));
    if (want.has('super_res_last')) plans.push(planSuperRes(srShapes, base('superRes'), 'model_last_step.', hp));
  }
  if (want.has('text_encoder')) {
    textEncoder = planTextEncoder(shapesOf(rel.get('clip').stateDict()), base('clip'));
    plans.push(textEncoder);
  }
  if (prior && textEncoder && prior.config.embedding_dim !== textEncoder.config.projection_dim) {
    throw new Error(`${base('prior')}: the prior's CLIP dim ${prior.config.embedding_dim} != ${base('clip')}'s projection dim ${textEncoder.config.projection_dim}`);
  }
  return plans;
}

/** float32 little-endian bytes of a source tensor (F16/BF16 widened exactly, F64 rounded). */
function f32Bytes(ck: TorchCheckpoint, t: TorchTensor, name: string): Uint8Array {
  const raw = ck.readRaw(t);
  if (raw.dtype === 'F32') return raw.bytes;
  if (raw.dtype !== 'F16' && raw.dtype !== 'BF16' && raw.dtype !== 'F64') throw new Error(`${ck.file}: tensor "${name}" is ${raw.dtype}, expected floating-point weights`);
  const f = decodeBytes(raw.bytes, raw.dtype, t.numel, `${ck.file}: tensor "${name}"`) as Float32Array;
  return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
}

/** Applies one plan entry to the source's float32 bytes. */
export function applyOp(e: PlanEntry, src: Uint8Array): Uint8Array {
  const n = e.dstShape.reduce((a, b) => a * b, 1);
  switch (e.op) {
    case 'copy':
    case 'reshape':
      if (src.byteLength !== n * 4) throw new Error(`${e.src} → ${e.dst}: ${src.byteLength / 4} elements, ${n} expected`);
      return src;
    case 'rows': {
      const rowElems = e.srcShape.slice(1).reduce((a, b) => a * b, 1);
      const out = new Uint8Array(n * 4);
      let o = 0;
      for (const [a, b] of e.rows!) {
        const part = src.subarray(a * rowElems * 4, b * rowElems * 4);
        out.set(part, o);
        o += part.byteLength;
      }
      if (o !== out.byteLength) throw new Error(`${e.src} → ${e.dst}: rows give ${o / 4} elements, ${n} expected`);
      return out;
    }
    case 'transpose': {
      const [r, c] = e.srcShape;
      const s = src.byteOffset % 4 ? new Float32Array(src.slice().buffer) : new Float32Array(src.buffer, src.byteOffset, r * c);
      const out = new Float32Array(r * c);
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = s[i * c + j];
      return new Uint8Array(out.buffer);
    }
  }
}

function writeJson(file: string, v: JsonValue): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${toPythonJson(v)}\n`);
}

const WEIGHTS_FILE: Record<string, string> = { text_encoder: 'model.safetensors' };

/** Writes one component (config.json + weights) into `dir`, tensor by tensor (a step after each). */
function* writeComponent(plan: ComponentPlan, resolve: (src: string) => [TorchCheckpoint, TorchTensor], dir: string,
  progress: (tensorsDone: number, bytesDone: number) => void): Generator<void, { bytes: number }, void> {
  fs.mkdirSync(dir, { recursive: true });
  writeJson(path.join(dir, 'config.json'), plan.config);
  let cacheKey = '';
  let cache: Uint8Array | null = null;
  let tensorsDone = 0;
  let bytesDone = 0;
  const tensors = new Map<string, TensorToWrite>();
  for (const e of plan.entries) {
    tensors.set(e.dst, {
      dtype: 'F32',
      shape: e.dstShape,
      data: () => {
        if (cacheKey !== e.src) {
          cache = null; // drop the previous source before reading the next
          const [ck, t] = resolve(e.src);
          cache = f32Bytes(ck, t, e.src);
          cacheKey = e.src;
        }
        const out = applyOp(e, cache!);
        tensorsDone++;
        bytesDone += out.byteLength;
        progress(tensorsDone, bytesDone);
        return out;
      },
    });
  }
  yield* saveSafetensorsSteps(path.join(dir, WEIGHTS_FILE[plan.component] ?? 'diffusion_pytorch_model.safetensors'), tensors, { format: 'pt' });
  return { bytes: bytesDone };
}

/** model_index.json, the scheduler configs and the tokenizer files (independent of the checkpoints). */
function writeStaticFiles(tmp: string): void {
  writeJson(path.join(tmp, 'prior_scheduler', 'scheduler_config.json'), PRIOR_SCHEDULER);
  writeJson(path.join(tmp, 'decoder_scheduler', 'scheduler_config.json'), DECODER_SCHEDULER);
  writeJson(path.join(tmp, 'super_res_scheduler', 'scheduler_config.json'), SUPER_RES_SCHEDULER);
  writeJson(path.join(tmp, 'model_index.json'), MODEL_INDEX);
  writeJson(path.join(tmp, 'tokenizer', 'tokenizer_config.json'), TOKENIZER_CONFIG);
  writeJson(path.join(tmp, 'tokenizer', 'special_tokens_map.json'), SPECIAL_TOKENS_MAP);
  for (const f of ['vocab.json', 'merges.txt']) {
    const src = path.join(TOKENIZER_DIR, f);
    if (!fs.existsSync(src)) throw new Error(`${src}: the bundled tokenizer file is missing (needed for tokenizer/${f})`);
    fs.copyFileSync(src, path.join(tmp, 'tokenizer', f));
  }
}

/** Converts the release in `opts.from` into the diffusers-layout folder `opts.out`. */
export function convertOriginal(opts: ConvertOptions): ConvertReport {
  const steps = convertSteps(opts);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * convertOriginal, yielding to the event loop after every tensor, so SIGINT/SIGTERM are handled while it runs:
 * the partial output is then removed (files.ts) and the process ends with the signal. `KARLO_CONVERT_STEP_DELAY_MS`
 * (a testing aid) waits that long at every step.
 */
export async function convertOriginalAsync(opts: ConvertOptions): Promise<ConvertReport> {
  const delay = Number(process.env.KARLO_CONVERT_STEP_DELAY_MS ?? 0);
  const steps = convertSteps(opts);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise<void>((res) => (delay > 0 ? setTimeout(res, delay) : setImmediate(res)));
  }
}

/**
 * Leftovers of conversions into `out` by processes that no longer run: `.OUT.partial-PID` folders are removed;
 * an `.OUT.old-PID` (the previous output, moved aside in the last instant) is put back when `out` is missing and
 * removed otherwise. Each is logged.
 */
export function removeStaleConversions(out: string, log: (line: string) => void): void {
  const dir = path.dirname(out);
  const base = path.basename(out);
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return; }
  for (const n of names) {
    const m = new RegExp(`^\\.${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.old-(\\d+)$`).exec(n);
    if (!m || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
    const p = path.join(dir, n);
    if (!fs.existsSync(out)) {
      fs.renameSync(p, out);
      log(`restored ${printable(out)} from ${printable(p)}, left behind by process ${m[1]} (no longer running)`);
    }
  }
  removeStaleTemporaries(out, ['partial', 'old'], log);
}

function* convertSteps(opts: ConvertOptions): Generator<void, ConvertReport, void> {
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const out = path.resolve(opts.out);
  removeStaleConversions(out, log);
  if (fs.existsSync(out)) {
    const st = fs.statSync(out);
    if (!st.isDirectory()) throw new Error(`${opts.out}: exists and is not a folder`);
    if (fs.readdirSync(out).length && !opts.force) throw new Error(`${opts.out}: exists and is not empty; pass --force to replace it`);
  }
  const hp = opts.configs ? readKarloConfigs(opts.configs) : defaultHparams();
  const components = opts.components ?? COMPONENTS;
  for (const c of components) if (!COMPONENTS.includes(c)) throw new Error(`unknown component "${c}" (choose from ${COMPONENTS.join(', ')})`);
  const everything = COMPONENTS.every((c) => components.includes(c));
  const rel = openOriginal(opts.from, opts, components);
  const tmp = path.join(path.dirname(out), `.${path.basename(out)}.partial-${process.pid}`);
  let untrackTmp = () => {};
  try {
    const plans = planRelease(rel, hp, components);
    log(`hparams: ${hp.fromYaml ? `Karlo configs in ${hp.source}` : hp.source}`);
    const nearby = path.join(opts.from, 'configs');
    if (!hp.fromYaml && fs.existsSync(path.join(nearby, CONFIG_FILES.prior))) log(`  note: ${nearby} holds Karlo YAML configs; they are used only with --configs ${nearby}`);
    // The values no tensor shape tells, so they are never a hidden choice.
    for (const p of plans) {
      const c = p.config;
      if (p.component === 'prior') log(`  prior: ${c.num_attention_heads} heads × ${c.attention_head_dim} (not derivable from the tensors)`);
      if (p.component === 'decoder') log(`  decoder: attention head channels ${c.attention_head_dim}, sample_size ${c.sample_size} (not derivable from the tensors)`);
      if (p.component === 'super_res_first') log('  super_res: sample_size 256 (the 64→256 stage\'s output size, a constant)');
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    untrackTmp = trackTemporary(tmp);
    fs.mkdirSync(tmp, { recursive: true });
    const byFile = new Map<string, FileKey>((Object.keys(ORIGINAL_FILES) as FileKey[]).map((k) => [ORIGINAL_FILES[k], k]));
    const reports: ComponentReport[] = [];
    for (const [index, plan] of plans.entries()) {
      const ck = rel.get(byFile.get(plan.sourceFile)!);
      const sd = ck.stateDict();
      const statsName = ORIGINAL_FILES.stats;
      const resolve = (src: string): [TorchCheckpoint, TorchTensor] => {
        if (src === `${statsName}[0]` || src === `${statsName}[1]`) {
          const stats = rel.get('stats');
          return [stats, statsTensors(stats)[src.endsWith('[0]') ? 0 : 1]];
        }
        const t = sd.get(src);
        if (!t) throw new Error(`${ck.file}: missing tensor "${src}"`);
        return [ck, t];
      };
      const bytes = plan.entries.reduce((a, e) => a + e.dstShape.reduce((x, y) => x * y, 1) * 4, 0);
      log(`[${index + 1}/${plans.length}] ${plan.component} ← ${plan.sourceFile}: ${plan.entries.length} tensors, ${formatBytes(bytes)}`);
      const c0 = performance.now();
      yield* writeComponent(plan, resolve, path.join(tmp, plan.component), (tensorsDone, bytesDone) =>
        opts.onProgress?.({ component: plan.component, index, count: plans.length, tensorsDone, tensors: plan.entries.length, bytesDone, bytes }));
      reports.push({ component: plan.component, source: plan.sourceFile, tensors: plan.entries.length, bytes, seconds: (performance.now() - c0) / 1000 });
    }
    if (everything) writeStaticFiles(tmp);
    // Provenance: where every tensor came from and how (the format of the fixtures' key_map.json).
    writeJson(path.join(tmp, 'karlo_conversion.json'), {
      converted_from: path.resolve(opts.from),
      hparams_source: hp.fromYaml ? path.resolve(hp.source) : hp.source,
      components: Object.fromEntries(plans.map((p) => [p.component, {
        source_file: p.sourceFile,
        unused_source_keys: p.unusedSourceKeys,
        entries: p.entries.map((e) => ({ dst: e.dst, src: e.src, src_shape: e.srcShape, dst_shape: e.dstShape, op: e.op, ...(e.rows ? { rows: e.rows } : {}) })),
      }])),
    } as unknown as JsonValue);
    // Into place: the old folder (with --force) is moved aside first and removed only once the new one is in.
    let old: string | null = null;
    if (fs.existsSync(out)) {
      old = path.join(path.dirname(out), `.${path.basename(out)}.old-${process.pid}`);
      fs.renameSync(out, old);
    }
    fs.renameSync(tmp, out);
    untrackTmp();
    if (old) fs.rmSync(old, { recursive: true, force: true });
    const seconds = (performance.now() - t0) / 1000;
    return { out, hparamsSource: hp.source, components: reports, bytes: reports.reduce((a, r) => a + r.bytes, 0), seconds };
  } finally {
    // An error, or a caller that stopped the steps: the partial folder goes (a signal: files.ts removes it).
    if (fs.existsSync(tmp)) fs.rmSync(tmp, { recursive: true, force: true });
    untrackTmp();
    rel.close();
  }
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}
