import { readFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OcrEngine, type OcrProgress, loadOcr, ocr } from '../src/ocr/index.js';
import { ctcDecode } from '../src/ocr/ctc.js';
import { dbBoxes } from '../src/ocr/db.js';
import { corners, minAreaRect, unclip } from '../src/ocr/geometry.js';

// The OCR pipeline (src/ocr): its pieces on hand-made inputs, then end to end on the images
// examples/ocr/render-text.mjs drew from known text (DejaVu Sans from @fontsource/dejavu-sans).
const png = (name: string) => PNG.sync.read(readFileSync(new URL(`../examples/ocr/${name}.png`, import.meta.url)));
const lines = (name: string) => readFileSync(new URL(`../examples/ocr/${name}.txt`, import.meta.url), 'utf8').trim().split('\n');

describe('geometry', () => {
  it('minAreaRect recovers a rotated rectangle from its corners and inner points', () => {
    const a = (20 * Math.PI) / 180, [ux, uy] = [Math.cos(a), Math.sin(a)];
    const pts: [number, number][] = [];
    for (const s of [-1, -0.3, 0.5, 1]) for (const t of [-1, 0, 1]) pts.push([50 + s * 30 * ux - t * 10 * uy, 40 + s * 30 * uy + t * 10 * ux]);
    const r = minAreaRect(pts);
    expect(r.cx).toBeCloseTo(50, 9);
    expect(r.cy).toBeCloseTo(40, 9);
    expect(r.halfLong).toBeCloseTo(30, 9);
    expect(r.halfShort).toBeCloseTo(10, 9);
    expect(r.ux).toBeCloseTo(ux, 9);
    expect(r.uy).toBeCloseTo(uy, 9);
    // Reading order: top-left first, clockwise on screen (y down).
    const [tl, tr, br, bl] = corners(r);
    expect(tl[0]).toBeLessThan(tr[0]);
    expect(tl[1]).toBeLessThan(bl[1]);
    expect(br[1]).toBeGreaterThan(tr[1]);
  });

  it('unclip grows each side by area·ratio/perimeter', () => {
    const r = { cx: 0, cy: 0, ux: 1, uy: 0, halfLong: 50, halfShort: 5 };
    const d = (100 * 10 * 1.5) / 220;
    expect(unclip(r, 1.5)).toEqual({ ...r, halfLong: 50 + d, halfShort: 5 + d });
  });
});

describe('DB post-processing', () => {
  it('finds each bright bar as a box, grown, and drops faint or tiny ones', () => {
    const w = 64, h = 32, prob = new Float32Array(w * h);
    const fill = (x0: number, x1: number, y0: number, y1: number, v: number) => {
      for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) prob[y * w + x] = v;
    };
    fill(4, 43, 4, 9, 0.9); // a line of text
    fill(4, 30, 20, 25, 0.45); // above the pixel threshold, below the box threshold
    fill(50, 51, 20, 21, 0.9); // a speck
    const boxes = dbBoxes(prob, w, h);
    expect(boxes).toHaveLength(1);
    const { rect, score } = boxes[0]!;
    expect(score).toBeCloseTo(0.9, 5);
    expect(rect.cx).toBeCloseTo(23.5, 9);
    expect(rect.cy).toBeCloseTo(6.5, 9);
    const d = (39 * 5 * 1.5) / (2 * (39 + 5));
    expect(rect.halfLong).toBeCloseTo(19.5 + d, 9);
    expect(rect.halfShort).toBeCloseTo(2.5 + d, 9);
  });
});

describe('CTC decoding', () => {
  const charset = ['a', 'b', ' '];
  // Rows of [blank, a, b, space] probabilities.
  const rows = (...r: number[][]) => ({ probs: r.flat(), steps: r.length });
  it('collapses repeats, drops blanks, and keeps a letter repeated across a blank', () => {
    const { probs, steps } = rows([0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0.8, 0.2], [1, 0, 0, 0]);
    const d = ctcDecode(probs, steps, 4, charset);
    expect(d.text).toBe('aab');
    expect(d.score).toBeCloseTo((1 + 1 + 0.8) / 3, 9);
    expect(ctcDecode([1, 0, 0, 0], 1, 4, charset)).toEqual({ text: '', score: 0 });
  });
  it('reads a blank gap as a space only where the space class reached the threshold', () => {
    const { probs, steps } = rows([0, 1, 0, 0], [0.8, 0, 0, 0.2], [0, 0, 1, 0], [0.99, 0, 0, 0.01], [0, 1, 0, 0]);
    expect(ctcDecode(probs, steps, 4, charset, 0, { spaceClass: 3, spaceThreshold: 0.05 }).text).toBe('a ba');
    expect(ctcDecode(probs, steps, 4, charset, 0, { spaceClass: 3, spaceThreshold: 1 }).text).toBe('aba');
  });
});

describe('ocr end to end on the cpu', () => {
  let engine: OcrEngine;
  const progress: OcrProgress[] = [];
  beforeAll(async () => {
    engine = await loadOcr({ device: 'cpu', onProgress: (p) => progress.push(p) });
  });

  it('reports loading progress: the bytes of each model as they are read, then parsed', () => {
    for (const model of ['det', 'rec'] as const) {
      const mine = progress.filter((p) => p.model === model);
      const reads = mine.filter((p) => p.phase === 'read');
      expect(reads.length).toBeGreaterThan(1); // read in 1 MiB chunks
      expect(reads.every((p, i) => p.total !== null && p.loaded <= p.total && (i === 0 || p.loaded > reads[i - 1]!.loaded))).toBe(true);
      expect(reads.at(-1)!.loaded).toBe(reads.at(-1)!.total);
      expect(mine.at(-1)).toEqual({ model, phase: 'parsed', loaded: reads.at(-1)!.total, total: reads.at(-1)!.total });
    }
  });
  afterAll(() => engine?.dispose());

  it('reads the sample image exactly, with boxes around each line', async () => {
    const { lines: got, times } = await engine.read(png('sample'));
    expect(got.map((l) => l.text)).toEqual(lines('sample'));
    for (const l of got) expect(l.score).toBeGreaterThan(0.9);
    // The sample's lines are 54 px apart, starting near y = 71, at x = 40 (render-text.mjs).
    got.forEach((l, i) => {
      const ys = l.box.map((p) => p[1]), xs = l.box.map((p) => p[0]);
      expect(Math.abs((Math.min(...ys) + Math.max(...ys)) / 2 - (71 + 54 * i))).toBeLessThan(6);
      expect(Math.abs(Math.min(...xs) - 40)).toBeLessThan(8);
    });
    expect(Object.values(times).every((t) => t >= 0)).toBe(true);
    expect(times.total).toBeGreaterThanOrEqual(times.det + times.rec);
  });

  it('reads a bold, smaller, rotated image it was not tuned on', async () => {
    const got = await engine.ocr(png('rotated'));
    expect(got.map((l) => l.text)).toEqual(lines('rotated'));
    // Boxes follow the 4° turn: the top edge rises to the right by about tan 4° of its length.
    const [tl, tr] = got[0]!.box;
    expect((tr[1] - tl[1]) / (tr[0] - tl[0])).toBeCloseTo(Math.tan((4 * Math.PI) / 180), 1);
  });

  it('rejects an image whose bytes do not match its size, naming the sizes', async () => {
    await expect(engine.ocr({ width: 10, height: 10, data: new Uint8Array(7) })).rejects.toThrow('ocr: a 10×10 image needs 100 × 1, 3 or 4 bytes (grey, RGB, RGBA); got 7');
    await expect(engine.ocr({ width: 0, height: 10, data: new Uint8Array(0) })).rejects.toThrow('ocr: expected an image with positive integer width and height, got 0×10');
    // The one-call form checks before loading anything.
    await expect(ocr({ width: 3, height: 2, data: new Uint8Array(5) })).rejects.toThrow('ocr: a 3×2 image needs 6 × 1, 3 or 4 bytes');
  });
});
