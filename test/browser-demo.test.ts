import { mkdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { type BrowserContext, type Page, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWebDemo, serveWebDemo } from '../examples/web/build.mjs';

// The web demo (examples/web) built by esbuild, served on 127.0.0.1, in Debian's headless Chromium with the
// SwiftShader WebGPU flags test/browser.test.ts uses. The page reads the sample image when it loads; then an image
// it has not seen is uploaded through its file input, and read again with fusion switched off. The CPU device keeps
// the test's time down (WebGPU on SwiftShader is slower); the screenshot is kept in bench/out/web-demo.png.
const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader', '--no-sandbox',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
];
const root = path.resolve(import.meta.dirname, '..');
const text = (name: string) => readFileSync(path.join(root, 'examples', 'ocr', `${name}.txt`), 'utf8').trim().split('\n');

describe('the web demo in headless Chromium', () => {
  let server: Server | undefined, context: BrowserContext | undefined, page: Page | undefined;
  const log: string[] = [];

  beforeAll(async () => {
    const dir = await buildWebDemo(path.join(os.tmpdir(), `sinter-web-demo-${process.pid}`));
    const served = await serveWebDemo(dir, 0);
    server = served.server;
    context = await chromium.launchPersistentContext(path.join(dir, 'profile'), { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1400, height: 1100 } });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
    await page.goto(`${served.url}?device=cpu`);
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  });

  /** Waits until the page says it is done (or failed), and returns the lines of text it shows. */
  async function linesShown(): Promise<string[]> {
    await page!.waitForFunction(() => /^(done|error)/.test(document.getElementById('status')!.textContent ?? ''), undefined, { timeout: 240_000, polling: 250 });
    const status = await page!.textContent('#status');
    expect(status, log.join('\n')).toMatch(/^done/);
    return page!.$$eval('#lines li', (items) => items.map((li) => li.textContent ?? ''));
  }

  it('reads the sample image on load, and shows times, the kernel profile and the fused graph', async () => {
    expect(await linesShown()).toEqual(text('sample'));
    expect(await page!.textContent('#device-line')).toContain('CPU');
    const rows = await page!.$$eval('#times tbody tr', (trs) => trs.map((tr) => tr.textContent ?? ''));
    expect(rows.map((r) => r.split(/\d/)[0])).toEqual(['detector input', 'detector', 'DB boxes', 'crops', 'recogniser', 'CTC decoding', 'total']);
    expect(await page!.textContent('#kernels')).toMatch(/kernel/i);
    expect(await page!.$$eval('#graph svg g.cluster', (gs) => gs.length)).toBeGreaterThan(0);
  }, 300_000);

  it('reads an image uploaded through the file input', async () => {
    await page!.setInputFiles('#file', path.join(root, 'examples', 'ocr', 'rotated.png'));
    await page!.waitForFunction(() => !/^done/.test(document.getElementById('status')!.textContent ?? ''), undefined, { timeout: 10_000 }).catch(() => {});
    expect(await linesShown()).toEqual(text('rotated'));
    mkdirSync(path.join(root, 'bench', 'out'), { recursive: true });
    await page!.screenshot({ path: path.join(root, 'bench', 'out', 'web-demo.png'), fullPage: false });
  }, 300_000);

  /** The detector's kernel count and fusion strategy, as its profile table's heading states them. */
  async function kernelTable(): Promise<{ strategy: string; kernels: number }> {
    const heading = /fusion '(\w+)'\): (\d+) kernels?/.exec((await page!.textContent('#kernels')) ?? '');
    expect(heading, 'the kernel profile heading').not.toBeNull();
    return { strategy: heading![1]!, kernels: Number(heading![2]) };
  }

  it('switches the fusion strategy to none: the same text, more kernels', async () => {
    const fused = await kernelTable();
    expect(fused.strategy).toBe('default');
    await page!.selectOption('#fusion', 'none');
    await page!.waitForFunction(() => !/^done/.test(document.getElementById('status')!.textContent ?? ''), undefined, { timeout: 10_000 }).catch(() => {});
    expect(await linesShown()).toEqual(text('rotated'));
    const unfused = await kernelTable();
    expect(unfused.strategy).toBe('none');
    expect(unfused.kernels).toBeGreaterThan(fused.kernels);
  }, 300_000);
});
