// Reading and writing images for the Node examples: PNG with pngjs, JPEG with jpeg-js, as the { width, height, data }
// RGBA pixels sinter/ocr takes; and boxes drawn over an image (for `--out annotated.png`).
import { readFile, writeFile } from 'node:fs/promises';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';

/** Decodes a PNG or JPEG file (told apart by their signatures) into RGBA pixels. */
export async function readImage(path) {
  const bytes = await readFile(path);
  if (bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    const png = PNG.sync.read(bytes);
    return { width: png.width, height: png.height, data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length) };
  }
  if (bytes[0] === 0xff && bytes[1] === 0xd8) {
    const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 1024 });
    return { width: img.width, height: img.height, data: img.data };
  }
  throw new Error(`${path}: not a PNG or JPEG file`);
}

/** Writes RGBA pixels as a PNG file. */
export async function writePng(path, image) {
  const png = new PNG({ width: image.width, height: image.height });
  png.data.set(image.data);
  await writeFile(path, PNG.sync.write(png));
}

/** A copy of `image` (RGBA) with each box's four sides drawn `thickness` pixels wide in `rgb`. */
export function drawBoxes(image, boxes, { rgb = [220, 30, 60], thickness = 2 } = {}) {
  const out = { width: image.width, height: image.height, data: new Uint8Array(image.data) };
  const plot = (x, y) => {
    for (let dy = 0; dy < thickness; dy++) {
      for (let dx = 0; dx < thickness; dx++) {
        const px = Math.round(x) + dx - (thickness >> 1), py = Math.round(y) + dy - (thickness >> 1);
        if (px < 0 || py < 0 || px >= out.width || py >= out.height) continue;
        const i = (py * out.width + px) * 4;
        [out.data[i], out.data[i + 1], out.data[i + 2], out.data[i + 3]] = [...rgb, 255];
      }
    }
  };
  for (const box of boxes) {
    box.forEach(([x0, y0], k) => {
      const [x1, y1] = box[(k + 1) % box.length];
      const n = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0)));
      for (let s = 0; s <= n; s++) plot(x0 + ((x1 - x0) * s) / n, y0 + ((y1 - y0) * s) / n);
    });
  }
  return out;
}
