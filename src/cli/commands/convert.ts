// `karlo convert --from-original DIR --out DIR [--configs DIR] [--force]`: Kakao Brain's original Karlo release
// (.ckpt / .pt / .th, read without Python) → a diffusers-layout folder. Progress per component on stderr.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CommandModule } from 'yargs';
import { UsageError } from '../errors.js';
import { Progress } from '../progress.js';
import { UNCLIP_COMPONENTS, openModelFolder } from '../../io/model_folder.js';
import { checkModelFolder } from '../../pipeline/check_folder.js';
import { COMPONENTS, convertOriginalAsync, formatBytes, type Component, type ProgressEvent } from '../../../tools/convert/convert.js';

interface Args {
  'from-original': string;
  out: string;
  configs?: string;
  force?: boolean;
  only?: string;
  'allow-unknown-calls'?: boolean;
  json?: boolean;
}

/** Per component, bytes written, through the CLI's shared progress reporter (src/cli/progress.ts). */
function progressPrinter(): (e: ProgressEvent) => void {
  const progress = new Progress();
  let current = '';
  return (e) => {
    if (e.component !== current) {
      current = e.component;
      progress.begin(e.component, e.bytes, 'byte');
    }
    progress.update(e.bytesDone);
    if (e.tensorsDone === e.tensors) {
      progress.end(`${e.tensors} tensors`);
      current = '';
    }
  };
}

const command: CommandModule<object, Args> = {
  command: 'convert',
  describe: "convert Kakao Brain's original Karlo checkpoints (prior/decoder/SR .ckpt, ViT-L-14.pt, ViT-L-14_stats.th) to a diffusers-layout folder",
  builder: (y) => y
    .option('from-original', { type: 'string', demandOption: true, describe: "folder holding the original release's files" })
    .option('out', { type: 'string', demandOption: true, describe: 'output folder (written to a temporary folder, renamed into place at the end)' })
    .option('configs', { type: 'string', describe: "folder with Karlo's configs/*.yaml (prior_1B_vit_l, decoder_900M_vit_l, improved_sr_64_256_1.4B); default: the real Karlo values" })
    .option('force', { type: 'boolean', default: false, describe: 'replace an existing, non-empty output folder' })
    .option('only', { type: 'string', describe: `comma-separated components to convert (${COMPONENTS.join(', ')}); default: all, plus model_index.json, schedulers and tokenizer` })
    .option('allow-unknown-calls', { type: 'boolean', default: false, describe: 'record calls of non-whitelisted callables in the pickles as inert placeholders instead of refusing the file (nothing is ever executed; os/subprocess/eval & co. stay refused)' })
    .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON on stdout' }) as never,
  handler: async (argv) => {
    let report: Awaited<ReturnType<typeof convertOriginalAsync>>;
    const only = argv.only?.split(',').map((s) => s.trim()).filter(Boolean);
    for (const c of only ?? []) if (!(COMPONENTS as readonly string[]).includes(c)) throw new UsageError(`--only: unknown component "${c}" (choose from ${COMPONENTS.join(', ')})`);
    try {
      report = await convertOriginalAsync({
        from: argv['from-original'],
        out: argv.out,
        configs: argv.configs,
        force: argv.force,
        components: only as Component[] | undefined,
        unknownCalls: argv['allow-unknown-calls'] ? 'placeholder' : 'refuse',
        log: (l) => process.stderr.write(`${l}\n`),
        onProgress: progressPrinter(),
      });
    } catch (e) {
      if (e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError) throw e; // our bug: keep the stack
      const msg = (e as Error).message.split('\n').join(' ');
      throw new UsageError(/not on this reader's whitelist/.test(msg) && !argv['allow-unknown-calls']
        ? `${msg} (if the file is trusted, --allow-unknown-calls records such calls as inert placeholders)` : msg);
    }
    // The folder written must pass the check UnCLIPPipeline.load runs; say so now when it would not.
    if (fs.existsSync(path.join(report.out, 'model_index.json'))) {
      try {
        checkModelFolder(openModelFolder(report.out), UNCLIP_COMPONENTS);
      } catch (e) {
        process.stderr.write(`warning: ${report.out} will not load: ${(e as Error).message}\n`);
      }
    }
    if (argv.json) {
      console.log(JSON.stringify(report));
      return;
    }
    for (const c of report.components) {
      console.log(`${c.component.padEnd(16)} ${String(c.tensors).padStart(5)} tensors  ${formatBytes(c.bytes).padStart(9)}  ${c.seconds.toFixed(2)} s  ${(c.bytes / 1e6 / Math.max(c.seconds, 1e-9)).toFixed(0)} MB/s`);
    }
    console.log(`wrote ${report.out} (${formatBytes(report.bytes)} in ${report.seconds.toFixed(2)} s; hparams: ${report.hparamsSource})`);
  },
};

export default command;
