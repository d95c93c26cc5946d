// karlo-nano: the real Karlo component classes at tiny sizes, in the diffusers folder layout of
// kakaobrain/karlo-v1-alpha plus the image-variation extras (image_encoder/ + feature_extractor/), so every
// command (generate, vary, interpolate, inspect, parity hooks, train) runs on it unchanged.
//
// Sizes (chosen so that the whole training recipe fits the budget of 2 hours on 2 CPU cores and the folder
// stays under 20 MB in float16):
//   CLIP width D = 64 everywhere the real model has 768 (text hidden/projection, vision projection, the prior's
//   embedding_dim, text_proj's clip_embeddings_dim): the prior needs text hidden = projection = embedding_dim.
//   The full CLIP BPE vocabulary (49408 tokens) is kept, so any prompt tokenizes as it would for Karlo; its
//   embedding table is most of the text encoder (3.2 M of its parameters).
//   Decoder 32x32 (the size), super-res 32 -> 128 (4x, like Karlo's 64 -> 256).
export const NANO = {
  clipDim: 64,
  decoderSize: 32,
  superResSize: 128,
  /** Vision encoder input (CLIP preprocessing resizes to this). */
  visionSize: 32,
} as const;

const DIFFUSERS = '0.25.1';

export function nanoModelIndex(): Record<string, unknown> {
  return {
    _class_name: 'UnCLIPPipeline',
    _diffusers_version: DIFFUSERS,
    decoder: ['diffusers', 'UNet2DConditionModel'],
    decoder_scheduler: ['diffusers', 'UnCLIPScheduler'],
    prior: ['diffusers', 'PriorTransformer'],
    prior_scheduler: ['diffusers', 'UnCLIPScheduler'],
    super_res_first: ['diffusers', 'UNet2DModel'],
    super_res_last: ['diffusers', 'UNet2DModel'],
    super_res_scheduler: ['diffusers', 'UnCLIPScheduler'],
    text_encoder: ['transformers', 'CLIPTextModelWithProjection'],
    text_proj: ['unclip', 'UnCLIPTextProjModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    // UnCLIPImageVariationPipeline's extras (ignored by UnCLIPPipeline): the CLIP image tower the prior was trained on.
    image_encoder: ['transformers', 'CLIPVisionModelWithProjection'],
    feature_extractor: ['transformers', 'CLIPImageProcessor'],
  };
}

export function nanoTextEncoderConfig(): Record<string, unknown> {
  return {
    architectures: ['CLIPTextModelWithProjection'],
    attention_dropout: 0.0,
    bos_token_id: 49406,
    eos_token_id: 49407,
    hidden_act: 'quick_gelu',
    hidden_size: NANO.clipDim,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: 4 * NANO.clipDim,
    layer_norm_eps: 1e-5,
    max_position_embeddings: 77,
    model_type: 'clip_text_model',
    num_attention_heads: 4,
    num_hidden_layers: 3,
    pad_token_id: 1,
    projection_dim: NANO.clipDim,
    torch_dtype: 'float32',
    transformers_version: '4.37.0.dev0',
    vocab_size: 49408,
  };
}

export function nanoImageEncoderConfig(): Record<string, unknown> {
  return {
    architectures: ['CLIPVisionModelWithProjection'],
    attention_dropout: 0.0,
    hidden_act: 'quick_gelu',
    hidden_size: NANO.clipDim,
    image_size: NANO.visionSize,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: 4 * NANO.clipDim,
    layer_norm_eps: 1e-5,
    model_type: 'clip_vision_model',
    num_attention_heads: 4,
    num_channels: 3,
    num_hidden_layers: 3,
    patch_size: 4,
    projection_dim: NANO.clipDim,
    torch_dtype: 'float32',
    transformers_version: '4.37.0.dev0',
  };
}

export function nanoFeatureExtractorConfig(): Record<string, unknown> {
  return {
    crop_size: { height: NANO.visionSize, width: NANO.visionSize },
    do_center_crop: true,
    do_convert_rgb: true,
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_processor_type: 'CLIPImageProcessor',
    image_std: [0.26862954, 0.26130258, 0.27577711],
    resample: 3,
    rescale_factor: 0.00392156862745098,
    size: { shortest_edge: NANO.visionSize },
  };
}

export function nanoPriorConfig(): Record<string, unknown> {
  return {
    _class_name: 'PriorTransformer',
    _diffusers_version: DIFFUSERS,
    added_emb_type: 'prd',
    additional_embeddings: 4,
    attention_head_dim: 32,
    clip_embed_dim: null,
    dropout: 0.0,
    embedding_dim: NANO.clipDim,
    embedding_proj_dim: null,
    embedding_proj_norm_type: null,
    encoder_hid_proj_type: 'linear',
    norm_in_type: null,
    num_attention_heads: 4,
    num_embeddings: 77,
    num_layers: 4,
    time_embed_act_fn: 'silu',
    time_embed_dim: null,
  };
}

const DECODER_CHANNELS = [32, 64, 96];

export function nanoTextProjConfig(): Record<string, unknown> {
  return {
    _class_name: 'UnCLIPTextProjModel',
    _diffusers_version: DIFFUSERS,
    clip_embeddings_dim: NANO.clipDim,
    clip_extra_context_tokens: 4,
    cross_attention_dim: 128,
    time_embed_dim: 4 * DECODER_CHANNELS[0],
  };
}

export function nanoDecoderConfig(): Record<string, unknown> {
  return {
    _class_name: 'UNet2DConditionModel',
    _diffusers_version: DIFFUSERS,
    act_fn: 'silu',
    addition_embed_type: null,
    addition_embed_type_num_heads: 64,
    addition_time_embed_dim: null,
    attention_head_dim: 32,
    attention_type: 'default',
    block_out_channels: DECODER_CHANNELS,
    center_input_sample: false,
    class_embed_type: 'identity',
    class_embeddings_concat: false,
    conv_in_kernel: 3,
    conv_out_kernel: 3,
    cross_attention_dim: 128,
    cross_attention_norm: null,
    down_block_types: ['ResnetDownsampleBlock2D', 'SimpleCrossAttnDownBlock2D', 'SimpleCrossAttnDownBlock2D'],
    downsample_padding: 1,
    dropout: 0.0,
    dual_cross_attention: false,
    encoder_hid_dim: null,
    encoder_hid_dim_type: null,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 3,
    layers_per_block: 1,
    mid_block_only_cross_attention: null,
    mid_block_scale_factor: 1,
    mid_block_type: 'UNetMidBlock2DSimpleCrossAttn',
    norm_eps: 1e-5,
    norm_num_groups: 16,
    num_attention_heads: null,
    num_class_embeds: null,
    only_cross_attention: false,
    out_channels: 6,
    projection_class_embeddings_input_dim: null,
    resnet_out_scale_factor: 1.0,
    resnet_skip_time_act: false,
    resnet_time_scale_shift: 'scale_shift',
    reverse_transformer_layers_per_block: null,
    sample_size: NANO.decoderSize,
    time_cond_proj_dim: null,
    time_embedding_act_fn: null,
    time_embedding_dim: null,
    time_embedding_type: 'positional',
    timestep_post_act: null,
    transformer_layers_per_block: 1,
    up_block_types: ['SimpleCrossAttnUpBlock2D', 'SimpleCrossAttnUpBlock2D', 'ResnetUpsampleBlock2D'],
    upcast_attention: false,
    use_linear_projection: false,
  };
}

export function nanoSuperResConfig(): Record<string, unknown> {
  return {
    _class_name: 'UNet2DModel',
    _diffusers_version: DIFFUSERS,
    act_fn: 'silu',
    add_attention: false,
    attention_head_dim: 8,
    attn_norm_num_groups: null,
    block_out_channels: [16, 32, 64],
    center_input_sample: false,
    class_embed_type: null,
    down_block_types: ['ResnetDownsampleBlock2D', 'ResnetDownsampleBlock2D', 'ResnetDownsampleBlock2D'],
    downsample_padding: 1,
    downsample_type: 'conv',
    dropout: 0.0,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 6,
    layers_per_block: 1,
    mid_block_scale_factor: 1,
    norm_eps: 1e-5,
    norm_num_groups: 8,
    num_class_embeds: null,
    num_train_timesteps: null,
    out_channels: 3,
    resnet_time_scale_shift: 'default',
    sample_size: NANO.superResSize,
    time_embedding_type: 'positional',
    up_block_types: ['ResnetUpsampleBlock2D', 'ResnetUpsampleBlock2D', 'ResnetUpsampleBlock2D'],
    upsample_type: 'conv',
  };
}

/** Karlo's three schedulers (as kakaobrain/karlo-v1-alpha configures them). */
export function nanoSchedulerConfigs(): Record<'prior_scheduler' | 'decoder_scheduler' | 'super_res_scheduler', Record<string, unknown>> {
  const base = { _class_name: 'UnCLIPScheduler', _diffusers_version: DIFFUSERS, beta_schedule: 'squaredcos_cap_v2', clip_sample: true, num_train_timesteps: 1000 };
  return {
    prior_scheduler: { ...base, clip_sample_range: 5.0, prediction_type: 'sample', variance_type: 'fixed_small_log' },
    decoder_scheduler: { ...base, clip_sample_range: 1.0, prediction_type: 'epsilon', variance_type: 'learned_range' },
    super_res_scheduler: { ...base, clip_sample_range: 1.0, prediction_type: 'epsilon', variance_type: 'fixed_small_log' },
  };
}

export type NanoModelComponent = 'text_encoder' | 'image_encoder' | 'prior' | 'text_proj' | 'decoder' | 'super_res_first' | 'super_res_last';
export const NANO_MODEL_COMPONENTS: NanoModelComponent[] = ['text_encoder', 'image_encoder', 'prior', 'text_proj', 'decoder', 'super_res_first', 'super_res_last'];

export function nanoComponentConfig(name: NanoModelComponent): Record<string, unknown> {
  switch (name) {
    case 'text_encoder': return nanoTextEncoderConfig();
    case 'image_encoder': return nanoImageEncoderConfig();
    case 'prior': return nanoPriorConfig();
    case 'text_proj': return nanoTextProjConfig();
    case 'decoder': return nanoDecoderConfig();
    default: return nanoSuperResConfig();
  }
}
