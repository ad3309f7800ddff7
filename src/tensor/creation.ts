import type { DeviceOption } from '../backend/backend.js';
import { getBackend } from '../backend/backend.js';
import { checkAllocation, resolveDevice } from '../backend/device.js';
import { SinterError, fmtShape } from '../errors.js';
import { type DType, type HostArray, allocHost, castValue, checkDType, toHost } from './dtype.js';
import { activeTrace } from '../jit/trace.js';
import { Generator, defaultGenerator } from './random.js';
import { checkShape, numel } from './shape.js';
import { type NestedArray, Tensor } from './tensor.js';

export interface CreateOptions {
  dtype?: DType;
  /** Default: the device chosen by `init` (the CPU until then). */
  device?: DeviceOption;
}
export interface TensorOptions extends CreateOptions {
  /** Shape for flat data (a typed array or flat list); defaults to the data's nesting. */
  shape?: readonly number[];
}
export interface RandomOptions extends CreateOptions {
  /** Seeds this call alone; without it the default generator (see `manualSeed`) continues. */
  seed?: number;
  generator?: Generator;
}

export type TensorData = NestedArray | Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array | Uint32Array;

/** Makes a tensor on `device` from host values already cast to `dtype`. */
export function fromHost(op: string, host: HostArray, shape: readonly number[], dtype: DType, device: DeviceOption | undefined): Tensor {
  const dev = resolveDevice(op, device);
  return new Tensor(getBackend(dev).fromHost(dtype, host), shape);
}

function dtypeOf(op: string, opts: CreateOptions | undefined, fallback: DType): DType {
  return opts?.dtype === undefined ? fallback : checkDType(op, opts.dtype);
}

function inferTypedDType(data: ArrayLike<number>): DType {
  if (data instanceof Int32Array || data instanceof Int16Array || data instanceof Uint16Array) return 'int32';
  if (data instanceof Int8Array) return 'int8';
  if (data instanceof Uint8Array) return 'uint8';
  return 'float32';
}

function flattenNested(data: NestedArray): { values: number[]; shape: number[]; bool: boolean } {
  const shape: number[] = [];
  for (let d: NestedArray = data; Array.isArray(d); d = d[0]!) {
    shape.push(d.length);
    if (d.length === 0) break;
  }
  const values: number[] = [];
  let sawBool = false, sawNumber = false;
  const walk = (d: NestedArray, depth: number, path: string): void => {
    if (depth === shape.length) {
      if (typeof d === 'boolean') sawBool = true;
      else if (typeof d === 'number') sawNumber = true;
      else throw new SinterError('tensor', `expected a number or boolean at ${path || 'the top level'}, got ${Array.isArray(d) ? 'an array' : typeof d}`);
      values.push(Number(d));
      return;
    }
    if (!Array.isArray(d) || d.length !== shape[depth]) {
      throw new SinterError('tensor', `ragged nested array: expected length ${shape[depth]} at ${path || 'the top level'}, got ${Array.isArray(d) ? d.length : typeof d}`);
    }
    d.forEach((x, i) => walk(x, depth + 1, `${path}[${i}]`));
  };
  walk(data, 0, '');
  return { values, shape, bool: sawBool && !sawNumber };
}

/**
 * A tensor from nested arrays, a typed array or a number. The dtype defaults to the typed array's
 * (Int32Array → int32, Uint8Array → uint8, …), bool for booleans, and float32 for numbers: JavaScript
 * cannot tell `1` from `1.0`, so plain numbers are floats unless `dtype` says otherwise.
 */
export function tensor(data: TensorData, opts: TensorOptions = {}): Tensor {
  let values: ArrayLike<number>;
  let shape: number[];
  let inferred: DType;
  if (ArrayBuffer.isView(data)) {
    values = data as ArrayLike<number>;
    shape = [values.length];
    inferred = inferTypedDType(values);
  } else if (typeof data === 'number' || typeof data === 'boolean' || Array.isArray(data)) {
    const flat = flattenNested(data);
    values = flat.values;
    shape = flat.shape;
    inferred = flat.bool ? 'bool' : 'float32';
  } else {
    throw new SinterError('tensor', `expected nested arrays, a typed array, a number or a boolean, got ${data === null ? 'null' : typeof data}`);
  }
  if (opts.shape !== undefined) {
    const want = checkShape('tensor', opts.shape);
    if (numel(want) !== values.length) {
      throw new SinterError('tensor', `shape ${fmtShape(want)} needs ${numel(want)} values but the data has ${values.length} (shape ${fmtShape(shape)})`);
    }
    shape = want;
  }
  const dtype = dtypeOf('tensor', opts, inferred);
  // A typed array already of the dtype's host type needs no cast: the device copies it once (backends' fromHost copy;
  // float16's copy from float32 numbers rounds them to binary16).
  const host = values.constructor === allocHost(dtype, 0).constructor && dtype !== 'bool' ? (values as HostArray) : toHost(dtype, values);
  return fromHost('tensor', host, shape, dtype, opts.device);
}

type SizeAndOptions<O> = (number | readonly number[] | O)[];

/** Splits `zeros(2, 3, opts)` / `zeros([2, 3], opts)` into a shape and options. */
function parseSize<O extends object>(op: string, args: SizeAndOptions<O>): [number[], O] {
  let opts = {} as O;
  if (args.length > 0) {
    const last = args[args.length - 1];
    if (typeof last === 'object' && last !== null && !Array.isArray(last)) {
      opts = last as O;
      args = args.slice(0, -1);
    }
  }
  const shape = args.length === 1 && Array.isArray(args[0]) ? [...(args[0] as number[])] : (args as number[]);
  return [checkShape(op, shape), opts];
}

/** A tensor of `shape` filled with one value; `op` names the public function for errors. */
const INT_RANGES: Partial<Record<DType, [number, number]>> = { int32: [-(2 ** 31), 2 ** 31 - 1], int8: [-128, 127], uint8: [0, 255] };

/**
 * A finite fill value an integer dtype cannot hold is an error, as in PyTorch (a tensor's values
 * wrap when stored; a scalar this far out is a mistake). NaN and ±∞ give 0, as every float-to-int cast does.
 */
function checkFillRange(op: string, v: number, dtype: DType): void {
  const range = INT_RANGES[dtype];
  if (range && Number.isFinite(v) && !(Math.trunc(v) >= range[0] && Math.trunc(v) <= range[1])) {
    throw new SinterError(op, `value ${v} cannot be converted to ${dtype} without overflow (its range is [${range[0]}, ${range[1]}])`);
  }
}

function filled(op: string, shape: readonly number[], fillValue: number | boolean, opts: CreateOptions): Tensor {
  checkShape(op, shape);
  if (typeof fillValue !== 'number' && typeof fillValue !== 'boolean') throw new SinterError(op, `fillValue must be a number or boolean, got ${typeof fillValue}`);
  const dtype = dtypeOf(op, opts, typeof fillValue === 'boolean' ? 'bool' : 'float32');
  checkFillRange(op, Number(fillValue), dtype);
  checkAllocation(op, shape, dtype, opts.device);
  const host = allocHost(dtype, numel(shape));
  host.fill(castValue(dtype, Number(fillValue)));
  return fromHost(op, host, shape, dtype, opts.device);
}

export function full(shape: readonly number[], fillValue: number | boolean, opts: CreateOptions = {}): Tensor {
  return filled('full', shape, fillValue, opts);
}

/** `zeros(2, 3)`, `zeros([2, 3], { dtype: 'int32' })`. */
export function zeros(...args: SizeAndOptions<CreateOptions>): Tensor {
  const [shape, opts] = parseSize('zeros', args);
  return filled('zeros', shape, 0, opts);
}
export function ones(...args: SizeAndOptions<CreateOptions>): Tensor {
  const [shape, opts] = parseSize('ones', args);
  return filled('ones', shape, 1, opts);
}
/** Like torch.empty; the values are zeros here. */
export function empty(...args: SizeAndOptions<CreateOptions>): Tensor {
  const [shape, opts] = parseSize('empty', args);
  return filled('empty', shape, 0, opts);
}

function likeOpts(t: Tensor, opts: CreateOptions): CreateOptions {
  return { dtype: opts.dtype ?? t.dtype, device: opts.device ?? t.device };
}
export function zerosLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  return full(t.shape, 0, likeOpts(t, opts));
}
export function onesLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  return full(t.shape, 1, likeOpts(t, opts));
}
export function fullLike(t: Tensor, fillValue: number | boolean, opts: CreateOptions = {}): Tensor {
  return full(t.shape, fillValue, likeOpts(t, opts));
}

/**
 * `arange(end)`, `arange(start, end, step?)`: values start, start+step, … below end. As in PyTorch,
 * integer arguments give int32 and any fractional one float32, unless `dtype` says otherwise.
 */
export function arange(...args: (number | CreateOptions)[]): Tensor {
  const opts = (typeof args[args.length - 1] === 'object' ? args.pop() : {}) as CreateOptions;
  const nums = args as number[];
  if (nums.length < 1 || nums.length > 3 || !nums.every((n) => typeof n === 'number' && Number.isFinite(n))) {
    throw new SinterError('arange', `expected arange(end) or arange(start, end, step?) with finite numbers, got (${nums.join(', ')})`);
  }
  const [start, end, step] = nums.length === 1 ? [0, nums[0]!, 1] : [nums[0]!, nums[1]!, nums[2] ?? 1];
  if (step === 0) throw new SinterError('arange', 'step must be nonzero');
  if ((end - start) / step < 0) throw new SinterError('arange', `upper bound and step are inconsistent: start ${start}, end ${end}, step ${step}`);
  const n = Math.ceil((end - start) / step);
  const dtype = dtypeOf('arange', opts, nums.every(Number.isInteger) ? 'int32' : 'float32');
  checkAllocation('arange', [n], dtype, opts.device);
  const host = allocHost(dtype, n);
  for (let i = 0; i < n; i++) host[i] = castValue(dtype, start + i * step);
  return fromHost('arange', host, [n], dtype, opts.device);
}

/** `steps` evenly spaced values from start to end inclusive (computed from both ends, as PyTorch does). */
export function linspace(start: number, end: number, steps: number, opts: CreateOptions = {}): Tensor {
  if (!Number.isInteger(steps) || steps < 0) throw new SinterError('linspace', `steps must be a non-negative integer, got ${steps}`);
  const dtype = dtypeOf('linspace', opts, 'float32');
  checkAllocation('linspace', [steps], dtype, opts.device);
  const host = allocHost(dtype, steps);
  const step = steps > 1 ? (end - start) / (steps - 1) : 0;
  const half = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) host[i] = castValue(dtype, i < half || steps === 1 ? start + i * step : end - (steps - 1 - i) * step);
  return fromHost('linspace', host, [steps], dtype, opts.device);
}

/** The n×m identity (m defaults to n). */
export function eye(n: number, m: number | CreateOptions = n, opts: CreateOptions = {}): Tensor {
  if (typeof m === 'object') [m, opts] = [n, m];
  for (const v of [n, m]) if (!Number.isInteger(v) || v < 0) throw new SinterError('eye', `sizes must be non-negative integers, got n=${n}, m=${m}`);
  const dtype = dtypeOf('eye', opts, 'float32');
  checkAllocation('eye', [n, m], dtype, opts.device);
  const host = allocHost(dtype, n * m);
  for (let i = 0; i < Math.min(n, m); i++) host[i * m + i] = 1;
  return fromHost('eye', host, [n, m], dtype, opts.device);
}

function generatorFor(opts: RandomOptions): Generator {
  if (opts.seed !== undefined) {
    if (!Number.isFinite(opts.seed)) throw new SinterError('random', `seed must be a finite number, got ${opts.seed}`);
    return new Generator(opts.seed);
  }
  return opts.generator ?? defaultGenerator;
}

function randomTensor(op: string, shape: number[], opts: RandomOptions, draw: (g: Generator) => number, fallback: DType): Tensor {
  const dtype = dtypeOf(op, opts, fallback);
  checkAllocation(op, shape, dtype, opts.device);
  const g = generatorFor(opts);
  const trace = activeTrace();
  if (trace && opts.seed === undefined) {
    // Under jit, a draw from a generator is a graph node drawing fresh values on every call, in the
    // order the traced code drew them (a call with its own `seed` gives the same values each time: a constant).
    const device = resolveDevice(op, opts.device);
    return trace.random(op, shape, dtype, device, () => randomTensor(op, shape, { dtype, device, generator: g }, draw, fallback));
  }
  const host = allocHost(dtype, numel(shape));
  for (let i = 0; i < host.length; i++) host[i] = castValue(dtype, draw(g));
  return fromHost(op, host, shape, dtype, opts.device);
}

/** Uniform in [0, 1): `rand(2, 3, { seed: 0 })`. */
export function rand(...args: SizeAndOptions<RandomOptions>): Tensor {
  const [shape, opts] = parseSize('rand', args);
  return randomTensor('rand', shape, opts, (g) => g.uniform(), 'float32');
}
/** Standard normal: `randn([2, 3], { seed: 0 })`. */
export function randn(...args: SizeAndOptions<RandomOptions>): Tensor {
  const [shape, opts] = parseSize('randn', args);
  return randomTensor('randn', shape, opts, (g) => g.normal(), 'float32');
}
/** Integers in [low, high): `randint(low, high, shape, opts)` or `randint(high, shape, opts)`; int32 by default. */
export function randint(...args: (number | readonly number[] | RandomOptions)[]): Tensor {
  const opts = (typeof args[args.length - 1] === 'object' && !Array.isArray(args[args.length - 1]) ? args.pop() : {}) as RandomOptions;
  const shape = args.pop();
  const [low, high] = args.length === 1 ? [0, args[0] as number] : [args[0] as number, args[1] as number];
  if (!Array.isArray(shape) || !Number.isInteger(low) || !Number.isInteger(high) || high <= low) {
    throw new SinterError('randint', `expected randint(low?, high, shape) with integers low < high, got low=${low}, high=${high}, shape=${JSON.stringify(shape)}`);
  }
  return randomTensor('randint', checkShape('randint', shape), opts, (g) => g.integer(low, high), 'int32');
}
export function randLike(t: Tensor, opts: RandomOptions = {}): Tensor {
  return rand(t.shape, { ...likeOpts(t, opts), seed: opts.seed, generator: opts.generator });
}
export function randnLike(t: Tensor, opts: RandomOptions = {}): Tensor {
  return randn(t.shape, { ...likeOpts(t, opts), seed: opts.seed, generator: opts.generator });
}
