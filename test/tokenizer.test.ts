// CLIP tokenizer vs transformers' slow CLIPTokenizer: the 30 cases of fixtures/tokenizer/cases.json, exact.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import { CLIPTokenizer, BUNDLED_TOKENIZER_DIR } from '../src/tokenizer/clip_tokenizer.js';
import { fixture } from './helpers.js';
import { PARITY_KINDS } from '../src/parity/registry.js';

interface Case {
  text: string; tokens: string[]; input_ids: number[]; attention_mask: number[]; untruncated_length: number; truncated: boolean;
  input_ids_karlo_pad0: number[]; input_ids_ftfy: number[]; attention_mask_ftfy: number[]; untruncated_length_ftfy: number;
}
const fx = JSON.parse(fs.readFileSync(fixture('tokenizer', 'cases.json'), 'utf8')) as { cases: Case[]; max_length: number };
const cases = fx.cases;
const tok = CLIPTokenizer.fromDir(fixture('tokenizer'));

test('30 cases: BPE tokens, input_ids, attention_mask and untruncated length equal transformers (no ftfy)', () => {
  assert.is(cases.length, 30);
  const enc = tok.encode(cases.map((c) => c.text), { maxLength: fx.max_length, padding: 'max_length', truncation: true });
  cases.forEach((c, i) => {
    assert.equal(tok.tokenize(c.text), c.tokens, `case ${i} tokens`);
    assert.equal(enc.inputIds[i], c.input_ids, `case ${i} input_ids`);
    assert.equal(enc.attentionMask[i], c.attention_mask, `case ${i} attention_mask`);
    assert.is(tok.untruncatedLength(c.text), c.untruncated_length, `case ${i} untruncated length`);
    assert.is(tok.untruncatedLength(c.text) > fx.max_length, c.truncated, `case ${i} truncated`);
  });
});

test('real Karlo tokenizer config (pad_token "!" = id 0, "!" an added token) gives input_ids_karlo_pad0', () => {
  const t0 = CLIPTokenizer.fromDir(fixture('karlo_configs', 'tokenizer'));
  assert.is(t0.padTokenId, 0);
  const enc = t0.encode(cases.map((c) => c.text));
  cases.forEach((c, i) => {
    assert.equal(enc.inputIds[i], c.input_ids_karlo_pad0, `case ${i} input_ids_karlo_pad0`);
    const n = enc.attentionMask[i].reduce((a, b) => a + b, 0);
    assert.is(enc.inputIds[i][n - 1], 49407, `case ${i}: mask ends at EOS`);
  });
});

test('ftfy-style cleaning reproduces the *_ftfy fields', () => {
  const tf = CLIPTokenizer.fromDir(fixture('tokenizer'), { ftfy: true });
  const enc = tf.encode(cases.map((c) => c.text));
  cases.forEach((c, i) => {
    assert.equal(enc.inputIds[i], c.input_ids_ftfy, `case ${i} input_ids_ftfy`);
    assert.equal(enc.attentionMask[i], c.attention_mask_ftfy, `case ${i} attention_mask_ftfy`);
    assert.is(tf.untruncatedLength(c.text), c.untruncated_length_ftfy, `case ${i} untruncated_length_ftfy`);
  });
});

test('bundled tokenizer (no dir) and a pipeline folder resolve to the same vocabulary', () => {
  assert.ok(fs.existsSync(BUNDLED_TOKENIZER_DIR));
  const b = CLIPTokenizer.fromDir();
  const p = CLIPTokenizer.fromDir(fixture('pipeline_tiny'));
  assert.is(b.vocabSize, 49408);
  assert.equal(b.encode([cases[0].text]).inputIds, [cases[0].input_ids]);
  assert.equal(p.encode([cases[0].text]).inputIds, [cases[0].input_ids]);
});

test('padding "longest" / false and truncation off', () => {
  const e = tok.encode(['a photo of a cat', 'a'], { padding: 'longest' });
  assert.equal(e.inputIds[1], [49406, 320, 49407, 49407, 49407, 49407, 49407]);
  assert.equal(e.attentionMask[1], [1, 1, 1, 0, 0, 0, 0]);
  const f = tok.encode(['a'], { padding: false });
  assert.equal(f.inputIds, [[49406, 320, 49407]]);
  const long = cases[20];
  const u = tok.encode([long.text], { truncation: false, padding: false });
  assert.is(u.inputIds[0].length, long.untruncated_length);
  assert.equal(u.inputIds[0].slice(0, 76), long.input_ids.slice(0, 76));
});

test('decode joins BPE symbols back into words ("</w>" ends a word)', () => {
  const e = tok.encode(['a high-resolution photograph of a frog'], { padding: false });
  assert.is(tok.decode(e.inputIds[0], { skipSpecialTokens: true }), 'a high - resolution photograph of a frog');
});

test('bad folders give errors naming the folder', () => {
  assert.throws(() => CLIPTokenizer.fromDir('/nonexistent/tok'), /\/nonexistent\/tok/);
  assert.throws(() => CLIPTokenizer.fromDir(fixture('clip_text')), /not a tokenizer folder/);
});

test('karlo parity kind "tokenizer" recognises the fixture folder and passes all 150 id/mask comparisons', async () => {
  const kind = PARITY_KINDS.find((k) => k.detect(fixture('tokenizer')));
  assert.is(kind?.name, 'tokenizer');
  const rows = await kind!.run(fixture('tokenizer'), {});
  assert.is(rows.length, 150);
  assert.ok(rows.every((r) => r.ok && r.maxAbs === 0), rows.filter((r) => !r.ok).map((r) => r.name).join(', '));
});

test.run();
