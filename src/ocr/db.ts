// DB (Differentiable Binarisation) post-processing, as PaddleOCR's DBPostProcess does it: threshold the detector's
// probability map, take each connected region, fit its minimum-area rotated rectangle, score it by the mean
// probability inside, and grow ("unclip") it back to the text's extent, since the model predicts shrunk regions.
import { type RotatedRect, minAreaRect, type Point, unclip } from './geometry.js';

export interface DbOptions {
  /** Pixels with probability above this are text (PaddleOCR: 0.3). */
  readonly threshold?: number;
  /** Regions whose mean probability is below this are dropped (PaddleOCR: 0.6). */
  readonly boxThreshold?: number;
  /** How far regions grow back (PaddleOCR: 1.5). */
  readonly unclipRatio?: number;
  /** At most this many regions are considered, largest first (PaddleOCR: 1000). */
  readonly maxCandidates?: number;
  /** Boxes whose short side is below this many map pixels are dropped (PaddleOCR: 3, after unclip 3 + 2). */
  readonly minSize?: number;
}

export interface DbBox {
  /** The text's rectangle in map coordinates (pixel centres at integers). */
  readonly rect: RotatedRect;
  /** Mean probability inside the rectangle before it was grown. */
  readonly score: number;
}

/** Text rectangles in a `height`×`width` probability map (row-major). */
export function dbBoxes(prob: ArrayLike<number>, width: number, height: number, options: DbOptions = {}): DbBox[] {
  const { threshold = 0.3, boxThreshold = 0.6, unclipRatio = 1.5, maxCandidates = 1000, minSize = 3 } = options;
  const regions = connectedRegions(prob, width, height, threshold);
  regions.sort((a, b) => b.pixels - a.pixels);
  const boxes: DbBox[] = [];
  for (const region of regions.slice(0, maxCandidates)) {
    const rect = minAreaRect(region.outline);
    if (2 * rect.halfShort < minSize) continue;
    const score = meanInside(prob, width, height, rect);
    if (score < boxThreshold) continue;
    const grown = unclip(rect, unclipRatio);
    if (2 * grown.halfShort < minSize + 2) continue;
    boxes.push({ rect: grown, score });
  }
  return boxes;
}

interface Region {
  /** Each row's leftmost and rightmost pixel: enough for the region's convex hull. */
  readonly outline: Point[];
  readonly pixels: number;
}

/** 8-connected regions of pixels above `threshold`. */
function connectedRegions(prob: ArrayLike<number>, width: number, height: number, threshold: number): Region[] {
  const label = new Int32Array(width * height).fill(-1);
  const regions: Region[] = [];
  const stack: number[] = [];
  for (let start = 0; start < width * height; start++) {
    if (label[start] !== -1 || !(prob[start]! > threshold)) continue;
    const id = regions.length;
    const rowMin = new Map<number, number>(), rowMax = new Map<number, number>();
    let pixels = 0;
    label[start] = id;
    stack.push(start);
    while (stack.length > 0) {
      const i = stack.pop()!;
      const y = Math.floor(i / width), x = i - y * width;
      pixels++;
      rowMin.set(y, Math.min(rowMin.get(y) ?? x, x));
      rowMax.set(y, Math.max(rowMax.get(y) ?? x, x));
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= width) continue;
          const j = yy * width + xx;
          if (label[j] === -1 && prob[j]! > threshold) {
            label[j] = id;
            stack.push(j);
          }
        }
      }
    }
    const outline: Point[] = [];
    for (const [y, x0] of rowMin) outline.push([x0, y], [rowMax.get(y)!, y]);
    regions.push({ outline, pixels });
  }
  return regions;
}

/** Mean of `prob` over the pixels whose centres lie inside `r` (PaddleOCR's "fast" box score). */
function meanInside(prob: ArrayLike<number>, width: number, height: number, r: RotatedRect): number {
  const ext = Math.abs(r.halfLong * r.ux) + Math.abs(r.halfShort * r.uy), eyt = Math.abs(r.halfLong * r.uy) + Math.abs(r.halfShort * r.ux);
  const x0 = Math.max(0, Math.floor(r.cx - ext)), x1 = Math.min(width - 1, Math.ceil(r.cx + ext));
  const y0 = Math.max(0, Math.floor(r.cy - eyt)), y1 = Math.min(height - 1, Math.ceil(r.cy + eyt));
  let sum = 0, n = 0;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x - r.cx, dy = y - r.cy;
      const u = dx * r.ux + dy * r.uy, v = -dx * r.uy + dy * r.ux;
      if (Math.abs(u) <= r.halfLong + 0.5 && Math.abs(v) <= r.halfShort + 0.5) {
        sum += prob[y * width + x]!;
        n++;
      }
    }
  }
  return n > 0 ? sum / n : 0;
}
