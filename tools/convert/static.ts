// Files of the converted folder that do not depend on the checkpoints' sizes: the three UnCLIPScheduler configs,
// model_index.json and the tokenizer settings of diffusers' Karlo conversion (CLIPTokenizer of
// openai/clip-vit-large-patch14 loaded with pad_token "!" = id 0, which reproduces Karlo's zero padding).
// Values: diffusers 0.25.1 / transformers 4.36 as written for kakaobrain/karlo-v1-alpha.
import { pyFloat, type JsonValue } from './pyjson.js';

export const PRIOR_SCHEDULER: Record<string, JsonValue> = {
  _class_name: "UnCLIPScheduler",
  _diffusers_version: "0.25.1",
  beta_schedule: "squaredcos_cap_v2",
  clip_sample: true,
  clip_sample_range: pyFloat(5.0),
  num_train_timesteps: 1000,
  prediction_type: "sample",
  variance_type: "fixed_small_log",
};

export const DECODER_SCHEDULER: Record<string, JsonValue> = {
  _class_name: "UnCLIPScheduler",
  _diffusers_version: "0.25.1",
  beta_schedule: "squaredcos_cap_v2",
  clip_sample: true,
  clip_sample_range: pyFloat(1.0),
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
  variance_type: "learned_range",
};

export const SUPER_RES_SCHEDULER: Record<string, JsonValue> = {
  _class_name: "UnCLIPScheduler",
  _diffusers_version: "0.25.1",
  beta_schedule: "squaredcos_cap_v2",
  clip_sample: true,
  clip_sample_range: pyFloat(1.0),
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
  variance_type: "fixed_small_log",
};

export const MODEL_INDEX: Record<string, JsonValue> = {
  _class_name: "UnCLIPPipeline",
  _diffusers_version: "0.25.1",
  decoder: ["diffusers", "UNet2DConditionModel"],
  decoder_scheduler: ["diffusers", "UnCLIPScheduler"],
  prior: ["diffusers", "PriorTransformer"],
  prior_scheduler: ["diffusers", "UnCLIPScheduler"],
  super_res_first: ["diffusers", "UNet2DModel"],
  super_res_last: ["diffusers", "UNet2DModel"],
  super_res_scheduler: ["diffusers", "UnCLIPScheduler"],
  text_encoder: ["transformers", "CLIPTextModelWithProjection"],
  text_proj: ["unclip", "UnCLIPTextProjModel"],
  tokenizer: ["transformers", "CLIPTokenizer"],
};

export const TOKENIZER_CONFIG: Record<string, JsonValue> = {
  added_tokens_decoder: {
    "0": {
      content: "!",
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    },
    "49406": {
      content: "<|startoftext|>",
      lstrip: false,
      normalized: true,
      rstrip: false,
      single_word: false,
      special: true,
    },
    "49407": {
      content: "<|endoftext|>",
      lstrip: false,
      normalized: true,
      rstrip: false,
      single_word: false,
      special: true,
    },
  },
  bos_token: "<|startoftext|>",
  clean_up_tokenization_spaces: true,
  eos_token: "<|endoftext|>",
  errors: "replace",
  model_max_length: 77,
  pad_token: "!",
  tokenizer_class: "CLIPTokenizer",
  unk_token: "<|endoftext|>",
};

export const SPECIAL_TOKENS_MAP: Record<string, JsonValue> = {
  bos_token: {
    content: "<|startoftext|>",
    lstrip: false,
    normalized: true,
    rstrip: false,
    single_word: false,
  },
  eos_token: {
    content: "<|endoftext|>",
    lstrip: false,
    normalized: true,
    rstrip: false,
    single_word: false,
  },
  pad_token: "!",
  unk_token: {
    content: "<|endoftext|>",
    lstrip: false,
    normalized: true,
    rstrip: false,
    single_word: false,
  },
};
