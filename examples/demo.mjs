// Reads the text in an image with PaddleOCR's PP-OCR models running on sinter (sinter/ocr), and says where the time
// went. `npm run demo` builds, then reads examples/ocr/sample.png (drawn by examples/ocr/render-text.mjs from text
// it knows, so the demo checks what it read).
// Usage: node examples/demo.mjs [image.png|image.jpg] [--out annotated.png] [--device auto|cpu|webgpu] [--runs N]
//        (npm run demo -- image.png --out annotated.png)
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import * as sn from 'sinter';
import { loadOcr } from 'sinter/ocr';
import { drawBoxes, readImage, writePng } from './image-io.mjs';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: { out: { type: 'string' }, device: { type: 'string', default: 'auto' }, runs: { type: 'string', default: '3' } },
});
const samplePath = new URL('./ocr/sample.png', import.meta.url).pathname;
const imagePath = positionals[0] ?? samplePath;
const runs = Math.max(2, Number(opts.runs));

// init prints the device it chose and why ('auto': WebGPU on a hardware adapter, else the CPU).
const device = await sn.init({ device: opts.device });
console.log(`device: ${device}${opts.device === 'auto' ? '' : ` (chosen with --device ${opts.device})`}`);

const image = await readImage(imagePath);
console.log(`image: ${imagePath} (${image.width}×${image.height})`);
// A progress bar while the models are read (drawn only on a terminal: quiet in CI logs and pipes).
const bar = process.stderr.isTTY ? new cliProgress.SingleBar({ format: 'loading models |{bar}| {percentage}% {value}/{total} MiB', stream: process.stderr, clearOnComplete: true }, cliProgress.Presets.shades_classic) : null;
const read = { det: 0, rec: 0 }, sizes = { det: 0, rec: 0 };
const mib = (b) => Math.round((b / 2 ** 20) * 10) / 10;
let t0 = performance.now();
const engine = await loadOcr({
  device,
  onProgress: ({ model, loaded, total }) => {
    read[model] = loaded;
    sizes[model] = total ?? loaded;
    if (!bar) return;
    const total_ = mib(sizes.det + sizes.rec), value = mib(read.det + read.rec);
    if (!bar.isActive) bar.start(total_, value);
    bar.setTotal(total_);
    bar.update(value);
  },
});
bar?.stop();
const loadMs = performance.now() - t0;

// Run 1 is cold (each model traced, optimised and compiled for this input's shape); later runs replay the plans.
const reads = [];
for (let i = 0; i < runs; i++) reads.push(await engine.read(image));
const { lines } = reads[0];

console.log(`\n${lines.length} line${lines.length === 1 ? '' : 's'} of text:`);
for (const { text, score, box } of lines) {
  console.log(`  ${JSON.stringify(text).padEnd(40)} confidence ${score.toFixed(3)}   box ${box.map(([x, y]) => `(${x},${y})`).join(' ')}`);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const stages = [
  ['detPre', 'detector input (resize, normalise)'],
  ['det', 'detector (PP-OCRv4 det)'],
  ['boxes', 'DB boxes (threshold, regions, unclip)'],
  ['recPre', 'crops (upright, height 48)'],
  ['rec', 'recogniser (PP-OCRv4 rec, one batch)'],
  ['decode', 'CTC decoding'],
  ['total', 'total'],
];
console.log(`\nper-stage ms on ${device} (${mib(sizes.det + sizes.rec)} MiB of models loaded in ${loadMs.toFixed(0)} ms):`);
console.log(`  ${'stage'.padEnd(40)} ${'cold'.padStart(9)} ${`warm (median of ${runs - 1})`.padStart(22)}`);
for (const [key, name] of stages) {
  const warm = median(reads.slice(1).map((r) => r.times[key]));
  console.log(`  ${name.padEnd(40)} ${reads[0].times[key].toFixed(1).padStart(9)} ${warm.toFixed(1).padStart(22)}`);
}

if (imagePath === samplePath) {
  const expected = (await readFile(new URL('./ocr/sample.txt', import.meta.url), 'utf8')).trim().split('\n');
  const same = JSON.stringify(expected) === JSON.stringify(lines.map((l) => l.text));
  console.log(`\nthe sample's text ${same ? 'was read exactly' : `was NOT read exactly; expected ${JSON.stringify(expected)}`}`);
  if (!same) process.exitCode = 1;
}
if (opts.out) {
  await writePng(opts.out, drawBoxes(image, lines.map((l) => l.box)));
  console.log(`boxes drawn on ${opts.out}`);
}
engine.dispose();
