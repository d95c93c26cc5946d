// A freshly initialised karlo-nano folder (configs.ts) in the diffusers layout: every component's config and
// weights, the three scheduler configs, the CLIP tokenizer, the image processor config. Initialisation follows
// what PyTorch, transformers and diffusers do for these classes (so training from it behaves as theirs would):
//   Linear / Conv weights   U(±1/√fan_in) (torch's default kaiming_uniform(a=√5)); biases 0
//   LayerNorm / GroupNorm   weight 1, bias 0
//   CLIP embeddings         token, position and patch embeddings N(0, 0.02); the vision class embedding N(0, D^-½)
//   prior                   positional_embedding and prd_embedding 0 (diffusers), clip_mean 0, clip_std 1
// Values come from a seeded generator (Box–Muller over mulberry32), so one seed gives one folder, byte for byte.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { saveSafetensors, type SafetensorsDType, type TensorToWrite } from '../io/safetensors.js';
import type { Module } from '../layers/module.js';
import { CLIPTextModelWithProjection, clipTextConfig } from '../models/clip_text.js';
import { CLIPVisionModelWithProjection, clipVisionConfig } from '../models/clip_vision.js';
import { PriorTransformer, priorTransformerConfig } from '../models/prior_transformer.js';
import { UnCLIPTextProjModel, textProjConfig } from '../models/text_proj.js';
import { UNet2DConditionModel, unet2dConditionConfig } from '../models/unet2d_condition.js';
import { UNet2DModel, unet2dConfig } from '../models/unet2d.js';
import { BUNDLED_TOKENIZER_DIR } from '../tokenizer/clip_tokenizer.js';
import {
  NANO_MODEL_COMPONENTS, nanoComponentConfig, nanoFeatureExtractorConfig, nanoModelIndex, nanoSchedulerConfigs, type NanoModelComponent,
} from './configs.js';
import { Rng, hash32 } from './world.js';

/** An unloaded module (parameter names and shapes) of a nano component. */
export function nanoShell(name: NanoModelComponent, cfg: Record<string, unknown> = nanoComponentConfig(name)): Module {
  switch (name) {
    case 'text_encoder': return new CLIPTextModelWithProjection(clipTextConfig(cfg));
    case 'image_encoder': return new CLIPVisionModelWithProjection(clipVisionConfig(cfg));
    case 'prior': return new PriorTransformer(priorTransformerConfig(cfg));
    case 'text_proj': return new UnCLIPTextProjModel(textProjConfig(cfg));
    case 'decoder': return new UNet2DConditionModel(unet2dConditionConfig(cfg));
    default: return new UNet2DModel(unet2dConfig(cfg));
  }
}

export type InitRule = { kind: 'const'; value: number } | { kind: 'normal'; std: number } | { kind: 'uniform'; bound: number };

/** How a parameter (by state-dict key and PyTorch shape) is initialised. */
export function initRule(key: string, shape: number[]): InitRule {
  const leaf = key.slice(key.lastIndexOf('.') + 1);
  if (key === 'clip_std') return { kind: 'const', value: 1 };
  if (key === 'clip_mean' || key === 'positional_embedding' || key === 'prd_embedding') return { kind: 'const', value: 0 };
  if (/(token_embedding|position_embedding|patch_embedding)\.weight$/.test(key)) return { kind: 'normal', std: 0.02 };
  if (leaf === 'class_embedding') return { kind: 'normal', std: 1 / Math.sqrt(shape[0]) };
  if (shape.length === 1) return { kind: 'const', value: leaf === 'weight' ? 1 : 0 };
  const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
  return { kind: 'uniform', bound: 1 / Math.sqrt(fanIn) };
}

/** Initial weights of a module, generated lazily per tensor (seeded by the seed and the key). */
export function initWeights(model: Module, seed: number, dtype: SafetensorsDType = 'F32'): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  for (const [k, p] of model.namedParameters()) {
    const shape = [...p.torchShape];
    out[k] = {
      dtype, shape,
      data: () => {
        const n = shape.reduce((a, b) => a * b, 1);
        const a = new Float32Array(n);
        const rule = initRule(k, shape);
        const rng = new Rng(hash32(`${seed}:${k}`));
        if (rule.kind === 'const') a.fill(rule.value);
        else if (rule.kind === 'uniform') for (let i = 0; i < n; i++) a[i] = (2 * rng.next() - 1) * rule.bound;
        else {
          for (let i = 0; i < n; i += 2) {
            const u = 1 - rng.next(), v = rng.next();
            const m = Math.sqrt(-2 * Math.log(u));
            a[i] = rule.std * m * Math.cos(2 * Math.PI * v);
            if (i + 1 < n) a[i + 1] = rule.std * m * Math.sin(2 * Math.PI * v);
          }
        }
        return a;
      },
    };
  }
  return out;
}

export function weightsFileName(name: NanoModelComponent): string {
  return name === 'text_encoder' || name === 'image_encoder' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors';
}

function writeJson(file: string, v: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(v, null, 2)}\n`);
}

export interface NanoFolderInfo {
  params: Record<NanoModelComponent, number>;
  bytes: number;
}

/**
 * Writes an initialised karlo-nano folder to `out` (which must not hold a model_index.json yet). `dtype` F32 for
 * training, F16 for shipping.
 */
export function writeNanoInitFolder(out: string, opts: { seed?: number; dtype?: SafetensorsDType } = {}): NanoFolderInfo {
  const seed = opts.seed ?? 0;
  if (fs.existsSync(path.join(out, 'model_index.json'))) throw new Error(`${out}: already holds a model (model_index.json); choose another folder`);
  fs.mkdirSync(out, { recursive: true });
  writeJson(path.join(out, 'model_index.json'), nanoModelIndex());
  for (const [name, cfg] of Object.entries(nanoSchedulerConfigs())) {
    fs.mkdirSync(path.join(out, name), { recursive: true });
    writeJson(path.join(out, name, 'scheduler_config.json'), cfg);
  }
  fs.mkdirSync(path.join(out, 'feature_extractor'), { recursive: true });
  writeJson(path.join(out, 'feature_extractor', 'preprocessor_config.json'), nanoFeatureExtractorConfig());
  fs.mkdirSync(path.join(out, 'tokenizer'), { recursive: true });
  for (const f of ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json']) {
    fs.copyFileSync(path.join(BUNDLED_TOKENIZER_DIR, f), path.join(out, 'tokenizer', f));
  }
  const params = {} as Record<NanoModelComponent, number>;
  let bytes = 0;
  NANO_MODEL_COMPONENTS.forEach((name, i) => {
    const cfg = nanoComponentConfig(name);
    const shell = nanoShell(name, cfg);
    try {
      params[name] = shell.numParameters();
      const dir = path.join(out, name);
      fs.mkdirSync(dir, { recursive: true });
      writeJson(path.join(dir, 'config.json'), cfg);
      const file = path.join(dir, weightsFileName(name));
      saveSafetensors(file, initWeights(shell, seed * 101 + i, opts.dtype ?? 'F32'));
      bytes += fs.statSync(file).size;
    } finally {
      shell.dispose();
    }
  });
  return { params, bytes };
}
