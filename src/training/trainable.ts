// Which parameters a training run updates: globs over state-dict keys (`--train` / `--freeze`).
//
// Semantics:
// - A key is trainable when it matches at least one `train` pattern (default: every key) and no `freeze` pattern:
//   freeze wins over train.
// - A pattern matches a key when it matches the whole key or a dotted prefix of it, so a module path selects every
//   parameter under it: `down_blocks.0` = `down_blocks.0.resnets.0.conv1.weight`, ...; `*.to_q` = every to_q's
//   weight and bias.
// - `*` matches within one dotted segment (no '.'), `**` matches any run of characters including dots (also
//   none), `?` one character other than '.'; every other character matches itself. So `**.to_q.*`,
//   `down_blocks.*.attentions.**` and `**attn**` all do what they look like.
// - A pattern that matches no key at all is an error (a typo would otherwise silently train or freeze nothing).
import type * as tf from '@tensorflow/tfjs-core';
import type { Module, Parameter } from '../layers/module.js';

export interface TrainableSpec {
  /** Globs of keys to train (default: all). */
  train?: string[];
  /** Globs of keys to freeze; wins over train. */
  freeze?: string[];
}

export interface TrainableSelection {
  /** Trainable state-dict keys, in namedParameters() order. */
  trainable: string[];
  /** Frozen keys, in namedParameters() order. */
  frozen: string[];
}

/** The RegExp of one glob (whole-key match; prefix matching is done by the caller). */
export function globToRegExp(glob: string): RegExp {
  if (!glob.trim()) throw new Error('empty parameter pattern');
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') {
      if (glob[i + 1] === '*') {
        re += '.*';
        i++;
      } else {
        re += '[^.]*';
      }
    } else if (c === '?') {
      re += '[^.]';
    } else {
      re += c.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

/** True when the glob matches `key` or one of its dotted prefixes (a module path). */
export function globMatches(glob: string | RegExp, key: string): boolean {
  const re = typeof glob === 'string' ? globToRegExp(glob) : glob;
  if (re.test(key)) return true;
  for (let i = key.indexOf('.'); i >= 0; i = key.indexOf('.', i + 1)) {
    if (re.test(key.slice(0, i))) return true;
  }
  return false;
}

/** Splits keys into trainable and frozen by the spec. Throws naming a pattern that matches nothing. */
export function selectTrainable(keys: string[], spec: TrainableSpec = {}): TrainableSelection {
  const compile = (kind: string, list: string[] | undefined) => (list ?? []).map((g) => {
    let re: RegExp;
    try {
      re = globToRegExp(g);
    } catch (e) {
      throw new Error(`--${kind} "${g}": ${(e as Error).message}`);
    }
    if (!keys.some((k) => globMatches(re, k))) throw new Error(`--${kind} "${g}" matches no parameter (keys look like "${keys[0] ?? ''}")`);
    return re;
  });
  const train = compile('train', spec.train);
  const freeze = compile('freeze', spec.freeze);
  const out: TrainableSelection = { trainable: [], frozen: [] };
  for (const k of keys) {
    const wanted = train.length === 0 || train.some((re) => globMatches(re, k));
    const frozen = freeze.some((re) => globMatches(re, k));
    (wanted && !frozen ? out.trainable : out.frozen).push(k);
  }
  return out;
}

/** The model's trainable variables by state-dict key, after selectTrainable() over its namedParameters(). */
export function trainableVariables(model: Module, spec: TrainableSpec = {}): Map<string, tf.Variable> {
  const params = new Map<string, Parameter>(model.namedParameters());
  const sel = selectTrainable([...params.keys()], spec);
  return new Map(sel.trainable.map((k) => [k, params.get(k)!.value]));
}
