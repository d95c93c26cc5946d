// The one config convention of the model classes. Each model file exports its typed config (diffusers /
// transformers field names), its defaults, and a parser built here: `xConfig(raw, source)` fills the defaults,
// rejects a field the class does not know (naming it and `source`, the config file) and a value it does not
// support. Constructors take the typed config only; reading config.json is the loader's job (src/loading).

/** Throws `${source}: ${field} = <value> is not supported by <class> (why)`. */
export type BadField = (field: string, why: string) => never;

export interface ModelConfigSpec<T extends object> {
  /** The class name as diffusers / transformers writes it (errors name it). */
  className: string;
  /** Every field the class knows, with diffusers' / transformers' default; the required ones left out. */
  defaults: Partial<T>;
  /** Fields without a default: a config must give them. */
  required?: readonly (keyof T & string)[];
  /**
   * Fields a config file may carry that do not change this implementation's computation (transformers writes
   * every PretrainedConfig attribute, e.g. initializer_range, torch_dtype); `_`-prefixed diffusers bookkeeping
   * (_class_name, _diffusers_version, _name_or_path) is always skipped.
   */
  ignored?: ReadonlySet<string>;
  /** Reshapes a raw object before the fields are read (a nested sub-config, nulls meaning "default"). */
  prepare?: (raw: Record<string, unknown>, bad: (msg: string) => never) => Record<string, unknown>;
  /** Value checks on the filled config. */
  check: (cfg: T, bad: BadField) => void;
}

/** A parser `(raw, source) => T` following the convention above. */
export function modelConfigParser<T extends object>(spec: ModelConfigSpec<T>): (raw?: Record<string, unknown>, source?: string) => T {
  return (raw = {}, source = `${spec.className} config`) => {
    const fail = (msg: string): never => { throw new Error(`${source}: ${msg}`); };
    const r = spec.prepare ? spec.prepare(raw, fail) : raw;
    const cfg: Record<string, unknown> = { ...spec.defaults };
    const required = new Set<string>(spec.required ?? []);
    for (const [k, v] of Object.entries(r)) {
      if (k.startsWith('_') || spec.ignored?.has(k)) continue;
      if (!Object.prototype.hasOwnProperty.call(spec.defaults, k) && !required.has(k)) fail(`unknown field "${k}" for ${spec.className}`);
      if (v !== undefined) cfg[k] = v;
    }
    for (const k of required) if (cfg[k] === undefined) fail(`field "${k}" is required by ${spec.className}`);
    spec.check(cfg as T, (field, why) => fail(`${field} = ${JSON.stringify(cfg[field])} is not supported by ${spec.className} (${why})`));
    return cfg as T;
  };
}

/** A positive integer (sizes, counts). */
export const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
