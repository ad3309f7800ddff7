import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { type CpuKernels, cpuKernels, setCpuKernels, setCpuThreads } from '../src/backend/cpu.js';
import { poolStats } from '../src/kernels/wasm/threads.js';
import { kernelOverrides } from '../src/kernels/cpu/overrides.js';
import { ModuleBuilder, hasSimd } from '../src/kernels/wasm/emitter.js';
import { WASM_GEMM } from '../src/kernels/wasm/gemm.js';
import { wasmMapCacheStats } from '../src/kernels/wasm/map.js';
import { TOLERANCES, broadcastShapesArb, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { expectClose } from './helpers.js';
import { castRef, mapRef, ref, refOf } from './reference/core.js';
import { type ProductRef, accumulationAtol, linearRef, matmulRef } from './reference/linalg.js';
import { conv2dRef } from './reference/conv.js';
import { batchNormRef } from './reference/norm.js';
import { interpolateRef } from './reference/interpolate.js';
import { flipRef, indexSelectRef, padRef, repeatRef } from './reference/movement.js';

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
  for (const name of ['gemm', 'conv2d', 'softmax', 'blockNorm', 'gatherSeparable'] as const) {
    const form = kernelOverrides[name] as ((...args: unknown[]) => boolean) | undefined;
    if (form) (kernelOverrides as Record<string, unknown>)[name] = (...args: unknown[]) => (form(...args) ? (ran++, true) : false);
  }
  const rendered = () => { const { hits, misses } = wasmMapCacheStats(); return hits + misses; };
  const before = rendered();
  await fn();
  ran += rendered() - before;
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

  it('runs forRange loops of no, one and many steps (steps past the bound, a start past it), and splatF32 constants in several functions', () => {
    const m = new ModuleBuilder();
    // count(from, to, step): how many times the body runs, as f32 · 0.5 + 0.25, with splatF32 constants (one of them used twice).
    m.func('count', ['i32', 'i32'], ['f32'], (c) => {
      const i = c.local('i32'), acc = c.local('v128');
      c.splatF32(0.25).set(acc);
      c.forRange(i, () => c.get(0), () => c.get(1), 3, () => void c.get(acc).splatF32(0.5).simd('f32x4.add').set(acc));
      c.get(acc).splatF32(0.25).simd('f32x4.mul').splatF32(4).simd('f32x4.mul').lane('f32x4.extract_lane', 2);
    });
    // lanes(): another function's constants (their own globals), lane by lane.
    m.func('lanes', [], ['f32'], (c) => {
      c.splatF32(-Infinity).lane('f32x4.extract_lane', 3).splatF32(1.5).lane('f32x4.extract_lane', 1).op('f32.max');
      c.splatF32(0.125).lane('f32x4.extract_lane', 0).op('f32.add');
    });
    const bytes = m.build();
    expect(WebAssembly.validate(bytes)).toBe(true);
    const x = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory: new WebAssembly.Memory({ initial: 1 }) } }).exports as {
      count(from: number, to: number): number;
      lanes(): number;
    };
    // Runs for i = from, from + 3, … while i < to.
    for (const [from, to] of [[0, 0], [5, 2], [0, 1], [0, 3], [0, 4], [-7, 8], [2, 11]] as const) {
      const runs = Math.max(0, Math.ceil((to - from) / 3));
      expect(x.count(from, to), `${from}..${to}`).toBe(runs * 0.5 + 0.25);
    }
    expect(x.lanes()).toBe(1.625);
    const y = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory: new WebAssembly.Memory({ initial: 1 }) } }).exports as { count(from: number, to: number): number };
    expect(y.count(0, 7)).toBe(3 * 0.5 + 0.25);
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

/** m, n, k across the micro-kernel's row (MR) and column (NR) tails, k from 1 (one step of the k loop), with broadcast batch dims and 1-D operands. */
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

describe.each(PATHS)('separable gathers on the %s CPU path', (kind) => {
  it('nearest interpolate, flip, repeat, constant pad and indexSelect match the float64 reference bit for bit (float32 and int32, strided views)', async () => {
    const arb = fc
      .record({ n: int(1, 2), c: int(1, 3), h: int(1, 5), w: int(1, 9), dtype: fc.constantFrom('float32' as const, 'int32' as const) })
      .chain((p) => fc.tuple(
        tensorCaseArb([p.n, p.c, p.h, p.w], { dtype: p.dtype }),
        // Output sizes: shrinking, ×1, growing by any amount (rows repeat unevenly), and exact ×2 / ×3.
        fc.oneof(fc.tuple(int(1, 2 * p.h + 1), int(1, 2 * p.w + 5)), fc.constantFrom(2, 3).map((f) => [f * p.h, f * p.w] as [number, number])),
        fc.subarray([0, 1, 2, 3], { minLength: 1 }),
        fc.tuple(int(1, 2), int(1, 2), int(1, 2), int(1, 3)),
        fc.tuple(int(0, 2), int(0, 5), int(0, 2), int(0, 2), int(-3, 3)),
        fc.tuple(int(0, 3), fc.array(int(0, 100), { minLength: 1, maxLength: 6 })),
      ));
    await onPath(kind, async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([cx, size, dims, reps, [pl, pr, pt, pb, value], [dim, picks]]) => {
          const x = makeTensor(cx, 'cpu'), r = refOf(cx), dtype = cx.dtype;
          const index = picks.map((p) => p % cx.shape[dim]!);
          const cases: [Tensor, ReturnType<typeof refOf>, string][] = [
            [sn.interpolate(x, size, { mode: 'nearest' }), interpolateRef(r, size, [null, null], 'nearest', false, dtype), `nearest → ${size}`],
            [sn.flip(x, dims), flipRef(r, dims), `flip ${dims}`],
            [sn.repeat(x, reps), repeatRef(r, reps), `repeat ${reps}`],
            [sn.pad(x, [pl, pr, pt, pb], { value }), padRef(r, [pl, pr, pt, pb], 'constant', value), `pad ${[pl, pr, pt, pb]} with ${value}`],
            [sn.indexSelect(x, dim, sn.tensor(index, { dtype: 'int32' })), indexSelectRef(r, dim, index), `indexSelect ${dim} ${index}`],
          ];
          for (const [y, want, what] of cases) {
            expect(y.shape, what).toEqual(want.shape);
            expect(Array.from(await y.data()), what).toEqual(Array.from(want.data));
            y.dispose();
          }
          x.dispose();
        }),
        propertyConfig({ numRuns: 40 }),
      );
    });
  });
});

/** Every function with a wasm rendering, through its public op, with a float64 reference. */
const ELEMENTWISE: { name: string; run: (x: Tensor) => Tensor; ref: (x: number) => number }[] = [
  { name: 'neg', run: sn.neg, ref: (x) => -x },
  { name: 'abs', run: sn.abs, ref: Math.abs },
  { name: 'sqrt', run: (x) => sn.sqrt(sn.abs(x)), ref: (x) => Math.sqrt(Math.abs(x)) },
  { name: 'rsqrt', run: (x) => sn.rsqrt(sn.abs(x)), ref: (x) => 1 / Math.sqrt(Math.abs(x)) },
  { name: 'reciprocal', run: sn.reciprocal, ref: (x) => 1 / x },
  { name: 'floor', run: sn.floor, ref: Math.floor },
  { name: 'ceil', run: sn.ceil, ref: Math.ceil },
  { name: 'round', run: sn.round, ref: (x) => { const f = Math.floor(x), r = x - f; return r > 0.5 ? f + 1 : r < 0.5 ? f : f % 2 === 0 ? f : f + 1; } },
  { name: 'relu', run: sn.relu, ref: (x) => (x < 0 ? 0 : x) },
  { name: 'relu6', run: sn.relu6, ref: (x) => Math.min(Math.max(x, 0), 6) },
  { name: 'clamp', run: (x) => sn.clamp(x, -1.5, 0.25), ref: (x) => Math.min(Math.max(x, -1.5), 0.25) },
  { name: 'leakyRelu', run: (x) => sn.leakyRelu(x, { negativeSlope: 0.2 }), ref: (x) => (x > 0 ? x : 0.2 * x) },
  { name: 'hardSigmoid', run: sn.hardSigmoid, ref: (x) => Math.min(Math.max(x / 6 + 0.5, 0), 1) },
  { name: 'hardSwish', run: sn.hardSwish, ref: (x) => (x * Math.min(Math.max(x + 3, 0), 6)) / 6 },
  { name: 'exp', run: sn.exp, ref: Math.exp },
  { name: 'sigmoid', run: sn.sigmoid, ref: (x) => 1 / (1 + Math.exp(-x)) },
  { name: 'silu', run: sn.silu, ref: (x) => x / (1 + Math.exp(-x)) },
];

/** Values where the renderings' edge cases live: signed zeros, infinities, NaN, e^x's overflow and subnormal range, halves for round. */
const SPECIAL = [0, -0, Infinity, -Infinity, NaN, 88.5, 88.8, -87.5, -95, -103.9, -110, 2.5, -2.5, 0.5, 1e-30, -1e-30, 3e38, -3e38];

describe.each(PATHS)('float32 elementwise ops on the %s CPU path', (kind) => {
  it.each(ELEMENTWISE)('$name matches the float64 reference (odd sizes, strided views, special values)', async ({ run, ref: f }) => {
    await onPath(kind, async () => {
      const special = sn.tensor(SPECIAL);
      await expectClose(run(special), mapRef([ref([SPECIAL.length], SPECIAL)], (v) => castRef('float32', f(v))));
      const arb = fc.array(int(1, 9), { minLength: 1, maxLength: 3 }).chain((shape) => tensorCaseArb(shape, { min: -100, max: 100 }));
      await fc.assert(
        fc.asyncProperty(arb, async (c) => {
          const x = makeTensor(c, 'cpu'), y = run(x);
          await expectClose(y, mapRef([refOf(c)], (v) => castRef('float32', f(v))));
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: 15 }),
      );
    });
  });

  it('clamp gives what JS gives bit for bit at signed zeros, NaN and infinite values, with zero, infinite or NaN bounds', async () => {
    const xs = [0, -0, NaN, Infinity, -Infinity, 1, -1, 7, -7, 1e-40, -1e-40];
    const bounds = [[0, 6], [-Infinity, 0], [0, Infinity], [NaN, 1], [1, NaN], [-2, 3]];
    await onPath(kind, async () => {
      const x = sn.tensor(xs);
      for (const [lo, hi] of bounds) {
        const y = await sn.clamp(x, lo, hi).data(), want = xs.map((v) => Math.fround(Math.min(Math.max(Math.fround(v), lo!), hi!)));
        expect([...y].map((v) => (Object.is(v, -0) ? '-0' : String(v))), `clamp(x, ${lo}, ${hi})`).toEqual(want.map((v) => (Object.is(v, -0) ? '-0' : String(v))));
      }
      const r6 = await sn.relu6(x).data();
      expect(Object.is(r6[1], 0) && Number.isNaN(r6[2]!)).toBe(true);
    });
  });

  it('binary ops broadcast (stride-0 rows and columns, size-1 dims) and match the reference', async () => {
    const ops: [string, (a: Tensor, b: Tensor) => Tensor, (a: number, b: number) => number][] = [
      ['add', (a, b) => sn.add(a, b, { alpha: 0.5 }), (a, b) => a + 0.5 * b],
      ['sub', sn.sub, (a, b) => a - b],
      ['mul', sn.mul, (a, b) => a * b],
      ['div', sn.div, (a, b) => a / b],
      ['maximum', sn.maximum, Math.max],
      ['minimum', sn.minimum, Math.min],
    ];
    const arb = fc.tuple(fc.constantFrom(...ops), broadcastShapesArb(2, { maxRank: 3, maxDim: 9 }).chain(([, sa, sb]) => fc.tuple(tensorCaseArb(sa!), tensorCaseArb(sb!))));
    await onPath(kind, async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([[, run, f], [ca, cb]]) => {
          const a = makeTensor(ca, 'cpu'), b = makeTensor(cb, 'cpu'), y = run(a, b);
          await expectClose(y, mapRef([refOf(ca), refOf(cb)], (u, v) => castRef('float32', f(u, v))));
          for (const t of [a, b, y]) t.dispose();
        }),
        propertyConfig({ numRuns: 40 }),
      );
    });
  });

  it("runs the JIT's fused elementwise group and a matmul epilogue (the peer harness's eltwise chain)", async () => {
    const chain = (x: Tensor) => sn.sigmoid(sn.relu(x.mul(1.5).add(0.5)).sub(0.25)).mul(x);
    const chainRef = (x: number) => { const r = Math.fround(Math.max(Math.fround(Math.fround(1.5 * x) + 0.5), 0) - 0.25); return (1 / (1 + Math.exp(-r))) * x; };
    await onPath(kind, async () => {
      const x = sn.randn([3, 1001], { seed: 5 }), w = sn.randn([7, 3], { seed: 6 });
      const xs = ref(x.shape, await x.data());
      await expectClose(sn.jit(chain)(x), mapRef([xs], chainRef), { tol: { rtol: 1e-5 } });
      const fused = sn.jit((a: Tensor, b: Tensor) => sn.relu(sn.matmul(a, b)).mul(2));
      const product = matmulRef(ref(w.shape, await w.data()), xs);
      await expectClose(fused(w, x), mapRef([product.out], (v) => 2 * Math.max(v, 0)), { tol: { atol: 1e-5 } });
      if (kind !== 'wasm') return;
      // Each call of the plan hands the map kernel the same epilogue object (its per-expression caches hit), and the same result.
      const seen: unknown[] = [], map = kernelOverrides.map!;
      kernelOverrides.map = (expr, inputs, out) => (seen.push(expr), map(expr, inputs, out));
      try {
        const [y1, y2] = [fused(w, x), fused(w, x)];
        expect(Array.from(await y2.data())).toEqual(Array.from(await y1.data()));
      } finally {
        kernelOverrides.map = map;
      }
      expect(seen).toHaveLength(2);
      expect(seen[1]).toBe(seen[0]);
    });
  });
});

describe.each(PATHS)('float32 row kernels on the %s CPU path', (kind) => {
  // Short rows (every tail of the four-wide steps) and long ones (where float32 statistics would drift).
  const rowsArb = fc.tuple(fc.array(int(1, 3), { maxLength: 2 }), fc.oneof(int(1, 11), int(1000, 3000))).chain(([lead, n]) => tensorCaseArb([...lead, n], { min: -30, max: 30 }));

  it('softmax over the last dim matches the float64 reference (row tails, strided views, ±∞ and NaN rows)', async () => {
    const softmaxRef = (rows: number[][]) => rows.flatMap((r) => { const m = Math.max(...r), e = r.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0); return e.map((v) => v / s); });
    await onPath(kind, async () => {
      await fc.assert(
        fc.asyncProperty(rowsArb, async (c) => {
          const x = makeTensor(c, 'cpu'), y = sn.softmax(x, -1), n = c.shape[c.shape.length - 1]!, v = refOf(c).data;
          const rows = Array.from({ length: v.length / n }, (_, i) => Array.from(v.subarray(i * n, (i + 1) * n)));
          await expectClose(y, ref(c.shape, softmaxRef(rows)));
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: 30 }),
      );
      const special = [[1, -Infinity, 2, 0, 3], [Infinity, 0, 1, 2, 3], [NaN, 0, 1, 2, 3]];
      await expectClose(sn.softmax(sn.tensor(special), -1), ref([3, 5], softmaxRef(special)));
      // The max pass skips NaN (f32x4.pmax): the row must still come out NaN, from a full step or the tail.
      const I = Infinity;
      const nine = [[0, 1, 2, 3, 4, 5, 6, 7, NaN], [0, 1, NaN, 3, 4, 5, 6, 7, 8], [-I, -I, -I, -I, -I, -I, -I, -I, -I], [-I, -I, -I, -I, -I, -I, -I, -I, 2], [0, 1, 2, 3, 4, 5, I, 7, 8], [-90, 0, -200, 1, -87, 2, -88, 3, -1e30], [-100, -101, -102, -103, -104, -105, -106, -107, -100.5]];
      await expectClose(sn.softmax(sn.tensor(nine), -1), ref([7, 9], softmaxRef(nine)));
      const single = [[NaN], [5], [-I], [I]];
      await expectClose(sn.softmax(sn.tensor(single), -1), ref([4, 1], softmaxRef(single)));
    });
  });

  it('layerNorm over trailing dims matches the float64 reference (with and without weight and bias)', async () => {
    const arb = rowsArb.chain((c) => fc.tuple(fc.constant(c), fc.option(tensorCaseArb([c.shape[c.shape.length - 1]!]), { nil: null }), fc.option(tensorCaseArb([c.shape[c.shape.length - 1]!]), { nil: null })));
    await onPath(kind, async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([c, cw, cb]) => {
          const n = c.shape[c.shape.length - 1]!, x = makeTensor(c, 'cpu'), w = cw && makeTensor(cw, 'cpu'), b = cb && makeTensor(cb, 'cpu');
          const y = sn.layerNorm(x, [n], w, b, 1e-5);
          const v = refOf(c).data, wv = cw && refOf(cw).data, bv = cb && refOf(cb).data, out = new Float64Array(v.length);
          for (let r = 0; r < v.length / n; r++) {
            const row = v.subarray(r * n, (r + 1) * n), mean = row.reduce((a, b) => a + b, 0) / n;
            const rstd = 1 / Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / n + 1e-5);
            row.forEach((u, j) => (out[r * n + j] = (u - mean) * rstd * (wv ? wv[j]! : 1) + (bv ? bv[j]! : 0)));
          }
          await expectClose(y, ref(c.shape, out), { tol: { atol: 1e-5 } });
          for (const t of [x, w, b, y]) t?.dispose();
        }),
        propertyConfig({ numRuns: 30 }),
      );
    });
  });
  it('batchNorm (inference) matches the float64 reference (ranks 2-4, odd planes, strided views, with and without weight and bias)', async () => {
    // [N, C, ...spatial]: the channel's mean/scale/bias broadcast along every other dim (rank 2 has a channel stride of 3 innermost: the JS loop).
    const arb = fc.tuple(int(1, 3), int(1, 7), fc.array(int(1, 13), { maxLength: 2 })).chain(([n, c, spatial]) => fc.tuple(
      tensorCaseArb([n, c, ...spatial], { min: -30, max: 30 }), tensorCaseArb([c]), tensorCaseArb([c], { min: 0.01, max: 9 }),
      fc.option(tensorCaseArb([c]), { nil: null }), fc.option(tensorCaseArb([c]), { nil: null })));
    await onPath(kind, async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([cx, cm, cv, cw, cb]) => {
          const [x, m, v] = [cx, cm, cv].map((c) => makeTensor(c, 'cpu')) as [Tensor, Tensor, Tensor];
          const w = cw && makeTensor(cw, 'cpu'), b = cb && makeTensor(cb, 'cpu');
          const y = sn.batchNorm(x, m, v, w, b, { eps: 1e-3 });
          await expectClose(y, batchNormRef(refOf(cx), refOf(cm), refOf(cv), cw && refOf(cw), cb && refOf(cb), 1e-3), { dtype: 'float32' });
          for (const t of [x, m, v, w, b, y]) t?.dispose();
        }),
        propertyConfig({ numRuns: 30 }),
      );
    });
  });
});

describe('the wasm elementwise renderer', () => {
  it('passes scalars as arguments: x·s + t for many s, t compiles one module, and each call uses its own values', async () => {
    setCpuKernels('wasm');
    const x = sn.tensor([1, 2, 3, 4, 5]);
    sn.add(sn.mul(x, 0.5), 1).dispose();
    const before = wasmMapCacheStats();
    for (let s = 1; s <= 20; s++) await expectClose(sn.add(sn.mul(x, s), -s), ref([5], [1, 2, 3, 4, 5].map((v) => v * s - s)));
    const after = wasmMapCacheStats();
    expect(after.misses - before.misses).toBe(0);
    expect(after.hits - before.hits).toBe(40);
  });

  it("passes ops' params as arguments too: clamp bounds, leakyRelu's slope and add's alpha for many values compile one module, and on the JS path one function", async () => {
    const x = sn.tensor([-3.5, -1, -0, 0, 0.25, 2, 7, NaN]);
    const xs = [-3.5, -1, -0, 0, 0.25, 2, 7, NaN];
    const f = (s: number) => sn.add(sn.leakyRelu(sn.clamp(x, -s, s), s / 10), x, { alpha: s });
    const want = (s: number) => xs.map((v) => {
      const c = Math.fround(Math.min(Math.max(v, Math.fround(-s)), Math.fround(s)));
      return Math.fround(Math.fround(c > 0 ? c : Math.fround(c * Math.fround(s / 10))) + Math.fround(Math.fround(s) * v));
    });
    for (const kind of ['wasm', 'js'] as const) {
      setCpuKernels(kind);
      f(0.5).dispose();
      const cache = () => (kind === 'wasm' ? sn.memory().devices.cpu!.caches!['wasm elementwise modules']! : sn.memory().devices.cpu!.pipelines!);
      const before = cache();
      for (let s = 1.5; s <= 12; s += 1.5) await expectClose(f(s), ref([8], want(s)), { tol: { rtol: 2e-7, atol: 0 } });
      const after = cache();
      expect(after.misses - before.misses, `${kind}: compiled per value`).toBe(0);
    }
  });

  it('leaves what it cannot render (ints, bool, functions without a rendering, transposed inner dims) to the JS kernels (float16 renders: test/wasm-f16.test.ts)', async () => {
    setCpuKernels('wasm');
    const before = wasmMapCacheStats();
    const x = sn.tensor([[1, -2], [3, 4]]);
    await expectClose(sn.tanh(x), ref([2, 2], [1, -2, 3, 4].map((v) => Math.fround(Math.tanh(v)))));
    await expectClose(sn.add(x.to('int32'), 1), ref([2, 2], [2, -1, 4, 5]), { dtype: 'int32' });
    await expectClose(sn.lt(x, 0), ref([2, 2], [0, 1, 0, 0]), { dtype: 'bool' });
    await expectClose(sn.neg(x.t()), ref([2, 2], [-1, -3, 2, -4]));
    const after = wasmMapCacheStats();
    expect(after.hits + after.misses).toBe(before.hits + before.misses);
  });
});

describe('the wasm thread pool', () => {
  it('splits GEMMs over worker threads, with results identical to one thread and to the reference', async () => {
    setCpuKernels('wasm');
    // Big enough to be shared (m·n·k ≥ 2·2¹⁸), with row and column tails; the threads split C's columns
    // (m ≤ n) or, in the transposed product, its rows (m > n).
    const a = sn.randn([2 * MR + 3, 640], { seed: 7 }), b = sn.randn([640, 10 * NR + 5], { seed: 8 });
    for (const [l, r] of [[a, b], [b.t(), a.t()]] as const) {
      setCpuThreads(1);
      const alone = await sn.matmul(l, r).data();
      setCpuThreads(2);
      // The pool starts in the background on the first GEMM worth sharing; wait for its worker.
      for (let i = 0; i < 200 && poolStats().ready < 1; i++) {
        sn.matmul(l, r).dispose();
        await new Promise((res) => setTimeout(res, 25));
      }
      // Workers claim tasks as they wake: on a busy machine the calling thread may take them all, so a few tries.
      const before = poolStats().tasksOnWorkers;
      let y = sn.matmul(l, r);
      for (let i = 0; i < 50 && poolStats().tasksOnWorkers === before; i++) {
        expect(await y.data()).toEqual(alone);
        y.dispose();
        y = sn.matmul(l, r);
      }
      expect(poolStats().tasksOnWorkers).toBeGreaterThan(before);
      expect(await y.data()).toEqual(alone);
      await expectProduct(y, matmulRef(ref(l.shape, await l.contiguous().data()), ref(r.shape, await r.contiguous().data())), 640);
    }
    const x = sn.randn([2, 16, 29, 31], { seed: 9 }), w = sn.randn([12, 16, 3, 3], { seed: 10 });
    const o = { stride: [1, 1] as [number, number], padding: [1, 1] as [number, number], dilation: [1, 1] as [number, number], groups: 1 };
    const before2 = poolStats().tasksOnWorkers;
    let yc = sn.conv2d(x, w, { padding: 1 });
    for (let i = 0; i < 50 && poolStats().tasksOnWorkers === before2; i++) {
      yc.dispose();
      yc = sn.conv2d(x, w, { padding: 1 });
    }
    expect(poolStats().tasksOnWorkers).toBeGreaterThan(before2);
    await expectProduct(yc, conv2dRef(ref(x.shape, await x.data()), ref(w.shape, await w.data()), null, o), 144);
    // More output channels than pixels, with a bias: the threads split the rows, each starting its sums from its rows' bias.
    const xr = sn.randn([1, 64, 6, 7], { seed: 11 }), wr = sn.randn([98, 64, 3, 3], { seed: 12 }), br = sn.randn([98], { seed: 13 });
    setCpuThreads(1);
    const rowsAlone = await sn.conv2d(xr, wr, br, o).data();
    setCpuThreads(2);
    for (let i = 0; i < 200 && poolStats().ready < 1; i++) await new Promise((res) => setTimeout(res, 25));
    const before3 = poolStats().tasksOnWorkers;
    let yr = sn.conv2d(xr, wr, br, o);
    for (let i = 0; i < 50 && poolStats().tasksOnWorkers === before3; i++) {
      expect(await yr.data()).toEqual(rowsAlone);
      yr.dispose();
      yr = sn.conv2d(xr, wr, br, o);
    }
    expect(poolStats().tasksOnWorkers).toBeGreaterThan(before3);
    expect(await yr.data()).toEqual(rowsAlone);
    await expectProduct(yr, conv2dRef(ref(xr.shape, await xr.data()), ref(wr.shape, await wr.data()), ref(br.shape, await br.data()), o), 576);
  });

  it('splits softmax and layerNorm rows over worker threads (odd row lengths, tails): identical to one thread and to the reference', async () => {
    setCpuKernels('wasm');
    // 71 rows of 1003 (71k elements: split into tasks of whole rows, each row with a 3-element tail).
    const x = sn.randn([71, 1003], { seed: 31 }).mul(4), w = sn.randn([1003], { seed: 32 }), b = sn.randn([1003], { seed: 33 });
    const ops = [(t: Tensor) => sn.softmax(t, -1), (t: Tensor) => sn.layerNorm(t, [1003], w, b, 1e-5)];
    setCpuThreads(1);
    const alone = await Promise.all(ops.map((f) => f(x).data()));
    setCpuThreads(2);
    for (let i = 0; i < 200 && poolStats().ready < 1; i++) {
      sn.softmax(x, -1).dispose();
      await new Promise((res) => setTimeout(res, 25));
    }
    const before = poolStats().tasksOnWorkers;
    for (let i = 0; i < 50 && poolStats().tasksOnWorkers === before; i++) {
      for (const [k, f] of ops.entries()) expect(await f(x).data()).toEqual(alone[k]);
    }
    expect(poolStats().tasksOnWorkers).toBeGreaterThan(before);
    const v = await x.data(), wv = await w.data(), bv = await b.data(), n = 1003;
    const soft = new Float64Array(v.length), norm = new Float64Array(v.length);
    for (let r = 0; r < 71; r++) {
      const row = Array.from(v.subarray(r * n, (r + 1) * n)), m = Math.max(...row), e = row.map((u) => Math.exp(u - m)), s = e.reduce((p, q) => p + q, 0);
      const mean = row.reduce((p, q) => p + q, 0) / n, rstd = 1 / Math.sqrt(row.reduce((p, q) => p + (q - mean) ** 2, 0) / n + 1e-5);
      e.forEach((u, j) => (soft[r * n + j] = u / s));
      row.forEach((u, j) => (norm[r * n + j] = (u - mean) * rstd * wv[j]! + bv[j]!));
    }
    await expectClose(ops[0]!(x), ref([71, n], soft));
    await expectClose(ops[1]!(x), ref([71, n], norm), { tol: { atol: 1e-5 } });
  });

  it('rejects a thread count that is not a positive integer', () => {
    expect(() => setCpuThreads(0)).toThrow(/^setCpuThreads: threads must be a positive integer, got 0/);
    expect(() => setCpuThreads(1.5)).toThrow(/got 1.5/);
  });

  it('init({ threads }) sets the thread count, and rejects a bad one before choosing a device', async () => {
    await expect(sn.init({ device: 'cpu', threads: 0 })).rejects.toThrow(/^setCpuThreads: threads must be a positive integer, got 0/);
    await sn.init({ device: 'cpu', threads: 3 });
    expect(poolStats().wanted).toBe(3);
    await sn.init({ device: 'cpu', threads: 2 });
    expect(poolStats().wanted).toBe(2);
  });
});
