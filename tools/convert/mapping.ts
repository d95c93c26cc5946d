// Original Karlo / OpenAI state dicts → diffusers / transformers names, per component: the key mapping of
// diffusers' scripts/convert_kakao_brain_unclip_to_diffusers.py (and transformers' CLIP conversion), expressed
// as a plan of {dst, src, op} entries (the format of the fixtures' key_map.json), plus each component's
// config.json derived from the tensor shapes and Karlo's hparams. Planning reads shapes only; tensors are moved
// later, one at a time (convert.ts).
import { hpBool, hpIntList, hpNumber, type Hparams, type KarloHparams } from './hparams.js';
import { pyFloat, type JsonValue } from './pyjson.js';

export type Op = 'copy' | 'reshape' | 'rows' | 'transpose';

export interface PlanEntry {
  dst: string;
  src: string;
  srcShape: number[];
  dstShape: number[];
  op: Op;
  /** For 'rows': [start, end) row ranges of the source, in output order. */
  rows?: [number, number][];
}

export interface ComponentPlan {
  component: string;
  /** Source file name (for messages and key_map). */
  sourceFile: string;
  config: Record<string, JsonValue>;
  entries: PlanEntry[];
  /** Source keys (under the component's prefix) this component does not take. */
  unusedSourceKeys: string[];
}

export type Shapes = Map<string, number[]>;

export const DIFFUSERS_VERSION = '0.25.1';
export const TRANSFORMERS_VERSION = '4.37.0.dev0';

/** Collects plan entries from one source state dict, checking every source key exists (errors name file + key). */
class Planner {
  readonly entries: PlanEntry[] = [];
  readonly used = new Set<string>();
  constructor(readonly shapes: Shapes, readonly file: string, readonly prefix: string) {}

  has(k: string): boolean {
    return this.shapes.has(this.prefix + k);
  }
  shape(k: string): number[] {
    const s = this.shapes.get(this.prefix + k);
    if (!s) throw new Error(`${this.file}: missing tensor "${this.prefix}${k}"`);
    return s;
  }
  private add(dst: string, k: string, op: Op, dstShape: number[], rows?: [number, number][]) {
    const srcShape = this.shape(k);
    this.used.add(this.prefix + k);
    this.entries.push({ dst, src: this.prefix + k, srcShape, dstShape, op, ...(rows ? { rows } : {}) });
  }
  copy(dst: string, k: string) {
    this.add(dst, k, 'copy', [...this.shape(k)]);
  }
  /** weight + bias. */
  linear(dst: string, k: string) {
    this.copy(`${dst}.weight`, `${k}.weight`);
    this.copy(`${dst}.bias`, `${k}.bias`);
  }
  reshape(dst: string, k: string, dstShape: number[]) {
    const n = this.shape(k).reduce((a, b) => a * b, 1);
    if (n !== dstShape.reduce((a, b) => a * b, 1)) throw new Error(`${this.file}: "${this.prefix}${k}" ${JSON.stringify(this.shape(k))} cannot be reshaped to ${JSON.stringify(dstShape)}`);
    this.add(dst, k, 'reshape', dstShape);
  }
  rows(dst: string, k: string, rows: [number, number][], dstShape: number[]) {
    this.add(dst, k, 'rows', dstShape, rows);
  }
  transpose(dst: string, k: string) {
    const s = this.shape(k);
    if (s.length !== 2) throw new Error(`${this.file}: "${this.prefix}${k}" is ${JSON.stringify(s)}, a transpose needs 2-D`);
    this.add(dst, k, 'transpose', [s[1], s[0]]);
  }
  /**
   * A fused projection whose rows are head_dim-row chunks dealt round-robin to `names.length` outputs
   * (Karlo's per-head interleaved qkv / encoder_kv: diffusers' split_attentions). Conv1d [R, C, 1] weights
   * become Linear [R/n, C].
   */
  splitHeads(dsts: string[], k: string, headDim: number, what: string) {
    for (const suffix of ['weight', 'bias']) {
      const s = this.shape(`${k}.${suffix}`);
      const n = dsts.length;
      const rowsTotal = s[0];
      if (rowsTotal % (n * headDim) !== 0) {
        throw new Error(`${this.file}: "${this.prefix}${k}.${suffix}" has ${rowsTotal} rows, not a multiple of ${n} × head_dim ${headDim} (${what}): wrong head count/channels in the configs?`);
      }
      const ok = suffix === 'bias' ? s.length === 1 : s.length === 2 || (s.length === 3 && s[2] === 1);
      if (!ok) throw new Error(`${this.file}: "${this.prefix}${k}.${suffix}" is ${JSON.stringify(s)}; expected a Linear or a kernel-1 Conv1d ${suffix}`);
      const inner = suffix === 'weight' ? [s[1]] : [];
      dsts.forEach((dst, j) => {
        const ranges: [number, number][] = [];
        for (let c = j; c * headDim < rowsTotal; c += n) ranges.push([c * headDim, (c + 1) * headDim]);
        this.rows(`${dst}.${suffix}`, `${k}.${suffix}`, ranges, [rowsTotal / n, ...inner]);
      });
    }
  }
  /** Source keys under the prefix that no entry used. */
  unused(): string[] {
    return [...this.shapes.keys()].filter((k) => k.startsWith(this.prefix) && !this.used.has(k)).sort();
  }
  /** Every source key under the prefix not in `allowed` must have been used. */
  requireAllUsed(component: string, allowed: (k: string) => boolean = () => false) {
    const left = this.unused().filter((k) => !allowed(k));
    if (left.length) {
      throw new Error(`${this.file}: ${left.length} tensor(s) not mapped to ${component} (${left.slice(0, 6).join(', ')}${left.length > 6 ? ', ...' : ''}): the checkpoint's architecture differs from what the converter derived`);
    }
  }
}

const mismatch = (cfgFile: string, key: string, yaml: unknown, tensors: unknown, file: string) =>
  new Error(`${cfgFile}: hparams.${key} = ${JSON.stringify(yaml)} but the tensors of ${file} say ${JSON.stringify(tensors)}`);

function countIndexed(shapes: Shapes, prefix: string): number {
  let n = 0;
  while ([...shapes.keys()].some((k) => k.startsWith(`${prefix}${n}.`))) n++;
  return n;
}

// ------------------------------------------------------------------------------------------------- prior

export function planPrior(shapes: Shapes, file: string, statsShapes: [number[], number[]], statsFile: string, hp: KarloHparams): ComponentPlan {
  const P = new Planner(shapes, file, 'model.');
  const cfgFile = hp.fromYaml ? `${hp.source}/prior_1B_vit_l.yaml` : hp.source;
  const pos = P.shape('positional_embedding');
  if (pos.length !== 3 || pos[0] !== 1) throw new Error(`${file}: model.positional_embedding is ${JSON.stringify(pos)}, expected [1, tokens, width]`);
  const width = pos[2];
  const additional = 4; // text embedding, time step, image embedding, prd token (Karlo's PriorTransformer)
  const numEmbeddings = pos[1] - additional;
  const embeddingDim = P.shape('clip_img_proj.weight')[1];
  const layers = countIndexed(shapes, 'model.transformer.resblocks.');
  if (layers === 0) throw new Error(`${file}: no model.transformer.resblocks.* tensors: not a Karlo prior checkpoint`);
  const h = hp.prior;
  let heads: number;
  if (hp.fromYaml) {
    heads = hpNumber(h, 'xf_heads', cfgFile);
    const checks: [string, unknown, unknown][] = [
      ['xf_width', h.xf_width, width], ['xf_layers', h.xf_layers, layers], ['clip_dim', h.clip_dim, embeddingDim],
      ['text_ctx', h.text_ctx, numEmbeddings],
    ];
    for (const [k, y, t] of checks) if (y !== t) throw mismatch(cfgFile, k, y, t, file);
    if (h.xf_final_ln === false || (h.xf_final_ln === true && !P.has('final_ln.weight'))) throw mismatch(cfgFile, 'xf_final_ln', h.xf_final_ln, P.has('final_ln.weight'), file);
  } else {
    if (width % 64) throw new Error(`${file}: prior width ${width} is not a multiple of 64 (real Karlo's head size); pass --configs with Karlo's prior_1B_vit_l.yaml to give xf_heads`);
    heads = width / 64;
  }
  if (!P.has('final_ln.weight')) throw new Error(`${file}: no model.final_ln (xf_final_ln false): diffusers' PriorTransformer always has norm_out; unsupported`);
  if (!Number.isInteger(heads) || heads <= 0 || width % heads) throw new Error(`${cfgFile}: xf_heads ${heads} does not divide the prior width ${width} (${file})`);
  const headDim = width / heads;
  for (const [i, s] of statsShapes.entries()) {
    if (s.length !== 1 || s[0] !== embeddingDim) throw new Error(`${statsFile}: ${i === 0 ? 'clip_mean' : 'clip_std'} is ${JSON.stringify(s)}, the prior's CLIP dim is ${embeddingDim}`);
  }

  P.copy('positional_embedding', 'positional_embedding');
  P.copy('prd_embedding', 'prd_emb');
  P.linear('time_embedding.linear_1', 'time_embed.0');
  P.linear('time_embedding.linear_2', 'time_embed.2');
  P.linear('proj_in', 'clip_img_proj');
  P.linear('embedding_proj', 'text_emb_proj');
  P.linear('encoder_hidden_states_proj', 'text_enc_proj');
  for (let i = 0; i < layers; i++) {
    const s = `transformer.resblocks.${i}`;
    const d = `transformer_blocks.${i}`;
    P.linear(`${d}.norm1`, `${s}.ln_1`);
    P.splitHeads([`${d}.attn1.to_q`, `${d}.attn1.to_k`, `${d}.attn1.to_v`], `${s}.attn.c_qkv`, headDim, `prior head_dim ${headDim}`);
    P.linear(`${d}.attn1.to_out.0`, `${s}.attn.c_proj`);
    P.linear(`${d}.norm3`, `${s}.ln_2`);
    P.linear(`${d}.ff.net.0.proj`, `${s}.mlp.c_fc`);
    P.linear(`${d}.ff.net.2`, `${s}.mlp.c_proj`);
  }
  P.linear('norm_out', 'final_ln');
  P.linear('proj_to_clip_embeddings', 'out_proj');
  P.requireAllUsed('the prior');
  // clip_mean / clip_std come from the stats file: [D] → [1, D].
  const entries: PlanEntry[] = [...P.entries];
  entries.splice(2, 0,
    { dst: 'clip_mean', src: `${statsFile}[0]`, srcShape: statsShapes[0], dstShape: [1, embeddingDim], op: 'reshape' },
    { dst: 'clip_std', src: `${statsFile}[1]`, srcShape: statsShapes[1], dstShape: [1, embeddingDim], op: 'reshape' });
  const timeW = P.shape('time_embed.0.weight');
  if (timeW[0] !== width || timeW[1] !== width) throw new Error(`${file}: model.time_embed.0.weight is ${JSON.stringify(timeW)}; diffusers' prior needs [${width}, ${width}]`);
  return {
    component: 'prior',
    sourceFile: file,
    entries,
    unusedSourceKeys: P.unused(),
    config: {
      _class_name: 'PriorTransformer', _diffusers_version: DIFFUSERS_VERSION, added_emb_type: 'prd',
      additional_embeddings: additional, attention_head_dim: headDim, clip_embed_dim: null, dropout: pyFloat(0),
      embedding_dim: embeddingDim, embedding_proj_dim: null, embedding_proj_norm_type: null,
      encoder_hid_proj_type: 'linear', norm_in_type: null, num_attention_heads: heads, num_embeddings: numEmbeddings,
      num_layers: layers, time_embed_act_fn: 'silu', time_embed_dim: null,
    },
  };
}

// ------------------------------------------------------------------------------------------------- UNets

interface UNetLayout {
  modelChannels: number;
  inChannels: number;
  outChannels: number;
  levels: number;
  resBlocks: number;
  blockOut: number[];
  attention: boolean[];
  midAttention: boolean;
  scaleShift: boolean;
  crossDim: number | null;
  timeEmbedDim: number;
}

/** Architecture of a Karlo (guided-diffusion style) UNet read from its tensor names and shapes. */
function unetLayout(P: Planner): UNetLayout {
  const f = P.file;
  const p = P.prefix;
  const conv = P.shape('input_blocks.0.0.weight');
  const modelChannels = conv[0];
  const inChannels = conv[1];
  const outChannels = P.shape('out.2.weight')[0];
  const nIn = countIndexed(P.shapes, `${p}input_blocks.`);
  const nOut = countIndexed(P.shapes, `${p}output_blocks.`);
  // Up-sampling ResBlocks sit in the last output entry of every level but the last: at ".1" (no attention) or ".2".
  const upEntries: number[] = [];
  for (let i = 0; i < nOut; i++) {
    const isRes = (j: number) => P.has(`output_blocks.${i}.${j}.in_layers.0.weight`);
    if (isRes(2) || (isRes(1) && !P.has(`output_blocks.${i}.1.qkv.weight`))) upEntries.push(i);
  }
  const levels = upEntries.length + 1;
  if (nOut % levels) throw new Error(`${f}: ${nOut} ${p}output_blocks entries do not split into ${levels} levels`);
  const resBlocks = nOut / levels - 1;
  if (resBlocks < 1 || nIn !== 1 + levels * resBlocks + (levels - 1)) {
    throw new Error(`${f}: ${nIn} input_blocks / ${nOut} output_blocks do not form a UNet of ${levels} levels (under "${p}")`);
  }
  upEntries.forEach((e, l) => {
    if (e !== (l + 1) * (resBlocks + 1) - 1) throw new Error(`${f}: ${p}output_blocks.${e} holds an up-sampling block at an unexpected place`);
  });
  const blockOut: number[] = [];
  const attention: boolean[] = [];
  for (let l = 0; l < levels; l++) {
    const first = 1 + l * (resBlocks + 1);
    blockOut.push(P.shape(`input_blocks.${first}.0.out_layers.3.weight`)[0]);
    const att = [...Array(resBlocks).keys()].map((j) => P.has(`input_blocks.${first + j}.1.qkv.weight`));
    if (att.some((a) => a !== att[0])) throw new Error(`${f}: level ${l} has attention on some ResBlocks only: unsupported`);
    if (l < levels - 1 && !P.has(`input_blocks.${first + resBlocks}.0.in_layers.0.weight`)) {
      throw new Error(`${f}: ${p}input_blocks.${first + resBlocks} is not a down-sampling ResBlock (resblock_updown false?): diffusers' Resnet(Down|Up)sampleBlock2D needs ResBlocks`);
    }
    attention.push(att[0]);
  }
  const emb = P.shape('input_blocks.1.0.emb_layers.1.weight');
  const scaleShift = emb[0] === 2 * blockOut[0];
  if (!scaleShift && emb[0] !== blockOut[0]) throw new Error(`${f}: ${p}input_blocks.1.0.emb_layers.1.weight has ${emb[0]} rows, neither ${blockOut[0]} nor ${2 * blockOut[0]}`);
  const midAttention = P.has('middle_block.1.qkv.weight');
  const anyAttention = attention.find((a) => a) ? attention.indexOf(true) : -1;
  const crossDim = midAttention ? P.shape('middle_block.1.encoder_kv.weight')[1]
    : anyAttention >= 0 ? P.shape(`input_blocks.${1 + anyAttention * (resBlocks + 1)}.1.encoder_kv.weight`)[1] : null;
  const timeEmbedDim = P.shape('time_embed.0.weight')[0];
  return { modelChannels, inChannels, outChannels, levels, resBlocks, blockOut, attention, midAttention, scaleShift, crossDim, timeEmbedDim };
}

function resnet(P: Planner, dst: string, src: string) {
  P.linear(`${dst}.norm1`, `${src}.in_layers.0`);
  P.linear(`${dst}.conv1`, `${src}.in_layers.2`);
  P.linear(`${dst}.time_emb_proj`, `${src}.emb_layers.1`);
  P.linear(`${dst}.norm2`, `${src}.out_layers.0`);
  P.linear(`${dst}.conv2`, `${src}.out_layers.3`);
  if (P.has(`${src}.skip_connection.weight`)) P.linear(`${dst}.conv_shortcut`, `${src}.skip_connection`);
}

function attention(P: Planner, dst: string, src: string, headDim: number) {
  P.linear(`${dst}.group_norm`, `${src}.norm`);
  P.splitHeads([`${dst}.to_q`, `${dst}.to_k`, `${dst}.to_v`], `${src}.qkv`, headDim, `decoder num_head_channels ${headDim}`);
  P.splitHeads([`${dst}.add_k_proj`, `${dst}.add_v_proj`], `${src}.encoder_kv`, headDim, `decoder num_head_channels ${headDim}`);
  const w = P.shape(`${src}.proj_out.weight`);
  P.reshape(`${dst}.to_out.0.weight`, `${src}.proj_out.weight`, w.length === 3 ? [w[0], w[1]] : w);
  P.copy(`${dst}.to_out.0.bias`, `${src}.proj_out.bias`);
}

/** The UNet walk shared by the decoder and the super-res UNets. */
function planUNet(P: Planner, L: UNetLayout, headDim: number) {
  const nrb = L.resBlocks;
  P.linear('conv_in', 'input_blocks.0.0');
  P.linear('time_embedding.linear_1', 'time_embed.0');
  P.linear('time_embedding.linear_2', 'time_embed.2');
  for (let l = 0; l < L.levels; l++) {
    for (let j = 0; j < nrb; j++) {
      const n = 1 + l * (nrb + 1) + j;
      resnet(P, `down_blocks.${l}.resnets.${j}`, `input_blocks.${n}.0`);
      if (L.attention[l]) attention(P, `down_blocks.${l}.attentions.${j}`, `input_blocks.${n}.1`, headDim);
    }
    if (l < L.levels - 1) resnet(P, `down_blocks.${l}.downsamplers.0`, `input_blocks.${1 + l * (nrb + 1) + nrb}.0`);
  }
  resnet(P, 'mid_block.resnets.0', 'middle_block.0');
  if (L.midAttention) {
    attention(P, 'mid_block.attentions.0', 'middle_block.1', headDim);
    resnet(P, 'mid_block.resnets.1', 'middle_block.2');
  } else {
    resnet(P, 'mid_block.resnets.1', 'middle_block.1');
  }
  for (let u = 0; u < L.levels; u++) {
    const att = L.attention[L.levels - 1 - u];
    for (let j = 0; j <= nrb; j++) {
      const n = u * (nrb + 1) + j;
      resnet(P, `up_blocks.${u}.resnets.${j}`, `output_blocks.${n}.0`);
      if (att) attention(P, `up_blocks.${u}.attentions.${j}`, `output_blocks.${n}.1`, headDim);
    }
    if (u < L.levels - 1) resnet(P, `up_blocks.${u}.upsamplers.0`, `output_blocks.${u * (nrb + 1) + nrb}.${att ? 2 : 1}`);
  }
  P.linear('conv_norm_out', 'out.0');
  P.linear('conv_out', 'out.2');
}

/** guided-diffusion's channel_mult default for an image size (Karlo's decoder YAML leaves it ''). */
function defaultChannelMult(imageSize: number, where: string): number[] {
  const table: Record<number, number[]> = { 64: [1, 2, 3, 4], 128: [1, 1, 2, 3, 4], 256: [1, 1, 2, 2, 4, 4], 512: [0.5, 1, 1, 2, 2, 4, 4] };
  const m = table[imageSize];
  if (!m) throw new Error(`${where}: channel_mult is '' and image_size ${imageSize} has no default`);
  return m;
}

const TEXT_PROJ_KEYS = ['cf_param', 'clip_emb.', 'clip_tok_proj.', 'text_feat_proj.', 'text_seq_proj.'];

export function planDecoder(shapes: Shapes, file: string, hp: KarloHparams): ComponentPlan {
  const P = new Planner(shapes, file, 'model.');
  const L = unetLayout(P);
  const h = hp.decoder;
  const cfgFile = hp.fromYaml ? `${hp.source}/decoder_900M_vit_l.yaml` : hp.source;
  const headDim = hpNumber(h, 'num_head_channels', cfgFile);
  if (headDim <= 0) throw new Error(`${cfgFile}: num_head_channels ${headDim} (a head count via num_heads) is not supported: diffusers' decoder config has one attention_head_dim`);
  const imageSize = hpNumber(h, 'image_size', cfgFile);
  if (!L.midAttention) throw new Error(`${file}: the decoder's middle block has no attention: unsupported (UNetMidBlock2DSimpleCrossAttn)`);
  if (L.crossDim === null) throw new Error(`${file}: the decoder has no cross-attention`);
  if (L.timeEmbedDim !== 4 * L.blockOut[0]) throw new Error(`${file}: model.time_embed.0.weight has ${L.timeEmbedDim} rows; diffusers needs 4 × ${L.blockOut[0]}`);
  if (hp.fromYaml) {
    const mult = typeof h.channel_mult === 'string' && h.channel_mult.trim() === '' ? defaultChannelMult(imageSize, cfgFile) : hpIntList(h, 'channel_mult', cfgFile);
    const nc = hpNumber(h, 'num_channels', cfgFile);
    const resolutions = hpIntList(h, 'attention_resolutions', cfgFile);
    const yamlAttention = L.blockOut.map((_, l) => resolutions.includes(imageSize / 2 ** l));
    const checks: [string, unknown, unknown][] = [
      ['num_channels', nc, L.modelChannels],
      ['channel_mult', mult.map((m) => m * nc), L.blockOut],
      ['num_res_blocks', h.num_res_blocks, L.resBlocks],
      ['attention_resolutions', yamlAttention, L.attention],
      ['use_scale_shift_norm', hpBool(h, 'use_scale_shift_norm', cfgFile), L.scaleShift],
      ['learn_sigma', hpBool(h, 'learn_sigma', cfgFile), L.outChannels === 2 * L.inChannels],
      ['xf_width', h.xf_width, L.crossDim],
    ];
    for (const [k, y, t] of checks) if (JSON.stringify(y) !== JSON.stringify(t)) throw mismatch(cfgFile, k, y, t, file);
    if (h.resblock_updown === false) throw mismatch(cfgFile, 'resblock_updown', false, true, file);
  }
  planUNet(P, L, headDim);
  P.requireAllUsed('the decoder', (k) => TEXT_PROJ_KEYS.some((t) => k.startsWith(`model.${t}`)));
  const down = L.attention.map((a) => (a ? 'SimpleCrossAttnDownBlock2D' : 'ResnetDownsampleBlock2D'));
  const up = [...L.attention].reverse().map((a) => (a ? 'SimpleCrossAttnUpBlock2D' : 'ResnetUpsampleBlock2D'));
  return {
    component: 'decoder',
    sourceFile: file,
    entries: P.entries,
    unusedSourceKeys: P.unused(),
    config: {
      _class_name: 'UNet2DConditionModel', _diffusers_version: DIFFUSERS_VERSION, act_fn: 'silu', addition_embed_type: null,
      addition_embed_type_num_heads: 64, addition_time_embed_dim: null, attention_head_dim: headDim, attention_type: 'default',
      block_out_channels: L.blockOut, center_input_sample: false, class_embed_type: 'identity', class_embeddings_concat: false,
      conv_in_kernel: 3, conv_out_kernel: 3, cross_attention_dim: L.crossDim, cross_attention_norm: null,
      down_block_types: down, downsample_padding: 1, dropout: pyFloat(0), dual_cross_attention: false, encoder_hid_dim: null,
      encoder_hid_dim_type: null, flip_sin_to_cos: true, freq_shift: 0, in_channels: L.inChannels, layers_per_block: L.resBlocks,
      mid_block_only_cross_attention: null, mid_block_scale_factor: 1, mid_block_type: 'UNetMidBlock2DSimpleCrossAttn',
      norm_eps: pyFloat(1e-5), norm_num_groups: 32, num_attention_heads: null, num_class_embeds: null, only_cross_attention: false,
      out_channels: L.outChannels, projection_class_embeddings_input_dim: null, resnet_out_scale_factor: pyFloat(1),
      resnet_skip_time_act: false, resnet_time_scale_shift: L.scaleShift ? 'scale_shift' : 'default',
      reverse_transformer_layers_per_block: null, sample_size: imageSize, time_cond_proj_dim: null, time_embedding_act_fn: null,
      time_embedding_dim: null, time_embedding_type: 'positional', timestep_post_act: null, transformer_layers_per_block: 1,
      up_block_types: up, upcast_attention: false, use_linear_projection: false,
    },
  };
}

export function planTextProj(shapes: Shapes, file: string, decoderConfig: Record<string, JsonValue>, hp: KarloHparams): ComponentPlan {
  const P = new Planner(shapes, file, 'model.');
  const clipEmb = P.shape('clip_emb.weight');
  const seq = P.shape('text_seq_proj.0.weight');
  const tok = P.shape('clip_tok_proj.weight');
  const [timeEmbedDim, clipDim] = clipEmb;
  const cross = seq[0];
  if (seq[1] !== clipDim) throw new Error(`${file}: model.text_seq_proj.0.weight takes ${seq[1]} features but the CLIP embedding dim is ${clipDim}: unsupported by UnCLIPTextProjModel`);
  if (tok[0] % cross) throw new Error(`${file}: model.clip_tok_proj.weight has ${tok[0]} rows, not a multiple of the cross-attention dim ${cross}`);
  const extra = tok[0] / cross;
  if (cross !== decoderConfig.cross_attention_dim) throw new Error(`${file}: text projection width ${cross} != decoder cross_attention_dim ${decoderConfig.cross_attention_dim}`);
  if (hp.fromYaml) {
    const cfgFile = `${hp.source}/decoder_900M_vit_l.yaml`;
    if (hp.decoder.clip_dim !== clipDim) throw mismatch(cfgFile, 'clip_dim', hp.decoder.clip_dim, clipDim, file);
    if (hp.decoder.clip_emb_mult !== extra) throw mismatch(cfgFile, 'clip_emb_mult', hp.decoder.clip_emb_mult, extra, file);
  }
  P.copy('learned_classifier_free_guidance_embeddings', 'cf_param');
  P.linear('embedding_proj', 'text_feat_proj');
  P.linear('clip_image_embeddings_project_to_time_embeddings', 'clip_emb');
  P.linear('clip_extra_context_tokens_proj', 'clip_tok_proj');
  P.linear('encoder_hidden_states_proj', 'text_seq_proj.0');
  P.linear('text_encoder_hidden_states_norm', 'text_seq_proj.1');
  return {
    component: 'text_proj',
    sourceFile: file,
    entries: P.entries,
    unusedSourceKeys: P.unused(),
    config: {
      _class_name: 'UnCLIPTextProjModel', _diffusers_version: DIFFUSERS_VERSION, clip_embeddings_dim: clipDim,
      clip_extra_context_tokens: extra, cross_attention_dim: cross, time_embed_dim: timeEmbedDim,
    },
  };
}

export function planSuperRes(shapes: Shapes, file: string, prefix: 'model_first_steps.' | 'model_last_step.', hp: KarloHparams): ComponentPlan {
  const component = prefix === 'model_first_steps.' ? 'super_res_first' : 'super_res_last';
  const P = new Planner(shapes, file, prefix);
  if (!P.has('input_blocks.0.0.weight')) throw new Error(`${file}: no "${prefix}*" tensors: not Karlo's improved super-res checkpoint`);
  const L = unetLayout(P);
  if (L.attention.some((a) => a) || L.midAttention) throw new Error(`${file}: ${component} has attention layers: unsupported (diffusers' super-res UNet2DModel has add_attention false)`);
  if (L.timeEmbedDim !== 4 * L.blockOut[0]) throw new Error(`${file}: ${prefix}time_embed.0.weight has ${L.timeEmbedDim} rows; diffusers needs 4 × ${L.blockOut[0]}`);
  if (hp.fromYaml) {
    const h: Hparams = hp.super_res;
    const cfgFile = `${hp.source}/improved_sr_64_256_1.4B.yaml`;
    const ch = hpNumber(h, 'channels', cfgFile);
    const mult = hpIntList(h, 'channels_multiple', cfgFile);
    const checks: [string, unknown, unknown][] = [
      ['channels', ch, L.modelChannels], ['channels_multiple', mult.map((m) => m * ch), L.blockOut], ['depth', h.depth, L.resBlocks],
    ];
    for (const [k, y, t] of checks) if (JSON.stringify(y) !== JSON.stringify(t)) throw mismatch(cfgFile, k, y, t, file);
  }
  planUNet(P, L, 0);
  P.requireAllUsed(component, (k) => !k.startsWith(prefix));
  const n = L.levels;
  return {
    component,
    sourceFile: file,
    entries: P.entries,
    unusedSourceKeys: [...shapes.keys()].filter((k) => !k.startsWith(prefix)).sort(),
    config: {
      _class_name: 'UNet2DModel', _diffusers_version: DIFFUSERS_VERSION, act_fn: 'silu', add_attention: false,
      attention_head_dim: 8, attn_norm_num_groups: null, block_out_channels: L.blockOut, center_input_sample: false,
      class_embed_type: null, down_block_types: Array(n).fill('ResnetDownsampleBlock2D'), downsample_padding: 1,
      downsample_type: 'conv', dropout: pyFloat(0), flip_sin_to_cos: true, freq_shift: 0, in_channels: L.inChannels,
      layers_per_block: L.resBlocks, mid_block_scale_factor: 1, norm_eps: pyFloat(1e-5), norm_num_groups: 32,
      num_class_embeds: null, num_train_timesteps: null, out_channels: L.outChannels,
      resnet_time_scale_shift: L.scaleShift ? 'scale_shift' : 'default',
      // Not in Karlo's config: the output size of the 64→256 stage (diffusers' script constant).
      sample_size: 256, time_embedding_type: 'positional', up_block_types: Array(n).fill('ResnetUpsampleBlock2D'),
      upsample_type: 'conv',
    },
  };
}

// ------------------------------------------------------------------------------------------------- CLIP text

const CLIP_UNUSED = /^(visual\.|logit_scale$|input_resolution$|context_length$|vocab_size$)/;

/** OpenAI CLIP (TorchScript state dict) → transformers CLIPTextModelWithProjection. */
export function planTextEncoder(shapes: Shapes, file: string): ComponentPlan {
  const P = new Planner(shapes, file, '');
  const width = P.shape('ln_final.weight')[0];
  const pos = P.shape('positional_embedding');
  const vocab = P.shape('token_embedding.weight')[0];
  const proj = P.shape('text_projection');
  const layers = countIndexed(shapes, 'transformer.resblocks.');
  if (layers === 0) throw new Error(`${file}: no transformer.resblocks.* tensors: not an OpenAI CLIP model`);
  if (width % 64) throw new Error(`${file}: CLIP text width ${width} is not a multiple of 64 (OpenAI's heads = width / 64)`);
  const intermediate = P.shape('transformer.resblocks.0.mlp.c_fc.weight')[0];
  P.copy('text_model.embeddings.token_embedding.weight', 'token_embedding.weight');
  P.copy('text_model.embeddings.position_embedding.weight', 'positional_embedding');
  for (let i = 0; i < layers; i++) {
    const s = `transformer.resblocks.${i}`;
    const d = `text_model.encoder.layers.${i}`;
    // nn.MultiheadAttention packs q, k, v as three consecutive blocks (not interleaved per head).
    ['q', 'k', 'v'].forEach((x, j) => {
      P.rows(`${d}.self_attn.${x}_proj.weight`, `${s}.attn.in_proj_weight`, [[j * width, (j + 1) * width]], [width, width]);
      P.rows(`${d}.self_attn.${x}_proj.bias`, `${s}.attn.in_proj_bias`, [[j * width, (j + 1) * width]], [width]);
    });
    P.linear(`${d}.self_attn.out_proj`, `${s}.attn.out_proj`);
    P.linear(`${d}.layer_norm1`, `${s}.ln_1`);
    P.linear(`${d}.mlp.fc1`, `${s}.mlp.c_fc`);
    P.linear(`${d}.mlp.fc2`, `${s}.mlp.c_proj`);
    P.linear(`${d}.layer_norm2`, `${s}.ln_2`);
  }
  P.linear('text_model.final_layer_norm', 'ln_final');
  P.transpose('text_projection.weight', 'text_projection');
  P.requireAllUsed('the text encoder', (k) => CLIP_UNUSED.test(k));
  return {
    component: 'text_encoder',
    sourceFile: file,
    entries: P.entries,
    unusedSourceKeys: P.unused(),
    config: {
      architectures: ['CLIPTextModelWithProjection'], attention_dropout: pyFloat(0), bos_token_id: 0, eos_token_id: 2,
      hidden_act: 'quick_gelu', hidden_size: width, initializer_factor: pyFloat(1), initializer_range: pyFloat(0.02),
      intermediate_size: intermediate, layer_norm_eps: pyFloat(1e-5), max_position_embeddings: pos[0],
      model_type: 'clip_text_model', num_attention_heads: width / 64, num_hidden_layers: layers, pad_token_id: 1,
      projection_dim: proj[1], torch_dtype: 'float32', transformers_version: TRANSFORMERS_VERSION, vocab_size: vocab,
    },
  };
}
