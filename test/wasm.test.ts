import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { type CpuKernels, cpuKernels, setCpuKernels } from '../src/backend/cpu.js';
import { kernelOverrides } from '../src/kernels/cpu/gemm.js';
import { ModuleBuilder, hasSimd } from '../src/kernels/wasm/emitter.js';
import { WASM_GEMM } from '../src/kernels/wasm/gemm.js';
import { TOLERANCES, broadcastShapesArb, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { expectClose } from './helpers.js';
import { ref, refOf } from './reference/core.js';
import { type ProductRef, accumulationAtol, linearRef, matmulRef } from './reference/linalg.js';
import { conv2dRef } from './reference/conv.js';

// The WebAssembly CPU kernels (src/kernels/wasm/) against the float64 references, and the same
// properties on the JavaScript reference path. float32 tolerance: the output's rounding (TOLERANCES.cpu)
// plus k·2⁻²⁴·Σ|a·b| for float32 accumulation over k products (accumulationAtol).

const PATHS: CpuKernels[] = ['wasm', 'js'];
const initial = cpuKernels();
afterEach(() => void setCpuKernels(initial));

/** Runs `fn` on one CPU kernel path and checks the wasm forms really ran (or really did not). */
async function onPath(kind: CpuKernels, fn: () => Promise<void>): Promise<void> {
  expect(setCpuKernels(kind)).toBe(kind);
  let ran = 0;
  for (const name of ['gemm', 'conv2d'] as const) {
    const form = kernelOverrides[name] as ((...args: unknown[]) => boolean) | undefined;
    if (form) (kernelOverrides as Record<string, unknown>)[name] = (...args: unknown[]) => (form(...args) ? (ran++, true) : false);
  }
  await fn();
  if (kind === 'wasm') expect(ran, 'wasm kernel calls').toBeGreaterThan(0);
  else expect(ran).toBe(0);
}

async function expectProduct(t: Tensor, r: ProductRef, k: number, what?: string): Promise<void> {
  await expectClose(t, r.out, { dtype: 'float32', what, tol: { atol: TOLERANCES.cpu.float32.atol + accumulationAtol(k, r.mag) } });
}

const int = (min: number, max: number) => fc.integer({ min, max });

describe('the WebAssembly emitter', () => {
  it('builds modules that validate and run: loops, blocks, branches, locals, i32/f32 ops, loads and stores', () => {
    const m = new ModuleBuilder();
    // sumTo(n): Σ_{i<n} i, skipping multiples of 3 (a `br` to the loop body's end), as f32.
    m.func('sumTo', ['i32'], ['f32'], (c) => {
      const i = c.local('i32'), s = c.local('f32');
      c.forRange(i, () => c.i32(0), () => c.get(0), 1, (next) => {
        c.get(i).i32(3).op('i32.rem_s', 'i32.eqz').brIf(next);
        c.get(s).get(i).op('f32.convert_i32_s', 'f32.add').set(s);
      });
      c.get(s);
    });
    // axpy(x, y, n, a): y[i] += a·x[i], four lanes at a time then one, with v128 and f32 loads at offsets.
    m.func('axpy', ['i32', 'i32', 'i32', 'f32'], [], (c) => {
      const i = c.local('i32'), av = c.local('v128');
      c.get(3).simd('f32x4.splat').set(av);
      c.forRange(i, () => c.i32(0), () => c.get(2).i32(-4).op('i32.and'), 4, () => {
        c.get(1).get(i).i32(2).op('i32.shl', 'i32.add');
        c.get(1).get(i).i32(2).op('i32.shl', 'i32.add').mem('v128.load');
        c.get(0).get(i).i32(2).op('i32.shl', 'i32.add').mem('v128.load').get(av).simd('f32x4.mul', 'f32x4.add').mem('v128.store');
      });
      c.forRange(i, () => c.get(2).i32(-4).op('i32.and'), () => c.get(2), 1, () => {
        c.get(1).get(i).i32(2).op('i32.shl', 'i32.add');
        c.get(1).get(i).i32(2).op('i32.shl', 'i32.add').mem('f32.load');
        c.get(0).get(i).i32(2).op('i32.shl', 'i32.add').mem('f32.load').get(3).op('f32.mul', 'f32.add').mem('f32.store');
      });
    });
    const bytes = m.build();
    expect(WebAssembly.validate(bytes)).toBe(true);
    const memory = new WebAssembly.Memory({ initial: 1 });
    const x = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports as {
      sumTo(n: number): number;
      axpy(x: number, y: number, n: number, a: number): void;
    };
    expect(x.sumTo(10)).toBe(1 + 2 + 4 + 5 + 7 + 8);
    expect(x.sumTo(0)).toBe(0);
    const f = new Float32Array(memory.buffer);
    const n = 7;
    for (let i = 0; i < n; i++) { f[i] = i; f[64 + i] = 100 * i; }
    x.axpy(0, 256, n, 0.5);
    expect([...f.subarray(64, 64 + n)]).toEqual([0, 100.5, 201, 301.5, 402, 502.5, 603]);
  });

  it('rejects a branch to a label that is not open, and detects SIMD128 by validation', () => {
    const m = new ModuleBuilder();
    let outer: symbol | undefined;
    m.func('ok', [], [], (c) => c.block((l) => void (outer = l)));
    expect(() => m.func('bad', [], [], (c) => void c.br(outer!))).toThrow(/not open/);
    expect(hasSimd()).toBe(true); // Node ≥ 16 validates SIMD128
  });
});

const { mr: MR, nr: NR, kc: KC, mc: MC, nc: NC } = WASM_GEMM;

/** m, n, k across the micro-kernel's row (MR), column (NR) and k-unroll tails, with broadcast batch dims and 1-D operands. */
const productArb = fc
  .record({ m: int(1, 3 * MR + 1), n: int(1, 2 * NR + 3), k: int(1, 11), batch: broadcastShapesArb(2, { maxRank: 2, maxDim: 3 }), aVec: fc.boolean(), bVec: fc.boolean() })
  .chain(({ m, n, k, batch: [, ba, bb], aVec, bVec }) =>
    fc.tuple(fc.constant(k), tensorCaseArb(aVec && m === 1 ? [k] : [...ba!, m, k]), tensorCaseArb(bVec && n === 1 ? [k] : [...bb!, k, n])));

describe.each(PATHS)('float32 GEMM ops on the %s CPU path', (kind) => {
  it('matmul matches the float64 reference (micro-kernel tails, batch broadcast, 1-D operands, strided views)', async () => {
    await onPath(kind, async () => {
      await fc.assert(
        fc.asyncProperty(productArb, async ([k, ca, cb]) => {
          const a = makeTensor(ca, 'cpu'), b = makeTensor(cb, 'cpu'), y = sn.matmul(a, b);
          await expectProduct(y, matmulRef(refOf(ca), refOf(cb)), k);
          for (const t of [a, b, y]) t.dispose();
        }),
        propertyConfig({ numRuns: 40 }),
      );
    });
  });

  it('matmul crosses every cache block (k > kc, m > mc, n > nc) on transposed operands', async () => {
    await onPath(kind, async () => {
      const [m, n, k] = [MC + MR + 1, NC + NR + 3, KC + 5];
      const a = sn.randn([k, m], { seed: 1 }).t(), b = sn.randn([n, k], { seed: 2 }).t();
      const expected = matmulRef(ref([m, k], await a.contiguous().data()), ref([k, n], await b.contiguous().data()));
      await expectProduct(sn.matmul(a, b), expected, k);
    });
  });

  it('linear with and without bias matches the float64 reference (leading dims, strided views)', async () => {
    const arb = fc
      .record({ lead: fc.array(int(1, 3), { maxLength: 2 }), inF: int(1, 13), outF: int(1, 2 * NR + 1), bias: fc.boolean() })
      .chain(({ lead, inF, outF, bias }) =>
        fc.tuple(fc.constant(inF), tensorCaseArb([...lead, inF]), tensorCaseArb([outF, inF]), bias ? tensorCaseArb([outF]) : fc.constant(null)));
    await onPath(kind, async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([inF, cx, cw, cb]) => {
          const x = makeTensor(cx, 'cpu'), w = makeTensor(cw, 'cpu'), b = cb ? makeTensor(cb, 'cpu') : null;
          const y = sn.linear(x, w, b);
          await expectProduct(y, linearRef(refOf(cx), refOf(cw), cb ? refOf(cb) : null), inF);
          for (const t of [x, w, b, y]) t?.dispose();
        }),
        propertyConfig({ numRuns: 30 }),
      );
    });
  });

  it('conv2d matches the float64 reference (groups, stride, dilation, padding, wide rows, strided views)', async () => {
    const arb = fc
      .record({
        n: int(1, 2), groups: int(1, 2), cg: int(2, 3), og: int(1, MR + 2), kh: int(1, 3), kw: int(1, 3),
        stride: fc.tuple(int(1, 2), int(1, 2)), dilation: fc.tuple(int(1, 2), int(1, 2)), pad: fc.tuple(int(0, 2), int(0, 2)),
        extra: fc.tuple(int(0, 3), int(0, 2 * NR + 2)),
      })
      .chain((p) => {
        const [H, W] = [p.kh, p.kw].map((k, d) => Math.max(1, p.dilation[d]! * (k - 1) + 1 - 2 * p.pad[d]!) + p.extra[d]!) as [number, number];
        const opts = { stride: p.stride, padding: p.pad, dilation: p.dilation, groups: p.groups };
        return fc.tuple(fc.constant(opts), tensorCaseArb([p.n, p.cg * p.groups, H, W]), tensorCaseArb([p.og * p.groups, p.cg, p.kh, p.kw]), fc.option(tensorCaseArb([p.og * p.groups]), { nil: null }));
      });
    await onPath(kind, async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([o, cx, cw, cb]) => {
          const x = makeTensor(cx, 'cpu'), w = makeTensor(cw, 'cpu'), b = cb ? makeTensor(cb, 'cpu') : null;
          const y = sn.conv2d(x, w, b, o);
          await expectProduct(y, conv2dRef(refOf(cx), refOf(cw), cb ? refOf(cb) : null, o), cw.shape[1]! * cw.shape[2]! * cw.shape[3]!);
          for (const t of [x, w, b, y]) t?.dispose();
        }),
        propertyConfig({ numRuns: 30 }),
      );
    });
  });
});
