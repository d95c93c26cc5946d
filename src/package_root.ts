// Where the karlo-tfjs package lives on disk, the same from the TypeScript sources (src/) and the built JS
// (dist/src/): the nearest folder above this file whose package.json is named karlo-tfjs. Paths to files that ship
// with the package (the bundled tiny model, its tokenizer) are derived from it, never from a fixed ../.. depth.
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): { root: string; version: string } {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const j = JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown; version?: unknown };
        if (j.name === 'karlo-tfjs') return { root: dir, version: String(j.version ?? '0.0.0') };
      } catch {
        /* not ours: keep looking */
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the karlo-tfjs package root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

const found = findRoot();
/** The package's root folder (package.json, models/, native/). */
export const PACKAGE_ROOT = found.root;
/** The package version from package.json. */
export const PACKAGE_VERSION = found.version;
/** The bundled tiny random-weight Karlo folder, with the recorded diffusers runs (`karlo parity models/karlo-tiny`). */
export const BUNDLED_MODEL_DIR = path.join(PACKAGE_ROOT, 'models', 'karlo-tiny');
/**
 * The default `--model` of generate, vary, interpolate, trace, batch and worker: karlo-nano, a tiny unCLIP trained
 * from scratch by this project's own `npm run train:nano` on a world of coloured shapes (docs/karlo-nano.md).
 */
export const DEFAULT_MODEL_DIR = path.join(PACKAGE_ROOT, 'models', 'karlo-nano');
/** The note printed when no --model is given. */
export const DEFAULT_MODEL_NOTE = 'note: no --model given, using the bundled karlo-nano (trained here on coloured shapes on plain backgrounds: ' +
  'it draws prompts like "a red star on a black background"; docs/karlo-nano.md). For real images pass --model with the kakaobrain/karlo-v1-alpha folder.';
