// `karlo tokenize TEXT... [--model DIR] [--json]`: the CLIP BPE tokens, input_ids and attention_mask exactly as
// UnCLIPPipeline's tokenizer call makes them (padding max_length 77, truncation).
import * as fs from 'node:fs';
import type { CommandModule } from 'yargs';
import { CLIPTokenizer } from '../../tokenizer/clip_tokenizer.js';
import { UsageError } from '../errors.js';
import { jsonText, printable } from '../../io/files.js';

interface Args {
  text: string[];
  model?: string;
  json?: boolean;
  maxLength?: number;
  padding?: boolean;
  ftfy?: boolean;
}

const command: CommandModule<object, Args> = {
  command: 'tokenize <text..>',
  describe: 'CLIP-tokenize prompts (BPE tokens, input_ids, attention_mask)',
  builder: (y) => y
    .positional('text', { type: 'string', array: true, demandOption: true, describe: 'one or more prompts' })
    .option('model', { type: 'string', describe: 'model folder (with tokenizer/) or tokenizer folder; default: the bundled CLIP ViT-L/14 tokenizer' })
    .option('json', { type: 'boolean', default: false, describe: 'print [{"text", "input_ids", "attention_mask"}]' })
    .option('max-length', { type: 'number', describe: 'sequence length (default: the tokenizer\'s model_max_length, 77)' })
    .option('padding', { type: 'boolean', default: true, describe: 'pad to --max-length (--no-padding: no padding, no truncation)' })
    .option('ftfy', { type: 'boolean', default: false, describe: 'ftfy-style text cleaning (what transformers does with ftfy installed) instead of the default' }) as never,
  handler: (argv) => {
    if (argv.model && !fs.existsSync(argv.model)) throw new UsageError(`--model ${argv.model}: no such folder`);
    let tok: CLIPTokenizer;
    try {
      tok = CLIPTokenizer.fromDir(argv.model, { ftfy: argv.ftfy });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const maxLength = argv.maxLength ?? tok.modelMaxLength;
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new UsageError(`--max-length must be an integer ≥ 2, got ${argv.maxLength}`);
    const texts = argv.text.map(String);
    const pad = argv.padding !== false;
    const enc = tok.encode(texts, { maxLength, padding: pad ? 'max_length' : false, truncation: pad });
    if (argv.json) {
      console.log(jsonText(texts.map((text, i) => ({ text, input_ids: enc.inputIds[i], attention_mask: enc.attentionMask[i] }))));
      return;
    }
    texts.forEach((text, i) => {
      const tokens = tok.tokenize(text);
      const full = tokens.length + 2;
      if (i > 0) console.log('');
      console.log(`text: ${jsonText(text)}`);
      console.log(`tokens (${tokens.length}): ${printable(tokens.join(' '))}`); // added tokens come from files: escaped
      if (pad && full > maxLength) {
        console.log(`truncated: ${full} tokens with BOS/EOS > ${maxLength}; dropped: ${jsonText(tok.decode(tok.convertTokensToIds(tokens.slice(maxLength - 2))))}`);
      }
      console.log(`input_ids (${enc.inputIds[i].length}): ${enc.inputIds[i].join(' ')}`);
      console.log(`attention_mask: ${enc.attentionMask[i].join('')}`);
    });
  },
};

export default command;
