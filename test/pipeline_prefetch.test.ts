// Hidden loading in the pipeline (src/pipeline/stage_prefetch.ts + prefetch.ts): with the next stage's weights
// read ahead in worker threads the images are bit-identical to loading each stage directly, every component after
// the text stage comes through the prefetcher, and the budget rules (split in load order, the call's peak minus
// the running stage, KARLO_PREFETCH_MB) hold.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UnCLIPPipeline } from '../src/pipeline/unclip_pipeline.js';
import { envPrefetchBytes, splitBudget, stageBudget } from '../src/pipeline/stage_prefetch.js';
import { backendsUnderTest, fixture } from './helpers.js';

const [backend] = await backendsUnderTest();
const TINY = fixture('pipeline_tiny');

async function generate(prefetchBytes: number) {
  const pipe = await UnCLIPPipeline.load(TINY, { backend, log: () => {}, prefetchBytes });
  pipe.prefetch.minBytes = 0; // the tiny components are far below the real threshold
  const r = await pipe.generate(['a frog on a leaf'], { seed: 3, priorSteps: 2, decoderSteps: 2, superResSteps: 2 });
  const stats = [...pipe.prefetch.stats];
  pipe.dispose();
  return { bits: new Uint32Array(r.images.buffer.slice(0)), stats };
}

test(`prefetched stages give the same image bit for bit as direct loading (${backend})`, async () => {
  const direct = await generate(0);
  const ahead = await generate(1e9);
  assert.equal(direct.stats, []);
  assert.is(ahead.bits.length, direct.bits.length);
  assert.ok(ahead.bits.every((v, i) => v === direct.bits[i]), 'images differ');
  const names = ahead.stats.map((s) => s.file.split(/[\\/]/).slice(-2)[0]);
  assert.equal(names, ['text_encoder', 'prior', 'text_proj', 'decoder', 'super_res_first', 'super_res_last']);
  for (const s of ahead.stats) {
    assert.ok(s.prefetchedBytes + s.loaderBytes > 0, s.file);
    assert.is(s.directBytes, 0, s.file);
  }
});

test('splitBudget gives each file in load order what is left; stageBudget: the ceiling minus RSS and 4× activations', () => {
  assert.equal(splitBudget([10, 20, 30], 25), [10, 15, 0]);
  assert.equal(splitBudget([10, 20], 100), [10, 20]);
  assert.equal(splitBudget([10], -5), [0]);
  const GB = 1e9;
  const stages = [{ weightsBytes: 4 * GB, activationBytes: 0.1 * GB }, { weightsBytes: 2.8 * GB, activationBytes: 1.25 * GB }];
  // 8 GB ceiling on a 24 GB machine
  assert.ok(Math.abs(stageBudget(stages, 0, { peakBytes: 5 * GB, rssBytes: 4.5 * GB, totalMem: 24 * GB }) - 3.1 * GB) < 1);
  assert.is(stageBudget(stages, 1, { peakBytes: 5 * GB, rssBytes: 3.5 * GB, totalMem: 24 * GB }), 0);
  // a larger estimated peak raises the ceiling, half the machine caps it
  assert.ok(Math.abs(stageBudget(stages, 0, { peakBytes: 10 * GB, rssBytes: 4.5 * GB, totalMem: 24 * GB }) - 5.1 * GB) < 1);
  assert.ok(Math.abs(stageBudget(stages, 0, { peakBytes: 5 * GB, rssBytes: 1 * GB, totalMem: 8 * GB }) - 2.6 * GB) < 1);
});

test('KARLO_PREFETCH_MB: MB to bytes, unset is undefined, nonsense is an error naming it', () => {
  assert.is(envPrefetchBytes({ KARLO_PREFETCH_MB: '2' }), 2 * 2 ** 20);
  assert.is(envPrefetchBytes({ KARLO_PREFETCH_MB: '0' }), 0);
  assert.is(envPrefetchBytes({}), undefined);
  assert.throws(() => envPrefetchBytes({ KARLO_PREFETCH_MB: 'lots' }), /KARLO_PREFETCH_MB=lots: expected a number of MB ≥ 0/);
});

test.run();
