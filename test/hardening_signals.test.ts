// Issue 18 item 9 (leftovers): real SIGINT / SIGTERM sent to `karlo convert` while it writes remove its partial
// output folder (it stayed behind in 5 of 9 interruptions before), and the process still ends by the signal; the
// leftovers of processes that died without cleaning up (kill -9) are removed at the next run, which says so; an
// `.OUT.old-PID` moved aside in the last instant is put back. generate: stale `.NAME.PID.TIME.tmp` files are
// removed with a message, and a SIGTERM mid-run leaves nothing behind.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { availableBackends } from '../src/backend/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The fastest backend here (these tests are about files and processes, not numerics).
const BACKEND = (await availableBackends(['native'])).length ? 'native' : (await availableBackends(['wasm'])).length ? 'wasm' : 'cpu';
const ORIGINAL = path.join(ROOT, 'test', 'fixtures', 'original_ckpt', 'original');
const KARLO = path.join(ROOT, 'bin', 'karlo.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hard-sig-'));
const DEAD_PID = 99_999_999; // above any pid_max: no such process

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts `karlo args`, waits until `ready()` holds, sends `sig`, returns how it ended. */
async function interrupt(args: string[], ready: () => boolean, sig: NodeJS.Signals, env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [KARLO, ...args], { cwd: tmp, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.on('exit', (code, signal) => res({ code, signal })));
  const t0 = Date.now();
  let sent = false;
  while (Date.now() - t0 < 60_000) {
    if (child.exitCode !== null) break;
    if (ready()) { child.kill(sig); sent = true; break; }
    await sleep(5);
  }
  const end = await ended;
  return { ...end, sent, stderr: () => stderr };
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  test(`convert: ${sig} while writing removes the partial folder and ends by the signal`, async () => {
    const out = path.join(tmp, `out-${sig}`);
    let partial: string | null = null;
    const r = await interrupt(['convert', '--from-original', ORIGINAL, '--configs', path.join(ORIGINAL, 'configs'), '--out', out], () => {
      partial = fs.readdirSync(tmp).find((n) => n.startsWith(`.out-${sig}.partial-`)) ?? null;
      // wait until the partial folder holds a weights file being written
      return partial !== null && fs.existsSync(path.join(tmp, partial, 'prior'));
    }, sig, { KARLO_CONVERT_STEP_DELAY_MS: '20' });
    assert.ok(r.sent, `the signal was sent while converting (${r.stderr()})`);
    assert.is(r.signal, sig, `ends by ${sig} (code ${r.code}): ${r.stderr()}`);
    assert.match(r.stderr(), new RegExp(`interrupted \\(${sig}\\); removed partial output .*\\.out-${sig}\\.partial-\\d+`));
    assert.equal(fs.readdirSync(tmp).filter((n) => n.includes(`out-${sig}`)), [], 'nothing left: no partial, no output');
  });
}

test('convert: partial folders of dead processes are removed at the next run (and said); a moved-aside old output is restored', () => {
  const out = path.join(tmp, 'stale');
  const partial = path.join(tmp, `.stale.partial-${DEAD_PID}`);
  fs.mkdirSync(path.join(partial, 'prior'), { recursive: true });
  fs.writeFileSync(path.join(partial, 'prior', 'diffusion_pytorch_model.safetensors.tmp-1'), 'half');
  const old = path.join(tmp, `.stale.old-${DEAD_PID}`);
  fs.mkdirSync(old);
  fs.writeFileSync(path.join(old, 'model_index.json'), '{}');
  const r = spawnSync(process.execPath, [KARLO, 'convert', '--from-original', ORIGINAL, '--configs', path.join(ORIGINAL, 'configs'), '--only', 'prior', '--out', out, '--force'], { cwd: tmp, encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`restored .*stale from .*\\.stale\\.old-${DEAD_PID}, left behind by process ${DEAD_PID}`));
  assert.match(r.stderr, new RegExp(`removed .*\\.stale\\.partial-${DEAD_PID}, left behind by process ${DEAD_PID} \\(no longer running\\)`));
  assert.not.ok(fs.existsSync(partial));
  assert.not.ok(fs.existsSync(old));
  assert.ok(fs.existsSync(path.join(out, 'prior', 'config.json')), 'the new conversion replaced the restored one (--force)');
  // a live process's partial folder is left alone
  const live = path.join(tmp, `.stale.partial-${process.pid}`);
  fs.mkdirSync(live);
  const r2 = spawnSync(process.execPath, [KARLO, 'convert', '--from-original', ORIGINAL, '--configs', path.join(ORIGINAL, 'configs'), '--only', 'prior', '--out', out, '--force'], { cwd: tmp, encoding: 'utf8', timeout: 120_000 });
  assert.is(r2.status, 0, r2.stderr);
  assert.ok(fs.existsSync(live), 'not removed: its process runs');
  fs.rmSync(live, { recursive: true });
});

test('generate: stale .tmp files of dead processes are removed (and said); SIGTERM mid-run leaves nothing', async () => {
  const dir = path.join(tmp, 'gen');
  fs.mkdirSync(dir);
  const stale = path.join(dir, `.frog.png.${DEAD_PID}.1700000000000.tmp`);
  fs.writeFileSync(stale, 'half a png');
  const FAST = ['--prior-steps', '2', '--decoder-steps', '2', '--sr-steps', '2', '--backend', BACKEND, '--seed', '1'];
  const r = spawnSync(process.execPath, [KARLO, 'generate', 'a frog', '--out', path.join(dir, 'frog.png'), ...FAST], { cwd: tmp, encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`removed .*\\.frog\\.png\\.${DEAD_PID}\\.1700000000000\\.tmp, left behind by process ${DEAD_PID}`));
  assert.equal(fs.readdirSync(dir), ['frog.png']);

  const r3 = await (async () => {
    const child = spawn(process.execPath, [KARLO, 'generate', 'a frog', '--num-images', '3', '--out', path.join(dir, 'toad.png'), ...FAST], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const ended = new Promise<{ signal: NodeJS.Signals | null; code: number | null }>((res) => child.on('exit', (code, signal) => res({ code, signal })));
    const t0 = Date.now();
    while (!/decoder/.test(stderr) && child.exitCode === null && Date.now() - t0 < 60_000) await sleep(5);
    child.kill('SIGTERM');
    return { ...(await ended), stderr };
  })();
  assert.ok(r3.signal === 'SIGTERM' || r3.code === 0, `ended: ${JSON.stringify(r3)}`);
  assert.equal(fs.readdirSync(dir).filter((n) => n.endsWith('.tmp')), [], 'no temporary file left');
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
