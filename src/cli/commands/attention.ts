// `karlo attention PROMPT --out maps.png`: what the decoder's cross-attention looks at, per text token and per
// extra CLIP token, as heat maps over the generated image, and the prior's prd-token attention over the text as a
// bar chart (aggregation: src/internals/attention_maps.ts). One PNG per image (NAME-0.png, … for several).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { UsageError } from '../errors.js';
import { writePng } from '../../io/png.js';
import { readJson } from '../../io/weights.js';
import { CLIPTokenizer } from '../../tokenizer/clip_tokenizer.js';
import { UnCLIPPipeline } from '../../pipeline/unclip_pipeline.js';
import { AttentionCollector, attentionPictures, drawAttentionMaps, fmtMass } from '../../internals/attention_maps.js';
import { generateOptions, openPipeline, runOptions, type RunArgs } from './trace.js';
import { outputPaths } from './generate.js';

interface AttentionArgs extends RunArgs {
  out: string;
  force?: boolean;
  json?: boolean;
}

/** Extra CLIP tokens text_proj prepends to the decoder's encoder states (clip_extra_context_tokens, default 4). */
export function extraTokens(pipe: UnCLIPPipeline): number {
  const cfg = readJson<Record<string, unknown>>(path.join(pipe.folder.dirs.text_proj, 'config.json'));
  return typeof cfg.clip_extra_context_tokens === 'number' ? cfg.clip_extra_context_tokens : 4;
}

async function run(argv: AttentionArgs): Promise<void> {
  const prompts = (argv.prompts ?? []).map(String);
  if (!prompts.length || prompts.some((p) => p.trim() === '')) throw new UsageError('give a prompt: karlo attention "a red frog" --out maps.png');
  const gen = generateOptions(argv);
  const settings = UnCLIPPipeline.resolveSettings(gen);
  const files = outputPaths(String(argv.out), prompts.length * settings.numImagesPerPrompt);
  const dir = path.dirname(path.resolve(argv.out));
  if (!fs.existsSync(dir)) throw new UsageError(`--out ${argv.out}: folder ${dir} does not exist`);
  for (const f of files) if (fs.existsSync(f) && !argv.force) throw new UsageError(`${f} exists; pass --force to overwrite it`);
  const { pipe } = await openPipeline(argv);
  const tok = CLIPTokenizer.fromDir(pipe.folder.dirs.tokenizer);
  const extra = extraTokens(pipe);
  const n = prompts.length * settings.numImagesPerPrompt;
  const col = new AttentionCollector(n, pipe.dims.decoderSize, extra + 77);
  try {
    const res = await pipe.generate(prompts, { ...gen, outputHooks: col.outputHooks });
    const r = col.result();
    const pics = attentionPictures(tok, prompts, settings.numImagesPerPrompt, extra, r, res.images, res.shape);
    pics.forEach((p, i) => writePng(files[i], drawAttentionMaps(p)));
    const summary = pics.map((p, i) => {
      const S = p.size;
      const K = p.maps ? p.maps.length / (S * S) : 0;
      const mean = (index: number) => { let s = 0; for (let j = 0; j < S * S; j++) s += p.maps![j * K + index]; return s / (S * S); };
      return {
        file: files[i],
        decoder: p.maps ? p.decoderKeys.map((k) => ({ token: k.label, meanMass: mean(k.index) })) : [],
        prior: p.priorBars ?? [],
      };
    });
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ seed: res.seed?.toString(), decoderCalls: r.decoder.calls, priorCalls: r.prior.calls, images: summary })}\n`);
    } else {
      for (const s of summary) {
        const top = [...s.decoder].sort((a, b) => b.meanMass - a.meanMass).slice(0, 5).map((d) => `${d.token} ${fmtMass(d.meanMass)}`).join(', ');
        process.stdout.write(`wrote ${s.file} (decoder, most attended: ${top})\n`);
      }
    }
  } finally {
    col.dispose();
  }
}

const command: CommandModule<object, AttentionArgs> = {
  command: 'attention <prompts..>',
  describe: "heat maps of the decoder's cross-attention per token over the generated image, and the prior's prd-token attention",
  builder: (y: Argv) => runOptions(y)
    .option('out', { type: 'string', default: 'attention.png', describe: 'output PNG (several images: NAME-0.png, NAME-1.png, …)' })
    .option('force', { type: 'boolean', describe: 'overwrite existing files' })
    .option('json', { type: 'boolean', describe: 'print the mean attention mass per token as JSON' }) as unknown as Argv<AttentionArgs>,
  handler: run,
};

export default command;
