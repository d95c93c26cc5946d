// The run report (`karlo generate ... --report run.html`): one self-contained HTML page, every image inline as a
// PNG data URI, no scripts, no external resources:
//   - the prompts and provenance (model folder, seed, settings, backend, karlo version, date, command line);
//   - the final images;
//   - per stage: load and run time, steps, peak tensor memory (tf.memory().numBytes sampled after every step) and
//     the process's peak resident memory at the end of the stage;
//   - the prior's predicted image embedding at every step (the guided prediction, clipped like the scheduler and
//     de-normalised with clip_std/clip_mean): cosine to the final image embedding and to the prompt's CLIP text
//     embedding, as a plot;
//   - per denoising stage (decoder, super-res) the predicted x0 at every step as a strip:
//     x0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t, clipped to [−1, 1] (what the scheduler computes), shown as x0·0.5 + 0.5;
//   - the attention maps of `karlo attention` (src/internals/attention_maps.ts).
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { encodePng, type RawImage } from '../io/png.js';
import { createImage, drawLine, drawPolyline, drawText, fillRect, textWidth, type RGB } from '../io/raster.js';
import { findWeightsFile, readJson, safetensorsSource } from '../io/weights.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { UnCLIPScheduler } from '../samplers/unclip_scheduler.js';
import { PIPELINE_STAGES, UnCLIPPipeline, type GenerateOptions, type GenerateResult, type PipelineStage } from '../pipeline/unclip_pipeline.js';
import type { OutputHook } from '../layers/module.js';
import { PACKAGE_VERSION } from '../package_root.js';
import { AttentionCollector, attentionPictures, drawAttentionMaps } from './attention_maps.js';
import { combineHooks } from './interventions.js';

interface Strip { step: number; timestep: number; pngs: string[] }

interface StageMemory { tensorBytes: number; rssMB: number }

export interface ReportContext {
  prompts: string[];
  modelDir: string;
  command?: string;
}

const dataUri = (img: RawImage) => `data:image/png;base64,${encodePng(img).toString('base64')}`;

/** NCHW [n, 3, H, W] float in [−1, 1] → one RGB u8 image per row (x·0.5 + 0.5, clamped). */
function rowsToImages(x: tf.Tensor): RawImage[] {
  const [n, c, h, w] = x.shape;
  const d = x.dataSync();
  return Array.from({ length: n }, (_, i) => {
    const data = new Uint8Array(h * w * 3);
    for (let y = 0; y < h * w; y++) for (let k = 0; k < 3; k++) data[y * 3 + k] = Math.round(Math.min(1, Math.max(0, d[(i * c + k) * h * w + y] * 0.5 + 0.5)) * 255);
    return { width: w, height: h, channels: 3, data };
  });
}

/** x0 from an ε prediction (first `channels` channels of out), clipped to [−1, 1]. */
function x0FromEps(x: tf.Tensor4D, out: tf.Tensor4D, alphaBar: number): tf.Tensor {
  return tf.tidy(() => {
    const eps = tf.slice(out, [0, 0, 0, 0], [-1, x.shape[1], -1, -1]);
    return tf.clipByValue(tf.div(tf.sub(x, tf.mul(eps, Math.sqrt(1 - alphaBar))), Math.sqrt(alphaBar)), -1, 1);
  });
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) { ab += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i]; }
  return ab / Math.sqrt(aa * bb);
}

/**
 * Collects what the report shows during one UnCLIPPipeline.generate call: wrap the call's options with
 * `options(...)`, run, then `html(result)`.
 */
export class ReportCollector {
  /** Predicted x0 per step, one PNG data URI per image. */
  readonly strips: Record<'decoder' | 'super_res', Strip[]> = { decoder: [], super_res: [] };
  private readonly priorPred: Float32Array[] = [];
  private imageEmbeds: Float32Array | null = null;
  private textEmbeds: Float32Array | null = null;
  private readonly memory = {} as Record<PipelineStage, StageMemory>;
  private current: PipelineStage | null = null;
  private readonly attention: AttentionCollector;
  private readonly settings: GenerateResult['settings'];
  private readonly alphaBar: Record<'prior' | 'decoder' | 'super_res', Float32Array>;
  private readonly priorClip: number | null;
  private readonly clipMean: Float32Array;
  private readonly clipStd: Float32Array;
  private readonly extra: number;
  readonly images: number;

  constructor(private readonly pipe: UnCLIPPipeline, private readonly ctx: ReportContext, gen: GenerateOptions) {
    this.settings = UnCLIPPipeline.resolveSettings(gen);
    this.images = ctx.prompts.length * this.settings.numImagesPerPrompt;
    const dirs = pipe.folder.dirs;
    const sch = (d: string) => UnCLIPScheduler.fromDir(d);
    const prior = sch(dirs.prior_scheduler);
    this.alphaBar = { prior: prior.alphasCumprod, decoder: sch(dirs.decoder_scheduler).alphasCumprod, super_res: sch(dirs.super_res_scheduler).alphasCumprod };
    this.priorClip = prior.config.clip_sample ? prior.config.clip_sample_range : null;
    const src = safetensorsSource(findWeightsFile(dirs.prior));
    try {
      this.clipMean = src.read('clip_mean').data as Float32Array;
      this.clipStd = src.read('clip_std').data as Float32Array;
    } finally {
      src.close();
    }
    const tp = readJson<Record<string, unknown>>(path.join(dirs.text_proj, 'config.json'));
    this.extra = typeof tp.clip_extra_context_tokens === 'number' ? tp.clip_extra_context_tokens : 4;
    this.attention = new AttentionCollector(this.images, pipe.dims.decoderSize, this.extra + 77);
  }

  private sample(): void {
    if (!this.current) return;
    const m = (this.memory[this.current] ??= { tensorBytes: 0, rssMB: 0 });
    m.tensorBytes = Math.max(m.tensorBytes, tf.memory().numBytes);
  }

  /** The call's options with the report's callbacks and hooks added (the given ones still run). */
  options(gen: GenerateOptions): GenerateOptions {
    const n = this.images;
    const predHook: OutputHook = (_p, t) => { this.priorPred.push(t.dataSync().slice() as Float32Array); };
    predHook.wants = (p) => p === 'predicted_image_embedding';
    const hooks = gen.outputHooks ?? {};
    return {
      ...gen,
      outputHooks: {
        ...hooks,
        prior: combineHooks(hooks.prior, predHook, this.attention.outputHooks.prior),
        decoder: combineHooks(hooks.decoder, this.attention.outputHooks.decoder),
      },
      onStage: (e) => {
        if (e.phase === 'run') this.current = e.stage;
        if (e.phase === 'done') {
          this.sample();
          const m = (this.memory[e.stage] ??= { tensorBytes: 0, rssMB: 0 });
          m.rssMB = process.resourceUsage().maxRSS / 1024;
          this.current = null;
        }
        gen.onStage?.(e);
      },
      onStep: (info) => { this.sample(); gen.onStep?.(info); },
      onIntermediate: (name, t) => {
        if (name === 'image_embeddings') this.imageEmbeds = t.dataSync().slice() as Float32Array;
        if (name === 'prompt_embeds') {
          const d = t.dataSync();
          const D = t.shape[1]!;
          // With guidance the unconditional rows come first.
          this.textEmbeds = d.slice(t.shape[0] === 2 * n ? n * D : 0, (t.shape[0] === 2 * n ? 2 * n : n) * D) as Float32Array;
        }
        return gen.onIntermediate?.(name, t);
      },
      stageOptions: {
        ...gen.stageOptions,
        decoder: {
          ...gen.stageOptions?.decoder,
          onModelOutput: (i) => {
            const x0 = x0FromEps(i.sampleIn, i.modelOutput, this.alphaBar.decoder[i.timestep]);
            this.strips.decoder.push({ step: i.step, timestep: i.timestep, pngs: rowsToImages(x0).map(dataUri) });
            x0.dispose();
            gen.stageOptions?.decoder?.onModelOutput?.(i);
          },
        },
        super_res: {
          ...gen.stageOptions?.super_res,
          onModelOutput: (i) => {
            const x0 = x0FromEps(i.sampleIn, i.output, this.alphaBar.super_res[i.timestep]);
            this.strips.super_res.push({ step: i.step, timestep: i.timestep, pngs: rowsToImages(x0).map(dataUri) });
            x0.dispose();
            gen.stageOptions?.super_res?.onModelOutput?.(i);
          },
        },
      },
    };
  }

  /** Per image: the prior's predicted embedding per step, de-normalised; cosine to the final and to the text. */
  priorCosines(): { toFinal: number[]; toText: number[] }[] {
    const n = this.images, s = this.settings.priorGuidance;
    const out = Array.from({ length: n }, () => ({ toFinal: [] as number[], toText: [] as number[] }));
    const D = this.clipMean.length;
    for (const pred of this.priorPred) {
      const rows = pred.length / D;
      const cfg = rows === 2 * n;
      for (let i = 0; i < n; i++) {
        const e = new Float32Array(D);
        for (let j = 0; j < D; j++) {
          let v = cfg ? pred[i * D + j] + s * (pred[(n + i) * D + j] - pred[i * D + j]) : pred[i * D + j];
          if (this.priorClip !== null) v = Math.min(this.priorClip, Math.max(-this.priorClip, v));
          e[j] = v * this.clipStd[j] + this.clipMean[j];
        }
        if (this.imageEmbeds) out[i].toFinal.push(cosine(e, this.imageEmbeds.subarray(i * D, (i + 1) * D)));
        if (this.textEmbeds) out[i].toText.push(cosine(e, this.textEmbeds.subarray(i * D, (i + 1) * D)));
      }
    }
    return out;
  }

  /** The page. Frees the collector's tensors. */
  html(result: GenerateResult): string {
    const { prompts } = this.ctx;
    const per = this.settings.numImagesPerPrompt;
    const [n, h, w] = result.shape;
    const finals: string[] = [];
    for (let i = 0; i < n; i++) {
      const data = new Uint8Array(h * w * 3);
      for (let j = 0; j < h * w * 3; j++) data[j] = Math.round(Math.min(1, Math.max(0, result.images[i * h * w * 3 + j])) * 255);
      finals.push(dataUri({ width: w, height: h, channels: 3, data }));
    }
    const tok = CLIPTokenizer.fromDir(this.pipe.folder.dirs.tokenizer);
    const att = this.attention.result();
    this.attention.dispose();
    const maps = attentionPictures(tok, prompts, per, this.extra, att, result.images, result.shape).map((p) => dataUri(drawAttentionMaps(p)));
    const cos = this.priorCosines();
    const promptOf = (i: number) => prompts[Math.floor(i / per)];
    const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
    const img = (src: string, alt: string, width: number, height = width, cls = '') => `<img src="${src}" alt="${esc(alt)}" width="${width}" height="${height}"${cls ? ` class="${cls}"` : ''}>`;
    const t = result.timings;
    const mb = (b: number) => (b / 2 ** 20).toFixed(b < 2 ** 20 ? 3 : 1);
    const label: Record<PipelineStage, string> = { text: 'text encoder', prior: 'prior', decoder: 'decoder', super_res: 'super-res' };
    const rows = PIPELINE_STAGES.map((s) => {
      const x = t.stages[s], m = this.memory[s];
      return `<tr><td>${label[s]}</td><td>${x.loadSeconds.toFixed(2)}</td><td>${x.runSeconds.toFixed(2)}</td><td>${x.steps}</td><td>${x.secondsPerStep.toFixed(3)}</td><td>${m ? mb(m.tensorBytes) : '–'}</td><td>${m ? m.rssMB.toFixed(0) : '–'}</td></tr>`;
    }).join('\n');
    const strip = (stage: 'decoder' | 'super_res', i: number) => {
      const s = this.strips[stage];
      if (!s.length) return '';
      return `<div class="strip">${s.map((x) => `<figure>${img(x.pngs[i], `${stage} predicted x0, step ${x.step}`, 96, 96, 'px')}<figcaption>${x.step} · t=${x.timestep}</figcaption></figure>`).join('')}</div>`;
    };
    const provenance: [string, string][] = [
      ['model', path.resolve(this.ctx.modelDir)],
      ['seed', result.seed !== undefined ? result.seed.toString() : '(generator given)'],
      ['steps (prior / decoder / super-res)', `${result.settings.priorSteps} / ${result.settings.decoderSteps} / ${result.settings.superResSteps}`],
      ['guidance (prior / decoder)', `${result.settings.priorGuidance} / ${result.settings.decoderGuidance}`],
      ['images per prompt', String(per)],
      ['backend', t.backend],
      ['karlo-tfjs', PACKAGE_VERSION],
      ['date', new Date().toISOString()],
      ...(this.ctx.command ? [['command', this.ctx.command] as [string, string]] : []),
    ];
    const sections = Array.from({ length: n }, (_, i) => `
<section>
<h2>Image ${i}: “${esc(promptOf(i))}”</h2>
<div class="final">${img(finals[i], `generated image ${i}`, Math.max(256, w), Math.max(256, w) * (h / w), 'px')}</div>
<h3>Prior: predicted image embedding per step</h3>
<p>Cosine of the guided prediction at each step (clipped and de-normalised as the scheduler does) to the final image embedding and to the prompt's CLIP text embedding.</p>
${img(dataUri(cosinePlot(cos[i])), `prior cosine plot, image ${i}`, 440, 220)}
<h3>Decoder: predicted x0 per step</h3>
${strip('decoder', i)}
<h3>Super-res: predicted x0 per step</h3>
${strip('super_res', i)}
<h3>Attention</h3>
<p>Decoder: mean attention mass per pixel on each token (mean over heads, layers and steps, each map scaled to its maximum). Prior: attention of the prd token.</p>
<img src="${maps[i]}" alt="attention maps, image ${i}" class="maps">
</section>`).join('\n');
    return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Karlo run report</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.px{image-rendering:pixelated}.strip{display:flex;flex-wrap:wrap;gap:6px}figure{margin:0;text-align:center;font-size:11px}
.maps{max-width:100%;height:auto}section{border-top:2px solid #ddd;margin-top:24px}
</style></head><body>
<h1>Karlo run report</h1>
<p>${prompts.map((p) => `“${esc(p)}”`).join('<br>')}</p>
<table>${provenance.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>
<h2>Stages</h2>
<table><tr><th>stage</th><th>load s</th><th>run s</th><th>steps</th><th>s/step</th><th>peak tensor MB</th><th>peak RSS MB (process, at stage end)</th></tr>
${rows}
<tr><td>all</td><td colspan="6">${t.totalSeconds.toFixed(2)} s</td></tr></table>
${sections}
</body></html>
`;
  }

  dispose(): void {
    this.attention.dispose();
  }
}

/** A small line plot of the two cosine series over the prior's steps. */
export function cosinePlot(c: { toFinal: number[]; toText: number[] }): RawImage {
  const W = 440, H = 220, left = 44, right = 12, top = 26, bottom = 34;
  const img = createImage(W, H);
  const all = [...c.toFinal, ...c.toText].filter(Number.isFinite);
  const lo = Math.min(0, ...all), hi = 1;
  const steps = Math.max(c.toFinal.length, c.toText.length, 2);
  const X = (i: number) => left + Math.round((i / (steps - 1)) * (W - left - right));
  const Y = (v: number) => top + Math.round(((hi - v) / (hi - lo)) * (H - top - bottom));
  const ink: RGB = [30, 30, 30];
  drawLine(img, left, top, left, H - bottom, ink);
  drawLine(img, left, H - bottom, W - right, H - bottom, ink);
  const ticks = lo < 0 ? [lo, 0, 0.5, 1] : [0, 0.25, 0.5, 0.75, 1];
  for (const v of ticks) {
    drawLine(img, left - 3, Y(v), left, Y(v), ink);
    drawLine(img, left + 1, Y(v), W - right, Y(v), [225, 225, 225]);
    drawText(img, left - 6, Y(v) - 4, v.toFixed(2), ink, { align: 'right' });
  }
  for (let i = 0; i < steps; i += Math.max(1, Math.ceil(steps / 10))) drawText(img, X(i), H - bottom + 6, String(i), ink, { align: 'center' });
  drawText(img, (left + W - right) / 2, H - 12, 'prior step', ink, { align: 'center' });
  const series: [number[], RGB, string][] = [[c.toFinal, [59, 82, 139], 'cos to final embedding'], [c.toText, [220, 110, 30], 'cos to text embedding']];
  let lx = left + 6;
  for (const [vals, col, name] of series) {
    drawPolyline(img, vals.map((v, i) => [X(i), Y(v)] as const), col, { width: 2 });
    for (let i = 0; i < vals.length; i++) fillRect(img, X(i) - 2, Y(vals[i]) - 2, 5, 5, col);
    fillRect(img, lx, 8, 10, 10, col);
    drawText(img, lx + 14, 9, name, ink);
    lx += 14 + textWidth(name) + 16;
  }
  return img;
}
