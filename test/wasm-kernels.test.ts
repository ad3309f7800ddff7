import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { type CpuKernels, cpuKernels, setCpuKernels, setCpuThreads } from '../src/backend/cpu.js';
import { poolStats } from '../src/kernels/wasm/threads.js';
import { hasRelaxedSimd } from '../src/kernels/wasm/emitter.js';
import { GEMM_ARGS, WASM_GEMM, buildGemmModule, columnTables, rowTable } from '../src/kernels/wasm/gemm.js';
import { heap, instantiate } from '../src/kernels/wasm/heap.js';
import { fillGrid, fillHeap } from '../src/kernels/wasm/depthwise.js';
import v8 from 'node:v8';
import { kernelOverrides } from '../src/kernels/cpu/overrides.js';
import { TOLERANCES, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { expectClose } from './helpers.js';
import { ref, refOf } from './reference/core.js';
import { type ProductRef, accumulationAtol, matmulRef } from './reference/linalg.js';
import { conv2dRef, convTranspose2dRef } from './reference/conv.js';
import { argmaxOf, argminOf, maxOf, meanOf, minOf, reduceRef, sumOf } from './reference/reduce.js';
import { adaptiveAvgPool2dRef, avgPool2dRef, maxPool2dRef } from './reference/pool.js';
import type { Tensor } from '../src/index.js';

// The WebAssembly CPU kernels of src/kernels/wasm/{depthwise,linalg}.ts against the float64 references,
// and the same properties on the JavaScript reference path (test/wasm.test.ts covers the GEMM, dense conv2d
// and the row/elementwise kernels). float32 tolerance: the output's rounding plus k·2⁻²⁴·Σ|a·b| for
// float32 accumulation over k products.

const PATHS: CpuKernels[] = ['wasm', 'js'];
const initial = cpuKernels();
afterEach(() => void setCpuKernels(initial));

/** Runs `fn` on one CPU kernel path and checks that the wasm forms `names` really ran there (and never on the JS path). */
async function onPath(kind: CpuKernels, names: readonly ('gemm' | 'conv2d' | 'convTranspose2d' | 'reduce' | 'pool2d')[], fn: () => Promise<void>): Promise<void> {
  expect(setCpuKernels(kind)).toBe(kind);
  let ran = 0;
  for (const name of names) {
    const form = kernelOverrides[name] as ((...args: unknown[]) => boolean) | undefined;
    if (form) (kernelOverrides as Record<string, unknown>)[name] = (...args: unknown[]) => (form(...args) ? (ran++, true) : false);
  }
  await fn();
  if (kind === 'wasm') expect(ran, 'wasm kernel calls').toBeGreaterThan(0);
  else expect(ran).toBe(0);
}

async function expectProduct(t: Tensor, r: ProductRef, k: number): Promise<void> {
  await expectClose(t, r.out, { dtype: 'float32', tol: { atol: TOLERANCES.cpu.float32.atol + accumulationAtol(k, r.mag) } });
}

const int = (min: number, max: number) => fc.integer({ min, max });

describe.each(PATHS)('convolutions on the %s CPU path', (kind) => {
  it('depthwise conv2d matches the float64 reference (multipliers, strides, dilations, asymmetric padding, row tails, strided views)', async () => {
    // Widths around the 8-output step (tails 1…7), strides 1–3 (column phases), 1×1 to 5×5 windows.
    const arb = fc
      .record({
        n: int(1, 2), c: int(1, 5), mult: int(1, 3), kh: int(1, 5), kw: int(1, 5),
        stride: fc.tuple(int(1, 3), int(1, 3)), dilation: fc.tuple(int(1, 2), int(1, 2)), pad: fc.tuple(int(0, 2), int(0, 2)), extra: fc.tuple(int(0, 4), int(0, 19)),
      })
      .chain((p) => {
        const [H, W] = [p.kh, p.kw].map((k, d) => Math.max(1, p.dilation[d]! * (k - 1) + 1 - 2 * p.pad[d]!) + p.extra[d]!) as [number, number];
        const opts = { stride: p.stride, padding: p.pad, dilation: p.dilation, groups: p.c };
        return fc.tuple(fc.constant(opts), tensorCaseArb([p.n, p.c, H, W]), tensorCaseArb([p.c * p.mult, 1, p.kh, p.kw]), fc.option(tensorCaseArb([p.c * p.mult]), { nil: null }));
      });
    await onPath(kind, ['conv2d'], async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([o, cx, cw, cb]) => {
          const x = makeTensor(cx, 'cpu'), w = makeTensor(cw, 'cpu'), b = cb ? makeTensor(cb, 'cpu') : null;
          const y = sn.conv2d(x, w, b, o);
          await expectProduct(y, conv2dRef(refOf(cx), refOf(cw), cb ? refOf(cb) : null, o), cw.shape[2]! * cw.shape[3]!);
          for (const t of [x, w, b, y]) t?.dispose();
        }),
        propertyConfig({ numRuns: 40 }),
      );
    });
  });

  it("depthwise conv2d with 'same' padding on an unbatched input, and a PP-OCR-sized 5×5 stride-2 layer", async () => {
    await onPath(kind, ['conv2d'], async () => {
      const x = sn.randn([6, 9, 13], { seed: 1 }), w = sn.randn([6, 1, 3, 3], { seed: 2 });
      const y = sn.conv2d(x, w, null, { padding: 'same', groups: 6 });
      const r = conv2dRef(ref([1, 6, 9, 13], await x.data()), ref(w.shape, await w.data()), null, { stride: [1, 1], padding: 'same', dilation: [1, 1], groups: 6 });
      await expectProduct(y, { out: ref([6, 9, 13], r.out.data), mag: ref([6, 9, 13], r.mag.data) }, 9);
      const x2 = sn.randn([1, 16, 40, 40], { seed: 3 }), w2 = sn.randn([16, 1, 5, 5], { seed: 4 }), b2 = sn.randn([16], { seed: 5 });
      const o2 = { stride: [2, 2] as [number, number], padding: [2, 2] as [number, number], dilation: [1, 1] as [number, number], groups: 16 };
      const y2 = sn.conv2d(x2, w2, b2, o2);
      await expectProduct(y2, conv2dRef(ref(x2.shape, await x2.data()), ref(w2.shape, await w2.data()), ref(b2.shape, await b2.data()), o2), 25);
    });
  });

  it('convTranspose2d matches the float64 reference (groups, stride, dilation, padding, output padding, strided views)', async () => {
    const arb = fc
      .record({
        n: int(1, 2), groups: int(1, 2), cig: int(1, 3), cog: int(1, 3), kh: int(1, 3), kw: int(1, 3), stride: fc.tuple(int(1, 3), int(1, 3)),
        dilation: fc.tuple(int(1, 2), int(1, 2)), H: int(1, 5), W: int(1, 11), pad: fc.tuple(int(0, 2), int(0, 2)), outPad: fc.tuple(int(0, 2), int(0, 2)),
      })
      .chain((p) => {
        // PyTorch's rules: a positive output size ((in − 1)·stride − 2·padding + dilation·(k − 1) + 1 ≥ 1), output padding below stride or dilation.
        const padding = p.pad.map((v, d) => Math.min(v, Math.floor((([p.H, p.W][d]! - 1) * p.stride[d]! + p.dilation[d]! * ([p.kh, p.kw][d]! - 1)) / 2))) as [number, number];
        const outputPadding = p.outPad.map((v, d) => Math.min(v, Math.max(p.stride[d]!, p.dilation[d]!) - 1)) as [number, number];
        const opts = { stride: p.stride, padding, outputPadding, dilation: p.dilation, groups: p.groups };
        return fc.tuple(fc.constant(opts), tensorCaseArb([p.n, p.cig * p.groups, p.H, p.W]), tensorCaseArb([p.cig * p.groups, p.cog, p.kh, p.kw]), fc.option(tensorCaseArb([p.cog * p.groups]), { nil: null }));
      });
    await onPath(kind, ['convTranspose2d'], async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([o, cx, cw, cb]) => {
          const x = makeTensor(cx, 'cpu'), w = makeTensor(cw, 'cpu'), b = cb ? makeTensor(cb, 'cpu') : null;
          const y = sn.convTranspose2d(x, w, b, o);
          await expectProduct(y, convTranspose2dRef(refOf(cx), refOf(cw), cb ? refOf(cb) : null, o), cx.shape[1]! * cw.shape[2]! * cw.shape[3]!);
          for (const t of [x, w, b, y]) t?.dispose();
        }),
        propertyConfig({ numRuns: 25 }),
      );
    });
  });
});

/** The reductions with a wasm form, through their public ops, with float64 folds. */
const REDUCTIONS = [
  { name: 'sum', run: (x: Tensor, d: number[], k: boolean) => sn.sum(x, d, k), fold: sumOf, accumulates: true },
  { name: 'mean', run: (x: Tensor, d: number[], k: boolean) => sn.mean(x, d, k), fold: meanOf, accumulates: true },
  { name: 'amax', run: (x: Tensor, d: number[], k: boolean) => sn.amax(x, d, k), fold: maxOf, accumulates: false },
  { name: 'amin', run: (x: Tensor, d: number[], k: boolean) => sn.amin(x, d, k), fold: minOf, accumulates: false },
] as const;

describe.each(PATHS)('reductions on the %s CPU path', (kind) => {
  // Ranks 1–4, sizes 1–19 (tails of the 8-wide step on either side of it), any subset of dims, strided views.
  const arb = fc
    .array(int(1, 19), { minLength: 1, maxLength: 4 })
    .chain((shape) => fc.tuple(tensorCaseArb(shape, { min: -100, max: 100 }), fc.subarray(shape.map((_, d) => d), { minLength: 1 }), fc.boolean()));

  it.each(REDUCTIONS)('$name over any dims matches the float64 reference (groups in a row, strided groups, keepdim, views)', async ({ run, fold, accumulates }) => {
    await onPath(kind, ['reduce'], async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([c, dims, keepdim]) => {
          const x = makeTensor(c, 'cpu'), y = run(x, dims, keepdim);
          const n = dims.reduce((a, d) => a * c.shape[d]!, 1);
          const mag = Math.max(0, ...c.values.map(Math.abs));
          // float32 sums of n values: at most n·2⁻²⁴·Σ|x| ≤ n²·2⁻²⁴·max|x| (means: divided by n), plus the output's rounding.
          const atol = accumulates ? (fold === meanOf ? 1 : n) * n * 2 ** -24 * mag : 0;
          await expectClose(y, reduceRef(refOf(c), dims, keepdim, fold), { dtype: 'float32', tol: { atol: TOLERANCES.cpu.float32.atol + atol } });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: 30 }),
      );
    });
  });

  it('argmax and argmin over one dim or all give the first extreme, NaN counting as the extreme', async () => {
    const args = fc
      .array(int(1, 19), { minLength: 1, maxLength: 3 })
      .chain((shape) => fc.tuple(tensorCaseArb(shape).map((c) => ({ ...c, values: c.values.map(Math.round) })), fc.option(int(0, shape.length - 1), { nil: null })));
    await onPath(kind, ['reduce'], async () => {
      await fc.assert(
        fc.asyncProperty(args, async ([c, dim]) => {
          const x = makeTensor(c, 'cpu');
          const dims = dim === null ? c.shape.map((_, d) => d) : [dim];
          for (const [op, fold] of [[sn.argmax, argmaxOf], [sn.argmin, argminOf]] as const) {
            const y = dim === null ? op(x) : op(x, dim);
            const r = reduceRef(refOf(c), dims, false, fold);
            await expectClose(y, r, { dtype: 'int32' });
            y.dispose();
          }
          x.dispose();
        }),
        propertyConfig({ numRuns: 30 }),
      );
      const special = sn.tensor([1, NaN, 3, NaN, -Infinity, 2, Infinity, 0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 1], { shape: [2, 10] });
      expect([...(await sn.argmax(special, 1).data())]).toEqual([1, 7]);
      expect([...(await sn.argmin(special, 1).data())]).toEqual([1, 9]);
      const m = await sn.amax(special, 1).data();
      expect(Number.isNaN(m[0])).toBe(true);
      expect(m[1]).toBe(7);
      expect([...(await sn.amin(special.narrow(0, 1, 1), 1).data())]).toEqual([1]);
    });
  });

  it('a fused prologue (the JIT\'s relu+mean of a global average pool) runs as the wasm map, then the wasm reduction', async () => {
    await onPath(kind, ['reduce'], async () => {
      const x = sn.randn([3, 5, 7, 9], { seed: 11 });
      const f = sn.jit((t: Tensor) => sn.mean(sn.relu(t), [2, 3]));
      const xs = [...(await x.data())];
      const r = reduceRef(ref(x.shape, xs.map((v) => Math.max(v, 0))), [2, 3], false, meanOf);
      await expectClose(f(x), r, { dtype: 'float32', tol: { atol: 1e-6 } });
    });
  });
});

describe.each(PATHS)('2-d pooling on the %s CPU path', (kind) => {
  // Windows 1–4 with strides 1–3 (column phases), dilations, padding up to half the window, ceil mode, widths past the 8-output step.
  const arb = fc
    .record({ n: int(1, 2), c: int(1, 3), k: fc.tuple(int(1, 4), int(1, 4)), s: fc.tuple(int(1, 3), int(1, 3)), d: fc.tuple(int(1, 2), int(1, 2)), ceilMode: fc.boolean(), extra: fc.tuple(int(0, 5), int(0, 19)), pad: fc.tuple(fc.boolean(), fc.boolean()), batched: fc.boolean() })
    .chain((p) => {
      const padding = p.k.map((k, i) => (p.pad[i] ? Math.floor(k / 2) : 0)) as [number, number];
      const [H, W] = p.k.map((k, i) => p.d[i]! * (k - 1) + 1 + p.extra[i]!) as [number, number];
      return fc.tuple(fc.constant({ ...p, padding }), tensorCaseArb(p.batched ? [p.n, p.c, H, W] : [p.c, H, W]), fc.boolean());
    });
  const as4d = (c: { shape: number[] }) => (c.shape.length === 4 ? c.shape : [1, ...c.shape]);

  it('maxPool2d matches the float64 reference (strides, dilations, -inf padding, ceil mode, 3-D and 4-D, views)', async () => {
    await onPath(kind, ['pool2d'], async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([p, c]) => {
          const x = makeTensor(c, 'cpu');
          const y = sn.maxPool2d(x, p.k, { stride: p.s, padding: p.padding, dilation: p.d, ceilMode: p.ceilMode });
          const r = maxPool2dRef(ref(as4d(c), c.values), { kernelSize: p.k, stride: p.s, padding: p.padding, dilation: p.d, ceilMode: p.ceilMode });
          await expectClose(y, ref(y.shape, r.data), { dtype: 'float32' });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: 30 }),
      );
    });
  });

  it('avgPool2d matches the float64 reference (divisor with and without padding, divisorOverride, ceil mode, views)', async () => {
    await onPath(kind, ['pool2d'], async () => {
      await fc.assert(
        fc.asyncProperty(arb, async ([p, c, countIncludePad]) => {
          const x = makeTensor(c, 'cpu'), divisorOverride = p.extra[0] === 3 ? 5 : null;
          const y = sn.avgPool2d(x, p.k, { stride: p.s, padding: p.padding, ceilMode: p.ceilMode, countIncludePad, divisorOverride });
          const r = avgPool2dRef(ref(as4d(c), c.values), { kernelSize: p.k, stride: p.s, padding: p.padding, ceilMode: p.ceilMode, countIncludePad, divisorOverride });
          // float32 sums of at most kh·kw values in ±4.
          await expectClose(y, ref(y.shape, r.data), { dtype: 'float32', tol: { atol: TOLERANCES.cpu.float32.atol + p.k[0] * p.k[1] * 4 * 2 ** -24 * 4 } });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: 30 }),
      );
    });
  });

  it('adaptiveAvgPool2d to 1×1 (a global average pool) is the wasm mean; other bins stay with the JS kernel', async () => {
    await onPath(kind, ['pool2d'], async () => {
      const x = sn.randn([2, 3, 7, 11], { seed: 12 }), xs = await x.data();
      await expectClose(sn.adaptiveAvgPool2d(x, 1), adaptiveAvgPool2dRef(ref(x.shape, xs), [1, 1]), { dtype: 'float32', tol: { atol: 1e-6 } });
      await expectClose(sn.adaptiveAvgPool2d(x, [3, 4]), adaptiveAvgPool2dRef(ref(x.shape, xs), [3, 4]), { dtype: 'float32' });
      const t = x.permute([0, 1, 3, 2]);
      await expectClose(sn.adaptiveAvgPool2d(t, 1), adaptiveAvgPool2dRef(ref(t.shape, await t.contiguous().data()), [1, 1]), { dtype: 'float32', tol: { atol: 1e-6 } });
    });
  });
});

describe('the wasm fill (padding of conv and window inputs, convTranspose2d bias planes)', () => {
  it('sets exactly count floats from the address (every tail of the four-wide stores, 0, −∞, NaN, values rounded to float32)', () => {
    const h = heap(), mark = h.mark(), at = h.alloc(64 * 4), f = h.f32, base = at >>> 2;
    try {
      for (const value of [0, -Infinity, NaN, 1.1, -3.5e38]) {
        for (let count = 0; count <= 13; count++) {
          for (let lead = 0; lead < 3; lead++) {
            f.fill(7, base, base + 64);
            fillHeap(at + lead * 4, count, value);
            const got = Array.from(f.subarray(base, base + 20));
            const want = got.map((_, i) => (i >= lead && i < lead + count ? Math.fround(value) : 7));
            expect(got, `value ${value}, ${count} floats after ${lead}`).toEqual(want);
          }
        }
      }
    } finally {
      h.release(mark);
    }
  });

  it('fills a grid of runs (outer × inner runs of len floats at byte steps), and nothing between them', () => {
    const h = heap(), mark = h.mark(), at = h.alloc(200 * 4), f = h.f32, base = at >>> 2;
    try {
      for (const [outer, outerStep, inner, innerStep, len] of [[3, 40, 2, 12, 2], [2, 80, 3, 20, 5], [1, 0, 4, 8, 1], [2, 60, 1, 0, 7], [0, 4, 3, 4, 3], [2, 4, 0, 4, 3], [2, 40, 2, 8, 0]] as const) {
        f.fill(7, base, base + 200);
        fillGrid(at + 4, outer, outerStep * 4, inner, innerStep * 4, len, -1.5);
        const want = new Array<number>(200).fill(7);
        for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) for (let j = 0; j < len; j++) want[1 + o * outerStep + i * innerStep + j] = -1.5;
        expect(Array.from(f.subarray(base, base + 200)), `${outer}×${inner} runs of ${len}`).toEqual(want);
      }
    } finally {
      h.release(mark);
    }
  });
});

describe('the window loop on the thread pool', () => {
  it('splits a big depthwise conv2d over the channels, with results identical to one thread and to the reference', async () => {
    setCpuKernels('wasm');
    // 24 channels of 64×90 outputs with a 5×5 window: ~3.5M tap operations, several shares; the padded copy
    // of the input (138,240 floats) is shared over the threads too.
    const x = sn.randn([1, 24, 64, 90], { seed: 21 }), w = sn.randn([24, 1, 5, 5], { seed: 22 });
    const o = { stride: [1, 1] as [number, number], padding: [2, 2] as [number, number], dilation: [1, 1] as [number, number], groups: 24 };
    setCpuThreads(1);
    const alone = await sn.conv2d(x, w, null, o).data();
    setCpuThreads(2);
    // The pool starts in the background on the first work worth sharing; wait for its worker.
    for (let i = 0; i < 200 && poolStats().ready < 1; i++) {
      sn.conv2d(x, w, null, o).dispose();
      await new Promise((r) => setTimeout(r, 25));
    }
    // Workers claim shares as they wake: on a busy machine the calling thread may take them all, so a few tries.
    const before = poolStats().tasksOnWorkers;
    let y = sn.conv2d(x, w, null, o);
    for (let i = 0; i < 50 && poolStats().tasksOnWorkers === before; i++) {
      expect(await y.data()).toEqual(alone);
      y.dispose();
      y = sn.conv2d(x, w, null, o);
    }
    expect(poolStats().tasksOnWorkers).toBeGreaterThan(before);
    expect(await y.data()).toEqual(alone);
    await expectProduct(y, conv2dRef(ref(x.shape, await x.data()), ref(w.shape, await w.data()), null, o), 25);
  });
});

describe('relaxed SIMD', () => {
  it('is detected by validation, and the GEMM micro-kernel with f32x4.relaxed_madd matches the reference where the engine has it', async () => {
    // Without relaxed SIMD (Node 20 by default) the FMA module does not validate, and detection says so.
    expect(WebAssembly.validate(buildGemmModule(true))).toBe(hasRelaxedSimd());
    expect(WebAssembly.validate(buildGemmModule(false))).toBe(true);
    // V8 turns it on at run time (browsers ship it): then the FMA micro-kernel must validate and compute C = A·B.
    v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
    const bytes = buildGemmModule(true);
    expect(WebAssembly.validate(bytes)).toBe(true);
    const gemm = instantiate<{ gemm: (...args: number[]) => void }>(bytes).gemm;
    expect(gemm.length).toBe(GEMM_ARGS.length);
    // Tails in every direction: m = 2·MR + 1, n = 3·NR + 5, k past one cache block (kc).
    const [m, n, k] = [2 * WASM_GEMM.mr + 1, 3 * WASM_GEMM.nr + 5, WASM_GEMM.kc + 3];
    const a = sn.randn([m, k], { seed: 31 }), b = sn.randn([k, n], { seed: 32 });
    const av = await a.data(), bv = await b.data();
    const h = heap();
    h.reset();
    const aAt = h.put(av as Float32Array), bAt = h.put(bv as Float32Array);
    const { colOff, flags } = columnTables(n, { sizes: [1, 1, n], strides: [0, 0, 4] });
    const rowOff = rowTable(k, (i) => i * n * 4);
    const cAt = h.alloc(m * n * 4), pa = h.alloc(4 * WASM_GEMM.mr * 64 * k), pb = h.alloc(4 * WASM_GEMM.nr * 64 * k), scratch = h.alloc(4 * WASM_GEMM.mr * WASM_GEMM.nr);
    // Without a bias, then with one (row i's sums start from bias[i]; the last, short row panel reads only its own rows').
    const bias = Float32Array.from({ length: m }, (_, i) => 100 * (i + 1)), biasAt = h.put(bias);
    for (const withBias of [false, true]) {
      gemm(m, n, k, aAt, k * 4, 4, bAt, colOff, rowOff, flags, cAt, n * 4, 0, pa, pb, scratch, withBias ? biasAt : 0);
      const got = h.f32.slice(cAt >> 2, (cAt >> 2) + m * n);
      const r = matmulRef(ref([m, k], av), ref([k, n], bv));
      if (withBias) r.out.data.forEach((v, i) => (r.out.data[i] = v + bias[Math.floor(i / n)]!));
      await expectProduct(sn.tensor(got, { shape: [m, n] }), r, k + 1);
    }
  });
});
