// The conditioning a training run needs, computed once and cached on disk next to the data
// (`<data>/.karlo_cache/`), keyed by the model and by each file's hash:
//   text   CLIP text outputs of each caption (text_embeds [D], last_hidden_state [77, D], attention mask and input
//          ids [77]), as UnCLIPPipeline's encode step makes them (no mask passed to the encoder). One file
//          `text-<key>.safetensors` per text model (key = hashes of the text encoder's config and weights and the
//          tokenizer files); entries named by the caption's sha256.
//   image  CLIP image embeddings of each pair [D]: from the CLIP vision encoder when the model folder has
//          `image_encoder/` (entries by the image's sha256), else the prior's output for the caption (sampled as
//          the pipeline does: 25 steps, guidance 4, a generator seeded from the caption hash; entries by the
//          caption's sha256). One file `image-<key>.safetensors` per source model and settings.
// A run reads the cache, computes only the missing entries (loading the models they need, then releasing them)
// and rewrites the file atomically. Model files are hashed once per (path, size, mtime) and remembered in
// `file_hashes.json`. When the data folder is not writable the cache goes to the fallback folder (the run's --out).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors, saveSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { findWeightsFile } from '../io/weights.js';
import { writeFileAtomic } from '../io/png.js';
import type { ModelFolder } from '../io/model_folder.js';
import { TorchGenerator } from '../random/generator.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { encodePrompt } from '../pipeline/encode_prompt.js';
import { runPrior } from '../pipeline/prior_stage.js';
import { CACHE_DIR_NAME, sha256Hex, type DataItem } from './data.js';
import { createHash } from 'node:crypto';
import { CLIP_PROCESSOR_DEFAULTS, clipPreprocess, readClipProcessorConfig } from '../io/clip_preprocess.js';
import { readImage } from '../io/image.js';
import { loadComponent } from '../loading/load_component.js';
import type { CLIPTextModelWithProjection } from '../models/clip_text.js';

export interface TextConditioning {
  /** text_embeds [D] */
  textEmbeds: Float32Array;
  /** last_hidden_state [L, D] */
  lastHiddenState: Float32Array;
  /** tokenizer attention mask [L] (1 = token) */
  attentionMask: Int32Array;
  /** token ids [L] */
  inputIds: Int32Array;
}

export interface Conditioning {
  /** Per data item (same order), when asked for. */
  text?: TextConditioning[];
  /** The empty caption's text outputs (classifier-free-guidance dropout), when asked for. */
  uncondText?: TextConditioning;
  imageEmbeds?: Float32Array[];
  /** Where the image embeddings come from. */
  imageSource?: 'image_encoder' | 'prior';
  /** Text sequence length L and embedding width D. */
  seqLen: number;
  dim: number;
  /** Cache files used, and how many entries were computed now vs read from the cache. */
  files: string[];
  computed: number;
  reused: number;
}

export interface ConditioningOptions {
  text: boolean;
  imageEmbeds: boolean;
  /** Also the text outputs of the empty caption "" (what the pipeline's unconditional rows use). */
  unconditional?: boolean;
  /** Default `<data>/.karlo_cache`. */
  cacheDir?: string;
  /** Used when cacheDir cannot be written. */
  fallbackCacheDir?: string;
  /** Prior sampling for image embeddings without an image encoder. */
  priorSteps?: number;
  priorGuidance?: number;
  /** Captions per text-encoder batch (default 8). */
  batch?: number;
  log?: (line: string) => void;
}

export const PRIOR_SAMPLING_DEFAULTS = { steps: 25, guidance: 4 } as const;

// ---------- file hashes ----------

/** sha256 of a file, streamed in 16 MB chunks. */
export function hashFile(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(16 << 20);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** Hashes files, remembering each by (absolute path, size, mtime) in `<cacheDir>/file_hashes.json`. */
export class FileHasher {
  private readonly memo: Record<string, { size: number; mtimeMs: number; sha256: string }>;
  private dirty = false;
  constructor(private readonly memoFile: string) {
    let m: unknown = {};
    try {
      m = JSON.parse(fs.readFileSync(memoFile, 'utf8'));
    } catch { /* none yet, or unreadable: start again */ }
    this.memo = m && typeof m === 'object' && !Array.isArray(m) ? (m as FileHasher['memo']) : {};
  }

  hash(file: string): string {
    const abs = fs.realpathSync(file);
    const st = fs.statSync(abs);
    const e = this.memo[abs];
    if (e && e.size === st.size && e.mtimeMs === st.mtimeMs && typeof e.sha256 === 'string') return e.sha256;
    const sha256 = hashFile(abs);
    this.memo[abs] = { size: st.size, mtimeMs: st.mtimeMs, sha256 };
    this.dirty = true;
    return sha256;
  }

  save(): void {
    if (!this.dirty) return;
    try {
      writeFileAtomic(this.memoFile, Buffer.from(`${JSON.stringify(this.memo, null, 1)}\n`));
      this.dirty = false;
    } catch { /* a memo we cannot write only costs hashing again */ }
  }
}

/** Hash of a component folder: its config and weights files (or whatever files it has, for a tokenizer). */
function componentHash(h: FileHasher, dir: string, kind: 'model' | 'tokenizer' | 'scheduler' | 'preprocessor'): Record<string, string> {
  const out: Record<string, string> = {};
  const add = (name: string) => {
    const f = path.join(dir, name);
    if (fs.existsSync(f)) out[name] = h.hash(f);
  };
  if (kind === 'model') {
    add('config.json');
    const w = findWeightsFile(dir);
    out[path.basename(w)] = h.hash(w);
    if (w.endsWith('.index.json')) {
      const idx = JSON.parse(fs.readFileSync(w, 'utf8')) as { weight_map: Record<string, string> };
      for (const shard of new Set(Object.values(idx.weight_map))) add(shard);
    }
  } else if (kind === 'tokenizer') {
    for (const n of ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json']) add(n);
  } else if (kind === 'scheduler') {
    add('scheduler_config.json');
  } else {
    add('preprocessor_config.json');
  }
  return out;
}

function keyOf(parts: unknown): string {
  return sha256Hex(JSON.stringify(parts));
}

// ---------- cache files ----------

interface CacheFile {
  file: string;
  entries: Map<string, { dtype: string; shape: number[]; data: Float32Array | Int32Array }>;
}

function readCache(file: string, key: string, log: (l: string) => void): CacheFile {
  const entries: CacheFile['entries'] = new Map();
  if (fs.existsSync(file)) {
    try {
      const m = loadSafetensors(file);
      for (const [k, t] of m) {
        entries.set(k, { dtype: t.dtype, shape: t.shape, data: t.dtype === 'int32' ? new Int32Array(t.data as ArrayLike<number>) : (t.data as Float32Array) });
      }
    } catch (e) {
      log(`conditioning cache ${file} is unreadable (${(e as Error).message}); computing it again`);
      entries.clear();
    }
  }
  void key;
  return { file, entries };
}

function writeCache(c: CacheFile, metadata: Record<string, string>): void {
  const out = new Map<string, TensorToWrite>();
  for (const k of [...c.entries.keys()].sort()) {
    const e = c.entries.get(k)!;
    out.set(k, { dtype: e.data instanceof Int32Array ? 'I32' : 'F32', shape: e.shape, data: e.data });
  }
  saveSafetensors(c.file, out, metadata);
}

function writableDir(dir: string): boolean {
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The seed of the prior sampling for a caption: the first 8 bytes of its sha256 (reproducible, order-free). */
export function captionSeed(captionHash: string): bigint {
  return BigInt(`0x${captionHash.slice(0, 16)}`);
}

/**
 * Computes (or reads from the cache) the conditioning of every data item. Loads the text encoder / prior /
 * image encoder only when entries are missing, and frees them before returning.
 */
export async function prepareConditioning(model: ModelFolder, dataDir: string, items: readonly DataItem[], opts: ConditioningOptions): Promise<Conditioning> {
  const log = opts.log ?? (() => {});
  let cacheDir = opts.cacheDir ?? path.join(path.resolve(dataDir), CACHE_DIR_NAME);
  if (!writableDir(cacheDir)) {
    if (!opts.fallbackCacheDir) throw new Error(`${cacheDir}: cannot write the conditioning cache there`);
    log(`note: ${cacheDir} is not writable; caching the conditioning in ${opts.fallbackCacheDir}`);
    cacheDir = opts.fallbackCacheDir;
    fs.mkdirSync(cacheDir, { recursive: true });
  }
  const hasher = new FileHasher(path.join(cacheDir, 'file_hashes.json'));
  const dirs = model.dirs;
  const imageEncoderDir = path.join(model.root, 'image_encoder');
  const useVision = opts.imageEmbeds && fs.existsSync(path.join(imageEncoderDir, 'config.json'));
  const textKeyParts = {
    kind: 'text', version: 1,
    text_encoder: componentHash(hasher, dirs.text_encoder, 'model'),
    tokenizer: componentHash(hasher, dirs.tokenizer, 'tokenizer'),
  };
  const textKey = keyOf(textKeyParts);
  const result: Conditioning = { seqLen: 0, dim: 0, files: [], computed: 0, reused: 0 };

  // Text encoder and tokenizer, loaded on first need and released at the end.
  let tokenizer: CLIPTokenizer | undefined;
  let textEncoder: CLIPTextModelWithProjection | undefined;
  const textModel = () => {
    tokenizer ??= CLIPTokenizer.fromDir(dirs.tokenizer);
    textEncoder ??= loadComponent(dirs.text_encoder, 'CLIPTextModelWithProjection', { trainable: false });
    return { tokenizer, textEncoder };
  };

  try {
    if (opts.text) {
      const cache = readCache(path.join(cacheDir, `text-${textKey.slice(0, 16)}.safetensors`), textKey, log);
      const uncondHash = sha256Hex('');
      const textItems = opts.unconditional ? [...items, { caption: '', captionHash: uncondHash } as DataItem] : items;
      const missing = [...new Set(textItems.filter((it) => !cache.entries.has(`${it.captionHash}.text_embeds`)).map((it) => it.captionHash))];
      if (missing.length) {
        log(`conditioning: encoding ${missing.length} caption(s) with the CLIP text encoder`);
        const { tokenizer: tok, textEncoder: te } = textModel();
        const byHash = new Map(textItems.map((it) => [it.captionHash, it.caption]));
        const bs = opts.batch ?? 8;
        for (let i = 0; i < missing.length; i += bs) {
          const hashes = missing.slice(i, i + bs);
          const captions = hashes.map((h) => byHash.get(h)!);
          const enc = tok.encode(captions, { maxLength: tok.modelMaxLength, padding: 'max_length', truncation: true });
          const out = encodePrompt(tok, te, captions, { doClassifierFreeGuidance: false, warn: (m) => log(`note: ${m}`) });
          try {
            const [B, L, D] = out.textEncHiddenStates.shape;
            const emb = out.promptEmbeds.dataSync() as Float32Array;
            const hid = out.textEncHiddenStates.dataSync() as Float32Array;
            const mask = out.textMask.dataSync();
            for (let b = 0; b < B; b++) {
              const h = hashes[b];
              cache.entries.set(`${h}.text_embeds`, { dtype: 'F32', shape: [D], data: emb.slice(b * D, (b + 1) * D) });
              cache.entries.set(`${h}.last_hidden_state`, { dtype: 'F32', shape: [L, D], data: hid.slice(b * L * D, (b + 1) * L * D) });
              cache.entries.set(`${h}.attention_mask`, { dtype: 'I32', shape: [L], data: Int32Array.from(mask.slice(b * L, (b + 1) * L)) });
              cache.entries.set(`${h}.input_ids`, { dtype: 'I32', shape: [L], data: Int32Array.from(enc.inputIds[b]) });
            }
          } finally {
            tf.dispose([out.promptEmbeds, out.textEncHiddenStates, out.textMask]);
          }
        }
        writeCache(cache, { format: 'karlo-conditioning', kind: 'text', key: textKey, parts: JSON.stringify(textKeyParts) });
      }
      result.computed += missing.length;
      result.reused += new Set(textItems.map((it) => it.captionHash)).size - missing.length;
      result.files.push(cache.file);
      const entry = (hash: string): TextConditioning => {
        const g = (n: string) => cache.entries.get(`${hash}.${n}`)!;
        return {
          textEmbeds: g('text_embeds').data as Float32Array,
          lastHiddenState: g('last_hidden_state').data as Float32Array,
          attentionMask: g('attention_mask').data as Int32Array,
          inputIds: g('input_ids').data as Int32Array,
        };
      };
      result.text = items.map((it) => entry(it.captionHash));
      if (opts.unconditional) result.uncondText = entry(uncondHash);
      const hs = cache.entries.get(`${items[0].captionHash}.last_hidden_state`)!;
      result.seqLen = hs.shape[0];
      result.dim = hs.shape[1];
    }

    if (opts.imageEmbeds) {
      const steps = opts.priorSteps ?? PRIOR_SAMPLING_DEFAULTS.steps;
      const guidance = opts.priorGuidance ?? PRIOR_SAMPLING_DEFAULTS.guidance;
      const keyParts = useVision
        ? { kind: 'image_encoder', version: 1, image_encoder: componentHash(hasher, imageEncoderDir, 'model'), feature_extractor: componentHash(hasher, path.join(model.root, 'feature_extractor'), 'preprocessor') }
        : { kind: 'prior', version: 1, text: textKeyParts, prior: componentHash(hasher, dirs.prior, 'model'), prior_scheduler: componentHash(hasher, dirs.prior_scheduler, 'scheduler'), steps, guidance };
      const key = keyOf(keyParts);
      const cache = readCache(path.join(cacheDir, `image-${key.slice(0, 16)}.safetensors`), key, log);
      const entryOf = (it: DataItem) => `${useVision ? it.imageHash : it.captionHash}.image_embeds`;
      const missingItems: DataItem[] = [];
      const seen = new Set<string>();
      for (const it of items) {
        const k = entryOf(it);
        if (cache.entries.has(k) || seen.has(k)) continue;
        seen.add(k);
        missingItems.push(it);
      }
      if (missingItems.length) {
        if (useVision) {
          log(`conditioning: ${missingItems.length} image embedding(s) from the CLIP image encoder`);
          const embeds = await visionEmbeddings(model.root, missingItems);
          missingItems.forEach((it, i) => cache.entries.set(entryOf(it), { dtype: 'F32', shape: [embeds[i].length], data: embeds[i] }));
        } else {
          log(`conditioning: no image_encoder/ in ${model.root}: image embeddings are the prior's output for each caption (${missingItems.length} caption(s), ${steps} steps, guidance ${guidance})`);
          const { tokenizer: tok, textEncoder: te } = textModel();
          const prior = loadComponent(dirs.prior, 'PriorTransformer', { trainable: false });
          const scheduler = UnCLIPScheduler.fromDir(dirs.prior_scheduler);
          try {
            for (const it of missingItems) {
              const text = encodePrompt(tok, te, [it.caption], { doClassifierFreeGuidance: true, warn: () => {} });
              try {
                const emb = await runPrior(prior, scheduler, text, {
                  classifierFreeGuidance: true, steps, guidanceScale: guidance, generator: new TorchGenerator(captionSeed(it.captionHash)),
                });
                const data = emb.dataSync() as Float32Array;
                emb.dispose();
                cache.entries.set(entryOf(it), { dtype: 'F32', shape: [data.length], data: data.slice() });
              } finally {
                tf.dispose([text.promptEmbeds, text.textEncHiddenStates, text.textMask]);
              }
            }
          } finally {
            prior.dispose();
          }
        }
        writeCache(cache, { format: 'karlo-conditioning', kind: 'image', key, parts: JSON.stringify(keyParts) });
      }
      result.computed += missingItems.length;
      result.reused += new Set(items.map(entryOf)).size - missingItems.length;
      result.files.push(cache.file);
      result.imageSource = useVision ? 'image_encoder' : 'prior';
      result.imageEmbeds = items.map((it) => cache.entries.get(entryOf(it))!.data as Float32Array);
      if (!result.dim) result.dim = result.imageEmbeds[0].length;
    }
  } finally {
    textEncoder?.dispose();
    hasher.save();
  }
  return result;
}

/**
 * CLIP image embeddings of the items' images through `<root>/image_encoder`, preprocessed as the image variation
 * pipeline does (CLIPImageProcessor of `<root>/feature_extractor`; without one, its defaults at the encoder's
 * image_size). One image at a time, so memory stays at one image.
 */
async function visionEmbeddings(root: string, items: readonly DataItem[]): Promise<Float32Array[]> {
  const model = loadComponent(path.join(root, 'image_encoder'), 'CLIPVisionModelWithProjection', { trainable: false });
  try {
    const fe = path.join(root, 'feature_extractor');
    const size = model.config.image_size;
    const cfg = fs.existsSync(path.join(fe, 'preprocessor_config.json'))
      ? readClipProcessorConfig(fe)
      : { ...CLIP_PROCESSOR_DEFAULTS, shortestEdge: size, cropHeight: size, cropWidth: size };
    const out: Float32Array[] = [];
    for (const it of items) {
      const p = clipPreprocess(await readImage(it.imageFile), cfg, 'clip');
      const emb = tf.tidy(() => {
        const x = tf.tensor4d(p.pixelValues, p.shape);
        const r = model.forward(x);
        return tf.keep(r.imageEmbeds);
      });
      out.push((emb.dataSync() as Float32Array).slice());
      emb.dispose();
    }
    return out;
  } finally {
    model.dispose();
  }
}
