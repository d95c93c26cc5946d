// tools/convert on a synthetic release of OTHER sizes than the fixtures (written with our torch writer, key
// structure of Karlo's own UNet / prior classes): a 4-level decoder with growing channels, 3 res blocks, attention
// on levels 1-3, several heads per level, skip convolutions; a 3-level super-res with scale-shift; a 4-head
// prior. The derived configs follow the fixtures README's rules and the converted folder loads strictly into our
// modules and runs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { fixture, useBackend } from './helpers.js';
import { saveTorchStateDict, type TensorToSave } from '../src/io/torch/writer.js';
import { convertOriginal, ORIGINAL_FILES } from '../tools/convert/convert.js';
import { loadComponent } from '../src/loading/load_component.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-sizes-'));
const FROM = path.join(tmp, 'original');
const CONFIGS = path.join(tmp, 'configs');
const OUT = path.join(tmp, 'out');

let seed = 12345;
function rand(n: number): Uint8Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    a[i] = ((seed >>> 8) / 2 ** 24 - 0.5) * 0.2;
  }
  return new Uint8Array(a.buffer);
}

class SD {
  readonly m = new Map<string, TensorToSave>();
  t(k: string, shape: number[]) {
    this.m.set(k, { dtype: 'F32', shape, data: rand(shape.reduce((a, b) => a * b, 1)) });
  }
  lin(k: string, o: number, i: number) { this.t(`${k}.weight`, [o, i]); this.t(`${k}.bias`, [o]); }
  norm(k: string, c: number) { this.t(`${k}.weight`, [c]); this.t(`${k}.bias`, [c]); }
  conv(k: string, o: number, i: number, ks = 3) { this.t(`${k}.weight`, [o, i, ks, ks]); this.t(`${k}.bias`, [o]); }
  conv1d(k: string, o: number, i: number) { this.t(`${k}.weight`, [o, i, 1]); this.t(`${k}.bias`, [o]); }
}

/** guided-diffusion / Karlo UNet keys: ResBlocks (in_layers, emb_layers, out_layers, skip_connection), attention. */
function karloUNet(sd: SD, p: string, o: { mc: number; mult: number[]; nrb: number; attnLevels: number[]; inC: number; outC: number; scaleShift: boolean; xf?: number }) {
  const emb = 4 * o.mc;
  const res = (k: string, cin: number, cout: number) => {
    sd.norm(`${p}${k}.in_layers.0`, cin);
    sd.conv(`${p}${k}.in_layers.2`, cout, cin);
    sd.lin(`${p}${k}.emb_layers.1`, o.scaleShift ? 2 * cout : cout, emb);
    sd.norm(`${p}${k}.out_layers.0`, cout);
    sd.conv(`${p}${k}.out_layers.3`, cout, cout);
    if (cin !== cout) sd.conv(`${p}${k}.skip_connection`, cout, cin, 1);
  };
  const attn = (k: string, c: number) => {
    sd.norm(`${p}${k}.norm`, c);
    sd.conv1d(`${p}${k}.qkv`, 3 * c, c);
    sd.conv1d(`${p}${k}.encoder_kv`, 2 * c, o.xf!);
    sd.conv1d(`${p}${k}.proj_out`, c, c);
  };
  sd.lin(`${p}time_embed.0`, emb, o.mc);
  sd.lin(`${p}time_embed.2`, emb, emb);
  let ch = o.mc * o.mult[0];
  sd.conv(`${p}input_blocks.0.0`, ch, o.inC);
  const chans = [ch];
  let n = 1;
  o.mult.forEach((m, level) => {
    for (let j = 0; j < o.nrb; j++) {
      res(`input_blocks.${n}.0`, ch, m * o.mc);
      ch = m * o.mc;
      if (o.attnLevels.includes(level)) attn(`input_blocks.${n}.1`, ch);
      chans.push(ch);
      n++;
    }
    if (level !== o.mult.length - 1) {
      res(`input_blocks.${n}.0`, ch, ch);
      chans.push(ch);
      n++;
    }
  });
  res('middle_block.0', ch, ch);
  if (o.xf) { attn('middle_block.1', ch); res('middle_block.2', ch, ch); } else res('middle_block.1', ch, ch);
  n = 0;
  [...o.mult.entries()].reverse().forEach(([level, m]) => {
    for (let i = 0; i <= o.nrb; i++) {
      const ich = chans.pop()!;
      res(`output_blocks.${n}.0`, ch + ich, m * o.mc);
      ch = m * o.mc;
      let j = 1;
      if (o.attnLevels.includes(level)) attn(`output_blocks.${n}.${j++}`, ch);
      if (level && i === o.nrb) res(`output_blocks.${n}.${j}`, ch, ch);
      n++;
    }
  });
  sd.norm(`${p}out.0`, ch);
  sd.conv(`${p}out.2`, o.outC, ch);
}

test('a synthetic release of other sizes converts to configs that follow the rules and load strictly into our modules', async () => {
  fs.mkdirSync(FROM, { recursive: true });
  fs.mkdirSync(CONFIGS, { recursive: true });
  const clipDim = 64; // = the fixture CLIP's projection dim (its ViT-L-14.pt and stats are reused)
  for (const f of [ORIGINAL_FILES.clip, ORIGINAL_FILES.stats]) fs.copyFileSync(fixture('original_ckpt', 'original', f), path.join(FROM, f));

  // Prior: width 48 = 4 heads × 12, 3 layers.
  const prior = new SD();
  const W = 48;
  prior.t('model.positional_embedding', [1, 81, W]);
  prior.t('model.prd_emb', [1, 1, W]);
  prior.lin('model.time_embed.0', W, W);
  prior.lin('model.time_embed.2', W, W);
  for (const k of ['clip_img_proj', 'text_emb_proj', 'text_enc_proj']) prior.lin(`model.${k}`, W, clipDim);
  for (let i = 0; i < 3; i++) {
    const p = `model.transformer.resblocks.${i}`;
    prior.norm(`${p}.ln_1`, W);
    prior.lin(`${p}.attn.c_qkv`, 3 * W, W);
    prior.lin(`${p}.attn.c_proj`, W, W);
    prior.norm(`${p}.ln_2`, W);
    prior.lin(`${p}.mlp.c_fc`, 4 * W, W);
    prior.lin(`${p}.mlp.c_proj`, W, 4 * W);
  }
  prior.norm('model.final_ln', W);
  prior.lin('model.out_proj', clipDim, W);
  saveTorchStateDict(path.join(FROM, ORIGINAL_FILES.prior), prior.m, { lightning: true });

  // Decoder: 64 px, channel_mult '' (1,2,3,4 at 64 px) × 32, 3 res blocks, attention at 32,16,8 (levels 1-3),
  // head channels 32 (1 head at level 1, 3 at level 3), xf_width 48, learn_sigma, scale-shift.
  const dec = new SD();
  karloUNet(dec, 'model.', { mc: 32, mult: [1, 2, 3, 4], nrb: 3, attnLevels: [1, 2, 3], inC: 3, outC: 6, scaleShift: true, xf: 48 });
  dec.t('model.cf_param', [clipDim]);
  dec.lin('model.clip_emb', 128, clipDim);
  dec.lin('model.clip_tok_proj', 4 * 48, clipDim);
  dec.lin('model.text_feat_proj', 128, clipDim);
  dec.lin('model.text_seq_proj.0', 48, clipDim);
  dec.norm('model.text_seq_proj.1', 48);
  saveTorchStateDict(path.join(FROM, ORIGINAL_FILES.decoder), dec.m, { lightning: true });

  // Super-res: 3 levels (1,2,2) × 32, depth 2, scale-shift norm, no attention; two UNets in one file.
  const sr = new SD();
  for (const p of ['model_first_steps.', 'model_last_step.']) karloUNet(sr, p, { mc: 32, mult: [1, 2, 2], nrb: 2, attnLevels: [], inC: 6, outC: 3, scaleShift: true });
  saveTorchStateDict(path.join(FROM, ORIGINAL_FILES.superRes), sr.m, { lightning: true, zip64: true });

  fs.writeFileSync(path.join(CONFIGS, 'prior_1B_vit_l.yaml'), 'model:\n  hparams:\n    text_ctx: 77\n    xf_width: 48\n    xf_layers: 3\n    xf_heads: 4\n    xf_final_ln: true\n    clip_dim: 64\n');
  fs.writeFileSync(path.join(CONFIGS, 'decoder_900M_vit_l.yaml'), "model:\n  hparams:\n    image_size: 64\n    num_channels: 32\n    num_res_blocks: 3\n    channel_mult: ''\n    attention_resolutions: 32,16,8\n    num_head_channels: 32\n    use_scale_shift_norm: true\n    clip_dim: 64\n    clip_emb_mult: 4\n    xf_width: 48\n    resblock_updown: true\n    learn_sigma: true\n");
  fs.writeFileSync(path.join(CONFIGS, 'improved_sr_64_256_1.4B.yaml'), 'model:\n  hparams:\n    channels: 32\n    depth: 2\n    channels_multiple:\n    - 1\n    - 2\n    - 2\n');

  convertOriginal({ from: FROM, out: OUT, configs: CONFIGS });
  const cfg = (c: string) => JSON.parse(fs.readFileSync(path.join(OUT, c, 'config.json'), 'utf8'));
  const p = cfg('prior');
  assert.equal([p.num_attention_heads, p.attention_head_dim, p.num_layers, p.embedding_dim, p.num_embeddings], [4, 12, 3, 64, 77]);
  const d = cfg('decoder');
  assert.equal(d.block_out_channels, [32, 64, 96, 128]);
  assert.equal(d.down_block_types, ['ResnetDownsampleBlock2D', 'SimpleCrossAttnDownBlock2D', 'SimpleCrossAttnDownBlock2D', 'SimpleCrossAttnDownBlock2D']);
  assert.equal(d.up_block_types, ['SimpleCrossAttnUpBlock2D', 'SimpleCrossAttnUpBlock2D', 'SimpleCrossAttnUpBlock2D', 'ResnetUpsampleBlock2D']);
  assert.equal([d.layers_per_block, d.attention_head_dim, d.cross_attention_dim, d.sample_size, d.out_channels, d.resnet_time_scale_shift], [3, 32, 48, 64, 6, 'scale_shift']);
  const t = cfg('text_proj');
  assert.equal([t.clip_embeddings_dim, t.clip_extra_context_tokens, t.cross_attention_dim, t.time_embed_dim], [64, 4, 48, 128]);
  const s = cfg('super_res_first');
  assert.equal([s.block_out_channels, s.layers_per_block, s.resnet_time_scale_shift, s.down_block_types.length], [[32, 64, 64], 2, 'scale_shift', 3]);

  await useBackend('cpu');
  const before = tf.memory().numTensors;
  const pm = loadComponent(path.join(OUT, 'prior'), 'PriorTransformer');
  const tp = loadComponent(path.join(OUT, 'text_proj'), 'UnCLIPTextProjModel');
  const um = loadComponent(path.join(OUT, 'decoder'), 'UNet2DConditionModel');
  const s1 = loadComponent(path.join(OUT, 'super_res_first'), 'UNet2DModel');
  const s2 = loadComponent(path.join(OUT, 'super_res_last'), 'UNet2DModel');
  tf.tidy(() => {
    const emb = pm.forward(tf.ones([1, 64]), 10, tf.ones([1, 64]), tf.ones([1, 77, 64]) as tf.Tensor3D, tf.ones([1, 77]));
    assert.equal(emb.shape, [1, 64]);
    const o = tp.forward({ imageEmbeddings: emb as tf.Tensor2D, promptEmbeds: tf.ones([1, 64]) as tf.Tensor2D, textEncoderHiddenStates: tf.ones([1, 77, 64]) as tf.Tensor3D, doClassifierFreeGuidance: false });
    const x = um.forward(tf.ones([1, 3, 16, 16]) as tf.Tensor4D, 5, o.textEncoderHiddenStates, { classLabels: o.additiveClipTimeEmbeddings });
    assert.equal(x.shape, [1, 6, 16, 16]);
    assert.ok(Number.isFinite(tf.sum(x).dataSync()[0]));
    assert.equal(s1.forward(tf.ones([1, 6, 8, 8]) as tf.Tensor4D, 3).shape, [1, 3, 8, 8]);
    assert.equal(s2.forward(tf.ones([1, 6, 8, 8]) as tf.Tensor4D, 0).shape, [1, 3, 8, 8]);
  });
  for (const m of [pm, tp, um, s1, s2]) m.dispose();
  assert.is(tf.memory().numTensors, before);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
