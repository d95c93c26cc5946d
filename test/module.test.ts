// Module system: PyTorch state-dict keys, strict loading reports (missing/unexpected/mis-shaped at once, naming the
// file), save → load → save byte-identical including conv filter layout, sharded folders, output hooks, memory.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Module, type Parameter } from '../src/layers/module.js';
import { Linear, Conv2d, LayerNorm, GroupNorm, Embedding } from '../src/layers/basic.js';
import { saveSafetensors, SafetensorsFile, type TensorToWrite } from '../src/io/safetensors.js';
import { safetensorsSource, loadWeights, findWeightsFile, WEIGHT_FILES } from '../src/io/weights.js';
import { TorchGenerator } from '../src/random/generator.js';
import { useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-module-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

class Block extends Module {
  norm = this.module('norm', new GroupNorm(2, 4));
  conv = this.module('conv', new Conv2d(4, 6, 3, { padding: 1 }));
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return this.emit(tf.tidy(() => this.conv.forward(this.norm.forward(x) as tf.Tensor4D)));
  }
}

class Net extends Module {
  scale: Parameter = this.param('scale', [3]);
  embed = this.module('embed', new Embedding(10, 4));
  blocks = this.moduleList('blocks', [new Block(), new Block()]);
  proj = this.module('proj', new Linear(6, 5, false));
  ln = this.module('ln', new LayerNorm(5));
}

const EXPECTED_KEYS = [
  'scale', 'embed.weight',
  'blocks.0.norm.weight', 'blocks.0.norm.bias', 'blocks.0.conv.weight', 'blocks.0.conv.bias',
  'blocks.1.norm.weight', 'blocks.1.norm.bias', 'blocks.1.conv.weight', 'blocks.1.conv.bias',
  'proj.weight', 'ln.weight', 'ln.bias',
];

/** Random PyTorch-layout tensors for every parameter of m (from a torch-compatible generator). */
function randomState(m: Module, seed = 1): Record<string, TensorToWrite> {
  const g = new TorchGenerator(seed);
  const out: Record<string, TensorToWrite> = {};
  for (const [k, p] of m.namedParameters()) out[k] = { dtype: 'F32', shape: p.torchShape, data: g.randn(p.torchShape) };
  return out;
}

test('namedParameters yields the PyTorch state-dict keys in registration order; numParameters sums them', () => {
  const net = new Net();
  assert.equal(net.namedParameters().map(([k]) => k), EXPECTED_KEYS);
  assert.equal(net.namedParameters().map(([, p]) => p.name), EXPECTED_KEYS);
  assert.equal(net.blocks[1].namedParameters().map(([k]) => k), ['norm.weight', 'norm.bias', 'conv.weight', 'conv.bias']);
  assert.is(net.blocks[1].conv.path, 'blocks.1.conv');
  assert.equal(net.namedParameters().find(([k]) => k === 'blocks.0.conv.weight')![1].torchShape, [6, 4, 3, 3]);
  assert.is(net.numParameters(), 3 + 40 + 2 * (4 + 4 + 216 + 6) + 30 + 5 + 5);
});

test('strict loading reports every missing, unexpected and mis-shaped key at once, naming the file; nothing is assigned', () => {
  const net = new Net();
  const state = randomState(net);
  delete state['ln.bias'];
  delete state['blocks.1.conv.bias'];
  state['extra.weight'] = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
  state['proj.weight'] = { dtype: 'F32', shape: [6, 5], data: new Float32Array(30) };
  const file = path.join(tmp, 'bad.safetensors');
  saveSafetensors(file, state);
  const src = safetensorsSource(file);
  try {
    net.loadStateDict(src);
    assert.unreachable('strict load accepted a bad state dict');
  } catch (e) {
    const msg = (e as Error).message;
    assert.ok(msg.startsWith(`${file}: weights do not match Net`), msg);
    assert.match(msg, /missing keys \(2\): blocks\.1\.conv\.bias, ln\.bias/);
    assert.match(msg, /unexpected keys \(1\): extra\.weight/);
    assert.match(msg, /mis-shaped keys \(1\): proj\.weight expected \[5,6\] got \[6,5\]/);
  } finally {
    src.close();
  }
  assert.ok(net.parameters().every((p) => !p.loaded), 'nothing assigned after a failed strict load');

  const src2 = safetensorsSource(file);
  const report = net.loadStateDict(src2, { strict: false });
  src2.close();
  assert.equal(report.missing, ['blocks.1.conv.bias', 'ln.bias']);
  assert.equal(report.unexpected, ['extra.weight']);
  assert.equal(report.misshaped.map((m) => m.key), ['proj.weight']);
  assert.ok(net.blocks[0].conv.weight.loaded && !net.proj.weight.loaded && !net.ln.bias.loaded);
  net.dispose();
});

test('an integer tensor for a float parameter is an error naming the file and key', () => {
  const lin = new Linear(2, 1, false);
  const file = path.join(tmp, 'int.safetensors');
  saveSafetensors(file, { weight: { dtype: 'I64', shape: [1, 2], data: Int32Array.from([1, 2]) } });
  const src = safetensorsSource(file);
  assert.throws(() => lin.loadStateDict(src), (e: Error) => e.message.includes(file) && e.message.includes('"weight"') && /integer/.test(e.message));
  src.close();
});

test('save → load → save is byte-identical (conv filters converted to [kh,kw,in,out] and back)', async () => {
  await useBackend('cpu');
  const net = new Net();
  const file = path.join(tmp, 'net.safetensors');
  saveSafetensors(file, randomState(net, 7));
  const dir = path.join(tmp, 'netdir');
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(file, path.join(dir, 'diffusion_pytorch_model.safetensors'));
  loadWeights(net, dir);
  // The conv filter really is stored tfjs-style, and element [o,i,y,x] sits at [y,x,i,o].
  const conv = net.blocks[0].conv.weight;
  assert.equal(conv.value.shape, [3, 3, 4, 6]);
  const src = SafetensorsFile.open(file);
  const torchW = src.read('blocks.0.conv.weight').data;
  const tfW = conv.value.dataSync();
  const at = (o: number, i: number, y: number, x: number) => [((o * 4 + i) * 3 + y) * 3 + x, ((y * 3 + x) * 4 + i) * 6 + o];
  for (const [o, i, y, x] of [[0, 0, 0, 0], [5, 3, 2, 1], [2, 1, 0, 2], [4, 2, 1, 1]]) {
    const [a, b] = at(o, i, y, x);
    assert.is(tfW[b], torchW[a]);
  }
  src.close();
  const before = tf.memory().numTensors;
  const sd = net.stateDict();
  assert.equal([...sd.keys()], EXPECTED_KEYS);
  const out = path.join(tmp, 'net2.safetensors');
  saveSafetensors(out, Object.fromEntries([...sd].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.dataSync() as Float32Array }])));
  tf.dispose([...sd.values()]);
  assert.is(tf.memory().numTensors, before);
  assert.ok(fs.readFileSync(out).equals(fs.readFileSync(file)), 'saved file is byte-identical to the loaded one');
  net.dispose();
});

test('sharded component folder (index.json + 2 shards) loads; inconsistent index is an error naming the shard', () => {
  const net = new Net();
  const state = randomState(net, 3);
  const dir = path.join(tmp, 'sharded');
  fs.mkdirSync(dir, { recursive: true });
  const keys = Object.keys(state);
  const a = 'diffusion_pytorch_model-00001-of-00002.safetensors';
  const b = 'diffusion_pytorch_model-00002-of-00002.safetensors';
  saveSafetensors(path.join(dir, a), Object.fromEntries(keys.slice(0, 5).map((k) => [k, state[k]])));
  saveSafetensors(path.join(dir, b), Object.fromEntries(keys.slice(5).map((k) => [k, state[k]])));
  const weightMap = Object.fromEntries(keys.map((k, i) => [k, i < 5 ? a : b]));
  const index = path.join(dir, 'diffusion_pytorch_model.safetensors.index.json');
  fs.writeFileSync(index, JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  assert.is(findWeightsFile(dir), index);
  loadWeights(net, dir);
  assert.equal([...net.ln.bias.value.dataSync()], [...(state['ln.bias'].data as Float32Array)]);
  net.dispose();
  fs.writeFileSync(index, JSON.stringify({ weight_map: { ...weightMap, 'ln.bias': a } }));
  assert.throws(() => safetensorsSource(index), (e: Error) => e.message.includes(a) && e.message.includes('"ln.bias"'));
  fs.writeFileSync(index, JSON.stringify({ weight_map: { ...weightMap, 'ln.bias': 'gone.safetensors' } }));
  assert.throws(() => safetensorsSource(index), /gone\.safetensors: shard listed in .* is missing/);
});

test('a folder without weights: the error lists every file name looked for', () => {
  const dir = path.join(tmp, 'empty');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), '');
  try {
    findWeightsFile(dir);
    assert.unreachable('no error');
  } catch (e) {
    const msg = (e as Error).message;
    assert.ok(msg.startsWith(dir));
    for (const n of WEIGHT_FILES) assert.ok(msg.includes(n), `mentions ${n}`);
    assert.match(msg, /pytorch_model\.bin: convert/);
  }
  assert.throws(() => findWeightsFile(path.join(tmp, 'nope')), /does not exist/);
});

test('output hooks report each module output by dotted path; removing the hook stops reports; no tensors leak', async () => {
  await useBackend('cpu');
  const net = new Net();
  const dir = path.join(tmp, 'hookdir');
  fs.mkdirSync(dir, { recursive: true });
  saveSafetensors(path.join(dir, 'model.safetensors'), randomState(net, 11));
  loadWeights(net, dir);
  const x = tf.randomNormal([1, 5, 5, 4]) as tf.Tensor4D;
  const before = tf.memory().numTensors;
  const seen: [string, number[]][] = [];
  net.setOutputHook((p, t) => seen.push([p, t.shape]));
  tf.dispose(net.blocks[0].forward(x));
  assert.equal(seen, [['blocks.0.norm', [1, 5, 5, 4]], ['blocks.0.conv', [1, 5, 5, 6]], ['blocks.0', [1, 5, 5, 6]]]);
  net.setOutputHook(null);
  seen.length = 0;
  tf.dispose(net.blocks[1].forward(x));
  assert.is(seen.length, 0);
  assert.is(tf.memory().numTensors, before, 'forward leaves no tensors behind');
  x.dispose();
  net.dispose();
});

test.run();
