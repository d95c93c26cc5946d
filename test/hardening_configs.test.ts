// Issue 18, config family: values in component configs that would allocate without bound are refused at load,
// quickly, naming the file and field; values from the file are not echoed at length.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UnCLIPScheduler } from '../src/samplers/unclip_scheduler.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hard-cfg-'));

test('scheduler: num_train_timesteps 1e9 (8 GB of tables) is refused; a 1 MB string value is not repeated back', () => {
  const f = path.join(tmp, 'scheduler_config.json');
  for (const v of [1e9, 1e300, 1_000_001]) {
    fs.writeFileSync(f, JSON.stringify({ num_train_timesteps: v, variance_type: 'fixed_small_log' }));
    const t0 = performance.now();
    assert.throws(() => UnCLIPScheduler.fromDir(tmp), /scheduler_config\.json: num_train_timesteps = .* is not supported .*\[2, 1000000\]/);
    assert.ok(performance.now() - t0 < 2000);
  }
  fs.writeFileSync(f, JSON.stringify({ beta_schedule: 'x'.repeat(1 << 20) }));
  try {
    UnCLIPScheduler.fromDir(tmp);
    assert.unreachable('accepted');
  } catch (e) {
    assert.ok((e as Error).message.length < 400, `${(e as Error).message.length} characters`);
    assert.match((e as Error).message, /beta_schedule = "xxx.*\(1048578 characters\)/);
  }
  fs.writeFileSync(f, JSON.stringify({ num_train_timesteps: 1000, variance_type: 'fixed_small_log' }));
  assert.is(UnCLIPScheduler.fromDir(tmp).config.num_train_timesteps, 1000);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
