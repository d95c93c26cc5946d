// Measured quality of a model on the nano world: generate an image for each held-out caption (captions that never
// occur in training: src/nano/world.ts), read it with the deterministic analyser (analyse.ts), and score
//   one-shape captions   colour accuracy (the largest shape's colour), shape accuracy (its shape), count == 1
//   two-shape captions   count accuracy (exactly two shapes), and both shapes right (colour and shape, any order)
//   CLIP-score           mean cosine of CLIP text and image embeddings, matched caption vs a shuffled caption
//                        (needs the folder's image_encoder/ + feature_extractor/; "n/a" without them)
// The held-out scenes are made from the seed (no data folder needed), indexed as tools/nano-data writes them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { floatToRgb8 } from '../io/png.js';
import { UnCLIPPipeline } from '../pipeline/unclip_pipeline.js';
import { analyseImage, type Analysis } from './analyse.js';
import { heldOutTriples, makeScene, shapesKey, type Scene } from './world.js';
import { renderScene, type RgbU8 } from './render.js';

export interface NanoEvalOptions {
  model: string;
  /** World seed (the held-out split); default 0. */
  seed?: number;
  single?: number;
  double?: number;
  /** Prompts per pipeline call. */
  batch?: number;
  /** Generation seed of the first batch (batch k uses genSeed + k). */
  genSeed?: number;
  priorSteps?: number;
  decoderSteps?: number;
  superResSteps?: number;
  priorGuidance?: number;
  decoderGuidance?: number;
  /**
   * 'render': score the world's own renderings of the captions instead of generated images (the ceiling: the
   * analyser's verdicts are all right; the CLIP-score is that of real images). Default 'generate'.
   */
  source?: 'generate' | 'render';
  /** Called with every generated image and its verdict (e.g. to write a contact sheet). */
  onImage?: (i: number, scene: Scene, img: RgbU8, a: Analysis) => void;
  log?: (line: string) => void;
}

export interface Rate { correct: number; n: number; rate: number }

export interface NanoEvalReport {
  model: string;
  source: 'generate' | 'render';
  settings: { seed: number; genSeed: number; priorSteps: number; decoderSteps: number; superResSteps: number; priorGuidance: number; decoderGuidance: number };
  single: { colour: Rate; shape: Rate; count: Rate; both: Rate };
  double: { count: Rate; content: Rate };
  clipScore: { matched: number; shuffled: number; n: number } | null;
  imageSize: number;
  seconds: number;
}

export const NANO_EVAL_DEFAULTS = {
  seed: 0, single: 200, double: 100, batch: 10, genSeed: 1000,
  priorSteps: 25, decoderSteps: 25, superResSteps: 7, priorGuidance: 4, decoderGuidance: 8,
} as const;

function rate(correct: number, n: number): Rate {
  return { correct, n, rate: n ? correct / n : NaN };
}

/**
 * The verdicts for one scene. One shape: colour and shape of the largest found shape (specks and extra blobs do
 * not hide a right main shape; the count verdict sees them). Several shapes: the colours (and the shapes) of the
 * n largest found shapes, as multisets, equal the caption's (n = the caption's count).
 */
export function judge(scene: Pick<Scene, 'shapes'>, a: Analysis): { colour: boolean; shape: boolean; count: boolean; content: boolean } {
  const n = scene.shapes.length;
  const top = a.shapes.slice(0, n);
  const ms = (xs: string[]) => [...xs].sort().join('|');
  const got = a.shapes.map((f) => `${f.colour} ${f.shape}`).sort().join('|');
  return {
    colour: top.length === n && ms(top.map((f) => f.colour)) === ms(scene.shapes.map((x) => x.colour)),
    shape: top.length === n && ms(top.map((f) => f.shape)) === ms(scene.shapes.map((x) => x.shape)),
    count: a.count === n,
    content: got === shapesKey({ shapes: scene.shapes }),
  };
}

/** The held-out evaluation scenes of a world seed: `single` one-shape scenes, then `double` two-shape scenes. */
export function evalScenes(seed: number, single: number, double: number): Scene[] {
  const held = heldOutTriples(seed);
  const out: Scene[] = [];
  for (let i = 0; i < single; i++) out.push(makeScene(seed, 'heldout', i, { held, count: 1 }));
  for (let i = 0; i < double; i++) out.push(makeScene(seed, 'heldout', single + i, { held, count: 2 }));
  return out;
}

/** Generates and scores; the model folder is any UnCLIPPipeline folder (with image_encoder/ for the CLIP-score). */
export async function evaluateNano(o: NanoEvalOptions): Promise<NanoEvalReport> {
  const t0 = performance.now();
  const d = NANO_EVAL_DEFAULTS;
  const s = {
    seed: o.seed ?? d.seed, genSeed: o.genSeed ?? d.genSeed,
    priorSteps: o.priorSteps ?? d.priorSteps, decoderSteps: o.decoderSteps ?? d.decoderSteps, superResSteps: o.superResSteps ?? d.superResSteps,
    priorGuidance: o.priorGuidance ?? d.priorGuidance, decoderGuidance: o.decoderGuidance ?? d.decoderGuidance,
  };
  const nSingle = o.single ?? d.single, nDouble = o.double ?? d.double;
  const batch = o.batch ?? d.batch;
  const scenes = evalScenes(s.seed, nSingle, nDouble);
  const images: RgbU8[] = [];
  const verdicts: ReturnType<typeof judge>[] = [];
  const take = (i: number, sc: Scene, img: RgbU8) => {
    const a = analyseImage(img);
    images.push(img);
    verdicts.push(judge(sc, a));
    o.onImage?.(i, sc, img, a);
  };
  if (o.source === 'render') {
    const size = superResSize(o.model);
    scenes.forEach((sc, i) => take(i, sc, renderScene(sc, size)));
  } else {
    const pipe = await UnCLIPPipeline.load(o.model, { keepLoaded: true });
    try {
      for (let b = 0; b < scenes.length; b += batch) {
        const part = scenes.slice(b, b + batch);
        const r = await pipe.generate(part.map((sc) => sc.caption), {
          seed: s.genSeed + b / batch, priorSteps: s.priorSteps, decoderSteps: s.decoderSteps, superResSteps: s.superResSteps,
          priorGuidance: s.priorGuidance, decoderGuidance: s.decoderGuidance,
        });
        part.forEach((sc, k) => {
          const raw = floatToRgb8(r.images, r.shape, k);
          take(b + k, sc, { width: raw.width, height: raw.height, data: raw.data });
        });
        o.log?.(`eval-nano: ${Math.min(b + batch, scenes.length)}/${scenes.length} images`);
      }
    } finally {
      pipe.dispose();
    }
  }
  const sv = verdicts.slice(0, nSingle), dv = verdicts.slice(nSingle);
  const count = (vs: typeof verdicts, k: keyof ReturnType<typeof judge>) => vs.filter((v) => v[k]).length;
  const clipScore = await clipScores(o.model, scenes.map((sc) => sc.caption), images);
  return {
    model: path.resolve(o.model), source: o.source ?? 'generate', settings: s,
    single: {
      colour: rate(count(sv, 'colour'), nSingle), shape: rate(count(sv, 'shape'), nSingle), count: rate(count(sv, 'count'), nSingle),
      both: rate(sv.filter((v) => v.colour && v.shape).length, nSingle),
    },
    double: { count: rate(count(dv, 'count'), nDouble), content: rate(count(dv, 'content'), nDouble) },
    clipScore, imageSize: images[0]?.width ?? 0, seconds: (performance.now() - t0) / 1000,
  };
}

/** The super-res output size of a model folder (the size generated images have). */
function superResSize(model: string): number {
  const cfg = JSON.parse(fs.readFileSync(path.join(model, 'super_res_first', 'config.json'), 'utf8')) as { sample_size?: number | number[] };
  const v = Array.isArray(cfg.sample_size) ? cfg.sample_size[0] : cfg.sample_size;
  if (!Number.isInteger(v)) throw new Error(`${model}/super_res_first/config.json: no integer sample_size`);
  return v as number;
}

/**
 * CLIP-score with the folder's own CLIP: mean cos(text_embeds(caption_i), image_embeds(image_i)) against the same
 * with caption i+1 (a derangement). Null when the folder has no image_encoder/.
 */
export async function clipScores(model: string, captions: string[], images: RgbU8[]): Promise<NanoEvalReport['clipScore']> {
  const encDir = path.join(model, 'image_encoder');
  if (!fs.existsSync(path.join(encDir, 'config.json')) || captions.length < 2) return null;
  const { loadComponent } = await import('../loading/load_component.js');
  const { clipPreprocess, readClipProcessorConfig, CLIP_PROCESSOR_DEFAULTS } = await import('../io/clip_preprocess.js');
  const { CLIPTokenizer } = await import('../tokenizer/clip_tokenizer.js');
  const fe = path.join(model, 'feature_extractor');
  const cfg = fs.existsSync(fe) ? readClipProcessorConfig(fe) : CLIP_PROCESSOR_DEFAULTS;
  const vision = loadComponent(encDir, 'CLIPVisionModelWithProjection');
  const text = loadComponent(path.join(model, 'text_encoder'), 'CLIPTextModelWithProjection');
  const tok = CLIPTokenizer.fromDir(path.join(model, 'tokenizer'));
  try {
    const px = images.map((im) => clipPreprocess({ width: im.width, height: im.height, data: im.data }, cfg).pixelValues);
    const S = vision.config.image_size;
    const imgEmb = tf.tidy(() => {
      const x = tf.tensor4d(concat(px), [images.length, 3, S, S]);
      return l2(vision.forward(x).imageEmbeds);
    });
    const enc = tok.encode(captions, { padding: 'max_length', maxLength: text.config.max_position_embeddings, truncation: true });
    const ids = enc.inputIds;
    const txtEmb = tf.tidy(() => l2(text.forward(tf.tensor2d(ids.flat(), [ids.length, ids[0].length], 'int32')).textEmbeds));
    const sims = tf.tidy(() => tf.matMul(txtEmb, imgEmb, false, true));
    const m = (await sims.data()) as Float32Array;
    tf.dispose([imgEmb, txtEmb, sims]);
    const n = captions.length;
    let matched = 0, shuffled = 0;
    for (let i = 0; i < n; i++) {
      matched += m[i * n + i];
      shuffled += m[((i + 1) % n) * n + i];
    }
    return { matched: matched / n, shuffled: shuffled / n, n };
  } finally {
    vision.dispose();
    text.dispose();
  }
}

function concat(xs: Float32Array[]): Float32Array {
  const out = new Float32Array(xs.reduce((a, x) => a + x.length, 0));
  let o = 0;
  for (const x of xs) { out.set(x, o); o += x.length; }
  return out;
}

function l2(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.norm(x, 2, 1, true)) as tf.Tensor2D;
}

/** The report as a Markdown table (next to an optional floor report, e.g. the random-weight model). */
export function reportTable(r: NanoEvalReport, floor?: NanoEvalReport, names: [string, string] = ['model', 'random floor']): string {
  const pct = (x: Rate) => `${(100 * x.rate).toFixed(1)}% (${x.correct}/${x.n})`;
  const cs = (x: NanoEvalReport) => (x.clipScore ? `${x.clipScore.matched.toFixed(3)} vs ${x.clipScore.shuffled.toFixed(3)}` : 'n/a');
  const rows: [string, (x: NanoEvalReport) => string][] = [
    ['one shape: colour accuracy (bar >= 90%)', (x) => pct(x.single.colour)],
    ['one shape: shape accuracy (bar >= 70%)', (x) => pct(x.single.shape)],
    ['one shape: colour and shape', (x) => pct(x.single.both)],
    ['one shape: count = 1', (x) => pct(x.single.count)],
    ['two shapes: count accuracy (bar >= 70%)', (x) => pct(x.double.count)],
    ['two shapes: both shapes right', (x) => pct(x.double.content)],
    ['CLIP-score matched vs shuffled', cs],
  ];
  const head = floor ? `| measure | ${names[0]} | ${names[1]} |\n|---|---|---|` : `| measure | ${names[0]} |\n|---|---|`;
  return [head, ...rows.map(([k, f]) => (floor ? `| ${k} | ${f(r)} | ${f(floor)} |` : `| ${k} | ${f(r)} |`))].join('\n');
}
