import { SinterError, check } from '../errors.js';
import { normDim } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { eye } from '../tensor/creation.js';
import { tidy } from '../tensor/scope.js';
import { where } from './binary.js';
import { type DiagonalOptions, diagonal } from './einsum.js';
import { cat, pad } from './movement.js';
import { checkInputs } from './op.js';
import { clone, flatten, narrow, permute, reshape, squeeze, unsqueeze } from './views.js';

// Rearranging elements: picking one index (select, unbind), rotating (roll), diagonals (diag) and
// moving channels into space and back (pixelShuffle, pixelUnshuffle). Views wherever strides allow.

/** The slice at `index` along `dim` (negative counts from the end), that dim removed: a view. */
export function select(x: Tensor, dim: number, index: number): Tensor {
  checkInputs('select', [x]);
  const d = normDim('select', dim, x.ndim), n = x.shape[d]!;
  if (!Number.isInteger(index) || index < -n || index >= n) throw new SinterError('select', `index ${index} is out of range for dim ${dim} of size ${n} in ${x.describe()}`);
  const part = narrow(x, d, index < 0 ? index + n : index, 1);
  const out = squeeze(part, d);
  part.dispose();
  return out;
}

/** Every slice along `dim` (default 0), that dim removed: views, as torch.unbind. */
export function unbind(x: Tensor, dim = 0): Tensor[] {
  checkInputs('unbind', [x]);
  const d = normDim('unbind', dim, x.ndim);
  return Array.from({ length: x.shape[d]! }, (_, i) => select(x, d, i));
}

/**
 * Rotates elements along `dims` by `shifts` (elements pushed past the end come back at the start),
 * as torch.roll; without dims the flattened tensor rolls and keeps its shape.
 */
export function roll(x: Tensor, shifts: number | readonly number[], dims?: number | readonly number[] | null): Tensor {
  checkInputs('roll', [x]);
  const s = typeof shifts === 'number' ? [shifts] : [...shifts];
  if (s.some((v) => !Number.isInteger(v))) throw new SinterError('roll', `shifts must be integers, got ${JSON.stringify(shifts)}`);
  if (dims === undefined || dims === null) {
    check(s.length === 1, 'roll', () => `without dims, shifts must be one number, got ${JSON.stringify(shifts)}`);
    return tidy(() => reshape(rollDim(flatten(x), s[0]!, 0), x.shape));
  }
  const ds = typeof dims === 'number' ? [dims] : [...dims];
  check(ds.length === s.length, 'roll', () => `shifts and dims must have the same length, got ${JSON.stringify(shifts)} and ${JSON.stringify(dims)}`);
  return tidy(() => ds.reduce((y, d, i) => rollDim(y, s[i]!, normDim('roll', d, x.ndim)), x));
}

function rollDim(x: Tensor, shift: number, dim: number): Tensor {
  const n = x.shape[dim]!;
  const k = n === 0 ? 0 : ((shift % n) + n) % n;
  if (k === 0) return clone(x);
  return cat([narrow(x, dim, n - k, k), narrow(x, dim, 0, n - k)], dim);
}

/**
 * torch.diag: a 1-D input becomes a square matrix with it on diagonal `diagonal` (0 the main one,
 * > 0 above, < 0 below); a 2-D input gives that diagonal of it as a new 1-D tensor.
 */
export function diag(x: Tensor, diagonal_ = 0): Tensor {
  checkInputs('diag', [x]);
  check(Number.isInteger(diagonal_), 'diag', () => `diagonal must be an integer, got ${JSON.stringify(diagonal_)}`);
  if (x.ndim === 2) {
    const view = diagonal(x, { offset: diagonal_ });
    const out = clone(view);
    view.dispose();
    return out;
  }
  check(x.ndim === 1, 'diag', () => `expects a 1-D or 2-D tensor, got ${x.describe()}`);
  const n = x.shape[0]!, k = Math.abs(diagonal_);
  return tidy(() => {
    // diag(v)[i][j] = v[j] where i = j (selected, so NaN stays on the diagonal), then padded so the diagonal moves off the main one.
    const square = where(eye(n, { dtype: 'bool', device: x.device }), unsqueeze(x, 0), x.dtype === 'bool' ? false : 0);
    return diagonal_ === 0 ? square : pad(square, diagonal_ > 0 ? [k, 0, 0, k] : [0, k, k, 0]);
  });
}

function checkFactor(op: string, r: unknown): number {
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw new SinterError(op, `the factor must be a positive integer, got ${JSON.stringify(r)}`);
  return r;
}

/** [..., C·r², H, W] → [..., C, H·r, W·r]: channels become r×r blocks of pixels, as torch.nn.functional.pixel_shuffle. */
export function pixelShuffle(x: Tensor, upscaleFactor: number): Tensor {
  checkInputs('pixelShuffle', [x]);
  const r = checkFactor('pixelShuffle', upscaleFactor);
  check(x.ndim >= 3 && x.shape[x.ndim - 3]! % (r * r) === 0, 'pixelShuffle', () => `expects [..., C·${r * r}, H, W] (channels divisible by the factor squared, ${r * r}), got ${x.describe()}`);
  const lead = x.shape.slice(0, -3), [c, h, w] = x.shape.slice(-3) as [number, number, number], b = lead.length;
  return tidy(() => {
    const split = reshape(x, [...lead, c / (r * r), r, r, h, w]);
    const moved = permute(split, [...lead.map((_, i) => i), b, b + 3, b + 1, b + 4, b + 2]);
    return reshape(moved, [...lead, c / (r * r), h * r, w * r]);
  });
}

/** The inverse of pixelShuffle: [..., C, H·r, W·r] → [..., C·r², H, W]. */
export function pixelUnshuffle(x: Tensor, downscaleFactor: number): Tensor {
  checkInputs('pixelUnshuffle', [x]);
  const r = checkFactor('pixelUnshuffle', downscaleFactor);
  check(x.ndim >= 3 && x.shape[x.ndim - 2]! % r === 0 && x.shape[x.ndim - 1]! % r === 0, 'pixelUnshuffle', () => `expects [..., C, H, W] with H and W divisible by ${r}, got ${x.describe()}`);
  const lead = x.shape.slice(0, -3), [c, h, w] = x.shape.slice(-3) as [number, number, number], b = lead.length;
  return tidy(() => {
    const split = reshape(x, [...lead, c, h / r, r, w / r, r]);
    const moved = permute(split, [...lead.map((_, i) => i), b, b + 2, b + 4, b + 1, b + 3]);
    return reshape(moved, [...lead, c * r * r, h / r, w / r]);
  });
}

declare module '../tensor/tensor.js' {
  interface Tensor {
    select(dim: number, index: number): Tensor;
    unbind(dim?: number): Tensor[];
    roll(shifts: number | readonly number[], dims?: number | readonly number[] | null): Tensor;
    diag(diagonal?: number): Tensor;
    diagonal(opts?: DiagonalOptions): Tensor;
  }
}

Object.assign(Tensor.prototype, {
  select(this: Tensor, dim: number, index: number) { return select(this, dim, index); },
  unbind(this: Tensor, dim?: number) { return unbind(this, dim); },
  roll(this: Tensor, shifts: number | readonly number[], dims?: number | readonly number[] | null) { return roll(this, shifts, dims); },
  diag(this: Tensor, d?: number) { return diag(this, d); },
  diagonal(this: Tensor, opts?: DiagonalOptions) { return diagonal(this, opts); },
});
