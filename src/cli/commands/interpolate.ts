// `karlo interpolate --from "prompt A" --to "prompt B" --steps N` (text → text, diffusers' community
// unclip_text_interpolation) or `karlo interpolate --from-image A.png --to-image B.png --steps N` (image → image
// through the CLIP image embeddings, one decoder noise shared by all frames). Writes the frames as NAME-0.png …
// NAME-{N-1}.png and one contact sheet NAME-sheet.png (frames in a row, each labelled with its t).
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { UsageError } from '../errors.js';
import { addGenerationOptions, parseSeedArg, readGenerationArgs, type GenerationArgs } from '../generation_options.js';
import { ModelFolderError } from '../../io/model_folder.js';
import { floatToRgb8, writePng, type RawImage } from '../../io/png.js';
import { blit, createImage, drawText, textHeight, textWidth, BLACK, WHITE } from '../../io/raster.js';
import { DEFAULT_MODEL_DIR, DEFAULT_MODEL_NOTE } from '../../package_root.js';
import { UnCLIPPipeline } from '../../pipeline/unclip_pipeline.js';
import { interpolateImages, interpolateText, SLERP_MODES, type SlerpMode } from '../../pipeline/interpolation.js';
import type { VaryOptions } from '../../pipeline/variation_pipeline.js';
import {
  StageProgress, checkOutputs, loadVariationPipeline, numberArg, readInputImages, resolveVaryArgs, stageTimingTable,
} from './vary.js';

/** "t=0.25": the label of a frame (two decimals; more when two frames would read the same). */
export function frameLabels(t: number[]): string[] {
  for (let d = 2; d <= 6; d++) {
    const labels = t.map((v) => `t=${v.toFixed(d)}`);
    if (new Set(labels).size === labels.length) return labels;
  }
  return t.map((v) => `t=${v}`);
}

/**
 * Frames in a row on a white sheet, each with its label centred below it in the built-in bitmap font (scaled with
 * the frame size: 1× up to 127 px wide frames, 2× up to 255, …).
 */
export function contactSheet(frames: RawImage[], labels: string[]): RawImage {
  if (!frames.length || frames.length !== labels.length) throw new Error(`contactSheet: ${frames.length} frames, ${labels.length} labels`);
  const W = Math.max(...frames.map((f) => f.width)), H = Math.max(...frames.map((f) => f.height));
  const scale = Math.max(1, Math.floor(W / 128) + 1);
  const fit = (s: number) => Math.max(...labels.map((l) => textWidth(l, s))) <= W;
  let s = scale;
  while (s > 1 && !fit(s)) s--;
  const pad = 4, gap = 4;
  const labelH = textHeight(s) + 2 * pad;
  const sheet = createImage(pad + frames.length * (W + gap) - gap + pad, pad + H + labelH, WHITE);
  frames.forEach((f, i) => {
    const x = pad + i * (W + gap);
    blit(sheet, f, x + Math.floor((W - f.width) / 2), pad);
    drawText(sheet, x + Math.floor(W / 2), pad + H + pad, labels[i], BLACK, { scale: s, align: 'center' });
  });
  return sheet;
}

interface InterpolateArgs extends GenerationArgs {
  from?: string;
  to?: string;
  'from-image'?: string;
  'to-image'?: string;
  steps?: number;
  slerp?: string;
  model?: string;
  out: string;
  seed?: string;
  preprocess?: string;
  backend?: string;
  force?: boolean;
  json?: boolean;
}

async function run(argv: ArgumentsCamelCase<InterpolateArgs>): Promise<void> {
  const text = argv.from !== undefined || argv.to !== undefined;
  const image = argv['from-image'] !== undefined || argv['to-image'] !== undefined;
  if (text && image) throw new UsageError('give either --from/--to (prompts) or --from-image/--to-image (images), not both');
  if (!text && !image) throw new UsageError('give --from "prompt A" --to "prompt B", or --from-image A.png --to-image B.png');
  if (text && (typeof argv.from !== 'string' || typeof argv.to !== 'string' || !argv.from.trim() || !argv.to.trim())) {
    throw new UsageError('--from and --to must both be non-empty prompts');
  }
  if (image && (typeof argv['from-image'] !== 'string' || typeof argv['to-image'] !== 'string')) throw new UsageError('--from-image and --to-image must both name an image file');
  numberArg('steps', argv.steps);
  const steps = argv.steps ?? 5;
  if (!Number.isInteger(steps) || steps < 2 || steps > 1000) throw new UsageError(`--steps (frames) must be an integer in [2, 1000], got ${steps}`);
  const mode = (argv.slerp ?? 'proper') as SlerpMode;
  if (!SLERP_MODES.includes(mode)) throw new UsageError(`--slerp must be proper or diffusers, got "${argv.slerp}"`);
  if (text && argv.preprocess !== undefined) throw new UsageError('--preprocess applies to --from-image/--to-image only');
  if (image && (argv['prior-steps'] !== undefined || argv['prior-guidance'] !== undefined || argv.preset !== undefined)) {
    throw new UsageError('--prior-steps, --prior-guidance and --preset apply to text interpolation only (images need no prior)');
  }
  if (argv['num-images'] !== undefined) throw new UsageError('--num-images does not apply: interpolation makes one image per frame');
  const seed = parseSeedArg(argv.seed) ?? BigInt(Math.floor(Math.random() * 2 ** 32));

  const out = String(argv.out);
  const ext = path.extname(out);
  const stem = ext ? out.slice(0, -ext.length) : out;
  const frameFiles = Array.from({ length: steps }, (_, i) => `${stem}-${i}.png`);
  const sheetFile = `${stem}-sheet.png`;
  checkOutputs([...frameFiles, sheetFile], argv.force);

  const progress = new StageProgress();
  const hooks = { onStage: (e: Parameters<StageProgress['event']>[0]) => progress.event(e), onStep: () => progress.step() };
  let result: { images: Float32Array; shape: [number, number, number, number]; t: number[]; slerp: SlerpMode; settings: object; timings: Parameters<typeof stageTimingTable>[0] };
  let order: string[];
  if (text) {
    const { opts } = readGenerationArgs(argv);
    const modelDir = argv.model ?? DEFAULT_MODEL_DIR;
    if (!argv.model) process.stderr.write(`${DEFAULT_MODEL_NOTE}\n`);
    process.stderr.write(`seed ${seed}\n`);
    let pipe: UnCLIPPipeline;
    try {
      pipe = await UnCLIPPipeline.load(modelDir, { backend: argv.backend, log: (l) => process.stderr.write(`${l}\n`) });
    } catch (e) {
      if (e instanceof ModelFolderError) throw new UsageError(e.message);
      throw e;
    }
    try {
      result = await interpolateText(pipe, argv.from!, argv.to!, { ...opts, ...hooks, steps, slerp: mode, seed });
    } finally {
      pipe.dispose();
    }
    order = ['text', 'prior', 'decoder', 'super_res'];
  } else {
    const vopts: VaryOptions = {
      decoderSteps: argv['decoder-steps'], superResSteps: argv['sr-steps'], decoderGuidance: argv['decoder-guidance'],
      preprocess: argv.preprocess as VaryOptions['preprocess'], seed,
    };
    for (const k of ['decoder-steps', 'sr-steps', 'decoder-guidance'] as const) numberArg(k, argv[k]);
    resolveVaryArgs(vopts);
    const [a, b] = await readInputImages([argv['from-image']!, argv['to-image']!]);
    const modelDir = argv.model ?? DEFAULT_MODEL_DIR;
    if (!argv.model) process.stderr.write(`${DEFAULT_MODEL_NOTE}\n`);
    process.stderr.write(`seed ${seed}\n`);
    const pipe = await loadVariationPipeline(modelDir, argv.backend);
    try {
      result = await interpolateImages(pipe, a, b, { ...vopts, ...hooks, steps, slerp: mode });
    } finally {
      pipe.dispose();
    }
    order = ['text', 'image', 'decoder', 'super_res'];
  }

  const frames = frameFiles.map((_, i) => floatToRgb8(result.images, result.shape, i));
  frames.forEach((f, i) => writePng(frameFiles[i], f));
  writePng(sheetFile, contactSheet(frames, frameLabels(result.t)));
  if (argv.json) {
    process.stdout.write(`${JSON.stringify({ frames: frameFiles, sheet: sheetFile, t: result.t, slerp: result.slerp, seed: String(seed), settings: result.settings, timings: result.timings })}\n`);
  } else {
    process.stdout.write(`${stageTimingTable(result.timings, order)}\n`);
    process.stdout.write(`seed ${seed} · slerp ${result.slerp} · t = ${result.t.map((v) => v.toFixed(3)).join(', ')}\n`);
    for (const f of frameFiles) process.stdout.write(`wrote ${f}\n`);
    process.stdout.write(`wrote ${sheetFile}\n`);
  }
}

const command: CommandModule<object, InterpolateArgs> = {
  command: 'interpolate',
  describe: 'frames between two prompts (--from/--to) or two images (--from-image/--to-image) through CLIP embeddings, plus a contact sheet',
  builder: (y: Argv) => addGenerationOptions(y
    .option('from', { type: 'string', describe: 'start prompt (text interpolation)' })
    .option('to', { type: 'string', describe: 'end prompt (text interpolation)' })
    .option('from-image', { type: 'string', describe: 'start image, PNG/JPEG (image interpolation)' })
    .option('to-image', { type: 'string', describe: 'end image, PNG/JPEG (image interpolation)' })
    .option('steps', { type: 'number', describe: 'frames, both ends included (default 5)' })
    .option('slerp', { type: 'string', choices: SLERP_MODES, describe: "proper: great-circle slerp of directions, norm interpolated (default); diffusers: the community pipelines' elementwise slerp, reproduced exactly" })
    .option('model', { type: 'string', describe: 'Karlo folder: text-to-image for prompts, image-variation for images; default: the bundled karlo-nano (it has both)' })
    .option('out', { type: 'string', default: 'interpolation.png', describe: 'frames go to NAME-0.png … NAME-{N-1}.png, the contact sheet to NAME-sheet.png' })
    .option('seed', { type: 'string', describe: 'seed of the torch-compatible generator (default: random, printed)' })
    .option('preprocess', { type: 'string', choices: ['clip', 'karlo'], describe: 'image preprocessing for --from-image/--to-image (see karlo vary)' })
    .option('force', { type: 'boolean', describe: 'overwrite existing output files' })
    .option('json', { type: 'boolean', describe: 'print {"frames": [...], "sheet": ..., "t": [...], "timings": {...}} on stdout' })) as unknown as Argv<InterpolateArgs>,
  handler: run,
};

export default command;
