// Image variation, equal to diffusers 0.25.1 UnCLIPImageVariationPipeline.__call__ (Karlo's "image variation"):
//   image → CLIPImageProcessor → CLIP vision encoder → image_embeds (used as they are, no normalisation),
//   the empty prompt "" through the text encoder for BOTH classifier-free-guidance halves (they differ only by
//   text_proj's learned null image embedding), then text_proj + decoder + super-res exactly as UnCLIPPipeline.
// No prior. The decoder and super-res half, the stage runner (stage-wise loading, callbacks, previews, timings,
// memory scopes) and the generator handling are unclip_pipeline.ts's; this file only adds the image stage.
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { openModelFolder, VARIATION_PIPELINE, type ModelFolder, type VariationComponentName } from '../io/model_folder.js';
import { readImage, type RgbImage } from '../io/image.js';
import { clipPreprocess, readClipProcessorConfig, type PreprocessMode } from '../io/clip_preprocess.js';
import { readJson } from '../io/weights.js';
import { clipVisionConfig } from '../models/clip_vision.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import type { TorchGenerator } from '../random/generator.js';
import { encodePrompt } from './encode_prompt.js';
import { checkModelFolder } from './check_folder.js';
import {
  PipelineRun, StagedPipeline, callGenerator, ensureBackend, checkGuidance, checkShape, checkSteps, decodeAndUpscale, decodeDims,
  type DecodeDims, type GenerateOptions, type LoadOptions, type PipelineTimings, type RunHooks, type StageTiming,
} from './unclip_pipeline.js';
import type { StageName, StageOptions, TextOutputs } from './types.js';
import { MemoryEstimateError, defaultMemoryBound, estimateGenerateMemory, memoryRefusal } from './memory_estimate.js';
import { loadComponent } from '../loading/load_component.js';

/** The stages of a variation call, in order (diffusers encodes the prompt first): text encoder (""), image encoder, decoder, super-res. */
export type VariationStage = 'image' | 'text' | 'decoder' | 'super_res';
export const VARIATION_STAGES: VariationStage[] = ['text', 'image', 'decoder', 'super_res'];

/** UnCLIPImageVariationPipeline.__call__ defaults. */
export const VARIATION_DEFAULTS = { decoderSteps: 25, superResSteps: 7, decoderGuidance: 8 } as const;

export interface VaryOptions extends RunHooks<VariationStage> {
  /** Images per input image (num_images_per_prompt). */
  numImagesPerPrompt?: number;
  /** Refuse a call whose estimated peak memory (memory_estimate.ts) is above this; default: physical memory. */
  maxMemoryBytes?: number;
  decoderSteps?: number;
  superResSteps?: number;
  decoderGuidance?: number;
  /** 'clip' (default): CLIPImageProcessor as the feature_extractor folder configures it; 'karlo': Karlo's own sampler. */
  preprocess?: PreprocessMode;
  seed?: number | bigint;
  generator?: TorchGenerator;
  /** Explicit initial latents (not disposed): decoder [B·n, C, H, W], super-res [B·n, C', H', W']. */
  decoderLatents?: tf.Tensor;
  superResLatents?: tf.Tensor;
  noiseForStep?: Partial<Record<StageName, StageOptions['noiseForStep']>>;
  /**
   * Precomputed CLIP image embeddings [B, D] (diffusers' `image_embeddings` argument): the image encoder is not run
   * and `images` may be empty. Not disposed.
   */
  imageEmbeddings?: tf.Tensor2D;
  stageOptions?: Pick<NonNullable<GenerateOptions['stageOptions']>, 'decoder' | 'super_res'>;
}

export interface VariationSettings {
  numImagesPerPrompt: number;
  decoderSteps: number;
  superResSteps: number;
  decoderGuidance: number;
  preprocess: PreprocessMode;
}

export interface VariationTimings extends Omit<PipelineTimings, 'stages'> {
  stages: Record<VariationStage, StageTiming>;
}

export interface VaryResult {
  /** NHWC float32 in [0, 1], like output_type="np" (input-major: image 0's variations first). */
  images: Float32Array;
  shape: [number, number, number, number];
  seed?: bigint;
  timings: VariationTimings;
  settings: VariationSettings;
}

/** Images as given: decoded RGB, or file paths (PNG/JPEG, read and checked here). */
export type ImageInput = RgbImage | string;

export async function toRgbImages(images: ImageInput[]): Promise<RgbImage[]> {
  const out: RgbImage[] = [];
  for (const im of images) out.push(typeof im === 'string' ? await readImage(im) : im);
  return out;
}

export class UnCLIPImageVariationPipeline extends StagedPipeline<VariationComponentName> {
  /** CLIP embedding size (the image encoder's projection_dim) and the decoder/super-res shapes. */
  readonly dims: { embeddingDim: number; imageSize: number } & DecodeDims;

  private constructor(folder: ModelFolder<VariationComponentName>, opts: LoadOptions) {
    super(folder, opts);
    const file = path.join(folder.dirs.image_encoder, 'config.json');
    const vc = clipVisionConfig(readJson<Record<string, unknown>>(file), file);
    this.dims = { embeddingDim: vc.projection_dim, imageSize: vc.image_size, ...decodeDims(folder.dirs) };
  }

  /**
   * Opens an UnCLIPImageVariationPipeline folder (kakaobrain/karlo-v1-alpha-image-variations layout: the text-to-
   * image components without the prior, plus image_encoder/ and feature_extractor/). ModelFolderError otherwise.
   */
  static async load(dir: string, opts: LoadOptions = {}): Promise<UnCLIPImageVariationPipeline> {
    const folder = openModelFolder(dir, VARIATION_PIPELINE);
    if (opts.check !== false) checkModelFolder(folder, VARIATION_PIPELINE.components);
    const pipe = new UnCLIPImageVariationPipeline(folder, opts);
    await ensureBackend(opts);
    return pipe;
  }

  static resolveSettings(opts: VaryOptions): VariationSettings {
    const n = opts.numImagesPerPrompt ?? 1;
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`numImagesPerPrompt must be a positive integer, got ${n}`);
    const preprocess = opts.preprocess ?? 'clip';
    if (preprocess !== 'clip' && preprocess !== 'karlo') throw new RangeError(`preprocess must be "clip" or "karlo", got ${JSON.stringify(preprocess)}`);
    return {
      numImagesPerPrompt: n,
      decoderSteps: checkSteps('decoderSteps', opts.decoderSteps ?? VARIATION_DEFAULTS.decoderSteps),
      superResSteps: checkSteps('superResSteps', opts.superResSteps ?? VARIATION_DEFAULTS.superResSteps),
      decoderGuidance: checkGuidance('decoderGuidance', opts.decoderGuidance ?? VARIATION_DEFAULTS.decoderGuidance),
      preprocess,
    };
  }

  /**
   * The image stage inside a run: preprocess (captured as `pixel_values`), the CLIP vision encoder
   * (`image_encoder_image_embeds`). Returns image_embeds [B, D], owned by the caller.
   */
  async encodeImages(run: PipelineRun<VariationStage>, images: RgbImage[], mode: PreprocessMode): Promise<tf.Tensor2D> {
    const dirs = this.folder.dirs;
    const embeds = await run.stage('image', 1, {
      feature_extractor: () => readClipProcessorConfig(dirs.feature_extractor),
      image_encoder: () => loadComponent(dirs.image_encoder, 'CLIPVisionModelWithProjection'),
    }, (p) => {
      const S = this.dims.imageSize;
      const pre = images.map((im) => clipPreprocess(im, p.feature_extractor, mode));
      for (const [i, r] of pre.entries()) {
        if (r.shape[2] !== S || r.shape[3] !== S) {
          throw new Error(`${dirs.feature_extractor}: the processor makes ${r.shape[3]}x${r.shape[2]} pixel values (image ${i}) but the image encoder takes ${S}x${S}`);
        }
      }
      const data = new Float32Array(pre.length * 3 * S * S);
      pre.forEach((r, i) => data.set(r.pixelValues, i * 3 * S * S));
      // a replacement from onIntermediate is a kept copy: freed here after use
      const pixels = run.capture('pixel_values', tf.tensor4d(data, [pre.length, 3, S, S]));
      const out = p.image_encoder.forward(pixels);
      tf.dispose([pixels, out.lastHiddenState, out.poolerOutput, ...out.hiddenStates]);
      return out.imageEmbeds;
    });
    return run.capture('image_encoder_image_embeds', embeds);
  }

  /**
   * Variations of each image, as UnCLIPImageVariationPipeline(image, num_images_per_prompt,
   * decoder/super_res_num_inference_steps, generator, decoder_latents, super_res_latents, decoder_guidance_scale,
   * output_type="np"). `images` are decoded RGB images or PNG/JPEG paths.
   */
  async vary(images: ImageInput[], opts: VaryOptions = {}): Promise<VaryResult> {
    const settings = UnCLIPImageVariationPipeline.resolveSettings(opts);
    if (!Array.isArray(images)) throw new TypeError('images must be an array of images or file paths');
    if (opts.imageEmbeddings) {
      checkShape('imageEmbeddings', opts.imageEmbeddings, [opts.imageEmbeddings.shape[0], this.dims.embeddingDim]);
    } else if (images.length === 0) {
      throw new TypeError('give at least one image (or imageEmbeddings)');
    }
    const rgb = opts.imageEmbeddings ? [] : await toRgbImages(images);
    const B = opts.imageEmbeddings ? opts.imageEmbeddings.shape[0] : rgb.length;
    const batch = B * settings.numImagesPerPrompt;
    // Memory the call needs, before the stages allocate (issue 18 item 7).
    const refusal = memoryRefusal(estimateGenerateMemory(this.folder.root, { prompts: B, numImagesPerPrompt: settings.numImagesPerPrompt, decoderGuidance: settings.decoderGuidance },
      VARIATION_PIPELINE as never), opts.maxMemoryBytes ?? defaultMemoryBound(), 'the maxMemoryBytes option');
    if (refusal) throw new MemoryEstimateError(refusal);
    const d = this.dims;
    checkShape('decoderLatents', opts.decoderLatents, [batch, d.decoderChannels, d.decoderSize, d.decoderSize]);
    checkShape('superResLatents', opts.superResLatents, [batch, d.superResChannels, d.superResSize, d.superResSize]);
    const { generator, seed } = callGenerator(opts);
    const doCfg = settings.decoderGuidance > 1;
    const run = new PipelineRun<VariationStage>(this, opts);
    const { images: out, shape } = await this.decodeFromEmbeddings(run, B, settings, generator, opts, async () => {
      if (opts.imageEmbeddings) return tf.clone(opts.imageEmbeddings);
      return this.encodeImages(run, rgb, settings.preprocess);
    }, doCfg);
    return { images: out, shape, seed, settings, timings: run.timings() as unknown as VariationTimings };
  }

  /**
   * The rest of a variation call once the image embeddings [B, D] can be had from `embed` (the image stage, or
   * an interpolation of embeddings): "" prompts for both CFG halves, repeat_interleave(n), decoder, super-res.
   */
  async decodeFromEmbeddings(
    run: PipelineRun<VariationStage>, B: number, settings: Pick<VariationSettings, 'numImagesPerPrompt' | 'decoderSteps' | 'superResSteps' | 'decoderGuidance'>,
    generator: TorchGenerator, opts: Pick<VaryOptions, 'decoderLatents' | 'superResLatents' | 'noiseForStep' | 'stageOptions'>,
    embed: () => Promise<tf.Tensor2D>, doCfg: boolean,
  ): Promise<{ images: Float32Array; shape: [number, number, number, number] }> {
    const dirs = this.folder.dirs;
    const n = settings.numImagesPerPrompt;
    let text: TextOutputs | undefined;
    let embeds: tf.Tensor2D | undefined;
    let imageEmbeddings: tf.Tensor2D | undefined;
    try {
      // diffusers encodes the prompt first, then the image; neither draws random numbers.
      text = await run.stage('text', 1, {
        tokenizer: () => CLIPTokenizer.fromDir(dirs.tokenizer),
        text_encoder: () => loadComponent(dirs.text_encoder, 'CLIPTextModelWithProjection'),
      }, (p) => encodePrompt(p.tokenizer, p.text_encoder, new Array<string>(B).fill(''), {
        numImagesPerPrompt: n, doClassifierFreeGuidance: doCfg,
      }) as TextOutputs & tf.TensorContainer);
      text.promptEmbeds = run.capture('prompt_embeds', text.promptEmbeds);
      text.textEncHiddenStates = run.capture('text_enc_hid_states', text.textEncHiddenStates);
      text.textMask = run.capture('text_mask', text.textMask);

      embeds = await embed();
      if (embeds.rank !== 2 || embeds.shape[0] !== B || embeds.shape[1] !== this.dims.embeddingDim) {
        throw new Error(`image embeddings have shape [${embeds.shape}], expected [${B}, ${this.dims.embeddingDim}]`);
      }
      imageEmbeddings = tf.tidy(() => (n === 1 ? tf.clone(embeds!) : tf.gather(embeds!, tf.tensor1d(Array.from({ length: B * n }, (_, i) => Math.floor(i / n)), 'int32')))) as tf.Tensor2D;
      imageEmbeddings = run.capture('image_embeddings', imageEmbeddings);

      return await decodeAndUpscale(this, dirs, run, {
        text, imageEmbeddings, classifierFreeGuidance: doCfg,
        decoderSteps: settings.decoderSteps, superResSteps: settings.superResSteps, decoderGuidance: settings.decoderGuidance,
        generator, decoderLatents: opts.decoderLatents, superResLatents: opts.superResLatents,
        noiseForStep: opts.noiseForStep, stageOptions: opts.stageOptions,
        afterDecoder: () => {
          tf.dispose([text!.promptEmbeds, text!.textEncHiddenStates, text!.textMask, imageEmbeddings!]);
          text = undefined;
          imageEmbeddings = undefined;
        },
      });
    } finally {
      const left: tf.Tensor[] = [];
      if (text) left.push(text.promptEmbeds, text.textEncHiddenStates, text.textMask);
      for (const t of [embeds, imageEmbeddings]) if (t) left.push(t);
      tf.dispose(left);
    }
  }
}
