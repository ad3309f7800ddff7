import fc from 'fast-check';
import type { DeviceName } from '../backend/backend.js';
import { type DType, castValue } from '../tensor/dtype.js';
import { contiguousStrides, numel } from '../tensor/shape.js';
import { tensor } from '../tensor/creation.js';
import { Tensor } from '../tensor/tensor.js';
import { permute, slice, expand } from '../ops/views.js';

/** How a test tensor is laid out in memory: its logical values are the same in every layout. */
export type Layout =
  | { kind: 'contiguous' }
  /** Stored in `perm` order, then permuted back: strides are not row-major. */
  | { kind: 'permuted'; perm: number[] }
  /** A strided slice of a larger buffer: `start` and `step` per dim. */
  | { kind: 'sliced'; start: number[]; step: number[] }
  /** Stride 0 along `dims` (values repeat along them). */
  | { kind: 'expanded'; dims: number[] };

/** A test input: plain data that fast-check can print and shrink, turned into a Tensor by `makeTensor`. */
export interface TensorCase {
  shape: number[];
  dtype: DType;
  /** Logical values in row-major order, already representable in `dtype`. */
  values: number[];
  layout: Layout;
}

export interface ShapeOptions {
  minRank?: number;
  maxRank?: number;
  /** Largest size of one dim (default 6). */
  maxDim?: number;
  /** Smallest size of one dim (default 1; 0 allows empty tensors). */
  minDim?: number;
}

/** A shape with sizes biased towards 1 and small odd numbers. */
export function shapeArb(opts: ShapeOptions = {}): fc.Arbitrary<number[]> {
  const { minRank = 0, maxRank = 4, maxDim = 6, minDim = 1 } = opts;
  const dim = fc.oneof({ arbitrary: fc.constant(Math.max(1, minDim)), weight: 1 }, { arbitrary: fc.integer({ min: minDim, max: maxDim }), weight: 3 });
  return fc.array(dim, { minLength: minRank, maxLength: maxRank });
}

/**
 * `n` shapes that broadcast together: each is the output shape with some leading dims dropped
 * and some dims set to 1. Returns [outputShape, ...inputShapes].
 */
export function broadcastShapesArb(n: number, opts: ShapeOptions = {}): fc.Arbitrary<number[][]> {
  return shapeArb(opts).chain((out) =>
    fc.tuple(
      ...Array.from({ length: n }, () =>
        fc.tuple(fc.integer({ min: 0, max: out.length }), fc.array(fc.boolean(), { minLength: out.length, maxLength: out.length })).map(([drop, ones]) =>
          out.slice(drop).map((d, i) => (ones[i + drop] ? 1 : d)),
        ),
      ),
    ).map((ins) => {
      // The output is what the inputs broadcast to (a dim set to 1 everywhere stays 1).
      const rank = Math.max(0, ...ins.map((s) => s.length));
      const o = Array.from({ length: rank }, (_, i) => Math.max(1, ...ins.map((s) => s[i - (rank - s.length)] ?? 1)));
      return [o, ...ins];
    }),
  );
}

export interface ValueOptions {
  /** Range of values (default ±4 for floats, ±20 for int32/int8, 0..40 for uint8). */
  min?: number;
  max?: number;
}

/** One value representable in `dtype`. */
export function valueArb(dtype: DType, opts: ValueOptions = {}): fc.Arbitrary<number> {
  if (dtype === 'bool') return fc.boolean().map(Number);
  if (dtype === 'float32' || dtype === 'float16') {
    // A uniform grid over [min, max]: fc.double is uniform over bit patterns, so most of its draws
    // would be tiny numbers that round to 0. fast-check's bias still favours the ends of the range.
    const { min = -4, max = 4 } = opts;
    const steps = 1 << 20;
    return fc.integer({ min: 0, max: steps }).map((k) => castValue(dtype, min + ((max - min) * k) / steps));
  }
  // Requested ranges are clipped to what the dtype holds (a float range of ±4 gives uint8 0..4).
  const [lo, hi] = dtype === 'uint8' ? [0, 40] : [-20, 20];
  const [tmin, tmax] = dtype === 'uint8' ? [0, 255] : dtype === 'int8' ? [-128, 127] : [-(2 ** 31), 2 ** 31 - 1];
  const min = Math.max(tmin, Math.ceil(opts.min ?? lo)), max = Math.min(tmax, Math.floor(opts.max ?? hi));
  return fc.integer({ min, max: Math.max(min, max) });
}

/** A layout for a tensor of `shape`: contiguous, permuted, strided slice or expanded. */
export function layoutArb(shape: readonly number[]): fc.Arbitrary<Layout> {
  const r = shape.length;
  const options: fc.Arbitrary<Layout>[] = [fc.constant({ kind: 'contiguous' } as Layout)];
  if (r >= 2) {
    options.push(fc.shuffledSubarray(Array.from({ length: r }, (_, i) => i), { minLength: r, maxLength: r }).map((perm) => ({ kind: 'permuted', perm }) as Layout));
  }
  if (r >= 1) {
    const ints = (min: number, max: number) => fc.array(fc.integer({ min, max }), { minLength: r, maxLength: r });
    options.push(fc.tuple(ints(0, 2), ints(1, 3)).map(([start, step]) => ({ kind: 'sliced', start, step }) as Layout));
    // Expanding needs a value to repeat: not for empty tensors.
    if (numel(shape) > 0) options.push(fc.subarray(Array.from({ length: r }, (_, i) => i), { minLength: 1 }).map((dims) => ({ kind: 'expanded', dims }) as Layout));
  }
  return fc.oneof(...options);
}

function repeatAlong(values: number[], shape: readonly number[], dims: readonly number[]): number[] {
  // Copies the value at index 0 of each expanded dim to the whole dim.
  const strides = contiguousStrides(shape);
  return values.map((_, i) => {
    let src = 0;
    for (let d = 0; d < shape.length; d++) {
      const idx = Math.floor(i / strides[d]!) % shape[d]!;
      if (!dims.includes(d)) src += idx * strides[d]!;
    }
    return values[src]!;
  });
}

export interface TensorCaseOptions extends ValueOptions {
  dtype?: DType;
  /** Draw non-contiguous layouts too (default true). */
  views?: boolean;
}

/** A test tensor of `shape` with random values and (by default) a random memory layout. */
export function tensorCaseArb(shape: readonly number[], opts: TensorCaseOptions = {}): fc.Arbitrary<TensorCase> {
  const dtype = opts.dtype ?? 'float32';
  const n = numel(shape);
  const layout = opts.views === false ? fc.constant({ kind: 'contiguous' } as Layout) : layoutArb(shape);
  return fc.tuple(fc.array(valueArb(dtype, opts), { minLength: n, maxLength: n }), layout).map(([values, layout]) => ({
    shape: [...shape],
    dtype,
    values: layout.kind === 'expanded' ? repeatAlong(values, shape, layout.dims) : values,
    layout,
  }));
}

/** Builds the Tensor a case describes: its logical values are `c.values` whatever the layout. */
export function makeTensor(c: TensorCase, device?: DeviceName): Tensor {
  const { shape, dtype, values, layout } = c;
  const opts = { dtype, device };
  switch (layout.kind) {
    case 'contiguous':
      return tensor(values, { ...opts, shape });
    case 'permuted': {
      // Store in permuted order, then view back: base[b] = logical[l] with l[perm[j]] = b[j].
      const baseShape = layout.perm.map((p) => shape[p]!);
      const ls = contiguousStrides(shape);
      const bs = contiguousStrides(baseShape);
      const base = new Array<number>(values.length);
      for (let b = 0; b < values.length; b++) {
        let l = 0;
        for (let j = 0; j < baseShape.length; j++) l += (Math.floor(b / bs[j]!) % baseShape[j]!) * ls[layout.perm[j]!]!;
        base[b] = values[l]!;
      }
      const inverse = layout.perm.map((_, i) => layout.perm.indexOf(i));
      const stored = tensor(base, { ...opts, shape: baseShape });
      const out = permute(stored, inverse);
      stored.dispose();
      return out;
    }
    case 'sliced': {
      // A larger buffer of filler values; the slice picks out the logical values.
      const baseShape = shape.map((d, i) => layout.start[i]! + Math.max(d - 1, 0) * layout.step[i]! + 2);
      const filler = dtype === 'bool' ? 1 : 7;
      const base = new Array<number>(numel(baseShape)).fill(filler);
      const bs = contiguousStrides(baseShape);
      const ls = contiguousStrides(shape);
      for (let i = 0; i < values.length; i++) {
        let at = 0;
        for (let d = 0; d < shape.length; d++) at += (layout.start[d]! + (Math.floor(i / ls[d]!) % shape[d]!) * layout.step[d]!) * bs[d]!;
        base[at] = values[i]!;
      }
      let t = tensor(base, { ...opts, shape: baseShape });
      for (let d = 0; d < shape.length; d++) {
        const next = slice(t, d, layout.start[d]!, layout.start[d]! + shape[d]! * layout.step[d]!, layout.step[d]!);
        t.dispose();
        t = next;
      }
      return t;
    }
    case 'expanded': {
      const small = shape.map((d, i) => (layout.dims.includes(i) ? 1 : d));
      const ss = contiguousStrides(small);
      const smallValues = new Array<number>(numel(small));
      const ls = contiguousStrides(shape);
      for (let i = 0; i < values.length; i++) {
        let at = 0;
        for (let d = 0; d < shape.length; d++) if (!layout.dims.includes(d)) at += (Math.floor(i / ls[d]!) % shape[d]!) * ss[d]!;
        smallValues[at] = values[i]!;
      }
      const stored = tensor(smallValues, { ...opts, shape: small });
      const out = expand(stored, shape);
      stored.dispose();
      return out;
    }
  }
}

/** fast-check settings for property tests: a fixed seed (override with FC_SEED) so failures replay, and FC_RUNS runs. */
export function propertyConfig(overrides: fc.Parameters<unknown> = {}): fc.Parameters<unknown> {
  const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
  return { seed: Number(env.FC_SEED ?? 20261121), numRuns: Number(env.FC_RUNS ?? 60), ...overrides };
}
