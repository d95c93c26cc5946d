// How much memory a generate call needs, estimated from the model's configs and the call's arguments before
// anything is allocated, so that `--num-images 1e9` or a decoder config with `sample_size: 8192` is refused at
// once with the estimate, instead of growing for a minute and dying (issue 18 item 7).
//
// The estimate is deliberately simple and on the high side: per stage, the weights of that stage (float32, as
// loaded) plus its largest activations. The UNets dominate: every skip connection of the down path is kept until
// the up path uses it, a ResNet block holds a few tensors of its level at once, and attention materialises its
// score matrix (batch × heads × tokens × (tokens + context)). Stages are loaded one at a time (the pipeline
// releases each stage's weights before the next), so the peak is the largest stage, plus the images.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UNCLIP_PIPELINE, openModelFolder, type PipelineSpec } from '../io/model_folder.js';
import { readJson } from '../io/weights.js';

/** A call refused because its estimated memory is above the bound (the message gives the estimate). */
export class MemoryEstimateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MemoryEstimateError';
  }
}

export interface GenerateRequest {
  prompts: number;
  numImagesPerPrompt: number;
  priorGuidance?: number;
  decoderGuidance?: number;
}

export interface StageEstimate {
  stage: string;
  weightsBytes: number;
  activationBytes: number;
}

export interface MemoryEstimate {
  /** The peak: the runtime, the largest stage (weights + activations) and the output images. */
  bytes: number;
  stages: StageEstimate[];
  imagesBytes: number;
  batch: number;
}

type Cfg = Record<string, unknown>;

// Real Karlo v1 alpha (kakaobrain/karlo-v1-alpha configs), used for a component whose config cannot be read here
// (the pipeline will then report that component itself).
const KARLO_DECODER: Cfg = {
  sample_size: 64, block_out_channels: [320, 640, 960, 1280], layers_per_block: 3, attention_head_dim: 64, in_channels: 3,
  down_block_types: ['ResnetDownsampleBlock2D', 'SimpleCrossAttnDownBlock2D', 'SimpleCrossAttnDownBlock2D', 'SimpleCrossAttnDownBlock2D'],
};
const KARLO_SUPER_RES: Cfg = {
  sample_size: 256, block_out_channels: [320, 640, 960, 1280], layers_per_block: 3, in_channels: 6,
  down_block_types: ['ResnetDownsampleBlock2D', 'ResnetDownsampleBlock2D', 'ResnetDownsampleBlock2D', 'ResnetDownsampleBlock2D'],
};
/** Node, tfjs and the native backend's buffer pool, before any model. */
const RUNTIME_BYTES = 0.5e9;
const KARLO_WEIGHTS = { text: 0.5e9, prior: 4.0e9, decoder: 3.9e9, super_res: 2.8e9 };

const num = (v: unknown, dflt: number): number => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : dflt);
const size = (v: unknown, dflt: number): number => (Array.isArray(v) ? Math.max(...v.map((x) => num(x, dflt))) : num(v, dflt));

/**
 * Activation bytes of one UNet call (float32): kept skip connections, a ResNet block's working set at the widest
 * level, the attention score matrices of the levels (and mid block) with attention.
 */
export function unetActivationBytes(cfg: Cfg, batch: number, contextTokens: number): number {
  const s = size(cfg.sample_size, 64);
  const ch = Array.isArray(cfg.block_out_channels) && cfg.block_out_channels.length ? cfg.block_out_channels.map((c) => num(c, 320)) : [320];
  const layers = num(cfg.layers_per_block, 2);
  const types = Array.isArray(cfg.down_block_types) ? cfg.down_block_types.map(String) : [];
  const headDim = num(cfg.attention_head_dim, 64);
  let skips = 0;
  let widest = 0;
  let attention = 0;
  ch.forEach((c, i) => {
    const side = s / 2 ** i;
    const tokens = Math.max(1, side * side);
    const level = batch * c * tokens;
    skips += (layers + 1) * level;
    widest = Math.max(widest, level);
    if (/Attn/.test(types[i] ?? '')) {
      const heads = Math.max(1, Math.round(c / headDim));
      attention = Math.max(attention, batch * heads * tokens * (tokens + contextTokens));
    }
  });
  // the mid block attends at the lowest resolution when any level does
  if (types.some((t) => /Attn/.test(t))) {
    const side = s / 2 ** (ch.length - 1);
    const tokens = Math.max(1, side * side);
    const c = ch[ch.length - 1];
    attention = Math.max(attention, batch * Math.max(1, Math.round(c / headDim)) * tokens * (tokens + contextTokens));
  }
  return 4 * (skips + 8 * widest + 3 * attention);
}

/**
 * Weight bytes a config implies (float32), roughly: the layer count and widths the model would be built with. A
 * config asking for 10^9 layers is refused here, before the model's construction would loop over them.
 */
export function configWeightBytes(kind: 'prior' | 'text' | 'unet', cfg: Cfg): number {
  if (kind === 'prior') {
    const w = num(cfg.num_attention_heads, 32) * num(cfg.attention_head_dim, 64);
    return 4 * (num(cfg.num_layers, 20) * 12 * w * w + 4 * w * num(cfg.embedding_dim, 768) + w * (num(cfg.num_embeddings, 77) + 4));
  }
  if (kind === 'text') {
    const h = num(cfg.hidden_size, 768);
    return 4 * (num(cfg.num_hidden_layers, 12) * (4 * h * h + 2 * h * num(cfg.intermediate_size, 4 * h)) + h * (num(cfg.vocab_size, 49408) + num(cfg.max_position_embeddings, 77)));
  }
  const ch = Array.isArray(cfg.block_out_channels) ? cfg.block_out_channels.map((c) => num(c, 320)) : [320];
  const layers = num(cfg.layers_per_block, 2);
  let n = 0;
  for (const c of ch) n += 36 * (layers + 1) * c * c;
  return 4 * n;
}

/** Bytes of a component's weights as loaded (float32: fp16/bf16 files count twice), or null when not found. */
function weightsBytes(file: string | undefined): number | null {
  if (!file) return null;
  try {
    const files = file.endsWith('.json')
      ? [...new Set(Object.values((readJson<{ weight_map?: Record<string, string> }>(file).weight_map ?? {}) as Record<string, string>))].map((f) => path.join(path.dirname(file), f))
      : [file];
    let n = 0;
    for (const f of files) n += fs.statSync(f).size;
    return /(fp16|bf16)/.test(path.basename(file)) ? 2 * n : n;
  } catch {
    return null;
  }
}

/**
 * Estimates the memory of `generate` with the model folder `modelDir` (configs read, no weights). `spec`: the
 * folder's pipeline (default UnCLIPPipeline; VARIATION_PIPELINE for image variations: `prompts` = input images,
 * no prior, an image encoder).
 */
export function estimateGenerateMemory(modelDir: string, req: GenerateRequest, spec?: PipelineSpec<string>): MemoryEstimate {
  const batch = req.prompts * req.numImagesPerPrompt;
  let dirs: Record<string, string> | null = null;
  let weights: Record<string, string | undefined> = {};
  try {
    const f = spec ? openModelFolder(modelDir, spec) : openModelFolder(modelDir);
    dirs = f.dirs as unknown as Record<string, string>;
    weights = f.weights as Record<string, string | undefined>;
  } catch {
    dirs = null; // the pipeline's own load reports what is wrong with the folder
  }
  const cfg = (name: string, dflt: Cfg): Cfg => {
    if (!dirs?.[name]) return dflt;
    try { return readJson<Cfg>(path.join(dirs[name], 'config.json')); } catch { return dflt; }
  };
  const w = (name: string, dflt: number) => weightsBytes(weights[name]) ?? (dirs ? 0 : dflt);
  // what the configs imply, when more than the files hold (a model is built from its config before loading)
  const wc = (name: string, dflt: number, kind: 'prior' | 'text' | 'unet', c: Cfg) => Math.max(w(name, dflt), dirs?.[name] ? configWeightBytes(kind, c) : 0);
  const cfgDecoder = cfg('decoder', KARLO_DECODER);
  const cfgSr = cfg('super_res_first', KARLO_SUPER_RES);
  const cfgText = cfg('text_encoder', {});
  const cfgPrior = cfg('prior', {});
  const cfgProj = cfg('text_proj', {});
  const cfgDouble = (g: number | undefined) => (g === undefined || g > 1 ? 2 : 1);
  const tokens = num(cfgText.max_position_embeddings, 77);
  const textWidth = num(cfgText.hidden_size, 768);
  const context = tokens + num(cfgProj.clip_extra_context_tokens, 4);
  const priorWidth = num(cfgPrior.num_attention_heads, 32) * num(cfgPrior.attention_head_dim, 64);
  const priorTokens = tokens + 4;
  const priorBatch = batch * cfgDouble(req.priorGuidance);
  const decoderBatch = batch * cfgDouble(req.decoderGuidance);
  const stages: StageEstimate[] = [
    { stage: 'text encoder', weightsBytes: wc('text_encoder', KARLO_WEIGHTS.text, 'text', cfgText), activationBytes: 4 * 2 * batch * tokens * textWidth * 12 },
    // image variations: the CLIP image encoder (224², 257 tokens; ViT-L/14 width 1024)
    ...(weights.image_encoder !== undefined ? [{ stage: 'image encoder', weightsBytes: w('image_encoder', 0), activationBytes: 4 * req.prompts * 257 * 1024 * 12 }] : []),
    ...(spec && spec !== UNCLIP_PIPELINE as unknown ? [] : [{
      stage: 'prior',
      weightsBytes: wc('prior', KARLO_WEIGHTS.prior, 'prior', cfgPrior),
      activationBytes: 4 * priorBatch * (priorTokens * priorWidth * 12 + num(cfgPrior.num_attention_heads, 32) * priorTokens * priorTokens * 3),
    }]),
    {
      stage: 'decoder',
      weightsBytes: wc('decoder', KARLO_WEIGHTS.decoder, 'unet', cfgDecoder) + w('text_proj', 0),
      activationBytes: unetActivationBytes(cfgDecoder, decoderBatch, context),
    },
    {
      stage: 'super-res',
      weightsBytes: Math.max(wc('super_res_first', KARLO_WEIGHTS.super_res, 'unet', cfgSr), wc('super_res_last', KARLO_WEIGHTS.super_res, 'unet', cfg('super_res_last', KARLO_SUPER_RES))),
      activationBytes: unetActivationBytes(cfgSr, batch, 0),
    },
  ];
  const srSide = size(cfgSr.sample_size, 256);
  const imagesBytes = 2 * batch * 3 * srSide * srSide * 4;
  const bytes = RUNTIME_BYTES + Math.max(...stages.map((s) => s.weightsBytes + s.activationBytes)) + imagesBytes;
  return { bytes, stages, imagesBytes, batch };
}

/** The default bound: the machine's physical memory. */
export function defaultMemoryBound(): number {
  return os.totalmem();
}

export function formatBytesShort(n: number): string {
  if (!Number.isFinite(n)) return 'more than can be counted';
  const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === units.length - 1 && v >= 1000 ? `${v.toExponential(1)} EB` : `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

/** Parses a byte amount: 12345, 64G, 64GB, 512M, 1.5T (decimal units; GiB/MiB binary). */
export function parseBytes(s: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(k|kb|m|mb|g|gb|t|tb|kib|mib|gib|tib|b)?\s*$/i.exec(s);
  if (!m) return null;
  const mult: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };
  const unit = (m[2] ?? '').toLowerCase();
  const v = Number(m[1]) * (Object.prototype.hasOwnProperty.call(mult, unit) ? mult[unit] : NaN);
  return Number.isFinite(v) && v > 0 ? v : null;
}

/**
 * The refusal message when the estimate exceeds `bound` (default: physical memory), or null when it fits. The
 * message gives the estimate, its largest stage, and the option that raises the bound.
 */
export function memoryRefusal(est: MemoryEstimate, bound = defaultMemoryBound(), option = '--max-memory'): string | null {
  if (Number.isFinite(est.bytes) && est.bytes <= bound) return null;
  const top = [...est.stages].sort((a, b) => (b.weightsBytes + b.activationBytes) - (a.weightsBytes + a.activationBytes))[0];
  return `this call would need about ${formatBytesShort(est.bytes)} of memory (${est.batch} image${est.batch === 1 ? '' : 's'}; largest stage ${top.stage}: ` +
    `${formatBytesShort(top.weightsBytes)} weights + ${formatBytesShort(top.activationBytes)} activations), more than the ${formatBytesShort(bound)} allowed; ` +
    `${est.batch > 1 ? 'make fewer images at once, check' : 'check'} the model's configs (layer counts, widths, sample_size), or raise the bound with ${option} if this machine has the memory`;
}
