// The Module base: a small torch.nn.Module look-alike. Children and parameters are registered under the
// attribute names PyTorch uses, so namedParameters() yields exactly the reference state-dict keys and loading
// is one loop over those names (no translation tables).
import * as tf from '@tensorflow/tfjs-core';
import type { TorchGenerator } from '../random/generator.js';

/**
 * How a parameter's tfjs tensor relates to its PyTorch state-dict tensor.
 * - 'torch': same layout (Linear weights stay [out, in]; we multiply with transposeB).
 * - 'conv2d': PyTorch [out, in, kh, kw] is stored as tfjs [kh, kw, in, out].
 */
export type ParamLayout = 'torch' | 'conv2d';

export class Parameter {
  /** The variable; created when weights are loaded (or initialised), so building a 1B model costs nothing. */
  private v: tf.Variable | null = null;
  constructor(
    /** Full dotted state-dict key from the root (updated when the owner is registered). */
    public name: string,
    /** Shape in the PyTorch state dict. */
    readonly torchShape: number[],
    readonly layout: ParamLayout = 'torch',
  ) {}

  get loaded(): boolean {
    return this.v !== null;
  }

  /** The tfjs tensor used in forward passes. */
  get value(): tf.Variable {
    if (!this.v) throw new Error(`parameter "${this.name}" used before weights were loaded`);
    return this.v;
  }

  /** Shape of the tfjs tensor. */
  get tfShape(): number[] {
    const s = this.torchShape;
    return this.layout === 'conv2d' ? [s[2], s[3], s[1], s[0]] : [...s];
  }

  /** Sets the value from PyTorch-layout data (converted once here). */
  setFromTorch(data: Float32Array, trainable = true): void {
    // The layout change runs as a plain typed-array loop: tf.transpose on the JS cpu backend took minutes
    // for the 2.8 GB super-res UNet.
    const values = this.layout === 'conv2d' ? oihwToHwio(data, this.torchShape) : data;
    const t = tf.tensor(values, this.tfShape, 'float32');
    this.assign(t, trainable);
    t.dispose();
  }

  /**
   * Sets the value from data already in this parameter's tfjs layout (e.g. converted by a prefetching reader); the
   * array becomes the tensor's storage (not copied: the caller must not reuse it).
   */
  setFromTfLayout(data: Float32Array, trainable = true): void {
    const t = tf.tensor(data, this.tfShape, 'float32');
    this.assign(t, trainable);
    t.dispose();
  }

  /** Sets the value from a tfjs-layout tensor (copied). */
  assign(t: tf.Tensor, trainable = true): void {
    if (!arraysEqual(t.shape, this.tfShape)) {
      throw new Error(`parameter "${this.name}": tfjs shape [${t.shape}] given, [${this.tfShape}] expected`);
    }
    if (this.v) this.v.assign(t);
    else this.v = tf.variable(t, trainable, undefined, 'float32');
  }

  /** The value in PyTorch layout (a new tensor the caller owns). */
  toTorch(): tf.Tensor {
    return tf.tidy(() => (this.layout === 'conv2d' ? tf.transpose(this.value, [3, 2, 0, 1]) : this.value.clone()));
  }

  dispose(): void {
    this.v?.dispose();
    this.v = null;
  }
}

/** PyTorch conv weight [O, I, kh, kw] → tfjs filter [kh, kw, I, O]. */
export function oihwToHwio(src: Float32Array, [O, I, KH, KW]: number[]): Float32Array {
  const out = new Float32Array(src.length);
  const K = KH * KW;
  for (let o = 0; o < O; o++) {
    for (let i = 0; i < I; i++) {
      const s0 = (o * I + i) * K;
      for (let k = 0; k < K; k++) out[(k * I + i) * O + o] = src[s0 + k];
    }
  }
  return out;
}

/**
 * An output hook: called with a module output's dotted path and the tensor (valid during the call only: copy it
 * with dataSync() or tf.keep(t.clone()) to keep it). Returning a tensor of the same shape and dtype replaces the
 * output for the rest of the forward pass (activation patching, ablation, steering); returning nothing (or the
 * tensor itself, or anything that is not a tensor) leaves it unchanged. The replacement is copied: the hook
 * keeps ownership of what it returns.
 *
 * `wants` (optional) says which paths the hook cares about; the others are not reported, so a hook costs nothing
 * where it does not look. Opt-in outputs (attention probabilities, `<attention path>.probs`) are reported only to
 * hooks whose `wants` accepts them: computing and handing them out costs memory.
 */
export type OutputHook = ((path: string, output: tf.Tensor) => unknown) & {
  wants?: (path: string) => boolean;
};

/** Paths that are reported only to hooks asking for them by `wants` (attention probabilities). */
export function isOptInPath(path: string): boolean {
  return path === 'probs' || path.endsWith('.probs');
}

/** True when `hook` should see the output at `path`. */
export function hookWants(hook: OutputHook, path: string): boolean {
  return hook.wants ? hook.wants(path) : !isOptInPath(path);
}

/**
 * Validates what a hook returned for `path` (whose output has `shape`/`dtype`): undefined when it leaves the
 * output alone, else the replacement. A wrong shape or type is an error naming the path.
 */
export function checkReplacement(path: string, r: unknown, original: tf.Tensor): tf.Tensor | undefined {
  if (!(r instanceof tf.Tensor) || r === original) return undefined;
  if (r.isDisposed) throw new Error(`output hook for "${path}" returned a disposed tensor`);
  if (!arraysEqual(r.shape, original.shape)) {
    throw new Error(`output hook for "${path}" returned shape [${r.shape}]; the output "${path}" has shape [${original.shape}]`);
  }
  if (r.dtype !== original.dtype) throw new Error(`output hook for "${path}" returned dtype ${r.dtype}; the output "${path}" is ${original.dtype}`);
  return r;
}

/**
 * Wraps a hook for a model that works in NHWC but speaks NCHW to its users (the UNets): 4-d feature maps are
 * handed over as NCHW (transposed only for paths the hook wants) and NCHW replacements are transposed back.
 * Attention probabilities (rank 4 too, [B, heads, queries, keys]) pass as they are.
 */
export function nchwHook(fn: OutputHook): OutputHook {
  const wrapped: OutputHook = (p, t) => {
    if (t.rank !== 4 || isOptInPath(p)) return fn(p, t);
    const nchw = tf.transpose(t, [0, 3, 1, 2]);
    try {
      const r = checkReplacement(p, fn(p, nchw), nchw);
      return r ? tf.transpose(r, [0, 2, 3, 1]) : undefined;
    } finally {
      nchw.dispose();
    }
  };
  if (fn.wants) wrapped.wants = fn.wants;
  return wrapped;
}

export interface LoadReport {
  missing: string[];
  unexpected: string[];
  misshaped: { key: string; expected: number[]; got: number[] }[];
}

/** A tensor as plain data: float dtypes widened to float32, integer/bool dtypes to int32. */
export interface TensorData {
  dtype: 'float32' | 'int32';
  shape: number[];
  data: Float32Array | Int32Array;
  /**
   * 'tfjs': `data` is already in the tfjs layout of the parameter it is loaded into (a conv filter as HWIO; `shape`
   * is then that layout's shape). Absent: PyTorch layout, as a state dict holds it.
   */
  layout?: 'tfjs';
  /** NaN / ±Inf values in `data`, when the reader counted them already. */
  nonFinite?: number;
}

/** Anything that hands out state-dict tensors by name (a safetensors file, a Map, a torch checkpoint). */
export interface TensorSource {
  names(): string[];
  shape(name: string): number[];
  read(name: string): TensorData;
  /** For error messages: the file the tensors come from. */
  describe(name?: string): string;
}

export function mapSource(m: Map<string, TensorData>, label = 'state dict'): TensorSource {
  return {
    names: () => [...m.keys()],
    shape: (n) => m.get(n)!.shape,
    read: (n) => m.get(n)!,
    describe: () => label,
  };
}

export class Module {
  /** Dotted path from the root (the state-dict prefix), '' for the root. */
  path = '';
  /** Training mode (dropout active), like torch's `module.training`. Default false (eval); set with train()/eval(). */
  training = false;
  /** Where dropout masks come from while training (torch-compatible generator: reproducible, resumable); null: tfjs's own random. */
  dropoutGenerator: TorchGenerator | null = null;
  private readonly _params = new Map<string, Parameter>();
  private readonly _children = new Map<string, Module>();
  private _hook: OutputHook | null = null;

  /** Registers a parameter under its PyTorch attribute name. */
  protected param(name: string, torchShape: number[], layout: ParamLayout = 'torch'): Parameter {
    if (this._params.has(name) || this._children.has(name)) throw new Error(`duplicate member "${name}" in ${this.constructor.name}`);
    const p = new Parameter(joinPath(this.path, name), torchShape, layout);
    this._params.set(name, p);
    return p;
  }

  /** Registers a child module under its PyTorch attribute name (use '0', '1', … for list entries). */
  protected module<M extends Module>(name: string, m: M): M {
    if (this._params.has(name) || this._children.has(name)) throw new Error(`duplicate member "${name}" in ${this.constructor.name}`);
    this._children.set(name, m);
    m.setPath(joinPath(this.path, name));
    return m;
  }

  /** Registers a list of modules as `name.0`, `name.1`, … (like nn.ModuleList). */
  protected moduleList<M extends Module>(name: string, items: M[]): M[] {
    const list = new ModuleList(items);
    this.module(name, list);
    return items;
  }

  private setPath(p: string): void {
    this.path = p;
    for (const [k, prm] of this._params) prm.name = joinPath(p, k);
    for (const [k, c] of this._children) c.setPath(joinPath(p, k));
  }

  children(): [string, Module][] {
    return [...this._children];
  }

  /** Every (module path, module) pair, depth first, this module included. */
  namedModules(): [string, Module][] {
    const out: [string, Module][] = [[this.path, this]];
    for (const [, c] of this._children) out.push(...c.namedModules());
    return out;
  }

  /** Every parameter with its state-dict key relative to this module, in registration order. */
  namedParameters(): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    const walk = (m: Module, prefix: string) => {
      for (const [k, p] of m._params) out.push([joinPath(prefix, k), p]);
      for (const [k, c] of m._children) walk(c, joinPath(prefix, k));
    };
    walk(this, '');
    return out;
  }

  parameters(): Parameter[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /** Trainable variables (for optimizers), keyed by state-dict name. */
  variables(): Record<string, tf.Variable> {
    const out: Record<string, tf.Variable> = {};
    for (const [k, p] of this.namedParameters()) out[k] = p.value;
    return out;
  }

  numParameters(): number {
    let n = 0;
    for (const p of this.parameters()) n += p.torchShape.reduce((a, b) => a * b, 1);
    return n;
  }

  /**
   * Loads weights by state-dict key. Reports every missing, unexpected and mis-shaped key (naming the source
   * file); with strict (the default) any of them is an error and nothing is assigned.
   */
  loadStateDict(src: TensorSource | Map<string, TensorData>, opts: { strict?: boolean; prefix?: string; trainable?: boolean } = {}): LoadReport {
    const source = src instanceof Map ? mapSource(src) : src;
    const strict = opts.strict ?? true;
    const prefix = opts.prefix ?? '';
    const params = this.namedParameters();
    const available = new Set(source.names().filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length)));
    const report: LoadReport = { missing: [], unexpected: [], misshaped: [] };
    const wanted = new Set<string>();
    for (const [k, p] of params) {
      wanted.add(k);
      if (!available.has(k)) { report.missing.push(k); continue; }
      const got = source.shape(prefix + k);
      if (!arraysEqual(got, p.torchShape)) report.misshaped.push({ key: k, expected: p.torchShape, got });
    }
    for (const k of available) if (!wanted.has(k)) report.unexpected.push(k);
    if (strict && (report.missing.length || report.unexpected.length || report.misshaped.length)) {
      throw new Error(formatLoadReport(report, source.describe(), this.constructor.name));
    }
    for (const [k, p] of params) {
      if (!available.has(k) || report.misshaped.some((m) => m.key === k)) continue;
      const t = source.read(prefix + k);
      if (t.dtype !== 'float32') throw new Error(`${source.describe(prefix + k)}: tensor "${prefix + k}" is an integer tensor, a float parameter was expected`);
      if (t.layout === 'tfjs') p.setFromTfLayout(t.data as Float32Array, opts.trainable ?? true);
      else p.setFromTorch(t.data as Float32Array, opts.trainable ?? true);
    }
    return report;
  }

  /** The state dict in PyTorch layout (new tensors, owned by the caller). */
  stateDict(): Map<string, tf.Tensor> {
    const out = new Map<string, tf.Tensor>();
    for (const [k, p] of this.namedParameters()) out.set(k, p.toTorch());
    return out;
  }

  /** Frees every parameter. */
  dispose(): void {
    for (const p of this.parameters()) p.dispose();
  }

  // ---------- training mode ----------

  /**
   * Sets training mode on this module and every descendant (torch's `train(mode)`): dropout layers drop only in
   * training mode. `generator` (when given) draws the dropout masks. Returns this.
   */
  train(mode = true, opts: { generator?: TorchGenerator | null } = {}): this {
    for (const [, m] of this.namedModules()) {
      m.training = mode;
      if (opts.generator !== undefined) m.dropoutGenerator = opts.generator;
    }
    return this;
  }

  /** Evaluation mode (no dropout): train(false). */
  eval(): this {
    return this.train(false);
  }

  /** nn.Dropout(p) in this module's mode: x in eval mode or for p = 0, else x·mask/(1 − p), mask ~ Bernoulli(1 − p). */
  protected dropout<T extends tf.Tensor>(x: T, p: number): T {
    if (!this.training || !p) return x;
    if (!(p >= 0 && p < 1)) throw new Error(`${this.path || this.constructor.name}: dropout probability ${p} is not in [0, 1)`);
    return dropoutMask(x, p, this.dropoutGenerator);
  }

  // ---------- output hooks ----------

  /** Installs (or with null removes) a hook on this module and all descendants: fn(path, output). */
  setOutputHook(fn: OutputHook | null): void {
    for (const [, m] of this.namedModules()) m._hook = fn;
  }

  /** True when an output hook is installed (layers may then skip fusions that would hide an output). */
  protected get hooked(): boolean {
    return this._hook !== null;
  }

  /** True when an installed hook wants the output `suffix` of this module (e.g. 'probs'); false without a hook. */
  protected wantsOutput(suffix?: string): boolean {
    return this._hook !== null && hookWants(this._hook, suffix ? joinPath(this.path, suffix) : this.path);
  }

  /**
   * Reports an output to the hook, if one is installed and wants its path; returns the output, or the hook's
   * replacement (checked, copied). Costs nothing without a hook.
   */
  protected emit<T extends tf.Tensor>(out: T, suffix?: string): T {
    const hook = this._hook;
    if (!hook) return out;
    const p = suffix ? joinPath(this.path, suffix) : this.path;
    if (!hookWants(hook, p)) return out;
    const r = checkReplacement(p, hook(p, out), out);
    return r ? (tf.clone(r) as T) : out;
  }
}

/** x·keep/(1 − p) with keep = (u ≥ p), u ~ U[0, 1) from the generator (or tfjs's random). Differentiable in x. */
export function dropoutMask<T extends tf.Tensor>(x: T, p: number, gen: TorchGenerator | null): T {
  return tf.tidy(() => {
    const u = gen ? tf.tensor(gen.rand(x.shape), x.shape, 'float32') : tf.randomUniform(x.shape, 0, 1, 'float32');
    const keep = tf.div(tf.cast(tf.greaterEqual(u, p), 'float32'), 1 - p);
    return tf.mul(x, keep) as T;
  });
}

/** nn.ModuleList: children named '0', '1', … */
export class ModuleList<M extends Module = Module> extends Module {
  readonly items: M[];
  constructor(items: M[]) {
    super();
    this.items = items;
    items.forEach((m, i) => this.module(String(i), m));
  }
}

export function joinPath(a: string, b: string): string {
  return a ? (b ? `${a}.${b}` : a) : b;
}

export function arraysEqual(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export function formatLoadReport(r: LoadReport, source: string, model: string): string {
  const lines = [`${source}: weights do not match ${model}`];
  const list = (title: string, keys: string[]) => {
    if (!keys.length) return;
    lines.push(`  ${title} (${keys.length}): ${keys.slice(0, 20).join(', ')}${keys.length > 20 ? ', …' : ''}`);
  };
  list('missing keys', r.missing);
  list('unexpected keys', r.unexpected);
  if (r.misshaped.length) {
    lines.push(`  mis-shaped keys (${r.misshaped.length}): ` + r.misshaped.slice(0, 20).map((m) => `${m.key} expected [${m.expected}] got [${m.got}]`).join('; '));
  }
  return lines.join('\n');
}
