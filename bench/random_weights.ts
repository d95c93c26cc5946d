// Random stand-in weights for benchmarks at real size, and a whole random-weight Karlo folder.
// randomWeights(model): deterministic xorshift uniform values with std 1/√fan_in (fan_in = product of the PyTorch
// shape past dim 0: Linear in_features, Conv I·kh·kw), 1-D norm weights 1 + noise, other 1-D tensors std 0.02,
// the prior's clip_std 1 ± 0.1. Each tensor is generated lazily while saveSafetensors writes it, so a 4 GB file
// never needs more than one tensor in memory.
// writeRandomKarloFolder(configDir, tokenizerDir, outDir): a diffusers-layout folder (model_index.json, every
// component config and weights, scheduler configs, tokenizer) that UnCLIPPipeline.load reads as it would a release.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { saveSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { readJson } from '../src/io/weights.js';
import type { Module } from '../src/layers/module.js';
import { UNCLIP_COMPONENTS } from '../src/io/model_folder.js';
import { buildComponent, type ComponentKind } from '../src/loading/load_component.js';

/** Deterministic random weights for every parameter of model (PyTorch state-dict names and shapes). */
export function randomWeights(model: Module, seed = 1): Record<string, TensorToWrite> {
  let s = seed >>> 0 || 1;
  const out: Record<string, TensorToWrite> = {};
  for (const [k, p] of model.namedParameters()) {
    const shape = p.torchShape;
    out[k] = {
      dtype: 'F32',
      shape,
      data: () => {
        const n = shape.reduce((a, b) => a * b, 1);
        const a = new Float32Array(n);
        const fanIn = shape.length >= 2 ? shape.slice(1).reduce((x, y) => x * y, 1) : 1;
        let std = shape.length >= 2 ? 1 / Math.sqrt(fanIn) : 0.02;
        let mean = shape.length === 1 && /norm[^.]*\.weight$/.test(k) ? 1 : 0;
        if (k === 'clip_std') { mean = 1; std = 0.1; }
        const amp = (std * Math.sqrt(3)) / 2147483648;
        for (let i = 0; i < n; i++) {
          s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
          a[i] = mean + amp * (s | 0);
        }
        return new Uint8Array(a.buffer);
      },
    };
  }
  return out;
}

type ModelComponent = 'text_encoder' | 'prior' | 'text_proj' | 'decoder' | 'super_res_first' | 'super_res_last';
const MODEL_COMPONENTS: ModelComponent[] = ['text_encoder', 'prior', 'text_proj', 'decoder', 'super_res_first', 'super_res_last'];
const SCHEDULERS = ['prior_scheduler', 'decoder_scheduler', 'super_res_scheduler'];

/** An unloaded module (parameter names and shapes only) built from a component's config.json. */
export function componentShell(name: ModelComponent, cfgFile: string): Module {
  return buildComponent(UNCLIP_COMPONENTS[name].className as ComponentKind, readJson<Record<string, unknown>>(cfgFile), cfgFile);
}

export interface WrittenFolder {
  /** Parameters per model component. */
  params: Record<ModelComponent, number>;
  bytes: number;
  seconds: number;
}

/**
 * Writes a random-weight Karlo folder to outDir (created; must not hold a model yet): configs and scheduler
 * configs from configDir (karlo_configs layout: <component>/config.json, <scheduler>/scheduler_config.json,
 * model_index.json, optionally tokenizer/*.json), vocab.json and merges.txt from tokenizerDir (tokenizer configs
 * too where configDir has none). onComponent reports progress.
 */
export function writeRandomKarloFolder(
  configDir: string, tokenizerDir: string, outDir: string,
  onComponent?: (name: string, bytes: number, seconds: number) => void,
): WrittenFolder {
  const t0 = performance.now();
  fs.mkdirSync(outDir, { recursive: true });
  fs.copyFileSync(path.join(configDir, 'model_index.json'), path.join(outDir, 'model_index.json'));
  const tokOut = path.join(outDir, 'tokenizer');
  fs.mkdirSync(tokOut);
  for (const f of ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json']) {
    const own = path.join(configDir, 'tokenizer', f);
    const src = fs.existsSync(own) ? own : path.join(tokenizerDir, f);
    if (fs.existsSync(src)) fs.copyFileSync(src, path.join(tokOut, f));
  }
  for (const s of SCHEDULERS) {
    fs.mkdirSync(path.join(outDir, s));
    fs.copyFileSync(path.join(configDir, s, 'scheduler_config.json'), path.join(outDir, s, 'scheduler_config.json'));
  }
  const params = {} as Record<ModelComponent, number>;
  let bytes = 0;
  MODEL_COMPONENTS.forEach((name, i) => {
    const t = performance.now();
    const cfgFile = path.join(configDir, name, 'config.json');
    const shell = componentShell(name, cfgFile);
    params[name] = shell.numParameters();
    const dir = path.join(outDir, name);
    fs.mkdirSync(dir);
    fs.copyFileSync(cfgFile, path.join(dir, 'config.json'));
    const file = path.join(dir, name === 'text_encoder' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors');
    saveSafetensors(file, randomWeights(shell, 101 + i));
    const size = fs.statSync(file).size;
    bytes += size;
    onComponent?.(name, size, (performance.now() - t) / 1000);
  });
  return { params, bytes, seconds: (performance.now() - t0) / 1000 };
}
