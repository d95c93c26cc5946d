// A real browser for tests: headless Chromium (Debian `chromium`, or $CHROMIUM) driven over the DevTools protocol
// on --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-terminated JSON). No puppeteer download, no network.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

export const CHROMIUM = process.env.CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p) => fs.existsSync(p));

export interface PageReport {
  /** console.error/warn-level messages, uncaught exceptions, failed loads (Log domain errors). */
  errors: string[];
  images: { complete: boolean; width: number; height: number; alt: string }[];
  /** PNG bytes of a screenshot of the viewport. */
  screenshot: Buffer;
  title: string;
}

/** Loads an HTML file in headless Chromium, waits for load, checks images, takes a screenshot. */
export async function inspectPage(file: string, viewport = { width: 1200, height: 900 }, timeoutMs = 20_000, fullPage = false): Promise<PageReport> {
  if (!CHROMIUM) throw new Error('no chromium found (apt-get install chromium, or set CHROMIUM)');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'karlo-chromium-'));
  const child = spawn(CHROMIUM, [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
    '--disable-extensions', '--disable-background-networking', '--remote-debugging-pipe', `--user-data-dir=${profile}`,
    `--window-size=${viewport.width},${viewport.height}`, 'about:blank',
  ], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr += d; });
  const toBrowser = child.stdio[3] as NodeJS.WritableStream;
  const fromBrowser = child.stdio[4] as NodeJS.ReadableStream;
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  const listeners: ((m: any) => void)[] = [];
  let buf = '';
  fromBrowser.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let i;
    while ((i = buf.indexOf('\0')) >= 0) {
      const msg = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      if (msg.id && pending.has(msg.id)) {
        const p = pending.get(msg.id)!;
        pending.delete(msg.id);
        if (msg.error) p.reject(new Error(`${msg.error.message} (${JSON.stringify(msg.error)})`));
        else p.resolve(msg.result);
      } else {
        for (const l of listeners) l(msg);
      }
    }
  });
  const send = (method: string, params: object = {}, sessionId?: string): Promise<any> => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    toBrowser.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  try {
    const errors: string[] = [];
    const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
    let loaded!: () => void;
    const load = new Promise<void>((r) => { loaded = r; });
    listeners.push((m) => {
      if (m.sessionId !== sessionId) return;
      if (m.method === 'Page.loadEventFired') loaded();
      if (m.method === 'Runtime.consoleAPICalled' && ['error', 'warning', 'assert'].includes(m.params.type)) {
        errors.push(`console.${m.params.type}: ${m.params.args.map((a: any) => a.value ?? a.description).join(' ')}`);
      }
      if (m.method === 'Runtime.exceptionThrown') errors.push(`exception: ${m.params.exceptionDetails.text} ${m.params.exceptionDetails.exception?.description ?? ''}`);
      if (m.method === 'Log.entryAdded' && ['error', 'warning'].includes(m.params.entry.level)) errors.push(`log ${m.params.entry.level}: ${m.params.entry.text} ${m.params.entry.url ?? ''}`);
    });
    for (const d of ['Page.enable', 'Runtime.enable', 'Log.enable']) await send(d, {}, sessionId);
    await send('Emulation.setDeviceMetricsOverride', { width: viewport.width, height: viewport.height, deviceScaleFactor: 1, mobile: false }, sessionId);
    await send('Page.navigate', { url: pathToFileURL(path.resolve(file)).href }, sessionId);
    await load;
    // Every image decoded (decode() rejects for a broken one).
    const evaluated = await send('Runtime.evaluate', {
      expression: `Promise.all([...document.images].map(async (i) => { let ok = true; try { await i.decode(); } catch { ok = false; }
        return { complete: i.complete && ok, width: i.naturalWidth, height: i.naturalHeight, alt: i.alt }; }))`,
      awaitPromise: true, returnByValue: true,
    }, sessionId);
    const title = (await send('Runtime.evaluate', { expression: 'document.title', returnByValue: true }, sessionId)).result.value as string;
    let clip: object | undefined;
    if (fullPage) {
      const m = await send('Page.getLayoutMetrics', {}, sessionId);
      clip = { x: 0, y: 0, width: m.cssContentSize.width, height: m.cssContentSize.height, scale: 1 };
    }
    const shot = await send('Page.captureScreenshot', { format: 'png', ...(clip ? { clip, captureBeyondViewport: true } : {}) }, sessionId);
    await send('Browser.close').catch(() => {});
    return { errors, images: evaluated.result.value, screenshot: Buffer.from(shot.data, 'base64'), title };
  } catch (e) {
    throw new Error(`chromium: ${(e as Error).message}\n${stderr.slice(-2000)}`);
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
    fs.rmSync(profile, { recursive: true, force: true });
  }
}
