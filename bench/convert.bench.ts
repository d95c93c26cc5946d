// Real-size `karlo convert`: a synthetic Karlo prior checkpoint of the real size (Lightning layout, keys "model.*",
// 20 layers × width 2048, 1,022,028,544 float32 parameters = 4.09 GB, written with ZIP64 records by our torch
// writer) plus a real-size ViT-L-14_stats.th, converted in a fresh child process (`--only prior`, real Karlo
// hparams). Reports MB/s and the child's peak RSS against the checkpoint size (requirement: ≤ 1.2×), checks the
// output's config equals karlo_configs/prior/config.json and spot-checks the per-head q/k/v split.
// Needs ~8.5 GB of free disk under the OS temp dir (deleted at the end).
//   npx tsx bench/convert.bench.ts [--keep]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { PickleWriter, saveTorchStateDict, writeZip, type TensorToSave } from '../src/io/torch/writer.js';
import { convertOriginal, ORIGINAL_FILES } from '../tools/convert/convert.js';
import { checkBenchArgs } from './args.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MB = 1e6;

/** The original Karlo prior's state dict (names and shapes of kakaobrain/karlo's PriorDiffusionModel). */
function priorShapes(): Map<string, number[]> {
  const W = 2048, D = 768, L = 20, T = 77;
  const m = new Map<string, number[]>();
  const lin = (k: string, o: number, i: number) => { m.set(`model.${k}.weight`, [o, i]); m.set(`model.${k}.bias`, [o]); };
  const ln = (k: string) => { m.set(`model.${k}.weight`, [W]); m.set(`model.${k}.bias`, [W]); };
  m.set('model.positional_embedding', [1, T + 4, W]);
  m.set('model.prd_emb', [1, 1, W]);
  lin('time_embed.0', W, W);
  lin('time_embed.2', W, W);
  lin('clip_img_proj', W, D);
  lin('text_emb_proj', W, D);
  lin('text_enc_proj', W, D);
  for (let i = 0; i < L; i++) {
    const p = `transformer.resblocks.${i}`;
    ln(`${p}.ln_1`);
    lin(`${p}.attn.c_qkv`, 3 * W, W);
    lin(`${p}.attn.c_proj`, W, W);
    ln(`${p}.ln_2`);
    lin(`${p}.mlp.c_fc`, 4 * W, W);
    lin(`${p}.mlp.c_proj`, W, 4 * W);
  }
  ln('final_ln');
  lin('out_proj', D, W);
  return m;
}

/** Deterministic values: element i of tensor t is a function of (t, i), so the output can be spot-checked. */
function values(t: number, n: number): Uint8Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 7 + t * 13) % 1009) / 1009 - 0.5;
  return new Uint8Array(a.buffer);
}

function child(from: string, out: string): void {
  const t0 = performance.now();
  const r = convertOriginal({ from, out, components: ['prior'] });
  const seconds = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ seconds, bytes: r.bytes, maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
}

function main(): void {
  checkBenchArgs('convert', { boolean: ['keep'], positionals: false });
  const keep = process.argv.includes('--keep');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-convert-bench-'));
  const from = path.join(dir, 'original');
  const out = path.join(dir, 'converted');
  fs.mkdirSync(from);
  try {
    const shapes = priorShapes();
    const tensors = new Map<string, TensorToSave>();
    let t = 0;
    let params = 0;
    for (const [k, s] of shapes) {
      const n = s.reduce((a, b) => a * b, 1);
      params += n;
      const idx = t++;
      tensors.set(k, { dtype: 'F32', shape: s, data: () => values(idx, n) });
    }
    const ckpt = path.join(from, ORIGINAL_FILES.prior);
    let w0 = performance.now();
    saveTorchStateDict(ckpt, tensors, { lightning: true, zip64: true, crc: false });
    const size = fs.statSync(ckpt).size;
    console.log(`synthetic prior checkpoint: ${params.toLocaleString('en-US')} float32 parameters, ${(size / 1e9).toFixed(3)} GB (ZIP64), written in ${((performance.now() - w0) / 1000).toFixed(1)} s`);
    // ViT-L-14_stats.th: torch.save((mean[768], std[768])) — a tuple pickle.
    const stats = new PickleWriter().proto(2);
    for (const key of ['0', '1']) {
      stats.global('torch._utils', '_rebuild_tensor_v2').mark()
        .mark().str('storage').global('torch', 'FloatStorage').str(key).str('cpu').int(768).tuple().binpersid()
        .int(0).ints([768]).ints([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
    }
    stats.op(0x86).stop(); // TUPLE2
    writeZip(path.join(from, ORIGINAL_FILES.stats), [
      { name: 'ViT-L-14_stats/data.pkl', data: stats.bytes() },
      { name: 'ViT-L-14_stats/data/0', data: values(1000, 768) },
      { name: 'ViT-L-14_stats/data/1', data: values(1001, 768) },
      { name: 'ViT-L-14_stats/version', data: Buffer.from('3\n') },
    ]);

    // Convert in a fresh process so its peak RSS is the conversion's alone.
    w0 = performance.now();
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', from, out], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (r.status !== 0) throw new Error(`conversion child failed (exit ${r.status}): ${r.stdout}`);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
    const mbs = size / MB / res.seconds;
    console.log(`convert --only prior (real Karlo hparams): ${res.seconds.toFixed(1)} s for ${(size / 1e9).toFixed(2)} GB in, ${(res.bytes / 1e9).toFixed(2)} GB out: ${mbs.toFixed(0)} MB/s (input just written: mostly page cache)`);
    const ratio = res.maxRssBytes / size;
    console.log(`peak RSS of the conversion process: ${(res.maxRssBytes / MB).toFixed(0)} MB = ${ratio.toFixed(3)} × the checkpoint size (limit 1.2 ×) ${ratio <= 1.2 ? 'OK' : 'FAIL'}`);

    // The output: config equal to the real Karlo prior config; parameter count; one q/k/v split spot check.
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'prior', 'config.json'), 'utf8'));
    const ref = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/karlo_configs/prior/config.json'), 'utf8'));
    const same = JSON.stringify(Object.entries(cfg).sort()) === JSON.stringify(Object.entries(ref).sort());
    const st = SafetensorsFile.open(path.join(out, 'prior', 'diffusion_pytorch_model.safetensors'));
    let outParams = 0;
    for (const n of st.names()) outParams += st.info(n).shape.reduce((a, b) => a * b, 1);
    const qkvIndex = [...shapes.keys()].indexOf('model.transformer.resblocks.7.attn.c_qkv.weight');
    const src = new Float32Array(values(qkvIndex, 3 * 2048 * 2048).buffer);
    const k = st.read('transformer_blocks.7.attn1.to_k.weight').data;
    // to_k = rows [64, 128), [256, 320), ... (head_dim 64 chunks dealt round robin to q, k, v).
    let splitOk = true;
    for (const [dstRow, srcRow] of [[0, 64], [63, 127], [64, 256], [2047, 31 * 192 + 64 + 63]]) {
      for (let j = 0; j < 2048; j += 97) if (k[dstRow * 2048 + j] !== src[srcRow * 2048 + j]) splitOk = false;
    }
    st.close();
    console.log(`output: config ${same ? 'equals' : 'DIFFERS FROM'} karlo_configs/prior/config.json; ${outParams.toLocaleString('en-US')} parameters (karlo_configs/param_counts.json: 1,022,030,080); per-head qkv split ${splitOk ? 'OK' : 'WRONG'}`);
    if (!same || !splitOk || outParams !== 1022030080 || ratio > 1.2) process.exitCode = 1;
  } finally {
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
    else console.log(`kept ${dir}`);
  }
}

if (process.argv[2] === '--child') child(process.argv[3], process.argv[4]);
else main();
