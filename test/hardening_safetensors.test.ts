// Issue 18 items 4 and 12 (safetensors): dtypes that are JavaScript property names, dimensions beyond 2^53 next to
// a 0 dimension, `2.0` where an integer belongs, a field twice inside one entry, invalid UTF-8 in names are
// refused with one line naming file (and tensor); NaN / Inf weights load with one warning per component.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SafetensorsFile, SafetensorsError, saveSafetensors, headerProblem } from '../src/io/safetensors.js';
import { loadWeights, setWeightsWarning } from '../src/io/weights.js';
import { Module } from '../src/layers/module.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hard-st-'));

/** A safetensors file from raw header bytes and `dataBytes` zero bytes of data. */
function raw(name: string, header: string | Buffer, dataBytes = 0): string {
  const h = typeof header === 'string' ? Buffer.from(header, 'utf8') : header;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  const f = path.join(tmp, name);
  fs.writeFileSync(f, Buffer.concat([len, h, Buffer.alloc(dataBytes)]));
  return f;
}

function refused(file: string, re: RegExp): string {
  try {
    SafetensorsFile.open(file).close();
  } catch (e) {
    assert.instance(e, SafetensorsError, (e as Error).stack);
    assert.ok((e as Error).message.startsWith(file), (e as Error).message);
    assert.match((e as Error).message, re);
    assert.not.match((e as Error).message, /[\n\x1b]/);
    return (e as Error).message;
  }
  return assert.unreachable(`${file} accepted`) as never;
}

test('dtype names that are JavaScript property names are unsupported dtypes', () => {
  for (const dt of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf']) {
    refused(raw(`dt-${dt}.safetensors`, JSON.stringify({ t: { dtype: dt, shape: [1], data_offsets: [0, 4] } }), 4), /tensor "t": unsupported dtype/);
  }
});

test('dimensions beyond 2^53 are refused even when another dimension is 0', () => {
  refused(raw('big0.safetensors', '{"t":{"dtype":"F32","shape":[0,1152921504606846976],"data_offsets":[0,0]}}'), /beyond 2\^53|below 2\^53/);
  refused(raw('big1.safetensors', '{"t":{"dtype":"F32","shape":[9007199254740993,0],"data_offsets":[0,0]}}'), /beyond 2\^53|below 2\^53/);
  // exact dims whose product (0 aside) is beyond 2^53 bytes
  refused(raw('big2.safetensors', '{"t":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}'), /beyond 2\^53/);
  // a fine zero-size tensor still opens
  const ok = raw('zero.safetensors', '{"t":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}');
  SafetensorsFile.open(ok).close();
});

test('non-integer numbers (2.0, 1e0, -0) where integers belong are refused', () => {
  refused(raw('f1.safetensors', '{"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', 8), /tensor "t": number 2\.0 is not a non-negative integer/);
  refused(raw('f2.safetensors', '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8e0]}}', 8), /number 8e0/);
  refused(raw('f3.safetensors', '{"t":{"dtype":"F32","shape":[2],"data_offsets":[-0,8]}}', 8), /number -0/);
});

test('a field twice inside one entry is refused (JSON.parse would keep the last silently)', () => {
  refused(raw('dup1.safetensors', '{"t":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}}', 8), /tensor "t": field "dtype" appears more than once/);
  refused(raw('dup2.safetensors', '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"shape":[1]}}', 8), /field "shape" appears more than once/);
  refused(raw('dup3.safetensors', '{"__metadata__":{"a":"1","a":"2"},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8), /field "a" appears more than once/);
  refused(raw('dup4.safetensors', '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8), /names tensor "t" more than once/);
  assert.is(headerProblem('{"a":{"x":[1,2,{"y":1,"z":"y"}]},"b":{"x":1}}'), null, 'same keys in different objects are fine');
});

test('invalid UTF-8 in a tensor name is refused; escape sequences in names are printed escaped', () => {
  const h = Buffer.concat([Buffer.from('{"t'), Buffer.from([0xff, 0xfe]), Buffer.from('":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}')]);
  refused(raw('utf8.safetensors', h, 4), /not valid UTF-8/);
  const msg = refused(raw('esc.safetensors', JSON.stringify({ 'a\x1b[2Jb\nc': { dtype: 'F99', shape: [1], data_offsets: [0, 4] } }), 4), /unsupported dtype/);
  assert.ok(msg.includes('a\\x1b[2Jb\\nc'), msg);
});

test('header JSON errors give a position, never the header text', () => {
  const msg = refused(raw('json.safetensors', '{"secret-token-ABC": [1,2,}'), /not valid JSON at line 1, column \d+/);
  assert.not.ok(msg.includes('secret-token'), msg);
});

test('NaN / Inf weights: loaded, with one warning per component counting them', () => {
  const dir = path.join(tmp, 'comp');
  fs.mkdirSync(dir);
  saveSafetensors(path.join(dir, 'model.safetensors'), {
    a: { dtype: 'F32', shape: [4], data: Float32Array.from([1, NaN, Infinity, 2]) },
    b: { dtype: 'F16', shape: [2], data: Float32Array.from([-Infinity, 3]) },
    c: { dtype: 'F32', shape: [1], data: Float32Array.from([0]) },
  });
  class M extends Module {
    constructor() {
      super();
      for (const [n, s] of [['a', [4]], ['b', [2]], ['c', [1]]] as const) this.param(n, [...s]);
    }
  }
  const lines: string[] = [];
  const prev = setWeightsWarning((l) => lines.push(l));
  try {
    const m = new M();
    loadWeights(m, dir);
    m.dispose();
  } finally {
    setWeightsWarning(prev);
  }
  assert.is(lines.length, 1, lines.join('\n'));
  assert.match(lines[0], /3 weight values are NaN or infinite, in 2 tensors \(first: "a"\)/);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
