// `karlo parity` for the training fixtures (fixtures README, section k: a `grads/` folder with index.json and
// clip_text / prior / decoder / text_proj / super_res_first / prior_adamw / decoder_adamw / decoder_lora
// .safetensors; the weights are the sibling component folders named in index.json). For each file present:
// the loss, the model output, every parameter gradient, every grad_input.*, the sparse token-embedding gradient,
// the parameters without a gradient, both AdamW steps and the LoRA adapters' output and gradients.
//
// Checks (README k): loss rel ≤ 1e-5; gradients max|ours − ref| ≤ 1e-4·max|ref| + 1e-6·grad_global_max_abs (for
// the zero_in_exact_arithmetic tensors max|ref| is float32 noise, so only the absolute term counts: the same
// formula); AdamW with recorded gradients abs ≤ 1e-6; decoder AdamW step 2 (our own gradient) abs ≤ 1e-5, and
// ≤ 2·lr on the zero_in_exact_arithmetic tensors; outputs and intermediate inputs abs ≤ 1e-4·max(1, max|ref|).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { registerGradients } from '../backend/gradients.js';
import { loadSafetensors, type TensorData } from '../io/safetensors.js';
import { readJson } from '../io/weights.js';
import { oihwToHwio, type Module, type Parameter } from '../layers/module.js';
import { bicubicResize } from '../layers/interpolate.js';
import type { PriorTransformer } from '../models/prior_transformer.js';
import type { UNet2DConditionModel } from '../models/unet2d_condition.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { AdamW } from '../training/adamw.js';
import { applyLora } from '../training/lora.js';
import {
  clipTextLoss, decoderEpsilonLoss, priorSampleLoss, priorTarget, superResEpsilonLoss, textProjDecoderLoss, valueAndGrads,
  type DecoderNoisyBatch,
} from '../training/losses.js';
import { compareArrays, type Comparison } from './compare.js';
import { FixtureTensors } from './fixture.js';
import type { ParityKind, ParityOptions } from './types.js';
import { loadComponent } from '../loading/load_component.js';

interface ModuleIndex {
  weights?: string;
  loss_value?: number;
  params_with_no_grad?: string[];
  sparse?: string[];
  grad_global_max_abs?: number;
  zero_in_exact_arithmetic?: Record<string, number>;
  optimizer?: { lr: number; betas: [number, number]; eps: number; weight_decay: number };
  rank?: number;
  alpha?: number;
  modules?: { name: string; in_features: number; out_features: number }[];
}

export interface GradsIndex {
  modules: Record<string, ModuleIndex>;
  alphas_cumprod_at?: Record<string, number>;
}

/** A grads fixture file: FixtureTensors plus the scalar / timestep / prefix readers the grads checks use. */
export class GradsFixture extends FixtureTensors {
  constructor(file: string) {
    super(file, loadSafetensors(file));
  }
  scalar(name: string): number {
    return this.need(name).data[0];
  }
  timesteps(name = 'timesteps'): number[] {
    return Array.from(this.need(name).data);
  }
  names(prefix: string): string[] {
    return this.keys().filter((k) => k.startsWith(prefix));
  }
}

// ---------- comparisons ----------

function result(name: string, maxAbs: number, maxRef: number, allowed: number, shape?: number[], argmax = -1): Comparison {
  return { name, maxAbs, maxRel: maxAbs / Math.max(maxRef, 1e-30), maxRef, allowed, argmax, ok: maxAbs <= allowed, shape };
}

/** Loss: relative error ≤ 1e-5. */
export function compareLoss(name: string, ours: number, ref: number): Comparison {
  const d = Math.abs(ours - ref);
  return result(name, Number.isNaN(d) ? Infinity : d, Math.abs(ref), 1e-5 * Math.abs(ref), [1]);
}

/** Gradient check of README k: max|ours − ref| ≤ rtol·max|ref| + 1e-6·globalMax. */
export function compareGrad(name: string, ours: ArrayLike<number>, ref: TensorData, globalMax: number, rtol = 1e-4): Comparison {
  const c = compareArrays(name, ours, ref.data, { atol: 0, scaleByMax: false });
  const allowed = rtol * c.maxRef + 1e-6 * globalMax;
  return { ...c, allowed, ok: c.maxAbs <= allowed, shape: ref.shape };
}

/** Absolute check. */
export function compareAbs(name: string, ours: ArrayLike<number>, ref: TensorData, atol: number): Comparison {
  const c = compareArrays(name, ours, ref.data, { atol, scaleByMax: false });
  return { ...c, shape: ref.shape };
}

/** Module-output check: abs ≤ atol · max(1, max|ref|). */
export function compareOutput(name: string, ours: ArrayLike<number>, ref: TensorData, atol = 1e-4): Comparison {
  return { ...compareArrays(name, ours, ref.data, { atol }), shape: ref.shape };
}

/** A parameter's gradient (tfjs layout) in PyTorch layout, as plain data. */
export function gradToTorch(p: Parameter, g: tf.Tensor): Float32Array {
  return tf.tidy(() => (p.layout === 'conv2d' ? tf.transpose(g, [3, 2, 0, 1]) : g).dataSync() as Float32Array);
}

/** A PyTorch-layout tensor (a recorded gradient) as a tensor in the parameter's tfjs layout. */
export function torchToParamLayout(p: Parameter, t: TensorData): tf.Tensor {
  const data = p.layout === 'conv2d' ? oihwToHwio(t.data as Float32Array, p.torchShape) : t.data;
  return tf.tensor(data, p.tfShape, 'float32');
}

/** Every parameter gradient of `model` against `grad.<name>` (sparse ones against sparse_grad.<name>.*). */
function compareParamGrads(label: string, model: Module, grads: Map<string, tf.Tensor>, fx: GradsFixture, idx: ModuleIndex,
  prefix = 'grad.', rtol = 1e-4): Comparison[] {
  const out: Comparison[] = [];
  const global = idx.grad_global_max_abs ?? 0;
  const noGrad = new Set(idx.params_with_no_grad ?? []);
  const sparse = new Set(idx.sparse ?? []);
  const ourNoGrad: string[] = [];
  for (const [k, p] of model.namedParameters()) {
    const g = grads.get(k);
    if (!g) ourNoGrad.push(k);
    if (sparse.has(k)) {
      out.push(...compareSparse(`${label}: sparse_grad.${k}`, g ? gradToTorch(p, g) : new Float32Array(p.torchShape.reduce((a, b) => a * b, 1)), p.torchShape,
        fx.need(`sparse_${prefix}${k}.indices`), fx.need(`sparse_${prefix}${k}.values`), global, rtol));
      continue;
    }
    const ref = fx.need(`${prefix}${k}`);
    const ours = g ? gradToTorch(p, g) : new Float32Array(ref.data.length);
    out.push(compareGrad(`${label}: ${prefix}${k}`, ours, ref, global, rtol));
  }
  // torch's grad None ⇔ no gradient from tf.variableGrads.
  const want = [...noGrad].sort();
  const got = ourNoGrad.sort();
  const mismatch = want.filter((k) => !got.includes(k)).length + got.filter((k) => !want.includes(k)).length;
  out.push({ ...result(`${label}: params_with_no_grad [${got.join(', ')}] vs [${want.join(', ')}]`, mismatch, 0, 0), maxRel: mismatch });
  return out;
}

/** Dense gradient [V, D] against (ascending row indices, values): the rows, their values, every other row 0. */
function compareSparse(name: string, dense: Float32Array, shape: number[], indices: TensorData, values: TensorData,
  global: number, rtol: number): Comparison[] {
  const [V, D] = shape;
  const rows = Array.from(indices.data);
  const rowSet = new Set(rows);
  const nonzero: number[] = [];
  let otherMax = 0;
  for (let r = 0; r < V; r++) {
    let m = 0;
    for (let j = 0; j < D; j++) m = Math.max(m, Math.abs(dense[r * D + j]));
    if (m > 0) nonzero.push(r);
    if (!rowSet.has(r)) otherMax = Math.max(otherMax, m);
  }
  const picked = new Float32Array(rows.length * D);
  rows.forEach((r, i) => picked.set(dense.subarray(r * D, (r + 1) * D), i * D));
  const missingRows = rows.filter((r) => !nonzero.includes(r)).length + nonzero.filter((r) => !rowSet.has(r)).length;
  return [
    { ...result(`${name}.indices (${rows.length} rows with a gradient)`, missingRows, 0, 0, indices.shape), maxRel: missingRows },
    compareGrad(`${name}.values`, picked, values, global, rtol),
    result(`${name} (the other ${V - rows.length} rows)`, otherMax, 0, 1e-6 * global, [V - rows.length, D]),
  ];
}

/** Named input tensors as variables (for grad_input.*), disposed by the caller. */
function inputVars(inputs: Record<string, tf.Tensor>): Map<string, tf.Variable> {
  return new Map(Object.entries(inputs).map(([k, t]) => [`input.${k}`, tf.variable(t, true)]));
}

function compareInputGrads(label: string, grads: Map<string, tf.Tensor>, names: string[], fx: GradsFixture, global: number, rtol = 1e-4): Comparison[] {
  return names.map((n) => {
    const ref = fx.need(`grad_input.${n}`);
    const g = grads.get(`input.${n}`);
    return compareGrad(`${label}: grad_input.${n}`, g ? (g.dataSync() as Float32Array) : new Float32Array(ref.data.length), ref, global, rtol);
  });
}

function paramVars(model: Module): Map<string, tf.Variable> {
  return new Map(model.namedParameters().map(([k, p]) => [k, p.value]));
}

function weightsDir(dir: string, idx: ModuleIndex, fallback: string): string {
  return path.resolve(dir, idx.weights ?? fallback);
}

const data = (t: tf.Tensor) => t.dataSync() as Float32Array;

/** Runs fn in a tensor scope: every tensor it creates is freed when it returns (results are plain data). */
function scoped<T>(fn: () => T): T {
  tf.engine().startScope();
  try {
    return fn();
  } finally {
    tf.engine().endScope();
  }
}

// ---------- per file ----------

export interface GradsContext {
  dir: string;
  index: GradsIndex;
  scheduler: UnCLIPScheduler;
  /** Multiplies the relative gradient term (default 1e-4). */
  rtol: number;
}

function moduleIndex(ctx: GradsContext, name: string): ModuleIndex {
  const m = ctx.index.modules[name];
  if (!m) throw new Error(`${path.join(ctx.dir, 'index.json')}: no entry modules.${name}`);
  return m;
}

/** index.json's alphas_cumprod_at against our schedule (float32 exact). */
function compareSchedule(ctx: GradsContext): Comparison[] {
  const at = ctx.index.alphas_cumprod_at ?? {};
  const ts = Object.keys(at).map(Number);
  if (!ts.length) return [];
  const ours = ts.map((t) => ctx.scheduler.alphasCumprod[t]);
  const c = compareArrays(`alphas_cumprod at [${ts.join(', ')}]`, ours, ts.map((t) => Math.fround(at[String(t)])), { atol: 0, scaleByMax: false });
  return [{ ...c, shape: [ts.length] }];
}

export function runClipTextGrads(ctx: GradsContext): Comparison[] {
  const label = 'clip_text';
  const idx = moduleIndex(ctx, label);
  const fx = new GradsFixture(path.join(ctx.dir, 'clip_text.safetensors'));
  const model = loadComponent(weightsDir(ctx.dir, idx, '../clip_text'), 'CLIPTextModelWithProjection');
  try {
    return scoped(() => {
      const inputIds = fx.tensor('input_ids') as tf.Tensor2D;
      const target = fx.tensor('target') as tf.Tensor2D;
      const embeds = model.forward(inputIds).textEmbeds;
      const out = [compareOutput(`${label}: text_embeds`, data(embeds), fx.need('text_embeds'))];
      const { value, grads } = valueAndGrads(() => clipTextLoss(model, { inputIds, target }), paramVars(model));
      out.push(compareLoss(`${label}: loss`, value.dataSync()[0], fx.scalar('loss')));
      out.push(...compareParamGrads(label, model, grads, fx, idx, 'grad.', ctx.rtol));
      return out;
    });
  } finally {
    model.dispose();
  }
}

interface PriorInputs {
  x0: tf.Tensor2D;
  noisy: tf.Tensor2D;
  timesteps: number[];
  projEmbedding: tf.Tensor2D;
  encoderHiddenStates: tf.Tensor3D;
  attentionMask: tf.Tensor2D;
}

function priorInputs(ctx: GradsContext, prior: PriorTransformer, fx: GradsFixture): PriorInputs {
  const timesteps = fx.timesteps();
  const x0 = priorTarget(prior, fx.tensor('image_embeds') as tf.Tensor2D);
  const noisy = ctx.scheduler.addNoise(x0, fx.tensor('noise'), timesteps) as tf.Tensor2D;
  return {
    x0, noisy, timesteps,
    projEmbedding: fx.tensor('proj_embedding') as tf.Tensor2D,
    encoderHiddenStates: fx.tensor('encoder_hidden_states') as tf.Tensor3D,
    attentionMask: fx.tensor('attention_mask') as tf.Tensor2D,
  };
}

export function runPriorGrads(ctx: GradsContext): Comparison[] {
  const label = 'prior';
  const idx = moduleIndex(ctx, label);
  const fx = new GradsFixture(path.join(ctx.dir, 'prior.safetensors'));
  const prior = loadComponent(weightsDir(ctx.dir, idx, '../prior'), 'PriorTransformer');
  try {
    return scoped(() => {
      const b = priorInputs(ctx, prior, fx);
      const out = [
        compareOutput(`${label}: x0`, data(b.x0), fx.need('x0')),
        compareOutput(`${label}: x_t`, data(b.noisy), fx.need('x_t')),
      ];
      const pred = prior.forward(b.noisy, tf.tensor1d(b.timesteps, 'int32'), b.projEmbedding, b.encoderHiddenStates, b.attentionMask);
      out.push(compareOutput(`${label}: predicted_image_embedding`, data(pred), fx.need('predicted_image_embedding')));
      const inputs = inputVars({ x_t: b.noisy, proj_embedding: b.projEmbedding, encoder_hidden_states: b.encoderHiddenStates });
      const vars = new Map([...paramVars(prior), ...inputs]);
      const { value, grads } = valueAndGrads(() => priorSampleLoss(prior, {
        ...b,
        noisy: inputs.get('input.x_t') as unknown as tf.Tensor2D,
        projEmbedding: inputs.get('input.proj_embedding') as unknown as tf.Tensor2D,
        encoderHiddenStates: inputs.get('input.encoder_hidden_states') as unknown as tf.Tensor3D,
      }), vars);
      out.push(compareLoss(`${label}: loss`, value.dataSync()[0], fx.scalar('loss')));
      out.push(...compareParamGrads(label, prior, grads, fx, idx, 'grad.', ctx.rtol));
      out.push(...compareInputGrads(label, grads, ['x_t', 'proj_embedding', 'encoder_hidden_states'], fx, idx.grad_global_max_abs ?? 0, ctx.rtol));
      tf.dispose([...inputs.values()]);
      return out;
    });
  } finally {
    prior.dispose();
  }
}

/** The decoder batch of decoder.safetensors (x_t made here by addNoise). */
function decoderBatch(ctx: GradsContext, fx: GradsFixture): DecoderNoisyBatch & { timesteps: number[] } {
  const timesteps = fx.timesteps();
  return {
    noisySample: ctx.scheduler.addNoise(fx.tensor('x0'), fx.tensor('noise'), timesteps) as tf.Tensor4D,
    noise: fx.tensor('noise') as tf.Tensor4D,
    timesteps,
    encoderHiddenStates: fx.tensor('encoder_hidden_states') as tf.Tensor3D,
    classLabels: fx.tensor('class_labels') as tf.Tensor2D,
    attentionMask: fx.tensor('attention_mask') as tf.Tensor2D,
  };
}

function decoderOutput(decoder: UNet2DConditionModel, b: DecoderNoisyBatch & { timesteps: number[] }): tf.Tensor {
  return decoder.forward(b.noisySample, tf.tensor1d(b.timesteps, 'int32'), b.encoderHiddenStates,
    { classLabels: b.classLabels ?? null, attentionMask: b.attentionMask ?? null });
}

export function runDecoderGrads(ctx: GradsContext): Comparison[] {
  const label = 'decoder';
  const idx = moduleIndex(ctx, label);
  const fx = new GradsFixture(path.join(ctx.dir, 'decoder.safetensors'));
  const decoder = loadComponent(weightsDir(ctx.dir, idx, '../decoder'), 'UNet2DConditionModel');
  try {
    return scoped(() => {
      const b = decoderBatch(ctx, fx);
      const out = [compareOutput(`${label}: x_t`, data(b.noisySample), fx.need('x_t'))];
      out.push(compareOutput(`${label}: output`, data(decoderOutput(decoder, b)), fx.need('output')));
      const inputs = inputVars({ sample: b.noisySample, encoder_hidden_states: b.encoderHiddenStates, class_labels: b.classLabels! });
      const { value, grads } = valueAndGrads(() => decoderEpsilonLoss(decoder, {
        ...b,
        noisySample: inputs.get('input.sample') as unknown as tf.Tensor4D,
        encoderHiddenStates: inputs.get('input.encoder_hidden_states') as unknown as tf.Tensor3D,
        classLabels: inputs.get('input.class_labels') as unknown as tf.Tensor2D,
      }), new Map([...paramVars(decoder), ...inputs]));
      out.push(compareLoss(`${label}: loss`, value.dataSync()[0], fx.scalar('loss')));
      out.push(...compareParamGrads(label, decoder, grads, fx, idx, 'grad.', ctx.rtol));
      out.push(...compareInputGrads(label, grads, ['sample', 'encoder_hidden_states', 'class_labels'], fx, idx.grad_global_max_abs ?? 0, ctx.rtol));
      tf.dispose([...inputs.values()]);
      return out;
    });
  } finally {
    decoder.dispose();
  }
}

export function runTextProjGrads(ctx: GradsContext): Comparison[] {
  const label = 'text_proj';
  const idx = moduleIndex(ctx, label);
  const fx = new GradsFixture(path.join(ctx.dir, 'text_proj.safetensors'));
  const dfx = new GradsFixture(path.join(ctx.dir, 'decoder.safetensors'));
  const textProj = loadComponent(weightsDir(ctx.dir, idx, '../text_proj'), 'UnCLIPTextProjModel');
  const decoder = loadComponent(weightsDir(ctx.dir, moduleIndex(ctx, 'decoder'), '../decoder'), 'UNet2DConditionModel');
  try {
    return scoped(() => {
      const global = idx.grad_global_max_abs ?? 0;
      const imageEmbeddings = fx.tensor('image_embeddings') as tf.Tensor2D;
      const promptEmbeds = fx.tensor('prompt_embeds') as tf.Tensor2D;
      const textEncoderHiddenStates = fx.tensor('text_encoder_hidden_states') as tf.Tensor3D;
      const tp = textProj.forward({ imageEmbeddings, promptEmbeds, textEncoderHiddenStates, doClassifierFreeGuidance: true });
      const out = [
        compareOutput(`${label}: out_encoder_hidden_states`, data(tp.textEncoderHiddenStates), fx.need('out_encoder_hidden_states')),
        compareOutput(`${label}: out_class_labels`, data(tp.additiveClipTimeEmbeddings), fx.need('out_class_labels')),
      ];
      // The decoder loss back-propagated through text_proj (decoder frozen).
      const b = decoderBatch(ctx, dfx);
      const inputs = inputVars({ image_embeddings: imageEmbeddings, prompt_embeds: promptEmbeds, text_encoder_hidden_states: textEncoderHiddenStates });
      const { value, grads } = valueAndGrads(() => textProjDecoderLoss(textProj, decoder, {
        ...b,
        imageEmbeddings: inputs.get('input.image_embeddings') as unknown as tf.Tensor2D,
        promptEmbeds: inputs.get('input.prompt_embeds') as unknown as tf.Tensor2D,
        textEncoderHiddenStates: inputs.get('input.text_encoder_hidden_states') as unknown as tf.Tensor3D,
        doClassifierFreeGuidance: true,
      }), new Map([...paramVars(textProj), ...inputs]));
      out.push(compareLoss(`${label}: loss`, value.dataSync()[0], fx.scalar('loss')));
      out.push(...compareParamGrads(label, textProj, grads, fx, idx, 'grad.', ctx.rtol));
      out.push(...compareInputGrads(label, grads, ['image_embeddings', 'prompt_embeds', 'text_encoder_hidden_states'], fx, global, ctx.rtol));
      tf.dispose([...inputs.values()]);
      // text_proj alone, given the decoder's recorded input gradients as upstream gradients.
      const upEhs = fx.tensor('upstream_grad_encoder_hidden_states');
      const upCl = fx.tensor('upstream_grad_class_labels');
      const up = valueAndGrads(() => {
        const r = textProj.forward({ imageEmbeddings, promptEmbeds, textEncoderHiddenStates, doClassifierFreeGuidance: true });
        return tf.add(tf.sum(tf.mul(r.textEncoderHiddenStates, upEhs)), tf.sum(tf.mul(r.additiveClipTimeEmbeddings, upCl))) as tf.Scalar;
      }, paramVars(textProj));
      for (const [k, p] of textProj.namedParameters()) {
        const g = up.grads.get(k);
        const ref = fx.need(`grad.${k}`);
        out.push(compareGrad(`${label} (upstream grads): grad.${k}`, g ? gradToTorch(p, g) : new Float32Array(ref.data.length), ref, global, ctx.rtol));
      }
      return out;
    });
  } finally {
    textProj.dispose();
    decoder.dispose();
  }
}

/** A super-res UNet's file (`super_res_first.safetensors`, or any `super_res_*.safetensors` with its index entry). */
export function runSuperResGrads(ctx: GradsContext, label = 'super_res_first'): Comparison[] {
  const idx = moduleIndex(ctx, label);
  const fx = new GradsFixture(path.join(ctx.dir, `${label}.safetensors`));
  const sr = loadComponent(weightsDir(ctx.dir, idx, `../super_res/${label}`), 'UNet2DModel');
  try {
    return scoped(() => {
      const timesteps = fx.timesteps();
      const x0 = fx.tensor('x0') as tf.Tensor4D;
      const noise = fx.tensor('noise') as tf.Tensor4D;
      const [, , H, W] = x0.shape;
      const upscaled = bicubicResize(fx.tensor('lowres') as tf.Tensor4D, [H, W], { antialias: true });
      const xt = ctx.scheduler.addNoise(x0, noise, timesteps);
      const sample = tf.concat([xt, upscaled], 1) as tf.Tensor4D;
      const out = [
        compareOutput(`${label}: upscaled`, data(upscaled), fx.need('upscaled')),
        compareOutput(`${label}: x_t`, data(xt), fx.need('x_t')),
        compareOutput(`${label}: sample`, data(sample), fx.need('sample')),
        compareOutput(`${label}: output`, data(sr.forward(sample, tf.tensor1d(timesteps, 'int32'))), fx.need('output')),
      ];
      const inputs = inputVars({ sample });
      const { value, grads } = valueAndGrads(() => superResEpsilonLoss(sr, {
        sample: inputs.get('input.sample') as unknown as tf.Tensor4D, noise, timesteps,
      }), new Map([...paramVars(sr), ...inputs]));
      out.push(compareLoss(`${label}: loss`, value.dataSync()[0], fx.scalar('loss')));
      out.push(...compareParamGrads(label, sr, grads, fx, idx, 'grad.', ctx.rtol));
      out.push(...compareInputGrads(label, grads, ['sample'], fx, idx.grad_global_max_abs ?? 0, ctx.rtol));
      tf.dispose([...inputs.values()]);
      return out;
    });
  } finally {
    sr.dispose();
  }
}

function adamwFromIndex(idx: ModuleIndex, params: Map<string, tf.Variable>): AdamW {
  const o = idx.optimizer;
  if (!o) throw new Error('index.json: the AdamW entry has no optimizer settings');
  return new AdamW(params, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
}

/** Recorded torch-layout gradients `<prefix><param>` as tfjs-layout tensors, except the parameters without one. */
function recordedGrads(model: Module, fx: GradsFixture, prefix: string, noGrad: Set<string>): Map<string, tf.Tensor> {
  const out = new Map<string, tf.Tensor>();
  for (const [k, p] of model.namedParameters()) if (!noGrad.has(k)) out.set(k, torchToParamLayout(p, fx.need(`${prefix}${k}`)));
  return out;
}

function compareParams(label: string, model: Module, fx: GradsFixture, prefix: string, atol: (k: string) => number): Comparison[] {
  return model.namedParameters().map(([k, p]) => {
    const t = p.toTorch();
    const c = compareAbs(`${label}: ${prefix}${k}`, t.dataSync() as Float32Array, fx.need(`${prefix}${k}`), atol(k));
    t.dispose();
    return c;
  });
}

function compareMoments(label: string, opt: AdamW, fx: GradsFixture, model: Module, n: number, atol: number): Comparison[] {
  const s = opt.state();
  const byName = new Map(model.namedParameters());
  const out: Comparison[] = [];
  for (const kind of ['exp_avg', 'exp_avg_sq']) {
    for (const name of fx.names(`${kind}${n}.`)) {
      const k = name.slice(`${kind}${n}.`.length);
      const t = s.tensors.get(`${kind}.${k}`);
      const ref = fx.need(name);
      out.push(compareAbs(`${label}: ${name}`, t ? gradToTorch(byName.get(k)!, t) : new Float32Array(ref.data.length).fill(NaN), ref, atol));
    }
  }
  tf.dispose([...s.tensors.values()]);
  return out;
}

export function runPriorAdamW(ctx: GradsContext): Comparison[] {
  const label = 'prior_adamw';
  const idx = moduleIndex(ctx, label);
  const pidx = moduleIndex(ctx, 'prior');
  const fx = new GradsFixture(path.join(ctx.dir, 'prior_adamw.safetensors'));
  const gfx = new GradsFixture(path.join(ctx.dir, 'prior.safetensors'));
  const prior = loadComponent(weightsDir(ctx.dir, pidx, '../prior'), 'PriorTransformer');
  const opt = adamwFromIndex(idx, paramVars(prior));
  const noGrad = new Set(pidx.params_with_no_grad ?? []);
  const out: Comparison[] = [];
  try {
    const lossAt = (): number => scoped(() => {
      const b = priorInputs(ctx, prior, gfx);
      return priorSampleLoss(prior, b).dataSync()[0];
    });
    out.push(compareLoss(`${label}: loss1`, lossAt(), fx.scalar('loss1')));
    const g1 = recordedGrads(prior, gfx, 'grad.', noGrad);
    opt.step(g1);
    tf.dispose([...g1.values()]);
    out.push(...compareParams(label, prior, fx, 'adamw1.', () => 1e-6));
    out.push(...compareMoments(label, opt, fx, prior, 1, 1e-6));
    // Our own gradient at adamw1 against grad2 (the recorded one is what step 2 uses).
    const own = scoped(() => {
      const b = priorInputs(ctx, prior, gfx);
      const { value, grads } = valueAndGrads(() => priorSampleLoss(prior, b), paramVars(prior));
      const res = [compareLoss(`${label}: loss2`, value.dataSync()[0], fx.scalar('loss2'))];
      for (const [k, p] of prior.namedParameters()) {
        if (noGrad.has(k)) continue;
        const g = grads.get(k);
        const ref = fx.need(`grad2.${k}`);
        res.push(compareGrad(`${label}: grad2.${k} (ours at adamw1)`, g ? gradToTorch(p, g) : new Float32Array(ref.data.length), ref, pidx.grad_global_max_abs ?? 0, ctx.rtol));
      }
      return res;
    });
    out.push(...own);
    const g2 = recordedGrads(prior, fx, 'grad2.', noGrad);
    opt.step(g2);
    tf.dispose([...g2.values()]);
    out.push(...compareParams(label, prior, fx, 'adamw2.', () => 1e-6));
    out.push(...compareMoments(label, opt, fx, prior, 2, 1e-6));
    out.push(compareLoss(`${label}: loss3`, lossAt(), fx.scalar('loss3')));
    return out;
  } finally {
    opt.dispose();
    prior.dispose();
  }
}

export function runDecoderAdamW(ctx: GradsContext): Comparison[] {
  const label = 'decoder_adamw';
  const idx = moduleIndex(ctx, label);
  const didx = moduleIndex(ctx, 'decoder');
  const fx = new GradsFixture(path.join(ctx.dir, 'decoder_adamw.safetensors'));
  const gfx = new GradsFixture(path.join(ctx.dir, 'decoder.safetensors'));
  const decoder = loadComponent(weightsDir(ctx.dir, didx, '../decoder'), 'UNet2DConditionModel');
  const opt = adamwFromIndex(idx, paramVars(decoder));
  const noGrad = new Set(didx.params_with_no_grad ?? []);
  const zero = new Set(Object.keys(didx.zero_in_exact_arithmetic ?? {}));
  const lr = idx.optimizer!.lr;
  const out: Comparison[] = [];
  try {
    const g1 = recordedGrads(decoder, gfx, 'grad.', noGrad);
    opt.step(g1);
    tf.dispose([...g1.values()]);
    out.push(...compareParams(label, decoder, fx, 'adamw1.', () => 1e-6));
    // Step 2 with our own gradient at adamw1.
    const loss2 = scoped(() => {
      const b = decoderBatch(ctx, gfx);
      const { value, grads } = valueAndGrads(() => decoderEpsilonLoss(decoder, b), paramVars(decoder));
      opt.step(grads);
      return value.dataSync()[0];
    });
    out.push(compareLoss(`${label}: loss2`, loss2, fx.scalar('loss2')));
    out.push(...compareParams(label, decoder, fx, 'adamw2.', (k) => (zero.has(k) ? 2 * lr : 1e-5)));
    const loss3 = scoped(() => decoderEpsilonLoss(decoder, decoderBatch(ctx, gfx)).dataSync()[0]);
    out.push(compareLoss(`${label}: loss3`, loss3, fx.scalar('loss3')));
    return out;
  } finally {
    opt.dispose();
    decoder.dispose();
  }
}

/**
 * LoRA (rank/alpha of index.json) on the decoder's attention projections listed there, with the recorded adapter
 * weights: output, loss and every adapter gradient (un-merged path), then the output with the adapters merged
 * into the base weights, and the base weights after unmerge.
 */
export function runDecoderLora(ctx: GradsContext): Comparison[] {
  const label = 'decoder_lora';
  const idx = moduleIndex(ctx, label);
  const didx = moduleIndex(ctx, 'decoder');
  const fx = new GradsFixture(path.join(ctx.dir, 'decoder_lora.safetensors'));
  const gfx = new GradsFixture(path.join(ctx.dir, 'decoder.safetensors'));
  const decoder = loadComponent(weightsDir(ctx.dir, didx, '../decoder'), 'UNet2DConditionModel');
  const modules = (idx.modules ?? []).map((m) => m.name);
  if (!modules.length || !idx.rank) throw new Error(`${path.join(ctx.dir, 'index.json')}: modules.decoder_lora has no modules or rank`);
  const targets = [...new Set(modules.map((m) => (m.endsWith('.to_out.0') ? 'to_out.0' : m.slice(m.lastIndexOf('.') + 1))))];
  const lora = applyLora(decoder, { rank: idx.rank, alpha: idx.alpha ?? idx.rank, targets });
  const out: Comparison[] = [];
  try {
    const ours = lora.adapters.map((a) => a.module);
    // (torch's named_modules() visits up_blocks before mid_block, where their modules were registered; ours the other way)
    const same = ours.length === modules.length && [...ours].sort().every((m, i) => m === [...modules].sort()[i]);
    out.push({ ...result(`${label}: adapted modules (${ours.length}) = index.json modules (${modules.length})`, same ? 0 : 1, 0, 0), maxRel: same ? 0 : 1 });
    for (const a of lora.adapters) {
      a.down.setFromTorch(fx.need(`lora.${a.module}.down.weight`).data as Float32Array, true);
      a.up.setFromTorch(fx.need(`lora.${a.module}.up.weight`).data as Float32Array, true);
    }
    const refGrads = lora.adapters.flatMap((a) => [fx.need(`grad.lora.${a.module}.down.weight`), fx.need(`grad.lora.${a.module}.up.weight`)]);
    let global = 0;
    for (const t of refGrads) for (const v of t.data) global = Math.max(global, Math.abs(v));
    const base = new Map(decoder.namedParameters().map(([k, p]) => [k, data(p.value).slice()]));
    out.push(...scoped(() => {
      const b = decoderBatch(ctx, gfx);
      const res = [compareOutput(`${label}: lora.output`, data(decoderOutput(decoder, b)), fx.need('lora.output'))];
      const { value, grads } = valueAndGrads(() => decoderEpsilonLoss(decoder, b), lora.variables());
      res.push(compareLoss(`${label}: lora.loss`, value.dataSync()[0], fx.scalar('lora.loss')));
      for (const a of lora.adapters) {
        for (const [p, kind] of [[a.down, 'down'], [a.up, 'up']] as const) {
          const ref = fx.need(`grad.lora.${a.module}.${kind}.weight`);
          const g = grads.get(p.name);
          res.push(compareGrad(`${label}: grad.lora.${a.module}.${kind}.weight`, g ? data(g) : new Float32Array(ref.data.length), ref, global, ctx.rtol));
        }
      }
      lora.merge();
      res.push(compareOutput(`${label}: lora.output (merged into the base weights)`, data(decoderOutput(decoder, b)), fx.need('lora.output')));
      lora.unmerge();
      return res;
    }));
    let worst = 0;
    let maxRef = 0;
    for (const [k, p] of decoder.namedParameters()) {
      const was = base.get(k)!;
      const now = data(p.value);
      for (let i = 0; i < was.length; i++) {
        worst = Math.max(worst, Math.abs(now[i] - was[i]));
        maxRef = Math.max(maxRef, Math.abs(was[i]));
      }
    }
    out.push(result(`${label}: base weights after merge + unmerge`, worst, maxRef, 1e-6 * Math.max(1, maxRef)));
    return out;
  } finally {
    lora.remove();
    decoder.dispose();
  }
}

// ---------- the folder ----------

export interface GradsFile {
  file: string;
  run(ctx: GradsContext): Comparison[];
}

/** Which fixture file runs which check, in the order `karlo parity` prints them. */
export const GRADS_FILES: GradsFile[] = [
  { file: 'clip_text.safetensors', run: runClipTextGrads },
  { file: 'prior.safetensors', run: runPriorGrads },
  { file: 'prior_adamw.safetensors', run: runPriorAdamW },
  { file: 'text_proj.safetensors', run: runTextProjGrads },
  { file: 'decoder.safetensors', run: runDecoderGrads },
  { file: 'decoder_adamw.safetensors', run: runDecoderAdamW },
  { file: 'decoder_lora.safetensors', run: runDecoderLora },
  { file: 'super_res_first.safetensors', run: (c) => runSuperResGrads(c) },
];

/** The files of a folder to run, in order: GRADS_FILES, then any other super_res_*.safetensors (e.g. super_res_last). */
export function gradsFiles(dir: string): GradsFile[] {
  const known = new Set(GRADS_FILES.map((f) => f.file));
  const extra = fs.readdirSync(dir).filter((f) => /^super_res_[A-Za-z0-9_]+\.safetensors$/.test(f) && !known.has(f)).sort()
    .map((file) => ({ file, run: (c: GradsContext) => runSuperResGrads(c, file.replace(/\.safetensors$/, '')) }));
  return [...GRADS_FILES.filter((f) => fs.existsSync(path.join(dir, f.file))), ...extra];
}

export function gradsContext(dir: string, opts: ParityOptions = {}): GradsContext {
  const index = readJson<GradsIndex>(path.join(dir, 'index.json'));
  if (!index.modules || typeof index.modules !== 'object') throw new Error(`${path.join(dir, 'index.json')}: no "modules" object`);
  // --atol scales the relative gradient term (default 1e-4, the README's check).
  return { dir, index, scheduler: new UnCLIPScheduler(), rtol: opts.atol ?? 1e-4 };
}

export function isGradsFolder(dir: string): boolean {
  const idx = path.join(dir, 'index.json');
  if (!fs.existsSync(idx)) return false;
  try {
    const j = readJson<GradsIndex>(idx);
    return !!j.modules && typeof j.modules === 'object' && gradsFiles(dir).length > 0;
  } catch {
    return false;
  }
}

export async function runGradsParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  await registerGradients();
  const ctx = gradsContext(dir, opts);
  const out = compareSchedule(ctx);
  for (const f of gradsFiles(dir)) {
    opts.log?.(`grads: ${f.file}`);
    out.push(...f.run(ctx));
  }
  return out;
}

export const gradsParity: ParityKind = {
  name: 'grads',
  detect: isGradsFolder,
  run: runGradsParity,
};
