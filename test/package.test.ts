// The npm package as a user gets it: `npm pack` (its prepack runs `npm run build`), the tarball's size and contents,
// then `npm install` of the tarball into an empty project, where an ESM consumer file importing from 'karlo-tfjs'
// typechecks (tsc --noEmit, our .d.ts checked too: no skipLibCheck), the import works at run time, `npx karlo --help`
// prints the commands, and `npx karlo parity` on the bundled model passes every recorded comparison.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readPng } from '../src/io/png.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-pkg-'));
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const NPX = process.platform === 'win32' ? 'npx.cmd' : 'npx';
const env: NodeJS.ProcessEnv = {
  ...process.env,
  KARLO_SKIP_NATIVE_BUILD: '1', // the addon build is the native backend's own test; here wasm/cpu run
  npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false',
};
delete env.KARLO_BACKEND;

function sh(cmd: string, args: string[], opts: SpawnSyncOptions & { cwd: string }) {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: 300_000, ...opts });
  if (process.env.KARLO_TEST_TIMES) console.error(`${cmd} ${args.slice(0, 2).join(' ')}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return { code: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), error: r.error };
}

interface PackFile { path: string; size: number }
let tarball = '';
let packed: { filename: string; size: number; files: PackFile[] } | undefined;
const consumer = path.join(tmp, 'consumer');

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('npm pack: builds dist/, a tarball under 40 MB with the JS + .d.ts, bin, the default model (karlo-nano), the tiny model with its recorded runs, LICENSE, NOTICE; no tests, sources or benchmarks', () => {
  const r = sh(NPM, ['pack', '--json', '--pack-destination', tmp], { cwd: ROOT });
  assert.is(r.code, 0, `npm pack failed: ${r.stderr.slice(-2000)}`);
  packed = JSON.parse(r.stdout)[0];
  tarball = path.join(tmp, packed!.filename);
  assert.ok(fs.existsSync(tarball));
  const size = fs.statSync(tarball).size;
  // ~17 MB of code, native sources and the tiny model, plus karlo-nano's 18 MB of float16 weights (which hardly compress).
  assert.ok(size < 40e6, `tarball is ${(size / 1e6).toFixed(1)} MB`);
  const files = new Set(packed!.files.map((f) => f.path));
  for (const f of ['package.json', 'LICENSE', 'NOTICE', 'README.md', 'bin/karlo.js', 'dist/src/index.js', 'dist/src/index.d.ts',
    'dist/src/cli/main.js', 'dist/tools/convert/convert.js', 'models/karlo-tiny/model_index.json',
    'models/karlo-tiny/tokenizer/vocab.json', 'models/karlo-tiny/run.json', 'models/karlo-tiny/run.safetensors',
    'models/karlo-nano/model_index.json', 'models/karlo-nano/decoder/diffusion_pytorch_model.safetensors', 'models/karlo-nano/README.md',
    'native/binding.gyp', 'native/build.mjs']) {
    assert.ok(files.has(f), `${f} is not in the tarball`);
  }
  const stray = [...files].filter((f) => /^(test|bench|scripts|src|tools|\.ci)\//.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts')) || f.startsWith('native/build/'));
  assert.equal(stray, [], 'tests, benchmarks, TypeScript sources or native build outputs in the tarball');
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.not.ok('tsx' in (pkg.dependencies ?? {}), 'tsx must be a devDependency only');
  assert.ok('tsx' in (pkg.devDependencies ?? {}));
  assert.is(pkg.exports['.'].types, './dist/src/index.d.ts');
  assert.is(pkg.exports['.'].import, './dist/src/index.js');
});

test('installed tarball: ESM consumer typechecks and runs `import { UnCLIPPipeline } from "karlo-tfjs"`; `npx karlo --help`; `npx karlo parity` on the bundled model', () => {
  assert.ok(tarball, 'npm pack did not run');
  fs.mkdirSync(consumer);
  fs.writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  const inst = sh(NPM, ['install', '--prefer-offline', '--no-package-lock', tarball], { cwd: consumer });
  assert.is(inst.code, 0, `npm install failed: ${inst.stderr.slice(-2000)}`);
  const mods = path.join(consumer, 'node_modules');
  assert.ok(fs.existsSync(path.join(mods, 'karlo-tfjs', 'dist', 'src', 'index.js')));
  assert.not.ok(fs.existsSync(path.join(mods, 'tsx')), 'tsx was installed with the package');
  assert.not.ok(fs.existsSync(path.join(mods, 'esbuild')), 'esbuild was installed with the package');

  // Types: a real use of the API typechecks, and misuses are errors (the types are not `any`).
  fs.writeFileSync(path.join(consumer, 'consumer.ts'), [
    "import { UnCLIPPipeline, initBackend, writePng, floatToRgb8, type GenerateResult } from 'karlo-tfjs';",
    'export async function run(dir: string): Promise<GenerateResult> {',
    "  await initBackend('auto');",
    '  const pipe = await UnCLIPPipeline.load(dir);',
    "  const r = await pipe.generate(['a red frog'], { seed: 0, priorSteps: 2 });",
    "  writePng('frog.png', floatToRgb8(r.images, r.shape, 0));",
    '  return r;',
    '}',
    '// @ts-expect-error: load returns a Promise<UnCLIPPipeline>, not a number',
    "export const wrong: number = UnCLIPPipeline.load('x');",
    '// @ts-expect-error: generate takes prompts as string[]',
    "export const wrong2 = (p: UnCLIPPipeline) => p.generate('a frog', { seed: 0 });",
    "import { train, registerGradients, type TrainOptions } from 'karlo-tfjs';",
    'export async function fineTune(o: TrainOptions): Promise<string | null> {',
    '  await registerGradients();',
    '  return (await train(o)).lastCheckpoint;',
    '}',
    '// @ts-expect-error: component is one of the TrainComponent names',
    "export const wrong3 = (o: TrainOptions) => train({ ...o, component: 'unet' });",
    '',
  ].join('\n'));
  fs.writeFileSync(path.join(consumer, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true,
      // @types/node from this checkout (the consumer did not install it); no skipLibCheck, so our .d.ts are checked
      typeRoots: ['./node_modules/@types', path.join(ROOT, 'node_modules', '@types')],
    },
    files: ['consumer.ts'],
  }));
  const tsc = sh(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], { cwd: consumer });
  assert.is(tsc.code, 0, `tsc --noEmit on the consumer failed:\n${tsc.stdout}${tsc.stderr}`);

  const rt = sh(process.execPath, ['--input-type=module', '-e',
    "import { UnCLIPPipeline, train, PACKAGE_VERSION, BUNDLED_MODEL_DIR } from 'karlo-tfjs'; console.log(typeof UnCLIPPipeline.load, typeof train, PACKAGE_VERSION, BUNDLED_MODEL_DIR)"], { cwd: consumer });
  assert.is(rt.code, 0, rt.stderr);
  const [kind, trainKind, version, bundled] = rt.stdout.trim().split(' ');
  assert.is(kind, 'function');
  assert.is(trainKind, 'function', 'train is exported');
  assert.is(version, JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
  assert.is(bundled, path.join(fs.realpathSync(mods), 'karlo-tfjs', 'models', 'karlo-tiny'));

  const help = sh(NPX, ['--no-install', 'karlo', '--help'], { cwd: consumer });
  assert.is(help.code, 0, help.stderr);
  for (const c of ['generate', 'inspect', 'parity', 'tokenize', 'convert']) assert.match(help.stdout, new RegExp(`karlo ${c}`));

  const parity = sh(NPX, ['--no-install', 'karlo', 'parity', path.join('node_modules', 'karlo-tfjs', 'models', 'karlo-tiny')], { cwd: consumer });
  assert.is(parity.code, 0, `${parity.stdout.slice(-1500)}${parity.stderr.slice(-1500)}`);
  const m = /pipeline: (\d+)\/(\d+) OK/.exec(parity.stdout);
  assert.ok(m && m[1] === m[2] && Number(m[1]) > 50, parity.stdout.slice(-500));

  // The README's first generate command: no --model, the bundled karlo-nano.
  const gen = sh(NPX, ['--no-install', 'karlo', 'generate', 'a red star on a black background', '--seed', '0', '--out', 'star.png'], { cwd: consumer });
  assert.is(gen.code, 0, gen.stderr.slice(-1500));
  assert.match(gen.stderr, /using the bundled karlo-nano/);
  assert.is(readPng(path.join(consumer, 'star.png')).width, 128);
});

test.run();
