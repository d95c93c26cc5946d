// Issue 18 item 5 (tokenizer): an empty added token, model_max_length out of bounds and malformed vocab.json /
// merges.txt are refused at load with one line naming the file, in bounded time (they looped forever or grew
// to gigabytes before).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLIPTokenizer } from '../src/tokenizer/clip_tokenizer.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-hard-tok-'));
let n = 0;

/** A tokenizer folder with the given files (strings written as they are, objects as JSON). */
function folder(files: Record<string, unknown>): string {
  const d = path.join(tmp, `t${n++}`);
  fs.mkdirSync(d);
  for (const [f, v] of Object.entries(files)) fs.writeFileSync(path.join(d, f), typeof v === 'string' || Buffer.isBuffer(v) ? v : JSON.stringify(v));
  return d;
}

function refused(dir: string, re: RegExp, what: string): void {
  const t0 = performance.now();
  try {
    const tok = CLIPTokenizer.fromDir(dir);
    tok.encode(['a photo of a frog']);
  } catch (e) {
    assert.ok(performance.now() - t0 < 2000, `${what}: took ${(performance.now() - t0).toFixed(0)} ms`);
    assert.match((e as Error).message, re, what);
    assert.not.match((e as Error).message, /\n/);
    return;
  }
  assert.unreachable(`${what}: accepted`);
}

const SPECIALS = { '<|startoftext|>': 0, '<|endoftext|>': 1 };
const VOCAB = { ...SPECIALS, 'a</w>': 2, 'a': 3 };
const MERGES = '#version: 0.2\na </w>\n';

test('an empty added token (added_tokens_decoder, special token) is refused, not looped on', () => {
  refused(folder({ 'tokenizer_config.json': { added_tokens_decoder: { 5: { content: '' } } } }), /added_tokens_decoder\["5"\] has empty content/, 'empty added token');
  refused(folder({ 'tokenizer_config.json': { bos_token: '' } }), /bos_token is empty/, 'empty bos');
  refused(folder({ 'tokenizer_config.json': { added_tokens_decoder: { x: { content: 'x' } } } }), /the id is not a non-negative integer/, 'id x');
  refused(folder({ 'tokenizer_config.json': { added_tokens_decoder: [] } }), /added_tokens_decoder is not an object/, 'list');
  refused(folder({ 'tokenizer_config.json': { added_tokens_decoder: { 5: null } } }), /has no content/, 'null token');
});

test('model_max_length must be an integer in [2, 16384]; the 1e30 "no limit" sentinel means 77', () => {
  for (const v of [5e7, 1e9, 1e17, -1, 0, 1, 1.5, 16385]) {
    refused(folder({ 'tokenizer_config.json': { model_max_length: v } }), /model_max_length .* is not an integer in \[2, 16384\]/, `model_max_length ${v}`);
  }
  refused(folder({ 'tokenizer_config.json': { model_max_length: 'x' } }), /model_max_length is not a number/, 'string');
  assert.is(CLIPTokenizer.fromDir(folder({ 'tokenizer_config.json': { model_max_length: 1e30 } })).modelMaxLength, 77);
  assert.is(CLIPTokenizer.fromDir(folder({ 'tokenizer_config.json': { model_max_length: 64 } })).modelMaxLength, 64);
  assert.throws(() => CLIPTokenizer.fromDir().encode(['x'], { maxLength: 5e7 }), /maxLength must be an integer in \[2, 16384\]/);
});

test('malformed vocab.json / merges.txt / configs are refused, naming the file', () => {
  const ok = folder({ 'vocab.json': VOCAB, 'merges.txt': MERGES });
  assert.equal(CLIPTokenizer.fromDir(ok).encode(['a'], { maxLength: 4 }).inputIds, [[0, 2, 1, 1]]);
  refused(folder({ 'vocab.json': [], 'merges.txt': MERGES }), /vocab\.json: vocab\.json is not a JSON object/, 'vocab []');
  refused(folder({ 'vocab.json': {}, 'merges.txt': MERGES }), /vocab\.json holds no tokens/, 'vocab {}');
  refused(folder({ 'vocab.json': { ...VOCAB, b: 1.5 }, 'merges.txt': MERGES }), /gives token "b" the id 1\.5, not a non-negative integer/, 'id 1.5');
  refused(folder({ 'vocab.json': { ...VOCAB, b: '7' }, 'merges.txt': MERGES }), /the id of type string/, 'id "7"');
  refused(folder({ 'vocab.json': { ...VOCAB, b: -3 }, 'merges.txt': MERGES }), /id -3/, 'id -3');
  refused(folder({ 'vocab.json': { ...VOCAB, b: 2 }, 'merges.txt': MERGES }), /gives id 2 to two tokens/, 'duplicate id');
  refused(folder({ 'vocab.json': '{"a": 1, ', 'merges.txt': MERGES }), /vocab\.json: invalid JSON \(it ends early\)/, 'truncated JSON');
  refused(folder({ 'vocab.json': VOCAB, 'merges.txt': '#version\na b c\n' }), /merges\.txt: line 2 is not a merge pair/, 'merge of 3');
  refused(folder({ 'vocab.json': VOCAB, 'merges.txt': '#version\n b\n' }), /line 2 is not a merge pair/, 'empty symbol');
  refused(folder({ 'vocab.json': VOCAB, 'merges.txt': Buffer.from([0x23, 0x0a, 0xff, 0x20, 0x61]) }), /merges\.txt: merges\.txt is not valid UTF-8/, 'binary merges');
  refused(folder({ 'tokenizer_config.json': '[1]' }), /tokenizer_config\.json is not a JSON object/, 'config list');
  refused(folder({ 'tokenizer_config.json': {}, 'special_tokens_map.json': 'null' }), /special_tokens_map\.json is not a JSON object/, 'map null');
});

test('100,000 added tokens and a 20,000-character prompt: bounded time (trie lookup), same ids as a plain scan', () => {
  const atd: Record<string, { content: string }> = {};
  for (let i = 0; i < 100_000; i++) atd[String(49408 + i)] = { content: `<t${i}>` };
  const d = folder({ 'tokenizer_config.json': { added_tokens_decoder: atd } });
  const t0 = performance.now();
  const tok = CLIPTokenizer.fromDir(d);
  const text = 'a <t7> photo<t99999> of <t1234x> '.repeat(600);
  const ids = tok.encodeText(text);
  assert.ok(performance.now() - t0 < 4000, `${(performance.now() - t0).toFixed(0)} ms`);
  assert.equal(ids.slice(0, 6), [320, 49415, 1125, 49408 + 99999, 539, 283]);
  assert.is(tok.decode([49415, 49408 + 99999]), '<t7><t99999>');
});

test('error messages never quote the file: a secret in a broken vocab.json is not printed', () => {
  const d = folder({ 'vocab.json': '{"SECRET-1234": 1, }', 'merges.txt': MERGES });
  try {
    CLIPTokenizer.fromDir(d);
    assert.unreachable('accepted');
  } catch (e) {
    assert.not.ok((e as Error).message.includes('SECRET'), (e as Error).message);
    assert.match((e as Error).message, /invalid JSON at line 1, column 20/);
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
