// `karlo parity` kind "interpolation": a recorded run of diffusers' community UnCLIPTextInterpolationPipeline
// (fixtures README section n): run.json (start_prompt, end_prompt, steps, step counts, guidance, generator seed,
// draw order, scheduler steps) + run.safetensors. The model is the folder itself when it holds model_index.json,
// else run.json's "model" (relative to the folder), else the sibling ../pipeline_tiny (how the fixture was made).
// Compared: the tokenizer call (text_encoder.input_ids / attention_mask, exact), the masked text encoder outputs,
// the slerp inputs' restatement (interp.* from the RECORDED text encoder outputs, abs ≤ 1e-6, and from ours,
// module tolerance), interp_vals (exact), the merged mask (exact), then the whole pipeline (every cap.*, step.*,
// random draw and the image) through the shared pipeline runner with --slerp diffusers.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile } from '../io/safetensors.js';
import { readJson } from '../io/weights.js';
import { UnCLIPPipeline } from '../pipeline/unclip_pipeline.js';
import { interpolateText, slerpDiffusers, torchLinspace } from '../pipeline/interpolation.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { componentDir } from '../io/model_folder.js';
import { compareArrays, type Comparison } from './compare.js';
import { runPipelineParity } from './pipeline.js';
import type { ParityKind, ParityOptions } from './types.js';

interface InterpRun {
  start_prompt: string;
  end_prompt: string;
  steps: number;
  model?: string;
}

function isInterpolationRun(file: string): boolean {
  try {
    const j = readJson<Partial<InterpRun>>(file);
    return typeof j.start_prompt === 'string' && typeof j.end_prompt === 'string' && typeof j.steps === 'number';
  } catch {
    return false;
  }
}

/** run*.json files of the folder that record a text interpolation, with their .safetensors. */
export function interpolationRuns(dir: string): string[] {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return []; }
  return names.filter((n) => /^run.*\.json$/.test(n) && fs.existsSync(path.join(dir, n.replace(/\.json$/, '.safetensors'))))
    .map((n) => path.join(dir, n)).filter(isInterpolationRun).sort();
}

export function interpolationModelDir(dir: string, run: Partial<InterpRun>, runFile: string): string {
  if (fs.existsSync(path.join(dir, 'model_index.json'))) return dir;
  const cand = run.model ? path.resolve(dir, run.model) : componentDir(path.dirname(path.resolve(dir)), 'pipeline_tiny');
  if (!cand || !fs.existsSync(path.join(cand, 'model_index.json'))) {
    throw new Error(`${runFile}: no model for this run: put model_index.json in the folder, name it in run.json "model", or have ../pipeline_tiny beside it`);
  }
  return cand;
}

const OWN = /^(text_encoder\.|interp\.|interp_vals$)/;

export async function runInterpolationParity(runFile: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const dir = path.dirname(runFile);
  const run = readJson<InterpRun>(runFile);
  const modelDir = interpolationModelDir(dir, run, runFile);
  const ref = SafetensorsFile.open(runFile.replace(/\.json$/, '.safetensors'));
  const atol = opts.atol ?? 1e-4;
  const out: Comparison[] = [];
  const names = new Set(ref.names());
  const cmp = (name: string, ours: ArrayLike<number>, tol: { atol: number; scaleByMax: boolean }, label = name) => {
    if (!names.has(name)) return;
    const r = ref.read(name);
    const c = compareArrays(label, ours, r.data as ArrayLike<number>, tol);
    c.shape = r.shape;
    out.push(c);
  };
  try {
    // 1. the slerp restated from the recorded inputs (fixtures README: abs ≤ 1e-6 given the same inputs)
    const steps = run.steps;
    const vals = torchLinspace(steps);
    cmp('interp_vals', vals, { atol: 0, scaleByMax: false });
    if (names.has('text_encoder.text_embeds') && names.has('text_encoder.last_hidden_state')) {
      const te = ref.read('text_encoder.text_embeds'), lhs = ref.read('text_encoder.last_hidden_state');
      const D = te.shape[1], n = lhs.shape[1] * lhs.shape[2];
      const rv = names.has('interp_vals') ? (ref.read('interp_vals').data as Float32Array) : vals;
      const e = new Float32Array(steps * D), h = new Float32Array(steps * n);
      for (let k = 0; k < steps; k++) {
        e.set(slerpDiffusers(rv[k], (te.data as Float32Array).subarray(0, D), (te.data as Float32Array).subarray(D, 2 * D)), k * D);
        h.set(slerpDiffusers(rv[k], (lhs.data as Float32Array).subarray(0, n), (lhs.data as Float32Array).subarray(n, 2 * n)), k * n);
      }
      cmp('interp.text_embeds', e, { atol: 1e-6, scaleByMax: false }, 'interp.text_embeds (slerp of the recorded inputs)');
      cmp('interp.last_hidden_state', h, { atol: 1e-6, scaleByMax: false }, 'interp.last_hidden_state (slerp of the recorded inputs)');
    }
    // 2. the tokenizer call
    const tok = CLIPTokenizer.fromDir(componentDir(modelDir, 'tokenizer') ?? path.join(modelDir, 'tokenizer'));
    const enc = tok.encode([run.start_prompt, run.end_prompt], { maxLength: tok.modelMaxLength, padding: 'max_length', truncation: true });
    cmp('text_encoder.input_ids', enc.inputIds.flat(), { atol: 0, scaleByMax: false });
    cmp('text_encoder.attention_mask', enc.attentionMask.flat(), { atol: 0, scaleByMax: false });

    // 3. the whole pipeline, our chain end to end for the interpolation tensors
    const ours = new Map<string, Float32Array | Int32Array>();
    const res = await runPipelineParity(runFile, {
      ...opts,
      modelDir,
      comparedElsewhere: (n) => OWN.test(n),
      call: async (o) => {
        const pipe = await UnCLIPPipeline.load(modelDir);
        try {
          return await interpolateText(pipe, run.start_prompt, run.end_prompt, {
            ...o, steps, slerp: 'diffusers',
            onIntermediate: (name, t) => {
              if (OWN.test(name)) { ours.set(name, t.dataSync().slice() as Float32Array); return undefined; }
              return o.onIntermediate?.(name, t);
            },
          });
        } finally {
          pipe.dispose();
        }
      },
    });
    for (const [name, data] of ours) {
      const exact = name === 'interp.attention_mask';
      cmp(name, data, { atol: exact ? 0 : atol, scaleByMax: !exact });
    }
    for (const n of names) {
      if (OWN.test(n) && !out.some((c) => c.name.split(' ')[0] === n) && n !== 'text_encoder.nomask_last_hidden_state') {
        out.push({ name: `${n} (not produced)`, maxAbs: Infinity, maxRel: Infinity, maxRef: NaN, allowed: 0, argmax: -1, ok: false });
      }
    }
    out.push(...res);
  } finally {
    ref.close();
  }
  return out;
}

export const interpolationParity: ParityKind = {
  name: 'interpolation',
  detect: (dir) => interpolationRuns(dir).length > 0,
  async run(dir, opts) {
    const out: Comparison[] = [];
    const runs = interpolationRuns(dir);
    for (const f of runs) {
      const prefix = runs.length > 1 ? `${path.basename(f, '.json')}: ` : '';
      for (const c of await runInterpolationParity(f, opts)) out.push({ ...c, name: `${prefix}${c.name}` });
    }
    return out;
  },
};
