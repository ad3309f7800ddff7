import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserProblems, bundleBrowser } from '../scripts/bundle-browser.mjs';

// The library in a web page: an ESM bundle served on 127.0.0.1 to Debian's headless Chromium, where
// init picks navigator.gpu (SwiftShader's Vulkan driver without a GPU). test/browser/checks.js runs
// one op of each family on 'webgpu' against the bundle's CPU backend and hand-worked values. No
// Chromium or no WebGPU adapter makes this file fail: it never skips.
const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader', '--no-sandbox',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
];
const OPS = ['elementwise with broadcast', 'reduction', 'matmul', 'conv2d', 'softmax'];

interface PageResult {
  device: string;
  line: string | null;
  results: Record<string, { problems?: string[]; error?: string }>;
}

describe('the browser bundle', () => {
  it('rejects a bundle that pulls in Dawn or a Node module', () => {
    const meta = (inputs: string[], imports: string[]) => ({
      inputs: Object.fromEntries(inputs.map((p) => [p, { bytes: 1, imports: [] }])),
      outputs: { 'out.js': { bytes: 1, inputs: {}, imports: imports.map((p) => ({ path: p, kind: 'import-statement' as const, external: true })), exports: [] } },
    });
    expect(browserProblems(meta(['src/index.ts'], []), 'const a = 1;')).toEqual([]);
    expect(browserProblems(meta(['node_modules/webgpu/index.js'], []), '')).toEqual(["bundles Dawn's Node binding (node_modules/webgpu/index.js)"]);
    expect(browserProblems(meta([], ['node:fs']), '')).toEqual(["imports 'node:fs' (import-statement), which a page cannot resolve"]);
    expect(browserProblems(meta([], []), 'import { create } from "webgpu"; await import("node:fs"); require("os");')).toHaveLength(3);
    // The computed import by which Node loads Dawn is allowed: a bundler cannot follow it.
    expect(browserProblems(meta([], []), 'function importByName(name) { return import(name); } importByName("webgpu");')).toEqual([]);
  });
});

describe('in headless Chromium on navigator.gpu', () => {
  let dir: string | undefined, server: Server | undefined, context: BrowserContext | undefined;
  let page: PageResult | undefined, setupError: unknown;
  const log: string[] = [];
  /** The page's results, or the reason there are none: each test fails with it rather than being skipped. */
  const results = (): PageResult => {
    if (!page) throw new Error(`the browser test could not run: ${String((setupError as Error)?.stack ?? setupError)}\n${log.join('\n')}`);
    return page;
  };

  beforeAll(async () => {
    try {
      await openPage();
    } catch (e) {
      setupError = e;
    }
  }, 180_000);

  async function openPage(): Promise<void> {
    dir = mkdtempSync(path.join(os.tmpdir(), 'sinter-browser-'));
    await bundleBrowser(path.join(dir, 'sinter.js'));
    const files: Record<string, [string, string | Buffer]> = {
      '/': ['text/html', '<!doctype html><meta charset="utf-8"><title>sinter browser test</title>'],
      '/sinter.js': ['text/javascript', readFileSync(path.join(dir, 'sinter.js'))],
      '/sinter.js.map': ['application/json', readFileSync(path.join(dir, 'sinter.js.map'))],
      '/checks.js': ['text/javascript', readFileSync(new URL('./browser/checks.js', import.meta.url))],
    };
    const srv = (server = createServer((req, res) => {
      const file = files[req.url ?? ''];
      res.writeHead(file ? 200 : 404, { 'content-type': file ? file[0] : 'text/plain', 'cache-control': 'no-store' });
      res.end(file ? file[1] : 'not found');
    }));
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/`;

    context = await chromium.launchPersistentContext(path.join(dir, 'profile'), { executablePath: CHROMIUM, headless: true, args: ARGS });
    const tab = context.pages()[0] ?? (await context.newPage());
    tab.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
    tab.on('pageerror', (e) => log.push(`page error: ${e.message}`));
    // Only the test server is reachable: anything else the page asks for is refused.
    await context.route((u) => !u.href.startsWith(url), (route) => route.abort());
    await tab.goto(url);
    // A string, so that vitest's transform leaves the page's dynamic import alone.
    page = await tab.evaluate<PageResult>("import('/checks.js').then((m) => m.runChecks())");
  }

  afterAll(async () => {
    await context?.close();
    const srv = server;
    if (srv) await new Promise((resolve) => srv.close(resolve));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("init({ device: 'webgpu' }) opens navigator.gpu", () => {
    const { device, line, results: byOp } = results();
    expect(device, log.join('\n')).toBe('webgpu');
    expect(line).toMatch(/^sinter: WebGPU on .+: the browser's adapter; optional features: /);
    expect(Object.keys(byOp)).toEqual(OPS);
  });

  it.each(OPS)('%s on webgpu matches the CPU backend and hand-worked values', (op) => {
    const r = results().results[op]!;
    expect(r.error, `${op} threw in the page`).toBeUndefined();
    expect(r.problems).toEqual([]);
  });
});
