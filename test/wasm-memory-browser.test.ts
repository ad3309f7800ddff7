import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleBrowser } from '../scripts/bundle-browser.mjs';

// The CPU backend in a web page (Debian's headless Chromium, the browser bundle served on 127.0.0.1):
// a cross-origin isolated page (COOP/COEP headers) gets a shared WebAssembly memory and Web Workers
// that run the elementwise, softmax and layerNorm kernels with it, with results identical to one
// thread; a page that is not isolated runs on one thread in a private memory, and cpuInfo() says why.
// No Chromium makes this file fail: it never skips.
const CHROMIUM = '/usr/bin/chromium';

// Runs in the page: one thread, then two (the pool starts in the background), same results both ways.
const PAGE = `
import * as sn from '/sinter.js';
export async function run() {
  const before = sn.cpuInfo();
  await sn.init({ device: 'cpu', threads: 1, quiet: true });
  // A conv whose scratch (its padded input) outgrows the memory while it runs: a private memory
  // detaches the views the kernel holds, so it runs again; the result equals a second call's.
  const memoryBytes = () => sn.memory().devices.cpu.pool.memoryBytes;
  const xs = sn.randn([1, 48, 160, 160], { seed: 1 }), ws = sn.randn([16, 48, 3, 3], { seed: 2 });
  const m0 = memoryBytes();
  const c1 = await sn.conv2d(xs, ws, null, { padding: 1 }).data();
  const grew = memoryBytes() > m0;
  const c2 = await sn.conv2d(xs, ws, null, { padding: 1 }).data();
  let convDiffer = c1.length === c2.length ? 0 : -1;
  for (let j = 0; j < c1.length; j++) if (!Object.is(c1[j], c2[j]) || !Number.isFinite(c1[j])) convDiffer++;
  // The same at float16 (binary16 storages widened into float32 scratch before the kernel, narrowed after it), larger,
  // so that the conv's scratch outgrows the memory again: the retry widens afresh and narrows only once it ran whole.
  const x16 = sn.randn([1, 64, 176, 176], { seed: 3 }).to('float16'), w16 = sn.randn([16, 64, 3, 3], { seed: 4 }).to('float16');
  const m16 = memoryBytes();
  const h1 = await sn.conv2d(x16, w16, null, { padding: 1 }).data();
  const grew16 = memoryBytes() > m16;
  const h2 = await sn.conv2d(x16, w16, null, { padding: 1 }).data();
  let halfDiffer = h1.length === h2.length && h1.length === 16 * 176 * 176 ? 0 : -1;
  for (let j = 0; j < h1.length; j++) if (!Object.is(h1[j], h2[j]) || !Number.isFinite(h1[j])) halfDiffer++;
  const x = sn.randn([256, 1031], { seed: 5 });
  const f = () => [sn.sigmoid(x.mul(1.5).add(0.5)).mul(x), sn.softmax(x, -1), sn.layerNorm(x, [1031])];
  const alone = await Promise.all(f().map((t) => t.data()));
  await sn.init({ device: 'cpu', threads: 2, quiet: true });
  let differ = 0, calls = 0;
  for (; calls < 200 && (sn.cpuInfo().workerTasks < 3 || calls < 3); calls++) {
    const ys = f();
    for (let i = 0; i < ys.length; i++) {
      const d = await ys[i].data();
      for (let j = 0; j < d.length; j++) if (!Object.is(d[j], alone[i][j])) differ++;
      ys[i].dispose();
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return { isolated: self.crossOriginIsolated, before, after: sn.cpuInfo(), differ, calls, grew, convDiffer, grew16, halfDiffer };
}`;

interface Info { kernels: string; memory: string; threads: number; workers?: string; singleThreadReason?: string; workerTasks: number; line: string }
interface Result { isolated: boolean; before: Info; after: Info; differ: number; calls: number; grew: boolean; convDiffer: number; grew16: boolean; halfDiffer: number }

describe('the CPU backend in headless Chromium', () => {
  let dir: string | undefined, server: Server | undefined, browser: Browser | undefined;
  const pages: Record<string, Result | Error> = {};
  const log: string[] = [];
  const result = (name: string): Result => {
    const r = pages[name];
    if (!r || r instanceof Error) throw new Error(`the page could not run: ${String((r as Error | undefined)?.stack ?? 'no result')}\n${log.join('\n')}`);
    return r;
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'sinter-browser-cpu-'));
    await bundleBrowser(path.join(dir, 'sinter.js'));
    const bundle = readFileSync(path.join(dir, 'sinter.js'));
    const isolation = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };
    const srv = (server = createServer((req, res) => {
      const isolated = req.url?.startsWith('/isolated/') ?? false;
      const file = req.url?.replace(/^\/(isolated|plain)/, '');
      const body = file === '/' ? ['text/html', '<!doctype html><meta charset="utf-8"><title>sinter cpu</title>'] : file === '/sinter.js' ? ['text/javascript', bundle] : file === '/page.js' ? ['text/javascript', PAGE] : null;
      res.writeHead(body ? 200 : 404, { 'content-type': body ? (body[0] as string) : 'text/plain', 'cache-control': 'no-store', ...(isolated ? isolation : {}) });
      res.end(body ? body[1] : 'not found');
    }));
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-background-networking', '--no-first-run'] });
    for (const name of ['isolated', 'plain']) {
      try {
        const tab = await browser.newPage();
        tab.on('console', (m) => log.push(`${name} console.${m.type()}: ${m.text()}`));
        tab.on('pageerror', (e) => log.push(`${name} page error: ${e.message}`));
        await tab.route((u) => !u.href.startsWith(origin), (route) => route.abort());
        await tab.goto(`${origin}/${name}/`);
        // A string, so that vitest's transform leaves the page's dynamic import alone.
        pages[name] = await tab.evaluate<Result>(`import('/${name}/page.js').then((m) => m.run())`);
      } catch (e) {
        pages[name] = e as Error;
      }
    }
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    const srv = server;
    if (srv) await new Promise((resolve) => srv.close(resolve));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs the kernels on Web Workers sharing the heap in a cross-origin isolated page, with the same results as one thread', () => {
    const r = result('isolated');
    expect(r.isolated).toBe(true);
    expect(r.after).toMatchObject({ kernels: 'wasm', memory: 'shared wasm memory', threads: 2, workers: 'web workers' });
    expect(r.after.workerTasks, log.join('\n')).toBeGreaterThanOrEqual(3);
    expect(r.differ).toBe(0);
    expect(r.convDiffer).toBe(0);
    expect(r.halfDiffer).toBe(0);
  });

  it('runs on one thread in a private memory in a page that is not isolated, and says why', () => {
    const r = result('plain');
    expect(r.isolated).toBe(false);
    expect(r.after).toMatchObject({ kernels: 'wasm', memory: 'private wasm memory', threads: 1, workerTasks: 0 });
    expect(r.after.singleThreadReason).toMatch(/not cross-origin isolated.*Cross-Origin-Opener-Policy: same-origin/);
    expect(r.after.line).toMatch(/^sinter: CPU on WebAssembly SIMD kernels, private wasm memory, 1 thread: this page is not cross-origin isolated/);
    expect(log.some((l) => /plain console.info: sinter: the CPU backend runs on one thread: this page is not cross-origin isolated/.test(l))).toBe(true);
    expect(r.differ).toBe(0);
    expect(r.grew).toBe(true);
    expect(r.convDiffer).toBe(0);
    expect(r.grew16).toBe(true);
    expect(r.halfDiffer).toBe(0);
  });
});
