import { SinterError } from '../errors.js';
import { type DType, floatResult, promoteTypes, promoteWithScalar } from '../tensor/dtype.js';
import { broadcastShapes } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { mapKernel } from '../kernels/cpu/map.js';
import { convert } from '../kernels/wgsl/dtype.js';
import { mapKernel as mapKernelWgsl } from '../kernels/wgsl/map.js';
import { type Expr, call, cast, constant, input } from './expr.js';
import { apply1, checkInputs, defineOp } from './op.js';
import { autocastInputs } from '../quant/autocast.js';

/**
 * What a WGSL form knows of its node. Arguments arrive in their dtypes' compute types (f32 for
 * floats, i32 for ints and bool as 0/1); the form returns a value of the compute type of `out`,
 * which the generator then rounds to `out` (binary16 rounding, int8/uint8 wrapping, bool to 0/1).
 * WGSL's untyped literals (`0`, `0.5`) adapt to either type; typed ones come from `lit`.
 */
export interface WgslTypes {
  readonly args: readonly DType[];
  readonly out: DType;
  /** A literal of the first argument's compute type (for params; ±∞ saturates for ints). */
  lit(v: number): string;
  /**
   * Float arguments arrive as f16, not f32 (functions flagged `f16`, in kernels computing float16
   * natively): call the f16 forms of the `sn_*` helpers (`sn_max_h`…).
   */
  readonly half?: boolean;
}

/** What a JS form knows of its node: its arguments' dtypes and its result's (ints need Math.imul, not `*`). */
export interface JsTypes {
  readonly args: readonly DType[];
  readonly out: DType;
  /**
   * A param as the generated code reads it: the name of a kernel argument, so one function serves every
   * value (as WGSL's `lit` reads the parameter block). Branching on a param's value at render time is
   * fine: the generated source, which the CPU caches by, then differs.
   */
  lit(v: number): string;
}

/**
 * How an elementwise function is computed: `js` and `wgsl` get argument expressions and the
 * node's numeric params. Helpers the WGSL may call are in src/kernels/wgsl/prelude.ts; the JS may
 * call those of `H` in src/kernels/cpu/map.ts. Integer results wrap modulo 2³² as in C (the JS
 * form's double is cast exactly, so it must stay exact: products of int32 go through Math.imul).
 */
export interface ElementwiseFn {
  readonly arity: number;
  /**
   * Its WGSL form is also valid for f16 arguments (operators, untyped or `t.lit` literals, built-ins
   * with f16 overloads; no f32-only `sn_*` helper, no 32-bit bitcast) and exact or correctly rounded
   * there, as binary16 rounding of the CPU's double result is: on adapters with shader-f16, elementwise
   * kernels compute it in f16. Without the flag, float16 arguments are widened to f32 and the result
   * rounded back (src/kernels/wgsl/map.ts).
   */
  readonly f16?: boolean;
  readonly js: (args: readonly string[], params: readonly number[], types: JsTypes) => string;
  readonly wgsl: (args: readonly string[], params: readonly number[], types: WgslTypes) => string;
}

/** Every elementwise function by name: what `Expr` call nodes refer to. Filled by `defineElementwise`. */
export const ELEMENTWISE = new Map<string, ElementwiseFn>();

export function defineElementwise(name: string, fn: ElementwiseFn): void {
  if (ELEMENTWISE.has(name)) throw new Error(`elementwise function '${name}' defined twice`);
  ELEMENTWISE.set(name, fn);
}

defineElementwise('cast', { arity: 1, js: ([x]) => x!, wgsl: ([x], _, t) => convert(t.args[0]!, t.out, x!) });

/** The one op every elementwise computation runs as: an expression over broadcast inputs. */
export const mapOp = defineOp<{ expr: Expr; name: string }>({
  name: 'map',
  label: ({ name }) => name,
  infer(inputs, { expr, name }) {
    return [{ shape: broadcastShapes(name, ...inputs.map((t) => t.shape)), dtype: expr.dtype }];
  },
  cpu(inputs, { expr }, [out]) {
    mapKernel(expr, inputs, out!);
  },
  webgpu(inputs, { expr, name }, [out], caps) {
    return mapKernelWgsl(expr, inputs, out!, caps, name);
  },
});

/** Runs `expr` over `inputs` (broadcast together); `name` is the op users called, for errors. */
export function map(name: string, inputs: readonly Tensor[], expr: Expr): Tensor {
  checkInputs(name, inputs);
  return apply1(mapOp, inputs, { expr, name });
}

export type Scalar = number | boolean;
export type TensorOrScalar = Tensor | Scalar;

export type DTypeRule = 'same' | 'float' | 'bool';

function resultDType(rule: DTypeRule, d: DType): DType {
  return rule === 'same' ? d : rule === 'float' ? floatResult(d) : 'bool';
}

/** An elementwise function of one tensor: computed in `floatResult(dtype)` for 'float' ops. */
export function unary(name: string, x: Tensor, rule: DTypeRule, params: readonly number[] = []): Tensor {
  checkInputs(name, [x]);
  [x] = autocastInputs(name, [x]);
  const computeIn = rule === 'float' ? floatResult(x.dtype) : x.dtype;
  return map(name, [x], call(name, [cast(input(0, x.dtype), computeIn)], resultDType(rule, computeIn), params));
}

/**
 * An elementwise function of two operands with PyTorch's type promotion (a number on either side
 * is a scalar that only promotes across categories). `rule` maps the promoted dtype to the result.
 */
export function binary(name: string, a: TensorOrScalar, b: TensorOrScalar, rule: DTypeRule | ((promoted: DType) => DType), params: readonly number[] = []): Tensor {
  const ta = a instanceof Tensor, tb = b instanceof Tensor;
  for (const v of [a, b]) {
    if (!(v instanceof Tensor) && typeof v !== 'number' && typeof v !== 'boolean') {
      if (typeof v === 'object' && v !== null && 'dtype' in v) checkInputs(name, [v]); // says which dtype (e.g. a quantised tensor)
      throw new SinterError(name, `operands must be Tensors or numbers, got ${v === null ? 'null' : typeof v}`);
    }
  }
  if (!ta && !tb) throw new SinterError(name, 'expected at least one Tensor operand, got two numbers');
  checkInputs(name, [a, b].filter((v): v is Tensor => v instanceof Tensor));
  [a, b] = autocastInputs(name, [a, b]);
  const tensors = [a, b].filter((v): v is Tensor => v instanceof Tensor);
  const promoted = ta && tb ? promoteTypes((a as Tensor).dtype, (b as Tensor).dtype) : ta ? promoteWithScalar((a as Tensor).dtype, b as Scalar) : promoteWithScalar((b as Tensor).dtype, a as Scalar);
  const computeIn = rule === 'float' ? floatResult(promoted) : promoted;
  let next = 0;
  const operand = (v: TensorOrScalar): Expr => (v instanceof Tensor ? cast(input(next++, v.dtype), computeIn) : constant(Number(v), computeIn));
  const args = [operand(a), operand(b)];
  const out = typeof rule === 'function' ? rule(computeIn) : resultDType(rule, computeIn);
  return map(name, tensors, call(name, args, out, params));
}
