// The one component loader: a diffusers / transformers component folder (config.json + weights) → a model.
// It sits between models/ (which know no files) and everything that loads them (pipeline, training, parity,
// batch, cli, benches): io reads the files, this layer picks the class, parses its config by the models' one
// convention, checks the class the config names, builds the model and loads its weights (strict, by PyTorch
// state-dict key).
import * as path from 'node:path';
import { checkConfigClass } from '../io/config_class.js';
import { loadWeights, readConfig } from '../io/weights.js';
import type { TensorSource } from '../layers/module.js';
import { CLIPTextModelWithProjection, clipTextConfig, type CLIPTextConfig } from '../models/clip_text.js';
import { CLIPVisionModelWithProjection, clipVisionConfig, type CLIPVisionConfig } from '../models/clip_vision.js';
import { PriorTransformer, priorTransformerConfig, type PriorTransformerConfig } from '../models/prior_transformer.js';
import { UnCLIPTextProjModel, textProjConfig, type UnCLIPTextProjConfig } from '../models/text_proj.js';
import { UNet2DConditionModel, unet2dConditionConfig, type UNet2DConditionConfig } from '../models/unet2d_condition.js';
import { UNet2DModel, unet2dConfig, type UNet2DConfig } from '../models/unet2d.js';

/** The model classes a component folder may hold, by the class name its config (and model_index.json) uses. */
interface Components {
  CLIPTextModelWithProjection: [CLIPTextConfig, CLIPTextModelWithProjection];
  CLIPVisionModelWithProjection: [CLIPVisionConfig, CLIPVisionModelWithProjection];
  PriorTransformer: [PriorTransformerConfig, PriorTransformer];
  UnCLIPTextProjModel: [UnCLIPTextProjConfig, UnCLIPTextProjModel];
  UNet2DConditionModel: [UNet2DConditionConfig, UNet2DConditionModel];
  UNet2DModel: [UNet2DConfig, UNet2DModel];
}
export type ComponentKind = keyof Components;
export type ComponentConfig<K extends ComponentKind> = Components[K][0];
export type ComponentModel<K extends ComponentKind> = Components[K][1];

interface Kind<K extends ComponentKind> {
  config: (raw: Record<string, unknown>, source: string) => ComponentConfig<K>;
  build: (config: ComponentConfig<K>) => ComponentModel<K>;
  /** State-dict keys a checkpoint may hold that are no parameter (buffers older transformers saved). */
  ignoredKeys?: ReadonlySet<string>;
}

export const COMPONENT_KINDS: { [K in ComponentKind]: Kind<K> } = {
  CLIPTextModelWithProjection: {
    config: clipTextConfig,
    build: (c) => new CLIPTextModelWithProjection(c),
    ignoredKeys: new Set(['text_model.embeddings.position_ids']),
  },
  CLIPVisionModelWithProjection: {
    config: clipVisionConfig,
    build: (c) => new CLIPVisionModelWithProjection(c),
    ignoredKeys: new Set(['vision_model.embeddings.position_ids']),
  },
  PriorTransformer: { config: priorTransformerConfig, build: (c) => new PriorTransformer(c) },
  UnCLIPTextProjModel: { config: textProjConfig, build: (c) => new UnCLIPTextProjModel(c) },
  UNet2DConditionModel: { config: unet2dConditionConfig, build: (c) => new UNet2DConditionModel(c) },
  UNet2DModel: { config: unet2dConfig, build: (c) => new UNet2DModel(c) },
};

export function isComponentKind(name: string): name is ComponentKind {
  return Object.prototype.hasOwnProperty.call(COMPONENT_KINDS, name);
}

/** The typed config of a folder's `config.json` for `kind`: its class checked, defaults filled, fields checked. */
export function componentConfig<K extends ComponentKind>(dir: string, kind: K): ComponentConfig<K> {
  const file = path.join(dir, 'config.json');
  const raw = readConfig(dir);
  checkConfigClass(raw, kind, file);
  return (COMPONENT_KINDS[kind] as Kind<K>).config(raw, file);
}

/** A model of `kind` from a parsed config (parameters lazy, no weights); `source` names the config in errors. */
export function buildComponent<K extends ComponentKind>(kind: K, raw: Record<string, unknown>, source = `${kind} config`): ComponentModel<K> {
  const k = COMPONENT_KINDS[kind] as Kind<K>;
  return k.build(k.config(raw, source));
}

/** The `kind` model of a component folder with its parameters unloaded (names, shapes, sizes; no memory). */
export function emptyComponent<K extends ComponentKind>(dir: string, kind: K): ComponentModel<K> {
  return (COMPONENT_KINDS[kind] as Kind<K>).build(componentConfig(dir, kind));
}

/** State-dict keys a loader ignores for `kind` (what the folder check must ignore too). */
export function ignoredKeys(kind: ComponentKind): ReadonlySet<string> {
  return COMPONENT_KINDS[kind].ignoredKeys ?? new Set();
}

export interface LoadComponentOptions {
  /**
   * Mark the weights as trainable tf.Variables. Default false for every kind: loading is for inference, and a
   * trainer (or a gradient check) asks for trainable weights explicitly.
   */
  trainable?: boolean;
  /** Read the weights from this source (e.g. a prefetcher's) instead of the folder's weights file; not closed here. */
  source?: TensorSource;
}

/** Builds the `kind` model of a component folder from its config.json and loads its weights (strict). */
export function loadComponent<K extends ComponentKind>(dir: string, kind: K, opts: LoadComponentOptions = {}): ComponentModel<K> {
  const model = emptyComponent(dir, kind);
  try {
    loadWeights(model, dir, { strict: true, trainable: opts.trainable ?? false, ignore: ignoredKeys(kind), source: opts.source });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}
