// Karlo's own model hyper-parameters (configs/*.yaml of kakaobrain/karlo): read from --configs DIR, or the real
// Karlo v1 alpha values when none are given. Only what no tensor shape tells is *needed* from them (the prior's
// head count, the decoder's head channels and image size); the rest is cross-checked against the tensors.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseYaml, type YamlValue } from './yaml.js';
import { brief, readTextFile } from '../../src/io/files.js';

export const CONFIG_FILES = {
  prior: 'prior_1B_vit_l.yaml',
  decoder: 'decoder_900M_vit_l.yaml',
  super_res: 'improved_sr_64_256_1.4B.yaml',
} as const;

export type Hparams = Record<string, YamlValue>;

export interface KarloHparams {
  /** Where the values come from (a folder, or the built-in real Karlo values). */
  source: string;
  /** False when no YAML was given: then only the values no tensor tells are used, nothing is cross-checked. */
  fromYaml: boolean;
  prior: Hparams;
  decoder: Hparams;
  super_res: Hparams;
}

/**
 * Real Karlo v1 alpha (kakaobrain/karlo configs): 64-dim attention heads everywhere (prior 2048 = 32 × 64,
 * decoder num_head_channels 64), decoder at 64 px, super-res to 256 px. These reproduce diffusers' conversion
 * script constants (PRIOR_CONFIG, DECODER_CONFIG, SUPER_RES_UNET_*_CONFIG).
 */
export const REAL_KARLO: Omit<KarloHparams, 'source' | 'fromYaml'> = {
  prior: { text_ctx: 77, xf_width: 2048, xf_layers: 20, xf_heads: 32, xf_final_ln: true, clip_dim: 768 },
  decoder: {
    image_size: 64, num_channels: 320, num_res_blocks: 3, channel_mult: '', attention_resolutions: '32,16,8',
    num_heads: -1, num_head_channels: 64, num_heads_upsample: -1, use_scale_shift_norm: true, clip_dim: 768,
    clip_emb_mult: 4, text_ctx: 77, xf_width: 1536, resblock_updown: true, learn_sigma: true,
  },
  super_res: { channels: 320, depth: 3, channels_multiple: [1, 2, 3, 4] },
};

export function defaultHparams(): KarloHparams {
  return { source: 'built-in real Karlo v1 alpha values', fromYaml: false, ...structuredClone(REAL_KARLO) };
}

/** Reads the three Karlo YAML files of a folder (`model.hparams` of each). */
export function readKarloConfigs(dir: string): KarloHparams {
  const read = (name: string): Hparams => {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) throw new Error(`${file}: missing (--configs needs ${Object.values(CONFIG_FILES).join(', ')})`);
    const y = parseYaml(readTextFile(file, { what: 'Karlo config', maxBytes: 1 << 20 }), file) as { model?: { hparams?: Hparams } } | null;
    const hp = y?.model?.hparams;
    if (!hp || typeof hp !== 'object' || Array.isArray(hp)) throw new Error(`${file}: no model.hparams mapping`);
    return hp;
  };
  return {
    source: dir,
    fromYaml: true,
    prior: read(CONFIG_FILES.prior),
    decoder: read(CONFIG_FILES.decoder),
    super_res: read(CONFIG_FILES.super_res),
  };
}

/** A number-valued hparam; an error naming the file and key otherwise. */
export function hpNumber(hp: Hparams, key: string, where: string): number {
  const v = hp[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${where}: hparams.${key} is ${brief(v)}, expected a number`);
  return v;
}

export function hpBool(hp: Hparams, key: string, where: string): boolean {
  const v = hp[key];
  if (typeof v !== 'boolean') throw new Error(`${where}: hparams.${key} is ${brief(v)}, expected true or false`);
  return v;
}

/** Comma-separated ints ("16,8"), a single int, or a list. */
export function hpIntList(hp: Hparams, key: string, where: string): number[] {
  const v = hp[key];
  const parts = Array.isArray(v) ? v : typeof v === 'number' ? [v] : typeof v === 'string' ? (v.trim() === '' ? [] : v.split(',')) : null;
  if (!parts) throw new Error(`${where}: hparams.${key} is ${brief(v)}, expected a list of integers`);
  return parts.map((x) => {
    const n = typeof x === 'number' ? x : Number(String(x).trim());
    if (!Number.isInteger(n)) throw new Error(`${where}: hparams.${key} = ${brief(v)} holds a non-integer`);
    return n;
  });
}
