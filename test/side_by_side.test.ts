// bench/side_by_side.ts: the pure parts of `npm run bench pipeline -- --compare-torch` (no torch needed): image
// difference statistics, the side-by-side table, step parsing, the environment both sides run under, and the
// message when no usable PyTorch is found.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  describeDifference, extrapolate, imageDifference, parseSteps, sideBySideEnv, sideBySideTable, torchPython,
  torchUnavailableMessage, type SideFigures,
} from '../bench/side_by_side.js';

test('imageDifference: max and mean in 1/255, the values more than 2/255 apart and their share, PSNR', () => {
  const a = new Float32Array([0, 0.5, 1, 0.25]);
  const b = new Float32Array([0, 0.5 + 1 / 255, 1 - 3 / 255, 0.25 + 2 / 255]);
  const d = imageDifference(a, b);
  assert.is(d.values, 4);
  assert.ok(Math.abs(d.max255 - 3) < 1e-4, String(d.max255));
  assert.ok(Math.abs(d.mean255 - 1.5) < 1e-4, String(d.mean255));
  // 3/255 is over 2/255; exactly 2/255 (up to float32 rounding of the inputs) is compared in float64.
  assert.is(d.over2 >= 1 && d.over2 <= 2, true);
  assert.is(d.shareOver2, d.over2 / 4);
  const mse = ((1 / 255) ** 2 + (3 / 255) ** 2 + (2 / 255) ** 2) / 4;
  assert.ok(Math.abs(d.psnr - 10 * Math.log10(1 / mse)) < 0.01, String(d.psnr));
  assert.is(d.nonFinite, 0);
});

test('imageDifference: identical images; a non-finite value is counted, not averaged; sizes must match', () => {
  const same = imageDifference([0.1, 0.2], [0.1, 0.2]);
  assert.is(same.max255, 0);
  assert.is(same.over2, 0);
  assert.is(same.psnr, Infinity);
  assert.match(describeDifference(same), /max 0\.00\/255.*0 of 2 values \(0\.000%\).*identical/);
  const nan = imageDifference([0.1, NaN, 0.5], [0.1, 0.2, 0.5]);
  assert.is(nan.nonFinite, 1);
  assert.is(nan.max255, 0);
  assert.match(describeDifference(nan), /1 values not finite/);
  assert.throws(() => imageDifference([1, 2], [1]), /differ in size: 2 vs 1/);
});

test('describeDifference: one line with max, mean, count and share over 2/255, PSNR', () => {
  const n = 196_608;
  const a = new Float32Array(n), b = new Float32Array(n);
  b[0] = 1 / 255;
  b[1] = 3 / 255;
  const line = describeDifference(imageDifference(a, b));
  assert.match(line, /^max 3\.00\/255, mean 0\.000\/255; 1 of 196,608 values \(0\.001%\) differ by more than 2\/255; PSNR \d+\.\d dB$/);
});

const side = (k: number, peak = 1000): SideFigures => ({
  stages: {
    text: { loadSeconds: 0.5 * k, runSeconds: 0.2 * k, steps: 1, secondsPerStep: 0.2 * k, peakRssMB: 600 },
    prior: { loadSeconds: 3 * k, runSeconds: 2 * 1.5 * k, steps: 2, secondsPerStep: 1.5 * k, peakRssMB: 4200 },
    decoder: { loadSeconds: 8 * k, runSeconds: 2 * 6 * k, steps: 2, secondsPerStep: 6 * k, peakRssMB: 5500 },
    super_res: { loadSeconds: 20 * k, runSeconds: 2 * 30 * k, steps: 2, secondsPerStep: 30 * k, peakRssMB: null },
  },
  totalSeconds: 100 * k,
  peakRssMB: peak,
});

test('sideBySideTable: one row per stage with both sides and the ratio, a total row; no PyTorch: dashes', () => {
  const t = sideBySideTable(side(1, 6963), side(2, 18700)).split('\n');
  assert.is(t.length, 7);
  assert.match(t[0], /^\| stage \| steps \| ours: load s \| ours: s\/step \| ours: peak RSS GB \| PyTorch: load s \| PyTorch: s\/step \| PyTorch: peak RSS GB \| ours \/ PyTorch \(s\/step\) \|$/);
  assert.is(t[2], '| text encoder | 1 | 0.5 | 0.20 | 0.59 | 1.0 | 0.40 | 0.59 | 0.50 |');
  assert.is(t[4], '| decoder + text_proj | 2 | 8.0 | 6.00 | 5.37 | 16.0 | 12.00 | 5.37 | 0.50 |');
  assert.is(t[5], '| super-res | 2 | 20.0 | 30.00 | - | 40.0 | 60.00 | - | 0.50 |');
  // sampling 0.2 + 3 + 12 + 60 = 75.2 s; loading 31.5 s
  assert.is(t[6], '| **total** (sampling; loading) | | **31.5** | **75.2 s** | 6.80 | **63.0** | **150.4 s** | 18.26 | **0.50** |');
  const alone = sideBySideTable(side(1)).split('\n');
  assert.is(alone[3], '| prior | 2 | 3.0 | 1.50 | 4.10 | - | - | - | - |');
  assert.match(alone[6], /\| \*\*-\*\* \| \*\*-\*\* \| - \| \*\*-\*\* \|$/);
});

test('sideBySideTable: different step counts on the two sides are shown', () => {
  const t = side(2);
  t.stages.prior.steps = 3;
  assert.match(sideBySideTable(side(1), t), /\| prior \| 2 \(PyTorch 3\) \|/);
});

test('extrapolate: text once, the others per step × steps', () => {
  assert.ok(Math.abs(extrapolate(side(1), { prior: 25, decoder: 25, super_res: 7 }) - (0.2 + 25 * 1.5 + 25 * 6 + 7 * 30)) < 1e-9);
});

test('parseSteps: N or P/D/S or P,D,S; each ≥ 2', () => {
  assert.equal(parseSteps('3'), [3, 3, 3]);
  assert.equal(parseSteps('25/25/7'), [25, 25, 7]);
  assert.equal(parseSteps('5,5,3'), [5, 5, 3]);
  assert.throws(() => parseSteps('1'), /integer ≥ 2/);
  assert.throws(() => parseSteps('2/2'), /N or P\/D\/S/);
  assert.throws(() => parseSteps('2/x/2'), /integer ≥ 2/);
});

test('torchUnavailableMessage: names the interpreter, the error and the fix for each cause', () => {
  const noTorch = torchUnavailableMessage('/usr/bin/python3', 'Traceback (most recent call last):\n  File "x", line 1\nModuleNotFoundError: No module named \'torch\'\n');
  assert.match(noTorch, /^PyTorch side skipped \(\/usr\/bin\/python3: ModuleNotFoundError: No module named 'torch'\): /);
  assert.match(noTorch, /apt-get install -y python3-torch/);
  const noDiffusers = torchUnavailableMessage('python3', "ModuleNotFoundError: No module named 'diffusers'");
  assert.match(noDiffusers, /diffusers is not importable: .*PYTHONPATH.*env\.sh/);
  assert.match(torchUnavailableMessage('python3', "No module named 'transformers.models'"), /transformers is not importable/);
  const noPython = torchUnavailableMessage('/opt/none/python3', 'spawn /opt/none/python3 ENOENT');
  assert.match(noPython, /no such interpreter; name one with KARLO_TORCH_PYTHON/);
  assert.match(torchUnavailableMessage('python3', 'Segmentation fault'), /see the error above/);
  assert.match(torchUnavailableMessage('python3', ''), /\(python3: no output\)/);
});

test('torchPython and sideBySideEnv: interpreter choice; OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed, the rest kept', () => {
  assert.is(torchPython({ KARLO_TORCH_PYTHON: '/a/py', PY: '/b/py' }), '/a/py');
  assert.is(torchPython({ PY: '/b/py' }), '/b/py');
  assert.is(torchPython({}), 'python3');
  const env = sideBySideEnv({ OPENBLAS_CORETYPE: 'Haswell', OPENBLAS_L2_SIZE: '1048576', PATH: '/bin' });
  assert.equal(env, { PATH: '/bin' });
});

test.run();
