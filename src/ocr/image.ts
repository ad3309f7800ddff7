// Images as the OCR pipeline takes them, and the two resamplings it needs: the detector's whole-image resize and the
// recogniser's crops (rotated rectangles sampled straight into its input height, so crop, rotate and resize are one
// bilinear pass).
import { SinterError } from '../errors.js';
import type { RotatedRect } from './geometry.js';

/**
 * 8-bit pixels, row-major, interleaved channels: RGBA (a canvas's ImageData, pngjs's `data`), RGB (jpeg-js with
 * `formatAsRGBA: false`) or grey. The channel count is `data.length / (width · height)`.
 */
export interface OcrImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array | Uint8ClampedArray;
}

/** Channels per pixel of `image` (1, 3 or 4), or a SinterError saying what is wrong with it. */
export function channelsOf(op: string, image: OcrImage): number {
  const { width, height, data } = image ?? {};
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new SinterError(op, `expected an image with positive integer width and height, got ${width}×${height}`);
  }
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) {
    throw new SinterError(op, `expected the image's data as a Uint8Array or Uint8ClampedArray, got ${data === null ? 'null' : typeof data}`);
  }
  const c = data.length / (width * height);
  if (c !== 1 && c !== 3 && c !== 4) {
    throw new SinterError(op, `a ${width}×${height} image needs ${width * height} × 1, 3 or 4 bytes (grey, RGB, RGBA); got ${data.length}`);
  }
  return c;
}

/** Channel `k` of BGR (the order PaddleOCR's models were trained on) at pixel (x, y), integer coordinates, clamped. */
function at(image: OcrImage, c: number, x: number, y: number, k: number): number {
  const xi = Math.min(image.width - 1, Math.max(0, x)), yi = Math.min(image.height - 1, Math.max(0, y));
  const base = (yi * image.width + xi) * c;
  return c === 1 ? image.data[base]! : image.data[base + 2 - k]!;
}

/** Bilinear sample of BGR channel `k` at (x, y), pixel centres at integers. */
function bilinear(image: OcrImage, c: number, x: number, y: number, k: number): number {
  const x0 = Math.floor(x), y0 = Math.floor(y), fx = x - x0, fy = y - y0;
  const top = at(image, c, x0, y0, k) * (1 - fx) + at(image, c, x0 + 1, y0, k) * fx;
  const bottom = at(image, c, x0, y0 + 1, k) * (1 - fx) + at(image, c, x0 + 1, y0 + 1, k) * fx;
  return top * (1 - fy) + bottom * fy;
}

/** Per-channel normalisation (value/255 − mean) / std, in BGR order. */
export interface Normalisation {
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
}

/** `image` resized to `h`×`w` (bilinear, half-pixel centres), as a 3×h×w normalised planar float array. */
export function resizeToPlanar(image: OcrImage, h: number, w: number, norm: Normalisation): Float32Array {
  const c = channelsOf('ocr', image);
  const out = new Float32Array(3 * h * w);
  const sx = image.width / w, sy = image.height / h;
  for (let y = 0; y < h; y++) {
    const iy = (y + 0.5) * sy - 0.5;
    for (let x = 0; x < w; x++) {
      const ix = (x + 0.5) * sx - 0.5;
      for (let k = 0; k < 3; k++) out[(k * h + y) * w + x] = (bilinear(image, c, ix, iy, k) / 255 - norm.mean[k]!) / norm.std[k]!;
    }
  }
  return out;
}

/**
 * The rotated rectangle `r` of `image` sampled upright into the `h`×`w` window at column 0 of a 3×h×`stride` planar
 * array `out` (at plane offset `offset`), normalised; columns past `w` are left as they are (the caller's padding).
 */
export function cropToPlanar(image: OcrImage, r: RotatedRect, h: number, w: number, norm: Normalisation, out: Float32Array, offset: number, stride: number): void {
  const c = channelsOf('ocr', image);
  // Output pixel (x, y) ↦ the rectangle's point at (x + ½)/w along its long side and (y + ½)/h down its short side.
  const vx = -r.uy, vy = r.ux;
  const su = (2 * r.halfLong) / w, sv = (2 * r.halfShort) / h;
  for (let y = 0; y < h; y++) {
    const v = (y + 0.5) * sv - r.halfShort;
    for (let x = 0; x < w; x++) {
      const u = (x + 0.5) * su - r.halfLong;
      const px = r.cx + u * r.ux + v * vx, py = r.cy + u * r.uy + v * vy;
      for (let k = 0; k < 3; k++) out[offset + (k * h + y) * stride + x] = (bilinear(image, c, px, py, k) / 255 - norm.mean[k]!) / norm.std[k]!;
    }
  }
}
