// Stage 1 of the unCLIP pipeline: prompts → CLIP text outputs, as diffusers 0.25.1 UnCLIPPipeline._encode_prompt.
// Tokenise with padding to max_length (77) and truncation, run the text encoder WITHOUT the attention mask (the
// pipeline passes only input_ids: just the causal mask applies), repeat each prompt numImagesPerPrompt times, and
// for classifier-free guidance put the unconditional "" rows first.
import * as tf from '@tensorflow/tfjs-core';
import type { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import type { CLIPTextModelWithProjection } from '../models/clip_text.js';
import type { TextOutputs } from './types.js';

export interface EncodePromptOptions {
  numImagesPerPrompt?: number;
  doClassifierFreeGuidance?: boolean;
  /**
   * Precomputed text outputs for the prompts (diffusers' `text_model_output` + `text_attention_mask`, used by
   * interpolation): text_embeds [B, D], last_hidden_state [B, L, D], mask [B, L]. Not disposed here.
   */
  textModelOutput?: { textEmbeds: tf.Tensor2D; lastHiddenState: tf.Tensor3D; attentionMask: tf.Tensor2D };
  /** Where the truncation warning goes (default console.warn). */
  warn?: (message: string) => void;
}

/** repeat_interleave(n, dim=0) */
function repeatRows<T extends tf.Tensor>(x: T, n: number): T {
  if (n === 1) return tf.clone(x);
  const idx = tf.tensor1d(Array.from({ length: x.shape[0] * n }, (_, i) => Math.floor(i / n)), 'int32');
  const y = tf.gather(x, idx) as T;
  idx.dispose();
  return y;
}

/**
 * Returns TextOutputs with batch (CFG ? 2 : 1)·B·numImagesPerPrompt: [uncond ×B·n ; prompt₀ ×n, prompt₁ ×n, …].
 * The unconditional "" row is encoded once (its B·n copies are identical) in the same forward pass as the prompts.
 */
export function encodePrompt(
  tokenizer: CLIPTokenizer,
  textEncoder: CLIPTextModelWithProjection,
  prompts: string[],
  opts: EncodePromptOptions = {},
): TextOutputs {
  const n = opts.numImagesPerPrompt ?? 1;
  const cfg = opts.doClassifierFreeGuidance ?? true;
  if (!Number.isInteger(n) || n < 1) throw new Error(`encodePrompt: numImagesPerPrompt must be a positive integer, got ${n}`);
  if (!opts.textModelOutput && (!Array.isArray(prompts) || prompts.length === 0 || prompts.some((p) => typeof p !== 'string'))) {
    throw new Error('encodePrompt: prompts must be a non-empty array of strings');
  }
  const maxLength = tokenizer.modelMaxLength;
  const warn = opts.warn ?? ((m: string) => console.warn(m));

  if (!opts.textModelOutput) {
    const removed: string[] = [];
    for (const p of prompts) {
      const ids = tokenizer.encodeText(p);
      if (ids.length + 2 > maxLength) removed.push(tokenizer.decode(ids.slice(maxLength - 2)));
    }
    if (removed.length) {
      warn(`The following part of your input was truncated because CLIP can only handle sequences up to ${maxLength} tokens: ${JSON.stringify(removed)}`);
    }
  }

  return tf.tidy(() => {
    let embeds: tf.Tensor2D, hidden: tf.Tensor3D, mask: tf.Tensor2D;
    const B = opts.textModelOutput ? opts.textModelOutput.textEmbeds.shape[0] : prompts.length;
    const texts = [...(cfg ? [''] : []), ...(opts.textModelOutput ? [] : prompts)];
    if (!texts.length) {
      const t = opts.textModelOutput!;
      return { promptEmbeds: repeatRows(t.textEmbeds, n), textEncHiddenStates: repeatRows(t.lastHiddenState, n), textMask: repeatRows(tf.cast(t.attentionMask, 'int32') as tf.Tensor2D, n) };
    }
    const enc = tokenizer.encode(texts, { maxLength, padding: 'max_length', truncation: true });
    // An id past the embedding table would fail deep inside tfjs's GatherV2; say which files disagree instead.
    const vocab = textEncoder.config.vocab_size;
    const maxId = Math.max(...enc.inputIds.map((row) => Math.max(...row)));
    if (maxId >= vocab) {
      throw new Error(`encodePrompt: the tokenizer produced id ${maxId} but the text encoder's vocab_size is ${vocab}: the tokenizer and text_encoder folders do not belong together`);
    }
    const ids = tf.tensor2d(enc.inputIds, [texts.length, maxLength], 'int32');
    const allMask = tf.tensor2d(enc.attentionMask, [texts.length, maxLength], 'int32');
    // One forward for "" and the prompts; no attention mask, as the pipeline calls text_encoder(input_ids).
    const out = textEncoder.forward(ids);
    const off = cfg ? 1 : 0;
    if (opts.textModelOutput) {
      embeds = opts.textModelOutput.textEmbeds;
      hidden = opts.textModelOutput.lastHiddenState;
      mask = tf.cast(opts.textModelOutput.attentionMask, 'int32') as tf.Tensor2D;
    } else {
      embeds = tf.slice(out.textEmbeds, [off, 0], [B, -1]);
      hidden = tf.slice(out.lastHiddenState, [off, 0, 0], [B, -1, -1]);
      mask = tf.slice(allMask, [off, 0], [B, -1]);
    }
    const promptEmbeds = repeatRows(embeds, n);
    const textEncHiddenStates = repeatRows(hidden, n);
    const textMask = repeatRows(mask, n);
    if (!cfg) return { promptEmbeds, textEncHiddenStates, textMask };
    const uncond = {
      embeds: tf.slice(out.textEmbeds, [0, 0], [1, -1]),
      hidden: tf.slice(out.lastHiddenState, [0, 0, 0], [1, -1, -1]),
      mask: tf.slice(allMask, [0, 0], [1, -1]),
    };
    const m = B * n;
    return {
      promptEmbeds: tf.concat([repeatRows(uncond.embeds, m), promptEmbeds], 0) as tf.Tensor2D,
      textEncHiddenStates: tf.concat([repeatRows(uncond.hidden, m), textEncHiddenStates], 0) as tf.Tensor3D,
      textMask: tf.concat([repeatRows(uncond.mask, m), textMask], 0) as tf.Tensor2D,
    };
  });
}
