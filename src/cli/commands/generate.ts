// `karlo generate "prompt" ... --out PATH`: the whole unCLIP pipeline from the command line. PNGs are written
// atomically and never over an existing file without --force; progress per stage on stderr; a timing table at the end.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BUNDLED_MODEL_DIR, DEFAULT_MODEL_DIR, DEFAULT_MODEL_NOTE } from '../../package_root.js';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { UsageError, isExpectedError } from '../errors.js';
import { addGenerationOptions, parseSeedArg, readGenerationArgs } from '../generation_options.js';
import { currentBackend } from '../../backend/index.js';
import { whyNotReplaceable } from '../../io/files.js';
import { countNonFinite } from '../../io/weights.js';
import { defaultMemoryBound, estimateGenerateMemory, memoryRefusal, parseBytes } from '../../pipeline/memory_estimate.js';
import { ModelFolderError, UNCLIP_COMPONENTS, type ComponentName, type ModelFolder } from '../../io/model_folder.js';
import { setWeightsReadListener } from '../../io/weights.js';
import { HubError, parseHubId, resolveModelDir } from '../../io/hub.js';
import { downloadHubSnapshot } from '../../io/hub_download.js';
import { emptyComponent, type ComponentKind } from '../../loading/load_component.js';
import { Progress } from '../progress.js';
import { floatToRgb8, readPngText, writePng } from '../../io/png.js';
import { PACKAGE_VERSION } from '../../package_root.js';
import { PROVENANCE_KEY, encodeProvenance, modelConfigHash, parseProvenance, type Provenance } from '../../pipeline/provenance.js';
import { RunReport, reportTarget } from '../run_report.js';
import { loraLoadHook, parseLoraArg, type LoraArg } from '../../training/lora_args.js';
import {
  KARLO_PRESETS, PIPELINE_STAGES, UnCLIPPipeline,
  type GenerateOptions, type PipelineStage, type PipelineTimings, type Preview, type StageEvent,
} from '../../pipeline/unclip_pipeline.js';

/** The bundled tiny random-weight model (with the recorded diffusers runs that `karlo parity` compares). */
export { BUNDLED_MODEL_DIR };

interface GenerateArgs {
  prompts: string[];
  model?: string;
  out: string;
  seed?: string;
  'prior-steps'?: number;
  'decoder-steps'?: number;
  'sr-steps'?: number;
  'prior-guidance'?: number;
  'decoder-guidance'?: number;
  'num-images'?: number;
  preset?: string;
  backend?: string;
  verbose?: boolean;
  'save-intermediates'?: boolean;
  force?: boolean;
  json?: boolean;
  report?: string;
  'max-memory'?: string;
  lora?: string[];
  from?: string;
  download?: boolean;
}

/** Output file(s): exactly PATH for one image, PATH with -0, -1, … before the extension for several. */
export function outputPaths(out: string, count: number): string[] {
  if (count === 1) return [out];
  const ext = path.extname(out);
  const stem = ext ? out.slice(0, -ext.length) : out;
  return Array.from({ length: count }, (_, i) => `${stem}-${i}${ext || '.png'}`);
}

function intermediatesDir(out: string): string {
  const ext = path.extname(out);
  return `${ext ? out.slice(0, -ext.length) : out}.intermediates`;
}

const STAGE_LABEL: Record<PipelineStage, string> = { text: 'text encoder', prior: 'prior', decoder: 'decoder', super_res: 'super-res' };


/** The components each stage loads (for the byte progress while loading). */
const STAGE_COMPONENTS: Record<PipelineStage, ComponentName[]> = {
  text: ['text_encoder'], prior: ['prior'], decoder: ['text_proj', 'decoder'], super_res: ['super_res_first'],
};

/**
 * Pipeline events → the shared progress reporter (src/cli/progress.ts): per stage a loading phase in bytes
 * (float32 in memory, from the tensors loadWeights reads) and a run phase in steps.
 */
function stageProgress(progress: Progress, folder: ModelFolder): { event(e: StageEvent): void; step(): void; dispose(): void } {
  const bytesOf = (c: ComponentName) => {
    const dir = folder.dirs[c];
    const kind = UNCLIP_COMPONENTS[c].className as ComponentKind;
    try {
      return 4 * emptyComponent(dir, kind).numParameters();
    } catch {
      return 0;
    }
  };
  setWeightsReadListener((_dir, bytes) => { if (progress.current === 'byte') progress.tick(bytes); });
  return {
    event(e) {
      const label = STAGE_LABEL[e.stage];
      if (e.phase === 'load') progress.begin(`${label} load`, STAGE_COMPONENTS[e.stage].reduce((a, c) => a + bytesOf(c), 0), 'byte');
      else if (e.phase === 'run') progress.begin(label, e.numSteps ?? 1);
      else if (e.phase === 'done') progress.end();
    },
    step: () => progress.tick(),
    dispose: () => setWeightsReadListener(null),
  };
}

/** The timing table: per stage load seconds, seconds per step, total; then the whole run and peak RSS. */
export function timingTable(t: PipelineTimings): string {
  const rows = [['stage', 'load s', 'steps', 's/step', 'total s']];
  for (const s of PIPELINE_STAGES) {
    const x = t.stages[s];
    rows.push([STAGE_LABEL[s], x.loadSeconds.toFixed(2), String(x.steps), x.secondsPerStep.toFixed(3), x.totalSeconds.toFixed(2)]);
  }
  rows.push(['all', '', '', '', t.totalSeconds.toFixed(2)]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  '));
  lines.splice(1, 0, w.map((n) => '-'.repeat(n)).join('  '));
  lines.push(`peak RSS ${t.peakRssMB.toFixed(0)} MB · backend ${t.backend}`);
  return lines.join('\n');
}

/** Reads the provenance of a karlo PNG (--from); the file is read whole only when it is a modest regular file. */
function readProvenance(file: string): Provenance {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new UsageError(`--from ${file}: no such file`);
  }
  if (!st.isFile()) throw new UsageError(`--from ${file}: not a regular file`);
  if (st.size > 256 * 2 ** 20) throw new UsageError(`--from ${file}: ${st.size} bytes is too large for a karlo PNG`);
  try {
    const text = readPngText(fs.readFileSync(file), file)[PROVENANCE_KEY];
    if (text === undefined) throw new Error(`${file}: no "${PROVENANCE_KEY}" text chunk (not written by karlo generate)`);
    return parseProvenance(text, file);
  } catch (e) {
    throw new UsageError(`--from ${(e as Error).message}`);
  }
}

async function run(argv: ArgumentsCamelCase<GenerateArgs>): Promise<void> {
  // --from image.png: the recorded call, with any option given here overriding it.
  const from = argv.from !== undefined ? readProvenance(String(argv.from)) : undefined;
  if (from) {
    if ((argv.prompts ?? []).length) throw new UsageError('--from re-runs the prompts recorded in the image; give no prompts with it');
    argv.prompts = from.prompts;
    argv.seed ??= from.seed;
    argv['prior-steps'] ??= from.steps.prior;
    argv['decoder-steps'] ??= from.steps.decoder;
    argv['sr-steps'] ??= from.steps.superRes;
    argv['prior-guidance'] ??= from.guidance.prior;
    argv['decoder-guidance'] ??= from.guidance.decoder;
    argv['num-images'] ??= from.numImagesPerPrompt;
    argv.model ??= from.model;
  }
  // --model owner/name[@revision]: a snapshot in the Hugging Face cache (or how to get it).
  if (argv.model !== undefined) {
    try {
      argv.model = resolveModelDir(String(argv.model));
    } catch (e) {
      const id = parseHubId(String(argv.model));
      if (!(e instanceof HubError) || !id || !argv.download) throw e instanceof HubError && id ? new HubError(`${e.message}; or pass --download`) : e;
      // --download: fetch the snapshot into the cache (byte progress), then use it.
      const progress = new Progress();
      argv.model = await downloadHubSnapshot(id, {
        onStart: (n, bytes) => { progress.log(`download: ${n} files of ${id.owner}/${id.name}@${id.revision}`); progress.begin('download', bytes, 'byte'); },
        onBytes: (b) => progress.tick(b),
      });
      progress.end();
    }
  }
  const prompts = (argv.prompts ?? []).map(String);
  if (prompts.length === 0) throw new UsageError('give at least one prompt: karlo generate "a red frog" --out frog.png');
  if (prompts.some((p) => p.trim() === '')) throw new UsageError('prompts must not be empty');
  // Sampling options (shared with karlo batch: src/cli/generation_options.ts), checked before anything runs.
  const { opts: sampling, settings } = readGenerationArgs(argv);
  // The seed is fixed here and printed before anything runs, so a crash or Ctrl-C never loses it.
  const seed = parseSeedArg(argv.seed) ?? BigInt(Math.floor(Math.random() * 2 ** 32));
  process.stderr.write(`seed: ${seed}\n`);
  const opts: GenerateOptions = { ...sampling, seed };

  // Memory the call needs, from the configs and arguments, before anything is allocated (--max-memory raises it).
  const maxMemory = argv['max-memory'] === undefined ? defaultMemoryBound() : parseBytes(String(argv['max-memory']));
  if (maxMemory === null) throw new UsageError(`--max-memory must be an amount of bytes such as 64G or 512M, got "${argv['max-memory']}"`);
  const estimate = estimateGenerateMemory(argv.model ?? DEFAULT_MODEL_DIR, { prompts: prompts.length, numImagesPerPrompt: settings.numImagesPerPrompt, priorGuidance: settings.priorGuidance, decoderGuidance: settings.decoderGuidance });
  const refusal = memoryRefusal(estimate, maxMemory);
  if (refusal) throw new UsageError(refusal);

  const out = String(argv.out);
  if (out.trim() === '') throw new UsageError('--out must name a file');
  if (/[\\/]$/.test(out)) throw new UsageError(`--out ${out}: names a folder; --out must name a .png file (e.g. ${path.join(out, 'karlo.png')})`);
  if (path.extname(out).toLowerCase() !== '.png') {
    throw new UsageError(`--out ${out}: karlo writes PNG images; use a .png name (${path.extname(out) ? `not ${path.extname(out)}` : 'no extension given'})`);
  }
  const files = outputPaths(out, prompts.length * settings.numImagesPerPrompt);
  const outDir = path.dirname(path.resolve(out));
  if (!fs.existsSync(outDir)) throw new UsageError(`--out ${out}: folder ${outDir} does not exist`);
  if (!fs.statSync(outDir).isDirectory()) throw new UsageError(`--out ${out}: ${outDir} is not a folder`);
  try {
    fs.accessSync(outDir, fs.constants.W_OK);
  } catch (e) {
    throw new UsageError(`--out ${out}: folder ${outDir} is not writable (${(e as NodeJS.ErrnoException).code ?? 'access denied'})`);
  }
  for (const f of files) {
    // Only regular files are ever replaced (never /dev/null, a FIFO, a socket, a symlink), --force or not.
    const notOurs = whyNotReplaceable(f);
    if (notOurs !== null && !(fs.existsSync(f) && fs.statSync(f).isDirectory())) throw new UsageError(`${f}: ${notOurs}; --out must name a .png file`);
    if (fs.existsSync(f)) {
      if (fs.statSync(f).isDirectory()) throw new UsageError(`${f} is a folder; --out must name a .png file`);
      if (!argv.force) throw new UsageError(`${f} exists; pass --force to overwrite it`);
    }
  }
  const interDir = argv['save-intermediates'] ? intermediatesDir(out) : undefined;
  if (interDir && fs.existsSync(interDir) && !fs.statSync(interDir).isDirectory()) throw new UsageError(`${interDir}: exists and is not a folder (--save-intermediates writes into it)`);
  if (interDir && fs.existsSync(interDir) && !argv.force) throw new UsageError(`${interDir} exists; pass --force to overwrite the intermediates in it`);
  const reportFile = reportTarget(argv.report, argv.force);
  const loras: LoraArg[] = [];
  for (const a of argv.lora === undefined ? [] : [argv.lora].flat().map(String)) {
    let l: LoraArg;
    try {
      l = parseLoraArg(a);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (loras.some((o) => o.component === l.component)) throw new UsageError(`--lora ${a}: a second adapters file for the ${l.component}; one per component`);
    loras.push(l);
  }

  const modelDir = argv.model ?? DEFAULT_MODEL_DIR;
  if (!argv.model) process.stderr.write(`${DEFAULT_MODEL_NOTE}\n`);

  // The whole folder is checked before the backend starts or any weights are read (seconds, one line on error).
  let pipe: UnCLIPPipeline;
  try {
    pipe = await UnCLIPPipeline.load(modelDir, {
      backend: argv.backend ?? (process.env.KARLO_BACKEND || 'auto'), log: (l) => process.stderr.write(`${l}\n`),
      onComponentLoaded: loras.length ? loraLoadHook(loras) : undefined,
    });
  } catch (e) {
    if (e instanceof ModelFolderError || isExpectedError(e)) throw e;
    throw new UsageError(`${modelDir}: ${(e as Error).message}`);
  }
  if (argv.verbose) for (const why of currentBackend()?.skipped ?? []) process.stderr.write(`  skipped ${why}\n`);

  const progress = stageProgress(new Progress(), pipe.folder);
  const previews: Preview[] = [];
  const report = reportFile ? new RunReport(reportFile, pipe, { prompts, modelDir, command: `karlo ${process.argv.slice(2).join(' ')}` }, opts) : undefined;
  let result: Awaited<ReturnType<UnCLIPPipeline['generate']>>;
  try {
    result = await pipe.generate(prompts, RunReport.wrap(report, {
      ...opts,
      onStage: (e) => progress.event(e),
      onStep: () => progress.step(),
      onPreview: interDir ? (p) => previews.push(p) : undefined,
    }));
  } finally {
    progress.dispose();
  }
  const reportWritten = report?.finish(result);

  // Say so when an image came out NaN / infinite (it is written, such values as black).
  const perImage = result.images.length / files.length;
  for (let i = 0; i < files.length; i++) {
    const k = countNonFinite(result.images.subarray(i * perImage, (i + 1) * perImage));
    if (k) process.stderr.write(`karlo: warning: image ${i} (${files[i]}): ${k} of ${perImage} values are NaN or infinite, written as black (non-finite weights or settings)\n`);
  }
  // Provenance in every PNG: what made it, so `karlo inspect` shows it and `karlo generate --from` re-runs it.
  const hash = modelConfigHash(pipe.folder);
  if (from && from.modelConfigHash && from.modelConfigHash !== hash) {
    process.stderr.write(`warning: the configs of ${pipe.folder.root} differ from those that made ${argv.from} (sha256 ${from.modelConfigHash.slice(0, 12)}… then, ${hash.slice(0, 12)}… now)\n`);
  }
  const n = settings.numImagesPerPrompt;
  const outputs = files.map((file, i) => ({ file, prompt: prompts[Math.floor(i / n)], promptIndex: Math.floor(i / n), imageIndex: i % n }));
  const written: string[] = [];
  for (let i = 0; i < files.length; i++) {
    const prov: Provenance = {
      generator: 'karlo-tfjs', version: PACKAGE_VERSION,
      prompt: outputs[i].prompt, promptIndex: outputs[i].promptIndex, imageIndex: outputs[i].imageIndex,
      prompts, numImagesPerPrompt: n, seed: String(result.seed ?? seed),
      steps: { prior: result.settings.priorSteps, decoder: result.settings.decoderSteps, superRes: result.settings.superResSteps },
      guidance: { prior: result.settings.priorGuidance, decoder: result.settings.decoderGuidance },
      model: pipe.folder.root, modelConfigHash: hash, backend: result.timings.backend,
      ...(argv.lora !== undefined ? { extra: { lora: [argv.lora].flat().map(String) } } : {}),
    };
    writePng(files[i], floatToRgb8(result.images, result.shape, i), { [PROVENANCE_KEY]: encodeProvenance(prov) });
    written.push(files[i]);
  }
  const intermediates: string[] = [];
  if (interDir) {
    fs.mkdirSync(interDir, { recursive: true });
    for (const p of previews) {
      const what = p.step < 0 ? `${p.stage}-final` : `${p.stage}-step${String(p.step).padStart(3, '0')}-t${p.timestep}`;
      for (let i = 0; i < p.shape[0]; i++) {
        const f = path.join(interDir, `${what}-img${i}.png`);
        writePng(f, floatToRgb8(p.images, p.shape, i));
        intermediates.push(f);
      }
    }
  }

  if (argv.json) {
    process.stdout.write(`${JSON.stringify({
      images: written,
      outputs,
      ...(interDir ? { intermediates } : {}),
      ...(reportWritten ? { report: reportWritten } : {}),
      seed: result.seed !== undefined ? result.seed.toString() : undefined,
      settings: result.settings,
      timings: result.timings,
    })}\n`);
  } else {
    process.stdout.write(`${timingTable(result.timings)}\n`);
    if (result.seed !== undefined) process.stdout.write(`seed ${result.seed}\n`);
    for (const f of written) process.stdout.write(`wrote ${f}\n`);
    if (interDir) process.stdout.write(`wrote ${intermediates.length} intermediate images to ${interDir}\n`);
    if (reportWritten) process.stdout.write(`wrote ${reportWritten}\n`);
  }
}

const command: CommandModule<object, GenerateArgs> = {
  command: 'generate [prompts..]',
  describe: 'text → image with the whole unCLIP pipeline (prior, decoder, super-res)',
  builder: (y: Argv) => addGenerationOptions(y
    .positional('prompts', { type: 'string', array: true, describe: 'one or more prompts' })
    .option('download', { type: 'boolean', describe: 'with --model owner/name[@revision] not in the cache: download its configs, tokenizer and safetensors into the Hugging Face cache first ($HF_ENDPOINT or huggingface.co)' })
    .option('from', { type: 'string', describe: 're-run the call recorded in a PNG made by karlo generate (options given here override it)' })
    .option('model', { type: 'string', describe: 'diffusers-layout Karlo folder (model_index.json), or a Hub id owner/name[@revision] found in the Hugging Face cache; default: the bundled karlo-nano (models/karlo-nano)' })
    .option('out', { type: 'string', default: 'karlo.png', describe: 'output PNG (several images: NAME-0.png, NAME-1.png, …)' })
    .option('seed', { type: 'string', describe: 'seed of the torch-compatible generator (default: random, printed)' }))
    .option('save-intermediates', { type: 'boolean', describe: 'also write the decoder (64×64) and super-res latents after every step as PNGs to NAME.intermediates/' })
    .option('force', { type: 'boolean', describe: 'overwrite existing output files (regular files only)' })
    .option('max-memory', { type: 'string', describe: 'refuse calls estimated to need more memory than this (e.g. 64G; default: physical memory)' })
    .option('report', { type: 'string', describe: 'also write a self-contained HTML run report: x0 per step, prior embedding cosines, attention maps, time and memory per stage' })
    .option('lora', { type: 'string', array: true, describe: 'LoRA adapters FILE[:scale] (from karlo train --lora-rank: checkpoint-N/pytorch_lora_weights.safetensors), attached to the component they were trained on' })
    .option('json', { type: 'boolean', describe: 'print {"images": [...], "timings": {...}} on stdout' }) as unknown as Argv<GenerateArgs>,
  handler: run,
};

export default command;
