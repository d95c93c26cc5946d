// `--lora FILE[:scale]` at generate time: which pipeline component an adapters file belongs to, and attaching it
// when the pipeline loads that component (UnCLIPPipeline's onComponentLoaded). The adapters are freed with the
// component.
import * as fs from 'node:fs';
import { SafetensorsFile } from '../io/safetensors.js';
import { Module } from '../layers/module.js';
import { loadLoraFile } from './lora.js';

export interface LoraArg {
  file: string;
  scale: number;
  /** The pipeline component (model_index name) the adapters go on. */
  component: 'decoder' | 'prior' | 'text_encoder' | 'super_res_first' | 'super_res_last';
}

/** `karlo train --component` names → model_index component names. */
const FROM_TRAIN: Record<string, LoraArg['component']> = {
  decoder: 'decoder', prior: 'prior', text_encoder: 'text_encoder', super_res: 'super_res_first',
  super_res_first: 'super_res_first', super_res_last: 'super_res_last', unet: 'decoder',
};

/** The component of an adapters file: its `karlo_component` metadata, else a key prefix, else the key shapes. */
export function loraComponent(file: string): LoraArg['component'] {
  const f = SafetensorsFile.open(file);
  try {
    const meta = f.metadata.karlo_component;
    if (meta !== undefined) {
      const c = FROM_TRAIN[meta];
      if (!c) throw new Error(`${file}: metadata karlo_component "${meta}" is not a component (${Object.keys(FROM_TRAIN).join(', ')})`);
      return c;
    }
    const names = f.names();
    if (!names.length) throw new Error(`${file}: no tensors (not a LoRA adapters file)`);
    const first = names[0];
    if (first.startsWith('unet.')) return 'decoder';
    if (first.startsWith('text_encoder.') || names.every((n) => n.startsWith('text_model.'))) return 'text_encoder';
    if (first.startsWith('prior.') || names.every((n) => n.startsWith('transformer_blocks.'))) return 'prior';
    if (names.every((n) => /^(down_blocks|up_blocks|mid_block)\./.test(n))) return 'decoder';
    throw new Error(`${file}: cannot tell which component the adapters are for (no karlo_component metadata; keys like "${first}")`);
  } finally {
    f.close();
  }
}

/** Parses `FILE` or `FILE:scale` (the scale is a number after the last colon); checks the file. */
export function parseLoraArg(arg: string): LoraArg {
  let file = arg;
  let scale = 1;
  const m = /^(.*):([^:]*)$/.exec(arg);
  if (m && m[1] !== '' && /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(m[2])) {
    file = m[1];
    scale = Number(m[2]);
  } else if (m && m[1] !== '' && !fs.existsSync(arg)) {
    throw new Error(`--lora ${arg}: the scale after ":" must be a number, got "${m[2]}"`);
  }
  if (!fs.existsSync(file)) throw new Error(`--lora ${arg}: ${file} does not exist`);
  if (!fs.statSync(file).isFile()) throw new Error(`--lora ${arg}: ${file} is not a file (pass the adapters .safetensors, e.g. checkpoint-N/pytorch_lora_weights.safetensors)`);
  return { file, scale, component: loraComponent(file) };
}

/**
 * An onComponentLoaded hook attaching each adapters file to its component (errors name the file); the adapters are
 * removed and freed when the component is disposed.
 */
export function loraLoadHook(loras: readonly LoraArg[]): (name: string, component: unknown) => void {
  return (name, component) => {
    const mine = loras.filter((l) => l.component === name);
    if (!mine.length || !(component instanceof Module)) return;
    const attached = mine.map((l) => loadLoraFile(component, l.file, l.scale));
    const dispose = component.dispose.bind(component);
    component.dispose = () => {
      for (const a of attached.reverse()) a.remove();
      dispose();
    };
  };
}
