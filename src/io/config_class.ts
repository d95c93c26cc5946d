// Which class a component's config names, and the one check that it is the class a caller expects. diffusers
// writes `_class_name`, transformers `architectures`; a config that names no class passes (hand-written configs).

/** The class a config names: diffusers `_class_name`, else transformers `architectures[0]`; undefined when none. */
export function configClass(cfg: Record<string, unknown>): string | undefined {
  if (typeof cfg._class_name === 'string') return cfg._class_name;
  if (Array.isArray(cfg.architectures) && typeof cfg.architectures[0] === 'string') return cfg.architectures[0];
  return undefined;
}

/**
 * Throws `<file>: the config is for "<class>", expected "<expected>"<where>` when the config names another class
 * (for transformers, when `architectures` does not list `expected`).
 */
export function checkConfigClass(cfg: Record<string, unknown>, expected: string, file: string, where = ''): void {
  const cls = configClass(cfg);
  if (cls === undefined || cls === expected) return;
  if (typeof cfg._class_name !== 'string' && (cfg.architectures as unknown[]).includes(expected)) return;
  throw new Error(`${file}: the config is for "${cls}", expected "${expected}"${where}`);
}
