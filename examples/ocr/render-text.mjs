// Renders lines of text into a PNG with headless Chromium (playwright-core, Debian's /usr/bin/chromium) and the
// DejaVu Sans font of the @fontsource/dejavu-sans package, so the OCR sample and the test's extra images are made
// by the project from a font it installs: no download. Chromium only draws (a 2D canvas); nothing is recognised here.
// Usage: node examples/ocr/render-text.mjs   (rewrites examples/ocr/sample.png, rotated.png and their .txt)
import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const FONTS = {
  'DejaVu Sans': require.resolve('@fontsource/dejavu-sans/files/dejavu-sans-latin-400-normal.woff2'),
  'DejaVu Sans Bold': require.resolve('@fontsource/dejavu-sans/files/dejavu-sans-latin-700-normal.woff2'),
};

/** The sample image's lines: what `npm run demo` must read back exactly. */
export const SAMPLE_LINES = ['Sinter reads this text', 'PP-OCR det + rec on CPU or WebGPU', 'Invoice 2026-12-06: total 1,234.50'];

/** A second image the pipeline was not tuned on: bold, smaller, turned by 4 degrees (test/ocr.test.ts, the web test). */
export const ROTATED = { lines: ['Quick brown fox 42', 'jumps over the lazy dog'], options: { font: 'DejaVu Sans Bold', size: 24, angle: 4, width: 520, height: 200 } };

/**
 * PNG bytes of `lines` drawn dark on light paper, one line under the other. `size` is the font size in pixels,
 * `angle` a rotation of the whole text block in degrees, `font` a key of FONTS.
 * @param {string[]} lines
 * @param {{ size?: number, angle?: number, font?: keyof typeof FONTS, width?: number, height?: number }} [options]
 * @returns {Promise<Buffer>}
 */
export async function renderText(lines, { size = 30, angle = 0, font = 'DejaVu Sans', width = 720, height = 90 + lines.length * size * 1.8 } = {}) {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width, height: Math.ceil(height) } });
    const fontData = (await readFile(FONTS[font])).toString('base64');
    const dataUrl = await page.evaluate(
      async ({ lines, size, angle, fontData, width, height }) => {
        const face = new FontFace('Sample', `url(data:font/woff2;base64,${fontData})`);
        document.fonts.add(await face.load());
        const canvas = document.createElement('canvas');
        canvas.width = width;
        canvas.height = Math.ceil(height);
        const ctx = canvas.getContext('2d');
        ctx.fillStyle = '#f4f1ea';
        ctx.fillRect(0, 0, canvas.width, canvas.height);
        ctx.translate(canvas.width / 2, canvas.height / 2);
        ctx.rotate((angle * Math.PI) / 180);
        ctx.fillStyle = '#1d1d24';
        ctx.font = `${size}px Sample`;
        ctx.textBaseline = 'middle';
        const step = size * 1.8, top = -((lines.length - 1) * step) / 2;
        lines.forEach((line, i) => ctx.fillText(line, -canvas.width / 2 + 40, top + i * step));
        return canvas.toDataURL('image/png');
      },
      { lines, size, angle, fontData, width, height },
    );
    return Buffer.from(dataUrl.slice(dataUrl.indexOf(',') + 1), 'base64');
  } finally {
    await browser.close();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await writeFile(new URL('./sample.png', import.meta.url), await renderText(SAMPLE_LINES));
  await writeFile(new URL('./sample.txt', import.meta.url), SAMPLE_LINES.join('\n') + '\n');
  await writeFile(new URL('./rotated.png', import.meta.url), await renderText(ROTATED.lines, ROTATED.options));
  await writeFile(new URL('./rotated.txt', import.meta.url), ROTATED.lines.join('\n') + '\n');
  console.log('wrote examples/ocr/{sample,rotated}.{png,txt}');
}
