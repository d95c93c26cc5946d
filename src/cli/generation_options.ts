// The sampling options shared by the commands that generate images (`karlo generate`, `karlo batch`): their
// yargs definitions, and reading them into GenerateOptions with one-line errors naming the option.
import type { Argv } from 'yargs';
import { UsageError } from './errors.js';
import { KARLO_PRESETS, UnCLIPPipeline, type GenerateOptions, type GenerateResult } from '../pipeline/unclip_pipeline.js';

export interface GenerationArgs {
  'prior-steps'?: number;
  'decoder-steps'?: number;
  'sr-steps'?: number;
  'prior-guidance'?: number;
  'decoder-guidance'?: number;
  'num-images'?: number;
  preset?: string;
}

/** Adds --prior-steps … --preset (not --seed: its meaning differs per command). */
export function addGenerationOptions<T>(y: Argv<T>): Argv<T & GenerationArgs> {
  return y
    .option('prior-steps', { type: 'number', describe: 'prior denoising steps (default 25)' })
    .option('decoder-steps', { type: 'number', describe: 'decoder denoising steps (default 25; preset default: 50)' })
    .option('sr-steps', { type: 'number', describe: 'super-res denoising steps (default 7)' })
    .option('prior-guidance', { type: 'number', describe: 'prior classifier-free guidance scale (default 4)' })
    .option('decoder-guidance', { type: 'number', describe: 'decoder classifier-free guidance scale (default 8)' })
    .option('num-images', { type: 'number', describe: 'images per prompt (default 1)' })
    .option('preset', { type: 'string', describe: "Karlo's sampling preset (fast: decoder 25 steps, default: 50)" }) as unknown as Argv<T & GenerationArgs>;
}

const NAMES: Record<string, string> = {
  priorSteps: '--prior-steps', decoderSteps: '--decoder-steps', superResSteps: '--sr-steps',
  priorGuidance: '--prior-guidance', decoderGuidance: '--decoder-guidance', numImagesPerPrompt: '--num-images',
};

/** Reads the options (validated as the pipeline will); errors are UsageErrors naming the option. */
export function readGenerationArgs(argv: GenerationArgs): { opts: GenerateOptions; settings: GenerateResult['settings'] } {
  for (const k of ['prior-steps', 'decoder-steps', 'sr-steps', 'prior-guidance', 'decoder-guidance', 'num-images'] as const) {
    const v = argv[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) throw new UsageError(`--${k} must be a number, got ${String(v)}`);
  }
  if (argv.preset !== undefined && !Object.prototype.hasOwnProperty.call(KARLO_PRESETS, argv.preset)) {
    throw new UsageError(`--preset must be one of ${Object.keys(KARLO_PRESETS).join(', ')}, got "${argv.preset}"`);
  }
  const opts: GenerateOptions = {
    preset: argv.preset as GenerateOptions['preset'],
    priorSteps: argv['prior-steps'],
    decoderSteps: argv['decoder-steps'],
    superResSteps: argv['sr-steps'],
    priorGuidance: argv['prior-guidance'],
    decoderGuidance: argv['decoder-guidance'],
    numImagesPerPrompt: argv['num-images'],
  };
  try {
    return { opts, settings: UnCLIPPipeline.resolveSettings(opts) };
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^(\w+)/, (m) => NAMES[m] ?? m));
  }
}

/** --seed: a non-negative integer below 2^64, or undefined. */
export function parseSeedArg(s: string | number | undefined, name = '--seed'): bigint | undefined {
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(String(s).trim())) throw new UsageError(`${name} must be a non-negative integer, got "${s}"`);
  const v = BigInt(String(s).trim());
  if (v >= 1n << 64n) throw new UsageError(`${name} must be below 2^64, got ${s}`);
  return v;
}
