// `--download`: fetch a Hub repository's snapshot into the Hugging Face cache with the maintained client
// (@huggingface/hub: the same cache layout huggingface_hub writes, blobs written as `<blob>.incomplete` and renamed
// into place, so a file is complete or absent). Only what karlo reads is fetched: configs, tokenizer files and
// safetensors weights; PyTorch pickles (.bin/.ckpt/.pt) and fp16/bf16 variants are skipped (kakaobrain/
// karlo-v1-alpha carries both formats: ~27 GB instead of ~14 GB). The endpoint is $HF_ENDPOINT or
// https://huggingface.co. An interrupted download restarts the interrupted file (the client does not resume a
// partial blob); files already in the cache are not fetched again.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HubError, hubCacheDirs, type HubId } from './hub.js';

export interface HubDownloadOptions {
  /** Cache to write (default: the first of hubCacheDirs()). */
  cacheDir?: string;
  /** Hub endpoint (default $HF_ENDPOINT or https://huggingface.co). */
  hubUrl?: string;
  /** Before the first byte: the files and their total size. */
  onStart?: (files: number, bytes: number) => void;
  /** Bytes received (file contents). */
  onBytes?: (bytes: number) => void;
  env?: NodeJS.ProcessEnv;
}

/** What karlo reads from a diffusers folder; everything else in a repository is skipped. */
export function wantedFile(p: string): boolean {
  if (/\.(bin|ckpt|pt|pth|h5|msgpack|onnx|pb|ot|gguf)$/i.test(p)) return false;
  if (/\.(fp16|bf16|non_ema|ema)\.safetensors(\.index\.json)?$/i.test(p)) return false;
  return /\.(json|txt|safetensors|model)$/i.test(p) || /(^|\/)README\.md$/i.test(p);
}

/** A fetch that reports the body bytes of file downloads (GETs of /resolve/ URLs other than the 1-byte probe). */
function countingFetch(onBytes: (n: number) => void): typeof fetch {
  return async (input, init) => {
    const res = await fetch(input, init);
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const range = new Headers(init?.headers).get('Range');
    if (!/\/resolve\//.test(url) || range === 'bytes=0-0' || !res.body) return res;
    const counter = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        onBytes(chunk.byteLength);
        ctl.enqueue(chunk);
      },
    });
    return new Response(res.body.pipeThrough(counter), { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/** Downloads `id` into the cache and returns its snapshot folder. Errors are HubErrors with one-line messages. */
export async function downloadHubSnapshot(id: HubId, opts: HubDownloadOptions = {}): Promise<string> {
  const env = opts.env ?? process.env;
  const hubUrl = (opts.hubUrl ?? env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const cacheDir = opts.cacheDir ?? hubCacheDirs(env)[0];
  const repo = `${id.owner}/${id.name}`;
  const hub = await import('@huggingface/hub');
  const f = countingFetch((n) => opts.onBytes?.(n));
  // The client announces each file with console.debug (stdout): keep stdout for our own output.
  const debug = console.debug;
  console.debug = () => {};
  try {
    const info = await hub.modelInfo({ name: repo, revision: id.revision, hubUrl, fetch: f, additionalFields: ['sha'] });
    const sha = (info as { sha?: string }).sha;
    if (!sha || !/^[0-9a-f]{40}$/.test(sha)) throw new HubError(`${repo}@${id.revision}: the Hub at ${hubUrl} gave no commit hash for this revision`);
    const files: { path: string; size: number }[] = [];
    for await (const e of hub.listFiles({ repo, revision: sha, recursive: true, hubUrl, fetch: f })) {
      if (e.type === 'file' && wantedFile(e.path)) files.push({ path: e.path, size: e.size });
    }
    if (!files.some((x) => x.path === 'model_index.json')) throw new HubError(`${repo}@${id.revision}: no model_index.json in the repository (not a diffusers pipeline)`);
    opts.onStart?.(files.length, files.reduce((a, x) => a + x.size, 0));
    for (const x of files) await hub.downloadFileToCacheDir({ repo, path: x.path, revision: sha, hubUrl, cacheDir, fetch: f });
    const base = path.join(cacheDir, `models--${id.owner}--${id.name}`);
    if (id.revision !== sha) {
      // refs/<revision> → the commit, written atomically.
      const ref = path.join(base, 'refs', id.revision);
      fs.mkdirSync(path.dirname(ref), { recursive: true });
      const tmp = `${ref}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, sha);
      fs.renameSync(tmp, ref);
    }
    return path.join(base, 'snapshots', sha);
  } catch (e) {
    if (e instanceof HubError) throw e;
    const msg = String((e as Error)?.message ?? e).split('\n')[0];
    throw new HubError(`${repo}@${id.revision}: download from ${hubUrl} failed: ${msg}`);
  } finally {
    console.debug = debug;
  }
}
