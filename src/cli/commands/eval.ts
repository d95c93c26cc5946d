// `karlo eval DIR --clip CLIP_DIR [--json]`: CLIP score of every image of a `karlo batch` folder against its
// prompt from DIR/manifest.jsonl (torchmetrics' CLIPScore, see src/batch/clip_score.ts), the mean, and a
// histogram PNG (DIR/clip_score_hist.png unless --hist FILE).
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { UsageError } from '../errors.js';
import { OutputDirError, readManifest } from '../../batch/output.js';

interface EvalArgs {
  dir?: string;
  clip?: string;
  json?: boolean;
  hist?: string;
  'batch-size'?: number;
  backend?: string;
}

async function run(argv: ArgumentsCamelCase<EvalArgs>): Promise<void> {
  if (!argv.dir) throw new UsageError('name a batch output folder: karlo eval DIR --clip CLIP_DIR');
  if (!argv.clip) throw new UsageError('--clip CLIP_DIR is required (a transformers CLIP folder, e.g. openai/clip-vit-base-patch16)');
  const bs = argv['batch-size'] ?? 16;
  if (!Number.isInteger(bs) || bs < 1) throw new UsageError(`--batch-size must be a positive integer, got ${String(argv['batch-size'])}`);
  const dir = String(argv.dir);
  let entries;
  try {
    entries = readManifest(dir);
  } catch (e) {
    if (e instanceof OutputDirError) throw new UsageError(e.message);
    throw e;
  }
  if (entries.length === 0) throw new UsageError(`${path.join(dir, 'manifest.jsonl')}: no images listed (or none of their files exist)`);
  const { initBackend } = await import('../../backend/index.js');
  const { loadClipScorer, clipCosines, summarise, ClipFolderError } = await import('../../batch/clip_score.js');
  const { readImage, ImageError } = await import('../../io/image.js');
  const { histogramPng } = await import('../../batch/histogram.js');
  const { writePng } = await import('../../io/png.js');
  try {
    process.stderr.write(`${(await initBackend(argv.backend)).message}\n`);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  let scorer;
  try {
    scorer = loadClipScorer(String(argv.clip));
  } catch (e) {
    if (e instanceof ClipFolderError) throw new UsageError(e.message);
    throw e;
  }
  const scores: number[] = [];
  try {
    for (let i = 0; i < entries.length; i += bs) {
      const part = entries.slice(i, i + bs);
      const pairs = [];
      for (const e of part) {
        try {
          pairs.push({ image: await readImage(path.join(dir, e.file)), prompt: e.prompt });
        } catch (err) {
          if (err instanceof ImageError) throw new UsageError(err.message);
          throw err;
        }
      }
      scores.push(...clipCosines(scorer, pairs, bs));
      if (!argv.json) process.stderr.write(`\rscored ${Math.min(i + bs, entries.length)}/${entries.length}`);
    }
    if (!argv.json) process.stderr.write('\n');
  } finally {
    scorer.dispose();
  }
  const s = summarise(scores);
  const model = path.basename(path.resolve(String(argv.clip)));
  const hist = argv.hist ?? path.join(dir, 'clip_score_hist.png');
  writePng(hist, histogramPng(scores.map((x) => Math.max(x, 0)), { title: `CLIP score ${s.score.toFixed(2)} (${model}, ${s.count} images); dashed: mean per image ${s.meanClamped.toFixed(2)}` }));
  if (argv.json) {
    process.stdout.write(`${JSON.stringify({
      dir: path.resolve(dir), clip: path.resolve(String(argv.clip)), ...s, histogram: hist,
      images: entries.map((e, k) => ({ file: e.file, prompt: e.prompt, score: Math.max(scores[k], 0), cos100: scores[k] })),
    })}\n`);
  } else {
    process.stdout.write(`CLIP score ${s.score.toFixed(4)} (torchmetrics: max(mean 100·cos, 0)) over ${s.count} images; ` +
      `per image max(100·cos, 0): mean ${s.meanClamped.toFixed(4)}, min ${s.min.toFixed(2)}, max ${s.max.toFixed(2)}\nhistogram: ${hist}\n`);
  }
}

const command: CommandModule<object, EvalArgs> = {
  command: 'eval [dir]',
  describe: 'CLIP score of a `karlo batch` folder: each image against its manifest prompt, mean, histogram PNG',
  builder: (y: Argv) => y
    .positional('dir', { type: 'string', describe: 'a karlo batch output folder (manifest.jsonl + PNGs)' })
    .option('clip', { type: 'string', describe: 'CLIP folder: transformers CLIPModel (e.g. openai/clip-vit-base-patch16) or text_encoder/ + image_encoder/ + tokenizer/ + feature_extractor/' })
    .option('hist', { type: 'string', describe: 'histogram PNG (default DIR/clip_score_hist.png)' })
    .option('batch-size', { type: 'number', describe: 'images per forward (default 16)' })
    .option('json', { type: 'boolean', describe: 'print {score, meanClamped, images: [{file, prompt, score}], ...} on stdout' }) as unknown as Argv<EvalArgs>,
  handler: run,
};

export default command;
