import { SinterError } from '../errors.js';
import { broadcastShapes, sameShape } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { tidy } from '../tensor/scope.js';
import { add, mul } from './binary.js';
import { bmm, mm } from './linalg.js';
import { checkInputs } from './op.js';
import { autocastInputs } from '../quant/autocast.js';
import { unsqueeze } from './views.js';

// Products that PyTorch names separately: outer, and the matmuls with an added term (addmm, baddbmm).

/** a ⊗ b: out[i][j] = a[i]·b[j] for 1-D a and b. */
export function outer(a: Tensor, b: Tensor): Tensor {
  checkInputs('outer', [a, b]);
  if (a.ndim !== 1 || b.ndim !== 1) throw new SinterError('outer', `expects two 1-D tensors, got ${a.describe()} and ${b.describe()}`);
  return tidy(() => mul(unsqueeze(a, 1), unsqueeze(b, 0)));
}

export interface AddmmOptions {
  /** Scales `input` (default 1; 0 ignores it, NaN and ∞ included, as in PyTorch). */
  beta?: number;
  /** Scales the product (default 1). */
  alpha?: number;
}

function scaledSum(op: string, input: Tensor, product: () => Tensor, opts: AddmmOptions): Tensor {
  const beta = opts.beta ?? 1, alpha = opts.alpha ?? 1;
  for (const [k, v] of [['beta', beta], ['alpha', alpha]] as const) if (typeof v !== 'number') throw new SinterError(op, `${k} must be a number, got ${JSON.stringify(v)}`);
  return tidy(() => {
    const p = alpha === 1 ? product() : mul(product(), alpha);
    const shape = broadcastShapes(op, input.shape, p.shape);
    if (!sameShape(shape, p.shape)) throw new SinterError(op, `input ${input.describe()} must broadcast to the product's shape [${p.shape.join(', ')}]`);
    if (beta === 0) return p;
    return add(beta === 1 ? input : mul(input, beta), p);
  });
}

/** β·input + α·(m1 @ m2) for matrices m1 [n, k], m2 [k, m]; input broadcasts to [n, m]. */
export function addmm(input: Tensor, m1: Tensor, m2: Tensor, opts: AddmmOptions = {}): Tensor {
  checkInputs('addmm', [input, m1, m2]);
  [input, m1, m2] = autocastInputs('addmm', [input, m1, m2]);
  return scaledSum('addmm', input, () => mm(m1, m2), opts);
}
/** β·input + α·(b1 @ b2) for batches b1 [B, n, k], b2 [B, k, m]; input broadcasts to [B, n, m]. */
export function baddbmm(input: Tensor, b1: Tensor, b2: Tensor, opts: AddmmOptions = {}): Tensor {
  checkInputs('baddbmm', [input, b1, b2]);
  [input, b1, b2] = autocastInputs('baddbmm', [input, b1, b2]);
  return scaledSum('baddbmm', input, () => bmm(b1, b2), opts);
}

declare module '../tensor/tensor.js' {
  interface Tensor {
    outer(other: Tensor): Tensor;
    addmm(m1: Tensor, m2: Tensor, opts?: AddmmOptions): Tensor;
    baddbmm(b1: Tensor, b2: Tensor, opts?: AddmmOptions): Tensor;
  }
}

Object.assign(Tensor.prototype, {
  outer(this: Tensor, other: Tensor) { return outer(this, other); },
  addmm(this: Tensor, m1: Tensor, m2: Tensor, opts?: AddmmOptions) { return addmm(this, m1, m2, opts); },
  baddbmm(this: Tensor, b1: Tensor, b2: Tensor, opts?: AddmmOptions) { return baddbmm(this, b1, b2, opts); },
});
