// CLIP byte-level BPE tokenizer, equal to transformers' slow `CLIPTokenizer` (4.36) as UnCLIPPipeline calls it:
// added/special tokens split the raw text first, each remaining piece is cleaned like BasicTokenizer
// (strip_accents=False, do_split_on_punc=False: what transformers does when ftfy is not installed), split with
// CLIP's regex, byte-encoded and merged with the BPE ranks of merges.txt. Ids: [BOS, ...bpe, EOS, PAD...].
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { brief, jsonName, own, printable, readJsonFile, readTextFile } from '../io/files.js';
import { BUNDLED_MODEL_DIR } from '../package_root.js';

/** The tokenizer folder shipped with the package (the bundled tiny model; same vocab/merges as real Karlo). */
export const BUNDLED_TOKENIZER_DIR = path.join(BUNDLED_MODEL_DIR, 'tokenizer');

/** CLIPTokenizer keeps only this many merges (49152 − 256 − 2 = 48894), whatever merges.txt holds. */
const MAX_MERGES = 49152 - 256 - 2;

export interface EncodeOptions {
  /** Default: the folder's model_max_length (77). */
  maxLength?: number;
  /** 'max_length' (default, as UnCLIPPipeline), 'longest' (pad to the longest text of the batch) or false. */
  padding?: 'max_length' | 'longest' | false;
  /** Keep BOS + the first maxLength−2 BPE ids + EOS (default true). */
  truncation?: boolean;
}

export interface Encoding {
  inputIds: number[][];
  attentionMask: number[][];
}

export interface CLIPTokenizerOptions {
  /** ftfy-style cleaning (`whitespace_clean(fix_text(text)).lower()`) instead of BasicTokenizer's. See `ftfyLikeFix`. */
  ftfy?: boolean;
  /** Overrides the folder's pad token, like `from_pretrained(..., pad_token="!")` (diffusers' Karlo conversion). */
  padToken?: string;
}

interface TrieNode {
  next: Map<string, TrieNode>;
  token?: AddedToken;
}

interface AddedToken {
  content: string;
  id: number;
  lstrip: boolean;
  rstrip: boolean;
}

// ---------- byte ↔ unicode table (GPT-2 / CLIP bytes_to_unicode) ----------

function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const table: string[] = new Array(256);
  for (const b of bs) table[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (table[b] === undefined) table[b] = String.fromCharCode(256 + n++);
  }
  return table;
}
const BYTE_ENCODER = bytesToUnicode();

// ---------- BasicTokenizer text cleaning (transformers, no ftfy) ----------

const CONTROL_RE = /^\p{C}$/u; // unicodedata.category(c).startswith('C')
const ZS_RE = /^\p{Zs}$/u;
/** Python's str.split() separators that can survive _clean_text (Zs became ' '; Cc were dropped). */
const PY_SPLIT_RE = /[ \u2028\u2029]+/;

function isCjkIdeograph(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df)
    || (cp >= 0x2a700 && cp <= 0x2b73f) || (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf)
    || (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/** BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize(text), joined by spaces. */
export function basicClean(text: string): string {
  let out = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd) continue;
    if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ZS_RE.test(ch)) { out += ' '; continue; }
    if (CONTROL_RE.test(ch)) continue;
    out += isCjkIdeograph(cp) ? ` ${ch} ` : ch;
  }
  const words = out.normalize('NFC').split(PY_SPLIT_RE).filter((w) => w.length > 0);
  return words.map((w) => w.toLowerCase()).join(' ');
}

// ---------- optional ftfy-style cleaning ----------

const HTML_ENTITIES: Record<string, string> = {
  amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0', copy: '©', reg: '®', trade: '™',
  hellip: '…', mdash: '—', ndash: '–', lsquo: '‘', rsquo: '’', ldquo: '“', rdquo: '”', laquo: '«', raquo: '»',
  eacute: 'é', egrave: 'è', agrave: 'à', aacute: 'á', ccedil: 'ç', uuml: 'ü', ouml: 'ö', auml: 'ä', szlig: 'ß',
  deg: '°', euro: '€', pound: '£', yen: '¥', cent: '¢', times: '×', divide: '÷', middot: '·', bull: '•',
};
const LIGATURES: Record<string, string> = {
  'Ĳ': 'IJ', 'ĳ': 'ij', 'ŉ': "ʼn", 'Ǳ': 'DZ', 'ǲ': 'Dz', 'ǳ': 'dz', 'Ǆ': 'DŽ', 'ǅ': 'Dž', 'ǆ': 'dž', 'Ǉ': 'LJ', 'ǈ': 'Lj',
  'ǉ': 'lj', 'Ǌ': 'NJ', 'ǋ': 'Nj', 'ǌ': 'nj', 'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl', 'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'ſt', 'ﬆ': 'st',
};

/**
 * A subset of ftfy 6.1 `fix_text` (default config) that covers prompt text: HTML entity unescaping (skipped when
 * the text contains '<', as ftfy's "auto"), terminal escapes, Latin ligatures, full/half-width characters (NFKC),
 * curly quotes, line breaks, control characters, NFC. Mojibake repair (`fix_encoding`) is not reproduced.
 */
export function ftfyLikeFix(text: string): string {
  let t = text;
  if (!t.includes('<')) {
    t = t.replace(/&#?[0-9A-Za-z]{1,24};/g, (m) => {
      const body = m.slice(1, -1);
      if (body.startsWith('#')) {
        const cp = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
        return Number.isFinite(cp) && cp > 0 && cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
      }
      return own(HTML_ENTITIES, body) ?? own(HTML_ENTITIES, body.toLowerCase()) ?? m;
    });
  }
  t = t.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
  t = t.replace(/[ĲĳŉǱǲǳǄǅǆǇǈǉǊǋǌﬀﬁﬂﬃﬄﬅﬆ]/g, (c) => own(LIGATURES, c) ?? c);
  // fix_character_width: NFKC on the full-width / half-width forms block, keeping the ideographic space.
  t = t.replace(/[\uff01-\uffef]/g, (c) => c.normalize('NFKC')).replace(/\u3000/g, ' ');
  t = t.replace(/[\u2018\u2019\u201a\u201b\u2032]/g, "'").replace(/[\u201c\u201d\u201e\u201f\u2033]/g, '"');
  t = t.replace(/\r\n|[\r\u2028\u2029\u0085]/g, '\n');
  t = t.replace(/[\x00-\x08\x0b\x0e-\x1f\x7f\ufeff\ufff9-\ufffc]/g, '');
  t = t.normalize('NFC');
  return t.replace(/\s+/gu, ' ').trim().toLowerCase();
}

// ---------- the tokenizer ----------

const CLIP_PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

interface TokenizerFiles {
  dir: string;
  vocab: string;
  merges: string;
  config: Record<string, unknown>;
  specialMap: Record<string, unknown>;
}

/** A tokenizer folder, file or argument that cannot be used (the message names it). */
export class TokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

/** Largest tokenizer file read (CLIP's vocab.json is 1.6 MB, merges.txt 0.5 MB). */
const MAX_TOKENIZER_FILE = 64 * 1024 * 1024;
/** model_max_length at or above this is transformers' "no limit" sentinel (int(1e30)): the CLIP default 77 applies. */
const NO_LIMIT_SENTINEL = 1e18;
/** Largest model_max_length / maxLength accepted (CLIP uses 77; every row is padded to it). */
export const MAX_MODEL_LENGTH = 16384;

/** A tokenizer JSON file that must hold an object (regular file, size-bounded, content never quoted in errors). */
function readJsonObject(file: string, what: string): Record<string, unknown> {
  const v = readJsonFile(file, { what, maxBytes: MAX_TOKENIZER_FILE });
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new TokenizerError(`${printable(file)}: ${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

/** vocab.json: an object of token → id, ids distinct non-negative integers. */
function checkVocab(v: Record<string, unknown>, file: string): Record<string, number> {
  const entries = Object.entries(v);
  if (entries.length === 0) throw new TokenizerError(`${printable(file)}: vocab.json holds no tokens`);
  const seen = new Map<number, string>();
  for (const [tok, id] of entries) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      throw new TokenizerError(`${printable(file)}: vocab.json gives token ${jsonName(tok.slice(0, 64))} the id ${typeof id === 'number' ? id : `of type ${Array.isArray(id) ? 'array' : id === null ? 'null' : typeof id}`}, not a non-negative integer`);
    }
    const other = seen.get(id);
    if (other !== undefined) throw new TokenizerError(`${printable(file)}: vocab.json gives id ${id} to two tokens (${jsonName(other.slice(0, 64))} and ${jsonName(tok.slice(0, 64))})`);
    seen.set(id, tok);
  }
  return v as Record<string, number>;
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/**
 * Resolves the files of a tokenizer folder. `dir` may be the tokenizer folder or a pipeline folder holding
 * `tokenizer/`. vocab.json/merges.txt missing from the folder fall back to the bundled ones (CLIP ViT-L/14's).
 */
function resolveFiles(dir: string | undefined): TokenizerFiles {
  let d = dir ?? BUNDLED_TOKENIZER_DIR;
  if (!fs.existsSync(d)) throw new TokenizerError(`${d}: tokenizer folder does not exist`);
  if (!fs.existsSync(path.join(d, 'tokenizer_config.json')) && !fs.existsSync(path.join(d, 'vocab.json'))
    && fs.existsSync(path.join(d, 'tokenizer'))) d = path.join(d, 'tokenizer');
  const has = (n: string) => fs.existsSync(path.join(d, n));
  if (!has('vocab.json') && !has('tokenizer_config.json') && !has('special_tokens_map.json')) {
    throw new TokenizerError(`${d}: not a tokenizer folder (no vocab.json, merges.txt, tokenizer_config.json)`);
  }
  if (has('vocab.json') !== has('merges.txt')) {
    throw new TokenizerError(`${d}: ${has('vocab.json') ? 'merges.txt' : 'vocab.json'} is missing (both or neither are needed)`);
  }
  const filesDir = has('vocab.json') ? d : BUNDLED_TOKENIZER_DIR;
  return {
    dir: d,
    vocab: path.join(filesDir, 'vocab.json'),
    merges: path.join(filesDir, 'merges.txt'),
    config: has('tokenizer_config.json') ? readJsonObject(path.join(d, 'tokenizer_config.json'), 'tokenizer_config.json') : {},
    specialMap: has('special_tokens_map.json') ? readJsonObject(path.join(d, 'special_tokens_map.json'), 'special_tokens_map.json') : {},
  };
}

export class CLIPTokenizer {
  readonly encoder: Map<string, number>;
  readonly decoder: Map<number, string>;
  readonly bpeRanks: Map<string, number>;
  readonly bosToken: string;
  readonly eosToken: string;
  readonly padToken: string;
  readonly unkToken: string;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly unkTokenId: number;
  readonly modelMaxLength: number;
  /** Tokens matched literally in the raw text before cleaning (transformers' added tokens), longest first. */
  readonly addedTokens: AddedToken[];
  private readonly cache = new Map<string, string>();
  private readonly addedTrie: TrieNode = { next: new Map() };
  private readonly addedByContent = new Map<string, AddedToken>();
  private readonly addedById = new Map<number, AddedToken>();
  private readonly ftfy: boolean;

  constructor(
    vocab: Record<string, number>,
    merges: string[],
    special: { bos?: string; eos?: string; pad?: string; unk?: string; modelMaxLength?: number; added?: AddedToken[] } = {},
    opts: CLIPTokenizerOptions = {},
  ) {
    this.encoder = new Map(Object.entries(vocab));
    this.decoder = new Map([...this.encoder].map(([k, v]) => [v, k]));
    this.bpeRanks = new Map();
    merges.forEach((m, i) => this.bpeRanks.set(m, i));
    this.bosToken = special.bos ?? '<|startoftext|>';
    this.eosToken = special.eos ?? '<|endoftext|>';
    this.unkToken = special.unk ?? '<|endoftext|>';
    this.padToken = special.pad ?? '<|endoftext|>';
    this.modelMaxLength = special.modelMaxLength ?? 77;
    if (!Number.isInteger(this.modelMaxLength) || this.modelMaxLength < 2 || this.modelMaxLength > MAX_MODEL_LENGTH) {
      throw new TokenizerError(`model_max_length ${this.modelMaxLength} is not an integer in [2, ${MAX_MODEL_LENGTH}]`);
    }
    this.ftfy = opts.ftfy ?? false;
    // CLIPTokenizer seeds its BPE cache so these two strings never get split.
    this.cache.set('<|startoftext|>', '<|startoftext|>');
    this.cache.set('<|endoftext|>', '<|endoftext|>');

    const added = new Map<string, AddedToken>();
    for (const t of special.added ?? []) {
      // An empty added token would match everywhere and split the text forever.
      if (typeof t.content !== 'string' || t.content === '') throw new TokenizerError(`added token ${t.id} has empty content`);
      if (!Number.isSafeInteger(t.id) || t.id < 0) throw new TokenizerError(`added token ${jsonName(t.content.slice(0, 64))} has id ${t.id}, not a non-negative integer`);
      added.set(t.content, t);
    }
    for (const [k, c] of [['bos', special.bos], ['eos', special.eos], ['unk', special.unk], ['pad', special.pad]] as const) {
      if (c === '') throw new TokenizerError(`${k}_token is empty`);
    }
    // transformers registers every special token as an added token (lstrip/rstrip false unless configured).
    for (const c of [this.bosToken, this.eosToken, this.unkToken, this.padToken]) {
      if (!added.has(c)) {
        const id = this.encoder.get(c);
        if (id === undefined) throw new TokenizerError(`special token ${brief(c)} is not in the vocabulary`);
        added.set(c, { content: c, id, lstrip: false, rstrip: false });
      }
    }
    this.addedTokens = [...added.values()].sort((a, b) => b.content.length - a.content.length);
    // Lookups that stay fast with many added tokens: a trie for the longest match at a position, maps by content/id.
    for (const t of this.addedTokens) {
      let node = this.addedTrie;
      for (const ch of t.content) {
        let next = node.next.get(ch);
        if (!next) { next = { next: new Map() }; node.next.set(ch, next); }
        node = next;
      }
      node.token ??= t;
      this.addedByContent.set(t.content, t);
      if (!this.addedById.has(t.id)) this.addedById.set(t.id, t);
    }
    const idOf = (t: string) => added.get(t)!.id;
    this.bosTokenId = idOf(this.bosToken);
    this.eosTokenId = idOf(this.eosToken);
    this.padTokenId = idOf(this.padToken);
    this.unkTokenId = idOf(this.unkToken);
  }

  /**
   * Loads a tokenizer folder (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json) or a
   * pipeline folder holding tokenizer/. Without `dir`: the bundled CLIP ViT-L/14 tokenizer. A folder with only the
   * configs (e.g. karlo_configs/tokenizer) uses the bundled vocab/merges with its own special tokens.
   */
  static fromDir(dir?: string, opts: CLIPTokenizerOptions = {}): CLIPTokenizer {
    const f = resolveFiles(dir);
    const vocab = checkVocab(readJsonObject(f.vocab, 'vocab.json'), f.vocab);
    const mergesText = readTextFile(f.merges, { what: 'merges.txt', maxBytes: MAX_TOKENIZER_FILE });
    // transformers: read().strip().split("\n")[1 : 49152-256-2+1] (line 0 is the "#version" header).
    const lines = mergesText.trim().split('\n').slice(1, MAX_MERGES + 1);
    const merges = lines.map((l, i) => {
      const parts = l.split(' ');
      if (parts.length !== 2 || parts[0] === '' || parts[1] === '') throw new TokenizerError(`${printable(f.merges)}: line ${i + 2} is not a merge pair of two symbols separated by one space`);
      return l;
    });
    const cfg = f.config;
    const sm = f.specialMap;
    const pick = (k: string) => tokenContent(sm[k]) ?? tokenContent(cfg[k]);
    const added: AddedToken[] = [];
    const cfgFile = `${printable(path.join(f.dir, 'tokenizer_config.json'))}`;
    const atd = cfg.added_tokens_decoder as Record<string, { content: string; lstrip?: boolean; rstrip?: boolean }> | undefined;
    if (atd !== undefined) {
      if (atd === null || typeof atd !== 'object' || Array.isArray(atd)) throw new TokenizerError(`${cfgFile}: added_tokens_decoder is not an object`);
      for (const [id, t] of Object.entries(atd)) {
        const where = `${cfgFile}: added_tokens_decoder[${jsonName(id.slice(0, 32))}]`;
        if (!/^(0|[1-9][0-9]{0,15})$/.test(id) || !Number.isSafeInteger(Number(id))) throw new TokenizerError(`${where}: the id is not a non-negative integer`);
        if (t === null || typeof t !== 'object' || typeof t.content !== 'string') throw new TokenizerError(`${where} has no content`);
        if (t.content === '') throw new TokenizerError(`${where} has empty content (it would match everywhere)`);
        added.push({ content: t.content, id: Number(id), lstrip: !!t.lstrip, rstrip: !!t.rstrip });
      }
    }
    const mml = cfg.model_max_length;
    if (mml !== undefined && mml !== null && (typeof mml !== 'number' || !Number.isFinite(mml))) throw new TokenizerError(`${cfgFile}: model_max_length is not a number`);
    const maxLen = typeof mml === 'number' && mml < NO_LIMIT_SENTINEL ? mml : 77;
    if (!Number.isInteger(maxLen) || maxLen < 2 || maxLen > MAX_MODEL_LENGTH) {
      throw new TokenizerError(`${cfgFile}: model_max_length ${maxLen} is not an integer in [2, ${MAX_MODEL_LENGTH}] (CLIP uses 77; values from 1e18 up mean "no limit" and give 77)`);
    }
    try {
      return new CLIPTokenizer(vocab, merges, { bos: pick('bos_token'), eos: pick('eos_token'), pad: opts.padToken ?? pick('pad_token'), unk: pick('unk_token'), modelMaxLength: maxLen, added }, opts);
    } catch (e) {
      throw new TokenizerError(`${f.dir}: ${(e as Error).message}`);
    }
  }

  get vocabSize(): number {
    return this.encoder.size;
  }

  /** BPE of one byte-encoded word (CLIP variant: the last symbol carries "</w>"). Returns space-joined symbols. */
  private bpe(token: string): string {
    const cached = this.cache.get(token);
    if (cached !== undefined) return cached;
    let word: string[] = [...token.slice(0, -1)];
    word.push(token.slice(-1) + '</w>');
    if (word.length === 1) {
      this.cache.set(token, word[0]);
      return word[0];
    }
    for (;;) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.bpeRanks.get(word[i] + ' ' + word[i + 1]);
        if (r !== undefined && r < bestRank) { bestRank = r; best = i; }
      }
      if (best < 0) break;
      const first = word[best], second = word[best + 1];
      const merged: string[] = [];
      for (let i = 0; i < word.length;) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(word[i++]);
        }
      }
      word = merged;
      if (word.length === 1) break;
    }
    const out = word.join(' ');
    this.cache.set(token, out);
    return out;
  }

  /** CLIPTokenizer._tokenize: one piece of text without added tokens → BPE strings. */
  private tokenizePiece(text: string): string[] {
    const cleaned = this.ftfy ? ftfyLikeFix(text) : basicClean(text);
    const out: string[] = [];
    for (const m of cleaned.matchAll(CLIP_PATTERN)) {
      let enc = '';
      for (const b of Buffer.from(m[0], 'utf8')) enc += BYTE_ENCODER[b];
      out.push(...this.bpe(enc).split(' '));
    }
    return out;
  }

  /** The longest added token starting at text[i] (code units; added tokens are whole strings), or undefined. */
  private longestAddedAt(text: string, i: number): AddedToken | undefined {
    let node: TrieNode | undefined = this.addedTrie;
    let best: AddedToken | undefined;
    for (let j = i; j < text.length; ) {
      const cp = text.codePointAt(j)!;
      const ch = String.fromCodePoint(cp);
      node = node.next.get(ch);
      if (!node) break;
      j += ch.length;
      if (node.token) best = node.token;
    }
    return best;
  }

  /** Splits the raw text at added tokens (earliest match, longest first), honouring their lstrip/rstrip. */
  private splitAdded(text: string): { text: string; added?: AddedToken }[] {
    const parts: { text: string; added?: AddedToken }[] = [];
    let start = 0;
    for (let i = 0; i < text.length;) {
      const t = this.longestAddedAt(text, i);
      if (t) {
        parts.push({ text: text.slice(start, i) }, { text: t.content, added: t });
        i += t.content.length;
        start = i;
      } else {
        i++;
      }
    }
    parts.push({ text: text.slice(start) });
    for (let i = 0; i < parts.length; i++) {
      const a = parts[i].added;
      if (!a) continue;
      if (a.rstrip && parts[i + 1] && !parts[i + 1].added) parts[i + 1].text = parts[i + 1].text.trimStart();
      if (a.lstrip && parts[i - 1] && !parts[i - 1].added) parts[i - 1].text = parts[i - 1].text.trimEnd();
    }
    return parts.filter((p) => p.text.length > 0);
  }

  /** The BPE tokens of a text (no BOS/EOS), e.g. "a photo" → ["a</w>", "photo</w>"]. */
  tokenize(text: string): string[] {
    const out: string[] = [];
    for (const p of this.splitAdded(text)) {
      if (p.added) out.push(p.added.content);
      else out.push(...this.tokenizePiece(p.text));
    }
    return out;
  }

  private tokenId(token: string): number {
    const a = this.addedByContent.get(token);
    if (a) return a.id;
    return this.encoder.get(token) ?? this.unkTokenId;
  }

  convertTokensToIds(tokens: string[]): number[] {
    return tokens.map((t) => this.tokenId(t));
  }

  /** Ids of a text without BOS/EOS, untruncated. */
  encodeText(text: string): number[] {
    const ids: number[] = [];
    for (const p of this.splitAdded(text)) {
      if (p.added) ids.push(p.added.id);
      else for (const t of this.tokenizePiece(p.text)) ids.push(this.tokenId(t));
    }
    return ids;
  }

  /** tokenizer(texts, padding=…, max_length=…, truncation=…) → input_ids and attention_mask. */
  encode(texts: string[], opts: EncodeOptions = {}): Encoding {
    if (!Array.isArray(texts)) throw new TokenizerError('CLIPTokenizer.encode: texts must be an array of strings');
    const maxLength = opts.maxLength ?? this.modelMaxLength;
    if (!Number.isInteger(maxLength) || maxLength < 2 || maxLength > MAX_MODEL_LENGTH) throw new TokenizerError(`CLIPTokenizer.encode: maxLength must be an integer in [2, ${MAX_MODEL_LENGTH}], got ${maxLength}`);
    const padding = opts.padding ?? 'max_length';
    const truncation = opts.truncation ?? true;
    const rows = texts.map((t, i) => {
      if (typeof t !== 'string') throw new TokenizerError(`CLIPTokenizer.encode: texts[${i}] is not a string`);
      let ids = this.encodeText(t);
      if (truncation && ids.length > maxLength - 2) ids = ids.slice(0, maxLength - 2);
      return [this.bosTokenId, ...ids, this.eosTokenId];
    });
    const target = padding === 'max_length' ? maxLength : padding === 'longest' ? Math.max(0, ...rows.map((r) => r.length)) : 0;
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    for (const r of rows) {
      const pad = Math.max(0, target - r.length);
      inputIds.push([...r, ...new Array(pad).fill(this.padTokenId)]);
      attentionMask.push([...new Array(r.length).fill(1), ...new Array(pad).fill(0)]);
    }
    return { inputIds, attentionMask };
  }

  /** Length with BOS/EOS and without truncation (diffusers warns when it exceeds maxLength). */
  untruncatedLength(text: string): number {
    return this.encodeText(text).length + 2;
  }

  /** Ids → text (BPE symbols joined, "</w>" → space, bytes decoded as UTF-8 with replacement). */
  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    const byteDecoder = new Map(BYTE_ENCODER.map((c, b) => [c, b]));
    const specials = new Set([this.bosTokenId, this.eosTokenId, this.padTokenId]);
    const parts: string[] = [];
    for (const id of ids) {
      if (opts.skipSpecialTokens && specials.has(id)) continue;
      const added = this.addedById.get(id);
      parts.push(added ? added.content : this.decoder.get(id) ?? '');
    }
    const text = parts.join('');
    const bytes: number[] = [];
    for (const ch of text) {
      const b = byteDecoder.get(ch);
      if (b !== undefined) bytes.push(b);
      else bytes.push(...Buffer.from(ch, 'utf8'));
    }
    return Buffer.from(bytes).toString('utf8').replace(/<\/w>/g, ' ').trim();
  }
}
