// karlo-tfjs: the public API (`import { UnCLIPPipeline } from 'karlo-tfjs'`).
//
//   import { UnCLIPPipeline, initBackend, writePng, floatToRgb8 } from 'karlo-tfjs';
//   const pipe = await UnCLIPPipeline.load('path/to/karlo-v1-alpha');      // initialises a backend if none was chosen
//   const r = await pipe.generate(['a red frog'], { seed: 0 });
//   writePng('frog.png', floatToRgb8(r.images, r.shape, 0));
//
// Everything here is stable API; deeper modules (layers, parity kinds, native kernels) stay importable from the
// sources but may change between minor versions.

// Pipeline and its stages
export {
  UnCLIPPipeline, KARLO_PRESETS, UNCLIP_DEFAULTS, PIPELINE_STAGES,
  type PresetName, type PipelineStage, type StageTiming, type PipelineTimings, type Preview, type StageEvent,
  type GenerateOptions, type GenerateResult, type LoadOptions,
} from './pipeline/unclip_pipeline.js';
export { encodePrompt, type EncodePromptOptions } from './pipeline/encode_prompt.js';
export { runPrior, PRIOR_DEFAULTS, type PriorStageOptions } from './pipeline/prior_stage.js';
export { runDecoder, decoderConditioning, guidedModelOutput, DECODER_DEFAULTS, type DecoderStageOptions, type DecoderConditioning } from './pipeline/decoder_stage.js';
export { runSuperRes, SUPER_RES_DEFAULTS, type SuperResStageOptions, type SuperResLastSource } from './pipeline/super_res_stage.js';
export type { TextOutputs, StageName, StepCallback, StageOptions } from './pipeline/types.js';
export {
  UnCLIPImageVariationPipeline, VARIATION_DEFAULTS, VARIATION_STAGES,
  type VaryOptions, type VaryResult, type VariationSettings, type VariationStage, type ImageInput,
} from './pipeline/variation_pipeline.js';
export {
  interpolateText, interpolateImages, slerp, slerpProper, slerpDiffusers, torchLinspace, SLERP_MODES,
  type SlerpMode, type TextInterpolationOptions, type ImageInterpolationOptions, type InterpolationResult,
} from './pipeline/interpolation.js';

// Models take a typed config (xConfig(raw, source) fills defaults and rejects unknown fields); loadComponent reads
// a component folder (config.json + weights) into the model its kind names.
export { CLIPTextModelWithProjection, clipTextConfig, CLIP_TEXT_DEFAULTS, type CLIPTextConfig, type CLIPTextOutput } from './models/clip_text.js';
export { CLIPVisionModelWithProjection, clipVisionConfig, CLIP_VISION_DEFAULTS, type CLIPVisionConfig, type CLIPVisionOutput } from './models/clip_vision.js';
export { PriorTransformer, priorTransformerConfig, PRIOR_TRANSFORMER_DEFAULTS, type PriorTransformerConfig } from './models/prior_transformer.js';
export { UnCLIPTextProjModel, textProjConfig, TEXT_PROJ_DEFAULTS, type UnCLIPTextProjConfig, type TextProjInputs, type TextProjOutputs } from './models/text_proj.js';
export { UNet2DConditionModel, unet2dConditionConfig, UNET2D_CONDITION_DEFAULTS, type UNet2DConditionConfig, type UNetForwardOptions } from './models/unet2d_condition.js';
export { UNet2DModel, unet2dConfig, UNET2D_DEFAULTS, type UNet2DConfig } from './models/unet2d.js';
export {
  loadComponent, componentConfig, buildComponent, COMPONENT_KINDS,
  type ComponentKind, type ComponentConfig, type ComponentModel, type LoadComponentOptions,
} from './loading/load_component.js';
export { Module, ModuleList, formatLoadReport, type OutputHook, type LoadReport, type Parameter, type TensorSource } from './layers/module.js';

// Scheduler, generator, tokenizer
export {
  UnCLIPScheduler, UNCLIP_SCHEDULER_DEFAULTS,
  type UnCLIPSchedulerConfig, type UnCLIPStepOptions, type UnCLIPStepOutput, type UnCLIPVarianceType, type UnCLIPPredictionType,
} from './samplers/unclip_scheduler.js';
export { TorchGenerator, randnTensor, randTensor, TORCH_DEFAULT_SEED, type GeneratorState } from './random/generator.js';
export { CLIPTokenizer, BUNDLED_TOKENIZER_DIR, type EncodeOptions, type Encoding, type CLIPTokenizerOptions } from './tokenizer/clip_tokenizer.js';

// Backends
export {
  initBackend, requestedBackend, availableBackends, BackendUnavailableError, BACKEND_NAMES,
  type BackendName, type BackendChoice,
} from './backend/index.js';

// Files: model folders, weights, safetensors, PNG
export { openModelFolder, ModelFolderError, UNCLIP_COMPONENTS, UNCLIP_PIPELINE, VARIATION_PIPELINE, type ModelFolder, type ComponentName, type VariationComponentName } from './io/model_folder.js';
export { loadWeights, readConfig, readJson, findWeightsFile, type WeightsSource } from './io/weights.js';
export {
  SafetensorsFile, SafetensorsError, loadSafetensors, saveSafetensors,
  type SafetensorsDType, type TensorData, type TensorInfo, type TensorToWrite,
} from './io/safetensors.js';
export { encodePng, decodePng, readPng, writePng, floatToRgb8, type RawImage } from './io/png.js';
export { readImage, decodeImage, toRgb, ImageError, type RgbImage, type ImageReadOptions } from './io/image.js';
export {
  clipPreprocess, pilResizeBicubic, readClipProcessorConfig, clipProcessorConfig, CLIP_MEAN, CLIP_STD,
  type ClipProcessorConfig, type PreprocessMode, type Preprocessed,
} from './io/clip_preprocess.js';
export { inspectPath, type InspectResult, type InspectComponent, type InspectTensor } from './io/inspect.js';

// Parity
export { compareArrays, type Comparison } from './parity/compare.js';
// Internals research: attention capture, interventions, traces, attention maps, the run report (README "Looking inside Karlo").
export {
  Capture, makeHook, combineHooks, globMatcher, scaleHeads, zeroHeads, replaceWith, addDirection, type Edit,
} from './internals/interventions.js';
export { recordRun, estimateTrace, writeTrace, type TracedTensor, type TraceSelection, type TraceEstimate } from './internals/trace.js';
export { AttentionCollector, attentionPictures, drawAttentionMaps, type AttentionResult } from './internals/attention_maps.js';
export { ReportCollector } from './internals/report.js';
export { compareTraceFiles } from './parity/trace.js';
export { PARITY_KINDS, type ParityKind, type ParityOptions } from './parity/registry.js';

// Training (README "karlo train"): the loop `karlo train` runs, its optimizer, losses and LoRA. Gradients need
// registerGradients() once (the Node build of tfjs-core registers none).
export { registerGradients } from './backend/gradients.js';
export {
  train, TrainArgumentError, TRAIN_COMPONENTS,
  type TrainOptions, type TrainResult, type StepReport, type TrainComponent,
} from './training/trainer.js';
export { AdamW, ADAMW_DEFAULTS, type AdamWOptions, type AdamWState } from './training/adamw.js';
export {
  decoderLoss, superResLoss, priorLoss, textProjDecoderLoss, mse, weightedMse, minSnrWeights, valueAndGrads,
  type DecoderBatch, type SuperResBatch, type PriorBatch, type Timesteps,
} from './training/losses.js';
export { learnedRangeVlb } from './training/vlb.js';
export { WeightEma, emaDecayAt, type EmaState } from './training/ema.js';
export { applyLora, loadLoraFile, Lora, LORA_TARGETS, type LoraOptions } from './training/lora.js';

// Package facts
export { PACKAGE_VERSION, BUNDLED_MODEL_DIR, DEFAULT_MODEL_DIR } from './package_root.js';
