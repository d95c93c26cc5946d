// `karlo parity` kind "tokenizer": a folder like test/fixtures/tokenizer (vocab.json, merges.txt, tokenizer
// configs, cases.json with `text` and the reference `input_ids`/`attention_mask`, optionally `*_ftfy` and
// `input_ids_karlo_pad0`). Ids are compared exactly: max abs error 0 or fail.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { readJson } from '../io/weights.js';
import { compareArrays, type Comparison } from './compare.js';
import type { ParityKind, ParityOptions } from './types.js';

interface TokenizerCase {
  text: string;
  input_ids: number[];
  attention_mask?: number[];
  input_ids_ftfy?: number[];
  attention_mask_ftfy?: number[];
  input_ids_karlo_pad0?: number[];
}

function readCases(dir: string): { cases: TokenizerCase[]; maxLength: number } {
  const file = path.join(dir, 'cases.json');
  const j = readJson<{ cases?: TokenizerCase[]; max_length?: number } | TokenizerCase[]>(file);
  const cases = Array.isArray(j) ? j : j.cases;
  if (!Array.isArray(cases)) throw new Error(`${file}: no "cases" list`);
  cases.forEach((c, i) => {
    if (typeof c?.text !== 'string' || !Array.isArray(c.input_ids)) throw new Error(`${file}: cases[${i}] needs "text" (string) and "input_ids" (list)`);
  });
  const maxLength = (!Array.isArray(j) && typeof j.max_length === 'number') ? j.max_length : (cases[0]?.input_ids.length ?? 77);
  return { cases, maxLength };
}

export async function runTokenizerParity(dir: string, opts: ParityOptions = {}): Promise<Comparison[]> {
  const { cases, maxLength } = readCases(dir);
  const plain = CLIPTokenizer.fromDir(dir);
  const variants: { suffix: string; tok: () => CLIPTokenizer; ids: (c: TokenizerCase) => number[] | undefined; mask: (c: TokenizerCase) => number[] | undefined }[] = [
    { suffix: '', tok: () => plain, ids: (c) => c.input_ids, mask: (c) => c.attention_mask },
    { suffix: '_ftfy', tok: () => CLIPTokenizer.fromDir(dir, { ftfy: true }), ids: (c) => c.input_ids_ftfy, mask: (c) => c.attention_mask_ftfy },
    { suffix: '_karlo_pad0', tok: () => CLIPTokenizer.fromDir(dir, { padToken: '!' }), ids: (c) => c.input_ids_karlo_pad0, mask: () => undefined },
  ];
  const out: Comparison[] = [];
  const push = (c: Comparison) => {
    out.push(c);
    opts.log?.(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name} max abs ${c.maxAbs}`);
  };
  for (const v of variants) {
    if (!cases.some((c) => v.ids(c))) continue;
    const tok = v.tok();
    const enc = tok.encode(cases.map((c) => c.text), { maxLength, padding: 'max_length', truncation: true });
    cases.forEach((c, i) => {
      const ids = v.ids(c);
      if (ids) push(compareArrays(`case${i}.input_ids${v.suffix}`, enc.inputIds[i], ids, { atol: 0, scaleByMax: false }));
      const mask = v.mask(c);
      if (mask) push(compareArrays(`case${i}.attention_mask${v.suffix}`, enc.attentionMask[i], mask, { atol: 0, scaleByMax: false }));
    });
  }
  return out;
}

export const tokenizerParity: ParityKind = {
  name: 'tokenizer',
  detect: (dir) => fs.existsSync(path.join(dir, 'cases.json')) && (fs.existsSync(path.join(dir, 'vocab.json')) || fs.existsSync(path.join(dir, 'tokenizer_config.json'))),
  run: runTokenizerParity,
};
