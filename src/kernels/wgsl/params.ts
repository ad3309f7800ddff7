import { castValue } from '../../tensor/dtype.js';
import type { WgslScalar } from './dtype.js';

/*
 * Per-call values as kernel parameters. A value that changes from call to call (a scalar operand,
 * an activation's slope, a view's offset) is read from a uniform block instead of being written into
 * the WGSL source, so one compiled pipeline serves every value: `x.mul(s)` for a thousand different
 * `s` compiles one pipeline. The block is @group(1) @binding(0), bound at a dynamic offset (each
 * dispatch's own block in one shared buffer); kernels without parameters have no @group(1).
 */

/** Words one block holds at most: 256 bytes, the alignment of dynamic uniform offsets on every device. */
export const PARAM_BLOCK_WORDS = 64;
/** Bytes of a block as bound. */
export const PARAM_BLOCK_BYTES = PARAM_BLOCK_WORDS * 4;

const DECLARATION = 'var<uniform> sn_params';

/** Whether a kernel's source reads a parameter block (then its pipeline has the @group(1) layout). */
export function usesParams(source: string): boolean {
  return source.includes(DECLARATION);
}

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/**
 * The parameter block of one kernel being generated: each `scalar`/`u32` call appends a word and
 * returns the WGSL expression reading it. Past PARAM_BLOCK_WORDS, values become literals again
 * (still correct; only such kernels are compiled per value).
 */
export class KernelParams {
  private readonly values: number[] = [];

  /** A value of WGSL type `t` (as `literal` writes it: floats rounded to f32, ints wrap like an int32 cast, ±∞ saturates). */
  scalar(v: number, t: WgslScalar, literal: (v: number, t: WgslScalar) => string): string {
    if (this.values.length >= PARAM_BLOCK_WORDS) return literal(v, t);
    if (t === 'f32') {
      f32[0] = v;
      return `bitcast<f32>(${this.word(f32Bits[0]!)})`;
    }
    const i = v === Infinity ? 2147483647 : v === -Infinity ? -2147483648 : castValue('int32', v);
    return `bitcast<i32>(${this.word(i >>> 0)})`;
  }

  /** A u32 (an offset or index), as an expression. */
  u32(v: number): string {
    if (this.values.length >= PARAM_BLOCK_WORDS) return `${v}u`;
    return this.word(v >>> 0);
  }

  private word(bits: number): string {
    const i = this.values.length;
    this.values.push(bits);
    return `sn_params[${i >> 2}].${'xyzw'[i & 3]}`;
  }

  /** The block's declaration for the module ('' when no value was read from it). */
  declaration(): string {
    if (this.values.length === 0) return '';
    return `@group(1) @binding(0) ${DECLARATION}: array<vec4<u32>, ${Math.ceil(this.values.length / 4)}>;`;
  }

  /**
   * `statements` (a kernel's body) with each parameter they read loaded once, into a local declared
   * ahead of them: SwiftShader's shader compiler loads a uniform again at every use, inside loops too
   * (a convolution's k loop read its strides and bounds once per step).
   */
  hoist(statements: string): string {
    const read = new Map<string, string>();
    const body = statements.replace(/sn_params\[(\d+)\]\.([xyzw])/g, (use, i: string, c: string) => {
      const name = `sn_p${Number(i) * 4 + 'xyzw'.indexOf(c)}`;
      read.set(name, use);
      return name;
    });
    const lets = [...read].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true })).map(([name, use]) => `let ${name} = ${use};`);
    return [...lets, body].join('\n  ');
  }

  /** The words to upload, or undefined when the kernel has no parameters. */
  words(): Uint32Array<ArrayBuffer> | undefined {
    return this.values.length ? Uint32Array.from(this.values) : undefined;
  }
}
