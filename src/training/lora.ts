// LoRA: low-rank adapters on Linear projections, named as peft / diffusers name them.
//
// For a Linear with weight W [out, in] and bias b, an adapter of rank r holds A = `<module>.lora_A.weight` [r, in]
// (diffusers' `down`) and B = `<module>.lora_B.weight` [out, r] (`up`) and computes
//   y = W·x + b + scale·B·(A·x),   scale = alpha / r · multiplier
// (diffusers' un-merged LoRACompatibleLinear path; equal to W_eff = W + scale·B·A within float rounding).
// The base weights stay frozen: only the adapters are trained (lora.variables()). merge() folds scale·B·A into W
// in place (for fast inference), unmerge() takes it out again.
//
// Files: the adapters alone as safetensors, keys `<module>.lora_A.weight` / `<module>.lora_B.weight`, metadata
// `lora_rank`, `lora_alpha` (plus `format: pt`). loadLoraFile also reads the diffusers forms
// `<module>.lora.down.weight` / `.lora.up.weight`, a leading `unet.` / `text_encoder.` / `prior.` /
// `base_model.model.` prefix, and a per-module `<module>.alpha` tensor (kohya / diffusers network_alphas).
import * as tf from '@tensorflow/tfjs-core';
import { Linear } from '../layers/basic.js';
import { Parameter, type Module } from '../layers/module.js';
import { SafetensorsFile, saveSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { randnTensor, TorchGenerator } from '../random/generator.js';

/** The projections adapted by default (last segments of module paths): attention q/k/v/out in every component. */
export const LORA_TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0', 'add_k_proj', 'add_v_proj', 'q_proj', 'k_proj', 'v_proj', 'out_proj'];

export interface LoraOptions {
  rank: number;
  /** Default: rank (scale 1). */
  alpha?: number;
  /** Module-path suffixes to adapt (default LORA_TARGETS); each must match at least one Linear. */
  targets?: string[];
  /** Seed of the torch-compatible generator for A's initialisation (default 0). */
  seed?: number;
  /** Extra factor on the scale (e.g. `--lora FILE:0.7`), default 1. */
  multiplier?: number;
}

export class LoraAdapter {
  /** A = down [r, in]. */
  readonly down: Parameter;
  /** B = up [out, r]. */
  readonly up: Parameter;
  constructor(readonly module: string, readonly linear: Linear, readonly rank: number) {
    this.down = new Parameter(`${module}.lora_A.weight`, [rank, linear.inFeatures]);
    this.up = new Parameter(`${module}.lora_B.weight`, [linear.outFeatures, rank]);
  }
}

export class Lora {
  private mergedScale: number | null = null;
  private attached = true;

  constructor(readonly model: Module, readonly adapters: LoraAdapter[], readonly rank: number, readonly alpha: number,
    public multiplier = 1) {
    for (const a of adapters) {
      if (a.linear.delta) throw new Error(`LoRA: ${a.module} already has an adapter attached`);
    }
    for (const a of adapters) a.linear.delta = (x) => this.delta(a, x);
  }

  /** alpha / rank · multiplier. */
  get scale(): number {
    return (this.alpha / this.rank) * this.multiplier;
  }

  get merged(): boolean {
    return this.mergedScale !== null;
  }

  private delta(a: LoraAdapter, x: tf.Tensor2D): tf.Tensor {
    const h = tf.matMul(x, a.down.value as tf.Tensor2D, false, true);
    return tf.mul(tf.matMul(h, a.up.value as tf.Tensor2D, false, true), this.scale);
  }

  /** Adapter parameters by key (`<module>.lora_A.weight`, `<module>.lora_B.weight`), in module order. */
  namedParameters(): [string, Parameter][] {
    return this.adapters.flatMap((a) => [[a.down.name, a.down], [a.up.name, a.up]] as [string, Parameter][]);
  }

  /** The trainable variables (the adapters only; the base model stays frozen). */
  variables(): Map<string, tf.Variable> {
    return new Map(this.namedParameters().map(([k, p]) => [k, p.value]));
  }

  /** Folds scale·B·A into each base weight (in place); the adapters then stop adding their term. */
  merge(): void {
    if (!this.attached) throw new Error('LoRA: adapters were removed');
    if (this.merged) return;
    const s = this.scale;
    for (const a of this.adapters) {
      const w = a.linear.weight.value;
      const next = tf.tidy(() => tf.add(w, tf.mul(tf.matMul(a.up.value, a.down.value), s)));
      w.assign(next);
      next.dispose();
      a.linear.delta = null;
    }
    this.mergedScale = s;
  }

  /** Takes the merged term out of the base weights again (equal to the original up to float32 rounding). */
  unmerge(): void {
    if (this.mergedScale === null) return;
    const s = this.mergedScale;
    for (const a of this.adapters) {
      const w = a.linear.weight.value;
      const next = tf.tidy(() => tf.sub(w, tf.mul(tf.matMul(a.up.value, a.down.value), s)));
      w.assign(next);
      next.dispose();
      a.linear.delta = (x) => this.delta(a, x);
    }
    this.mergedScale = null;
  }

  /** Detaches the adapters from the model (unmerging first) and frees them. */
  remove(): void {
    if (!this.attached) return;
    this.unmerge();
    for (const a of this.adapters) {
      a.linear.delta = null;
      a.down.dispose();
      a.up.dispose();
    }
    this.attached = false;
  }

  /** Saves the adapters alone (atomic write). */
  save(file: string, extraMetadata: Record<string, string> = {}): void {
    const tensors = new Map<string, TensorToWrite>();
    for (const [k, p] of this.namedParameters()) {
      tensors.set(k, { dtype: 'F32', shape: p.torchShape, data: () => p.value.dataSync() as Float32Array });
    }
    saveSafetensors(file, tensors, {
      format: 'pt', lora_rank: String(this.rank), lora_alpha: String(this.alpha),
      lora_targets: JSON.stringify([...new Set(this.adapters.map((a) => lastSegments(a.module)))]), ...extraMetadata,
    });
  }
}

function lastSegments(path: string): string {
  const m = /(to_out\.0|[^.]+)$/.exec(path);
  return m ? m[1] : path;
}

/** The Linear modules whose path is one of `targets` or ends with `.<target>`, in namedModules() order. */
export function loraTargets(model: Module, targets = LORA_TARGETS): [string, Linear][] {
  const found: [string, Linear][] = [];
  const used = new Set<string>();
  for (const [p, m] of model.namedModules()) {
    if (!(m instanceof Linear)) continue;
    const rel = relativePath(model, p);
    const t = targets.find((t) => rel === t || rel.endsWith(`.${t}`));
    if (t) {
      found.push([rel, m]);
      used.add(t);
    }
  }
  return found;
}

/**
 * Adds fresh adapters (diffusers' init: A ~ N(0, 1/rank²) from a torch generator, B = 0, so the model is unchanged
 * until trained) to every target Linear. A target list naming no Linear of this model is an error.
 */
export function applyLora(model: Module, opts: LoraOptions): Lora {
  const { rank } = opts;
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`LoRA: rank must be a positive integer, got ${rank}`);
  const alpha = opts.alpha ?? rank;
  if (!(alpha > 0)) throw new Error(`LoRA: alpha must be positive, got ${alpha}`);
  const targets = opts.targets ?? LORA_TARGETS;
  const mods = loraTargets(model, targets);
  if (!mods.length) throw new Error(`LoRA: no Linear module of ${model.constructor.name} is named ${targets.join(', ')}`);
  if (opts.targets) {
    for (const t of opts.targets) {
      if (!mods.some(([p]) => p === t || p.endsWith(`.${t}`))) throw new Error(`LoRA: target "${t}" matches no Linear module of ${model.constructor.name}`);
    }
  }
  const gen = new TorchGenerator(opts.seed ?? 0);
  const adapters = mods.map(([p, lin]) => {
    if (rank > Math.min(lin.inFeatures, lin.outFeatures)) throw new Error(`LoRA: rank ${rank} exceeds ${p}'s size ${lin.outFeatures}x${lin.inFeatures}`);
    const a = new LoraAdapter(p, lin, rank);
    const down = tf.tidy(() => tf.div(randnTensor([rank, lin.inFeatures], gen), rank));
    a.down.setFromTorch(down.dataSync() as Float32Array, true);
    down.dispose();
    a.up.setFromTorch(new Float32Array(lin.outFeatures * rank), true);
    return a;
  });
  return new Lora(model, adapters, rank, alpha, opts.multiplier ?? 1);
}

const PREFIXES = ['base_model.model.', 'unet.', 'text_encoder.', 'prior.', 'decoder.', 'super_res.', 'model.'];
const FORMS: [RegExp, 'down' | 'up'][] = [
  [/^(.+)\.lora_A\.weight$/, 'down'], [/^(.+)\.lora_B\.weight$/, 'up'],
  [/^(.+)\.lora\.down\.weight$/, 'down'], [/^(.+)\.lora\.up\.weight$/, 'up'],
  [/^(.+)\.lora_down\.weight$/, 'down'], [/^(.+)\.lora_up\.weight$/, 'up'],
];

/**
 * Loads adapters saved by Lora.save (or diffusers/peft) onto `model` with an extra scale factor. Every key must
 * name a Linear of the model (after dropping a known prefix) with matching shapes; errors name the file and key.
 */
export function loadLoraFile(model: Module, file: string, multiplier = 1): Lora {
  if (!Number.isFinite(multiplier)) throw new Error(`${file}: LoRA scale must be a number, got ${multiplier}`);
  const f = SafetensorsFile.open(file);
  try {
    const linears = new Map<string, Linear>();
    for (const [p, m] of model.namedModules()) if (m instanceof Linear) linears.set(relativePath(model, p), m);
    const pairs = new Map<string, { down?: string; up?: string; alpha?: string }>();
    for (const key of f.names()) {
      const alphaKey = /^(.+)\.alpha$/.exec(key);
      let hit: [string, 'down' | 'up' | 'alpha'] | null = alphaKey ? [alphaKey[1], 'alpha'] : null;
      for (const [re, kind] of FORMS) {
        const m = re.exec(key);
        if (m) hit = [m[1], kind];
      }
      if (!hit) throw new Error(`${file}: tensor "${key}" is not a LoRA weight (expected <module>.lora_A.weight / .lora_B.weight)`);
      let mod = hit[0];
      if (!linears.has(mod)) {
        const pre = PREFIXES.find((p) => mod.startsWith(p) && linears.has(mod.slice(p.length)));
        if (!pre) throw new Error(`${file}: tensor "${key}": ${model.constructor.name} has no Linear module "${mod}"`);
        mod = mod.slice(pre.length);
      }
      const e = pairs.get(mod) ?? {};
      e[hit[1]] = key;
      pairs.set(mod, e);
    }
    if (!pairs.size) throw new Error(`${file}: no LoRA weights in the file`);
    let rank = 0;
    const adapters: LoraAdapter[] = [];
    const alphas = new Set<number>();
    for (const [mod, e] of pairs) {
      if (!e.down || !e.up) throw new Error(`${file}: module "${mod}" has ${e.down ? 'lora_A' : 'lora_B'} but no ${e.down ? 'lora_B' : 'lora_A'} weight`);
      const lin = linears.get(mod)!;
      const ds = f.info(e.down).shape;
      const us = f.info(e.up).shape;
      const r = ds[0];
      if (ds.length !== 2 || us.length !== 2 || ds[1] !== lin.inFeatures || us[0] !== lin.outFeatures || us[1] !== r) {
        throw new Error(`${file}: "${mod}": lora_A [${ds}] / lora_B [${us}] do not fit a Linear ${lin.outFeatures}x${lin.inFeatures} (expected [r, ${lin.inFeatures}] and [${lin.outFeatures}, r])`);
      }
      if (rank && r !== rank) throw new Error(`${file}: "${mod}" has rank ${r}, other modules ${rank} (one rank per file)`);
      rank = r;
      if (e.alpha) alphas.add(f.read(e.alpha).data[0]);
      const a = new LoraAdapter(mod, lin, r);
      a.down.setFromTorch(f.read(e.down).data as Float32Array, false);
      a.up.setFromTorch(f.read(e.up).data as Float32Array, false);
      adapters.push(a);
    }
    if (alphas.size > 1) throw new Error(`${file}: per-module alphas differ (${[...alphas].join(', ')}); one alpha per file is supported`);
    const metaAlpha = f.metadata.lora_alpha !== undefined ? Number(f.metadata.lora_alpha) : undefined;
    if (metaAlpha !== undefined && !(metaAlpha > 0)) throw new Error(`${file}: metadata lora_alpha "${f.metadata.lora_alpha}" is not a positive number`);
    const alpha = metaAlpha ?? [...alphas][0] ?? rank;
    try {
      return new Lora(model, adapters, rank, alpha, multiplier);
    } catch (err) {
      for (const a of adapters) { a.down.dispose(); a.up.dispose(); }
      throw err;
    }
  } finally {
    f.close();
  }
}

function relativePath(model: Module, p: string): string {
  return model.path && p.startsWith(`${model.path}.`) ? p.slice(model.path.length + 1) : p;
}
