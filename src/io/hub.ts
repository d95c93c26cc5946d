// Hugging Face Hub ids as model folders: `kakaobrain/karlo-v1-alpha` (or `owner/name@revision`) resolves to a
// snapshot already in the local Hugging Face cache, the layout huggingface_hub writes
//   <cache>/models--<owner>--<name>/refs/<branch or tag>          (holds a commit hash)
//   <cache>/models--<owner>--<name>/snapshots/<commit>/...       (the files, usually links into blobs/)
// with <cache> = $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub. Nothing is downloaded here: when the snapshot is absent the error says how to get it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** A Hub id that is not in the cache, or a cache entry that is broken: the message says what to do. */
export class HubError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HubError';
  }
}

export interface HubId {
  owner: string;
  name: string;
  /** Branch, tag or commit; default "main". */
  revision: string;
}

// Hub repo names: letters, digits, '-', '_', '.'; no '--' or '..' at the edges (huggingface_hub's validation).
const PART = '[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?';
const HUB_ID = new RegExp(`^(${PART})/(${PART})(?:@([A-Za-z0-9][A-Za-z0-9._/-]{0,127}))?$`);

/** `owner/name[@revision]` → its parts; undefined when the text is not shaped like a Hub id. */
export function parseHubId(s: string): HubId | undefined {
  const m = HUB_ID.exec(s);
  if (!m || s.includes('..') || m[3]?.split('/').some((p) => p === '' || p === '.' || p === '..')) return undefined;
  return { owner: m[1], name: m[2], revision: m[3] ?? 'main' };
}

/** The Hugging Face cache folders to look in, in order. */
export function hubCacheDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs: string[] = [];
  if (env.HF_HUB_CACHE) dirs.push(env.HF_HUB_CACHE);
  if (env.HF_HOME) dirs.push(path.join(env.HF_HOME, 'hub'));
  if (env.XDG_CACHE_HOME) dirs.push(path.join(env.XDG_CACHE_HOME, 'huggingface', 'hub'));
  dirs.push(path.join(env.HOME || os.homedir(), '.cache', 'huggingface', 'hub'));
  return [...new Set(dirs.map((d) => path.resolve(d)))];
}

const COMMIT = /^[0-9a-f]{40}$/;

/** How to get the weights of `id` into the cache (or a folder). */
export function howToGet(id: HubId): string {
  const repo = `${id.owner}/${id.name}`;
  const rev = id.revision !== 'main' ? ` --revision ${id.revision}` : '';
  return `get it with \`huggingface-cli download ${repo}${rev}\` (pip install huggingface_hub; fills the cache this looks in), ` +
    `or \`git lfs install && git clone https://huggingface.co/${repo}\` and pass --model with that folder`;
}

/**
 * The snapshot folder of `id` in the first cache that has it. Throws a HubError naming the caches looked in and
 * how to get the weights.
 */
export function resolveHubSnapshot(id: HubId, env: NodeJS.ProcessEnv = process.env): string {
  const repoDir = `models--${id.owner}--${id.name}`;
  const looked: string[] = [];
  for (const cache of hubCacheDirs(env)) {
    const base = path.join(cache, repoDir);
    looked.push(base);
    if (!fs.existsSync(base)) continue;
    let commit: string | undefined;
    if (COMMIT.test(id.revision)) commit = id.revision;
    else {
      const ref = path.join(base, 'refs', id.revision);
      try {
        const st = fs.statSync(ref);
        if (st.isFile() && st.size <= 1024) commit = fs.readFileSync(ref, 'utf8').trim();
      } catch {
        /* no such ref in this cache */
      }
      if (commit !== undefined && !COMMIT.test(commit)) throw new HubError(`${ref}: not a commit hash (a broken Hugging Face cache entry)`);
    }
    if (!commit) continue;
    const snap = path.join(base, 'snapshots', commit);
    if (fs.existsSync(snap) && fs.statSync(snap).isDirectory()) return snap;
  }
  const rev = id.revision === 'main' ? '' : `@${id.revision}`;
  throw new HubError(`${id.owner}/${id.name}${rev}: not in the Hugging Face cache (looked in ${looked.join(', ')}); ${howToGet(id)}`);
}

/**
 * A model argument as a folder: an existing path as it is; else a Hub id resolved in the cache; else the path (the
 * folder checks then say it does not exist).
 */
export function resolveModelDir(arg: string, env: NodeJS.ProcessEnv = process.env): string {
  if (fs.existsSync(arg)) return arg;
  const id = parseHubId(arg);
  return id ? resolveHubSnapshot(id, env) : arg;
}
