// `karlo parity` kind "schedulers": a folder like test/fixtures/schedulers (index.json naming the schedulers,
// {name}/scheduler_config.json, {name}.safetensors with betas/alphas/alphas_cumprod, timesteps.N*, single.t*.*
// and loop.N*.*). Runs every step twice: with the recorded variance noise and drawing it from TorchGenerator.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { loadSafetensors, type TensorData } from '../io/safetensors.js';
import { FixtureTensors } from './fixture.js';
import { readJson } from '../io/weights.js';
import { TorchGenerator } from '../random/generator.js';
import { UnCLIPScheduler, type UnCLIPSchedulerConfig } from '../samplers/unclip_scheduler.js';
import { denoise } from '../samplers/denoise.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';

/** Tolerances of the fixtures README (h): tables abs ≤ 1e-7, timesteps exact, steps abs ≤ 1e-5. */
const TABLE_ATOL = 1e-7;
const STEP_ATOL = 1e-5;

type SchedIndex = Record<string, { config?: Partial<UnCLIPSchedulerConfig> & Record<string, unknown> }>;

function schedulerNames(dir: string): string[] {
  const idx = path.join(dir, 'index.json');
  if (fs.existsSync(idx)) {
    const j = readJson<SchedIndex>(idx);
    const names = Object.keys(j).filter((k) => j[k]?.config?._class_name === 'UnCLIPScheduler' || fs.existsSync(path.join(dir, k, 'scheduler_config.json')));
    if (names.length) return names;
  }
  return fs.readdirSync(dir).filter((n) => fs.existsSync(path.join(dir, n, 'scheduler_config.json')) && fs.existsSync(path.join(dir, `${n}.safetensors`)));
}

function loadScheduler(dir: string, name: string): UnCLIPScheduler {
  const cfgFile = path.join(dir, name, 'scheduler_config.json');
  if (fs.existsSync(cfgFile)) return UnCLIPScheduler.fromDir(path.join(dir, name));
  const j = readJson<SchedIndex>(path.join(dir, 'index.json'));
  if (!j[name]?.config) throw new Error(`${dir}: no ${name}/scheduler_config.json and no index.json entry "${name}.config"`);
  return UnCLIPScheduler.fromConfig(j[name].config!, `${path.join(dir, 'index.json')} (${name}.config)`);
}

function need(st: Map<string, TensorData>, file: string, key: string): TensorData {
  return new FixtureTensors(file, st).need(key);
}

const toTensor = (d: TensorData) => tf.tensor(d.data, d.shape, 'float32');

/** All comparisons for one scheduler of a fixture folder. */
export async function runSchedulerParity(dir: string, name: string, opts: ParityOptions): Promise<Comparison[]> {
  const file = path.join(dir, `${name}.safetensors`);
  const st = loadSafetensors(file);
  const sched = loadScheduler(dir, name);
  const stepAtol = opts.atol ?? STEP_ATOL;
  const out: Comparison[] = [];
  const push = (c: Comparison) => { out.push(c); opts.log?.(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name} max abs ${c.maxAbs.toExponential(2)}`); };

  for (const [key, ours] of [['betas', sched.betas], ['alphas', sched.alphas], ['alphas_cumprod', sched.alphasCumprod]] as const) {
    if (st.has(key)) push(compareArrays(`${name}.${key}`, ours, st.get(key)!.data, { atol: TABLE_ATOL, scaleByMax: false }));
  }
  for (const key of st.keys()) {
    const m = /^timesteps\.N(\d+)$/.exec(key);
    if (!m) continue;
    sched.setTimesteps(Number(m[1]));
    push(compareArrays(`${name}.${key}`, sched.timesteps, st.get(key)!.data, { atol: 0, scaleByMax: false }));
  }

  const cmp = (label: string, ours: tf.Tensor, key: string) => {
    const ref = need(st, file, key);
    const c = compareArrays(`${name}.${label}`, ours.dataSync(), ref.data, { atol: stepAtol, scaleByMax: false });
    if (ours.shape.join(',') !== ref.shape.join(',')) c.ok = false;
    push(c);
  };

  // single.t{T}.*: one step with the default prev_timestep (t − 1).
  const singles = [...new Set([...st.keys()].map((k) => /^single\.t(\d+)\./.exec(k)?.[1]).filter((x): x is string => !!x))].map(Number);
  for (const t of singles) {
    const p = `single.t${t}`;
    // Generator mode needs the recorded seed (a fixture without one is checked with its recorded noise only).
    for (const mode of st.has(`${p}.generator_seed`) ? ['noise', 'generator'] as const : ['noise'] as const) {
      tf.tidy(() => {
        const mo = toTensor(need(st, file, `${p}.model_output`));
        const x = toTensor(need(st, file, `${p}.sample_in`));
        const noiseKey = `${p}.variance_noise`;
        const stepOpts = mode === 'noise'
          ? { noise: st.has(noiseKey) ? toTensor(st.get(noiseKey)!) : undefined }
          : { generator: new TorchGenerator(BigInt(need(st, file, `${p}.generator_seed`).data[0])) };
        const r = sched.step(mo, t, x, stepOpts);
        cmp(`${p}.prev_sample (${mode})`, r.prevSample, `${p}.prev_sample`);
        if (st.has(`${p}.pred_original_sample`)) cmp(`${p}.pred_original_sample (${mode})`, r.predOriginalSample, `${p}.pred_original_sample`);
      });
    }
  }

  // loop.N{N}.*: the pipeline's loop (prev_timestep = next timestep, t − 1 on the last step), our samples chained.
  const loops = [...new Set([...st.keys()].map((k) => /^loop\.N(\d+)\./.exec(k)?.[1]).filter((x): x is string => !!x))].map(Number);
  for (const n of loops) {
    const p = `loop.N${n}`;
    sched.setTimesteps(n);
    for (const mode of st.has(`${p}.generator_seed`) ? ['noise', 'generator'] as const : ['noise'] as const) {
      const gen = mode === 'generator' ? new TorchGenerator(BigInt(need(st, file, `${p}.generator_seed`).data[0])) : undefined;
      // The sampler's loop with the recorded model outputs as the network.
      const last = await denoise(sched, toTensor(need(st, file, `${p}.init_sample`)), (_x, _t, i) => toTensor(need(st, file, `${p}.step${i}.model_output`)), {
        generator: gen,
        noise: gen ? undefined : (i) => { const k = `${p}.step${i}.variance_noise`; return st.has(k) ? toTensor(st.get(k)!) : undefined; },
        onSchedulerOutput: ({ step: i, prevSample, predOriginalSample }) => {
          cmp(`${p}.step${i}.prev_sample (${mode})`, prevSample, `${p}.step${i}.prev_sample`);
          cmp(`${p}.step${i}.pred_original_sample (${mode})`, predOriginalSample, `${p}.step${i}.pred_original_sample`);
        },
      });
      last.dispose();
    }
  }
  return out;
}

export const schedulersParity: ParityKind = {
  name: 'schedulers',
  detect: (dir) => {
    try { return schedulerNames(dir).length > 0; } catch { return false; }
  },
  async run(dir, opts) {
    const names = schedulerNames(dir);
    if (!names.length) throw new Error(`${dir}: no scheduler fixtures (expected index.json + {name}/scheduler_config.json + {name}.safetensors)`);
    const out: Comparison[] = [];
    for (const n of names) out.push(...(await runSchedulerParity(dir, n, opts)));
    return out;
  },
};
