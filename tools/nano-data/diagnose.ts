// Where a nano model loses the caption, stage by stage, on held-out one-shape captions:
//   clip      zero-shot accuracy of the folder's CLIP on the world's own renderings: the caption with its shape
//             (colour) word swapped for each of the 5 shapes (8 colours), highest cosine wins
//   prior     mean cosine of the prior's embedding (the pipeline's, seeds as eval-nano) to the true CLIP image
//             embedding of the rendering, and the same zero-shot read of the prior's embeddings
//   decoder   the analyser's shape / colour verdicts on the decoder's own output (image_small, before super-res),
//             with the prior's embeddings and with the true embeddings patched in (onIntermediate), and after
//             super-res
//   npx tsx tools/nano-data/diagnose.ts [--model models/karlo-nano] [--n 60] [--decoder-guidance 8] [--backend native]
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { initBackend } from '../../src/backend/index.js';
import { loadComponent } from '../../src/loading/load_component.js';
import { clipPreprocess, readClipProcessorConfig } from '../../src/io/clip_preprocess.js';
import { floatToRgb8 } from '../../src/io/png.js';
import { CLIPTokenizer } from '../../src/tokenizer/clip_tokenizer.js';
import { NANO_EVAL_DEFAULTS, evalScenes, judge } from '../../src/nano/eval.js';
import { renderScene, type RgbU8 } from '../../src/nano/render.js';
import { analyseImage } from '../../src/nano/analyse.js';
import { COLOUR_NAMES, SHAPES, type Scene } from '../../src/nano/world.js';
import { UnCLIPPipeline } from '../../src/pipeline/unclip_pipeline.js';

const argv = yargs(hideBin(process.argv))
  .scriptName('nano-diagnose')
  .option('model', { type: 'string', default: 'models/karlo-nano' })
  .option('n', { type: 'number', default: 60, describe: 'held-out one-shape captions' })
  .option('decoder-guidance', { type: 'number', default: NANO_EVAL_DEFAULTS.decoderGuidance })
  .option('backend', { type: 'string', default: 'native' })
  .strict()
  .parseSync();

process.stderr.write(`${(await initBackend(argv.backend)).message}\n`);
const model = argv.model, N = argv.n;
const scenes = evalScenes(NANO_EVAL_DEFAULTS.seed, N, 0);
const vision = loadComponent(path.join(model, 'image_encoder'), 'CLIPVisionModelWithProjection');
const text = loadComponent(path.join(model, 'text_encoder'), 'CLIPTextModelWithProjection');
const tok = CLIPTokenizer.fromDir(path.join(model, 'tokenizer'));
const cfg = readClipProcessorConfig(path.join(model, 'feature_extractor'));
const l2 = (x: tf.Tensor2D) => tf.div(x, tf.norm(x, 2, 1, true)) as tf.Tensor2D;
const pct = (k: number) => `${((100 * k) / N).toFixed(0)}%`;

function imageEmbeds(imgs: RgbU8[]): tf.Tensor2D {
  const S = vision.config.image_size;
  return tf.tidy(() => {
    const px = imgs.map((im) => clipPreprocess(im, cfg).pixelValues);
    const a = new Float32Array(px.length * px[0].length);
    px.forEach((p, i) => a.set(p, i * p.length));
    return vision.forward(tf.tensor4d(a, [imgs.length, 3, S, S])).imageEmbeds;
  });
}
function textEmbeds(caps: string[]): tf.Tensor2D {
  const ids = tok.encode(caps, { padding: 'max_length', maxLength: text.config.max_position_embeddings, truncation: true }).inputIds;
  return tf.tidy(() => l2(text.forward(tf.tensor2d(ids.flat(), [ids.length, ids[0].length], 'int32')).textEmbeds));
}
/** Zero-shot: which caption variant (shape or colour word swapped) each embedding is closest to. */
function zeroShot(emb: tf.Tensor2D): { shape: number; colour: number } {
  const e = tf.tidy(() => l2(emb).arraySync());
  let shape = 0, colour = 0;
  const argmaxRight = <T extends string>(i: number, opts: readonly T[], cap: (x: T) => string, want: T) => {
    const sims = tf.tidy(() => tf.matMul(textEmbeds(opts.map(cap)), tf.tensor2d([e[i]]), false, true).dataSync());
    return opts[sims.indexOf(Math.max(...sims))] === want;
  };
  scenes.forEach((s, i) => {
    const sp = s.shapes[0];
    if (argmaxRight(i, SHAPES, (x) => `a ${sp.colour} ${x} on a ${s.background} background`, sp.shape)) shape++;
    if (argmaxRight(i, COLOUR_NAMES, (x) => `a ${x} ${sp.shape} on a ${s.background} background`, sp.colour)) colour++;
  });
  return { shape, colour };
}
const toRgb = (t: tf.Tensor4D, k: number): RgbU8 => {
  // image_small is NCHW in [-1, 1]
  const [, , h, w] = t.shape;
  const v = t.dataSync(), d = new Uint8Array(h * w * 3), o = k * 3 * h * w;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) {
    d[3 * (y * w + x) + c] = Math.round(Math.min(1, Math.max(0, (v[o + c * h * w + y * w + x] + 1) / 2)) * 255);
  }
  return { width: w, height: h, data: d };
};

const trueEmb = imageEmbeds(scenes.map((s) => renderScene(s, 128)));
const zc = zeroShot(trueEmb);
console.log(`clip     zero-shot on the renderings: shape ${pct(zc.shape)} (chance 20%), colour ${pct(zc.colour)} (chance 12%)`);
const pipe = await UnCLIPPipeline.load(model, { keepLoaded: true });
const tally = (vs: ReturnType<typeof judge>[]) => `shape ${pct(vs.filter((v) => v.shape).length)}, colour ${pct(vs.filter((v) => v.colour).length)}`;
for (const patch of [false, true]) {
  const small: ReturnType<typeof judge>[] = [], big: ReturnType<typeof judge>[] = [];
  const priorRows: tf.Tensor2D[] = [];
  for (let b = 0; b < N; b += NANO_EVAL_DEFAULTS.batch) {
    const part: Scene[] = scenes.slice(b, b + NANO_EVAL_DEFAULTS.batch);
    const r = await pipe.generate(part.map((s) => s.caption), {
      seed: NANO_EVAL_DEFAULTS.genSeed + b / NANO_EVAL_DEFAULTS.batch, decoderGuidance: argv['decoder-guidance'],
      onIntermediate: (name, t) => {
        if (name === 'image_embeddings') {
          priorRows.push(tf.keep(tf.clone(t)) as tf.Tensor2D);
          if (patch) return tf.slice(trueEmb, [b, 0], [part.length, -1]);
        }
        if (name === 'image_small') part.forEach((sc, k) => small.push(judge(sc, analyseImage(toRgb(t as tf.Tensor4D, k)))));
      },
    });
    part.forEach((sc, k) => { const raw = floatToRgb8(r.images, r.shape, k); big.push(judge(sc, analyseImage({ width: raw.width, height: raw.height, data: raw.data }))); });
  }
  const prior = tf.concat(priorRows) as tf.Tensor2D;
  if (!patch) {
    const cos = tf.tidy(() => tf.mean(tf.sum(tf.mul(l2(prior), l2(trueEmb)), 1)).dataSync()[0]);
    const zp = zeroShot(prior);
    console.log(`prior    cosine to the true embedding ${cos.toFixed(3)}; zero-shot of its embeddings: shape ${pct(zp.shape)}, colour ${pct(zp.colour)}`);
  }
  console.log(`decoder  ${patch ? 'true' : 'prior\'s'} embeddings, guidance ${argv['decoder-guidance']}: before super-res ${tally(small)}; after super-res ${tally(big)}`);
  tf.dispose([prior, ...priorRows]);
}
pipe.dispose();
