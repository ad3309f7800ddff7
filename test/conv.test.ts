import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, Tensor } from '../src/index.js';
import { GEMM_BLOCKS } from '../src/kernels/cpu/gemm.js';
import { TOLERANCES, type TensorCase, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose, GEMM_KERNELS, withGemmKernel } from './helpers.js';
import { type Ref, ref, refOf } from './reference/core.js';
import { type ProductRef, accumulationAtol } from './reference/linalg.js';
import { conv2dRef, convTranspose2dRef } from './reference/conv.js';

/** The output dtype's rounding plus the summation bound for `k` products per output (see accumulationAtol). */
async function expectProduct(t: Tensor, r: ProductRef, k: number, what?: string): Promise<void> {
  await expectClose(t, r.out, { what, tol: { atol: TOLERANCES[t.device][t.dtype].atol + accumulationAtol(k, r.mag) } });
}

/** The reference for an unbatched [C, H, W] case: run as one image, then drop the batch dim. */
function asBatch(c: TensorCase): Ref {
  const r = refOf(c);
  return c.shape.length === 3 ? ref([1, ...c.shape], r.data) : r;
}
function unbatch(r: ProductRef, batched: boolean): ProductRef {
  const drop = (x: Ref) => (batched ? x : ref(x.shape.slice(1), x.data));
  return { out: drop(r.out), mag: drop(r.mag) };
}

// Every new shape compiles a new WebGPU pipeline (shapes are baked into the WGSL), so the GPU runs
// fewer random cases; the tile edges of its kernels are crossed by the fixed cases further down.
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 4) : n);

const int = (min: number, max: number) => fc.integer({ min, max });
const F: DType[] = ['float32', 'float16'];
/** A pair as the user may pass it: a number when both dims agree, else [h, w]. */
const asArg = ([h, w]: [number, number]) => (h === w ? h : [h, w]);

/**
 * Random conv2d problems: batched or not, groups (cg = 1 is depthwise), 1–3 kernels, stride, dilation, every padding form;
 * `pointwise`: 1×1 kernels without padding (the WebGPU kernel reads their input as a plain matrix where it can).
 */
function conv2dArb(dtype: DType, pointwise = false) {
  return fc
    .record({
      n: int(0, 2), groups: int(1, 3), cg: int(1, pointwise ? 6 : 2), og: int(1, 5), kh: int(1, pointwise ? 1 : 3), kw: int(1, pointwise ? 1 : 3),
      stride: fc.tuple(int(1, 3), int(1, 3)), dilation: fc.tuple(int(1, 2), int(1, 2)),
      padding: pointwise ? fc.constant(0) : fc.oneof(int(0, 2), fc.tuple(int(0, 2), int(0, 2)), fc.constant('same' as const), fc.constant('valid' as const)),
      extra: fc.tuple(int(0, 4), int(0, 4)),
    })
    .chain((p) => {
      const stride: [number, number] = p.padding === 'same' ? [1, 1] : p.stride;
      const pad = p.padding === 'same' || p.padding === 'valid' ? p.padding : typeof p.padding === 'number' ? ([p.padding, p.padding] as [number, number]) : p.padding;
      // The smallest input the (dilated) kernel fits in once padded; 'same' pads dilation·(k−1) in total.
      const totalPad = [p.dilation[0] * (p.kh - 1), p.dilation[1] * (p.kw - 1)].map((t, d) => (pad === 'same' ? t : pad === 'valid' ? 0 : 2 * pad[d]!));
      const [H, W] = [p.kh, p.kw].map((k, d) => Math.max(1, p.dilation[d]! * (k - 1) + 1 - totalPad[d]!) + p.extra[d]!) as [number, number];
      const C = p.cg * p.groups, O = p.og * p.groups;
      const opts = { stride, padding: pad, dilation: p.dilation, groups: p.groups };
      return fc.tuple(
        fc.constant(opts),
        tensorCaseArb(p.n === 0 ? [C, H, W] : [p.n, C, H, W], { dtype }),
        tensorCaseArb([O, p.cg, p.kh, p.kw], { dtype }),
        fc.option(tensorCaseArb([O], { dtype }), { nil: null }),
      );
    });
}

/**
 * Random convTranspose2d problems, with outputPadding below max(stride, dilation) and a positive output size;
 * `strideIsKernel`: the stride equals the kernel, without padding (on WebGPU one tap per output pixel where dilation allows).
 */
function convTranspose2dArb(dtype: DType, strideIsKernel = false) {
  return fc
    .record({
      n: int(0, 2), groups: int(1, 3), cig: int(1, strideIsKernel ? 5 : 2), cog: int(1, 2), kh: int(1, 3), kw: int(1, 3),
      stride: fc.tuple(int(1, 3), int(1, 3)), dilation: fc.tuple(int(1, 2), int(1, 2)), padding: fc.tuple(int(0, 2), int(0, 2)), extra: fc.tuple(int(0, 3), int(0, 3)),
    })
    .map((p) => (strideIsKernel ? { ...p, stride: [p.kh, p.kw] as [number, number], padding: [0, 0] as [number, number] } : p))
    .chain((p) => fc.tuple(fc.constant(p), strideIsKernel ? fc.constant([0, 0] as [number, number]) : fc.tuple(int(0, Math.max(p.stride[0], p.dilation[0]) - 1), int(0, Math.max(p.stride[1], p.dilation[1]) - 1))))
    .chain(([p, outputPadding]) => {
      const [H, W] = [p.kh, p.kw].map((k, d) => {
        const short = 2 * p.padding[d]! - p.dilation[d]! * (k - 1) - outputPadding[d]!;
        return 1 + Math.max(0, Math.ceil(short / p.stride[d]!)) + p.extra[d]!;
      }) as [number, number];
      const Cin = p.cig * p.groups;
      const opts = { stride: p.stride, padding: p.padding, outputPadding, dilation: p.dilation, groups: p.groups };
      return fc.tuple(
        fc.constant(opts),
        tensorCaseArb(p.n === 0 ? [Cin, H, W] : [p.n, Cin, H, W], { dtype }),
        tensorCaseArb([Cin, p.cog, p.kh, p.kw], { dtype }),
        fc.option(tensorCaseArb([p.cog * p.groups], { dtype }), { nil: null }),
      );
    });
}

describe.each(WITH_WEBGPU)('conv2d on %s', (device) => {
  it.each([...F.map((dtype) => [dtype, false] as const), ['float32', true] as const])('matches the direct float64 definition (%s; groups, depthwise, stride, dilation, padding forms, strided views; only 1×1 unpadded: %s)', async (dtype, pointwise) => {
    await fc.assert(
      fc.asyncProperty(conv2dArb(dtype, pointwise), async ([o, cx, cw, cb]) => {
        const x = makeTensor(cx, device), w = makeTensor(cw, device), b = cb ? makeTensor(cb, device) : null;
        const padding = typeof o.padding === 'string' ? o.padding : asArg(o.padding);
        const y = sn.conv2d(x, w, b, { stride: asArg(o.stride), padding, dilation: asArg(o.dilation), groups: o.groups });
        const expected = conv2dRef(asBatch(cx), refOf(cw), cb ? refOf(cb) : null, o);
        expect(y.dtype).toBe(dtype);
        await expectProduct(y, unbatch(expected, cx.shape.length === 4), cw.shape[1]! * cw.shape[2]! * cw.shape[3]!);
        for (const t of [x, w, b, y]) t?.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 50) }),
    );
  });

  it('computes known values, with the odd "same" padding on the bottom/right', async () => {
    const x = sn.arange(1, 10, { dtype: 'float32', device }).reshape(1, 1, 3, 3);
    await expectClose(sn.conv2d(x, sn.ones([1, 1, 2, 2], { device })), ref([1, 1, 2, 2], [12, 16, 24, 28]));
    await expectClose(sn.conv2d(x, sn.ones([1, 1, 2, 2], { device }), sn.tensor([1], { device }), { padding: 'valid' }), ref([1, 1, 2, 2], [13, 17, 25, 29]));
    const same = sn.conv2d(sn.ones([1, 3, 3], { device }), sn.ones([1, 1, 2, 2], { device }), { padding: 'same' });
    await expectClose(same, ref([1, 3, 3], [4, 4, 2, 4, 4, 2, 2, 2, 1]));
    // Mixed float dtypes promote, as for matmul.
    await expectClose(sn.conv2d(x.to('float16'), sn.ones([1, 1, 2, 2], { device })), ref([1, 1, 2, 2], [12, 16, 24, 28]), { dtype: 'float32' });
  });

  it('crosses the GEMM blocks (K, M and output pixels) and runs depthwise with a channel multiplier', async () => {
    const { kc, mc, nc } = GEMM_BLOCKS;
    const cases: { x: number[]; w: number[]; opts: { padding: number | 'same'; stride?: number; groups?: number } }[] = [
      { x: [1, Math.ceil(kc / 9) + 1, 10, 9], w: [mc + 6, Math.ceil(kc / 9) + 1, 3, 3], opts: { padding: 1 } },
      { x: [2, 2, 35, Math.ceil(nc / 35) + 3], w: [5, 2, 3, 3], opts: { padding: 'same' } },
      { x: [2, 4, 9, 8], w: [8, 1, 3, 3], opts: { padding: 1, stride: 2, groups: 4 } },
    ];
    for (const [i, c] of cases.entries()) {
      const x = sn.randn(c.x, { seed: 10 + i, device }), w = sn.randn(c.w, { seed: 20 + i, device }), b = sn.randn([c.w[0]!], { seed: 30 + i, device });
      const o = { stride: [c.opts.stride ?? 1, c.opts.stride ?? 1] as [number, number], padding: c.opts.padding === 'same' ? ('same' as const) : ([c.opts.padding, c.opts.padding] as [number, number]), dilation: [1, 1] as [number, number], groups: c.opts.groups ?? 1 };
      const expected = conv2dRef(ref(x.shape, await x.data()), ref(w.shape, await w.data()), ref(b.shape, await b.data()), o);
      await expectProduct(sn.conv2d(x, w, b, c.opts), expected, c.w[1]! * 9, `case ${i}`);
    }
  });

  it('rejects bad shapes, dtypes and options with messages naming them', () => {
    const z = (shape: number[], dtype: DType = 'float32') => sn.zeros(shape, { dtype, device });
    const x = z([1, 3, 8, 8]), w = z([4, 3, 3, 3]);
    expect(() => sn.conv2d(z([3, 8]), w)).toThrow(/^conv2d: expected a 3-D \[C, H, W\] or 4-D \[N, C, H, W\] input with non-zero C, H and W, got \[3, 8\] float32/);
    expect(() => sn.conv2d(z([1, 3, 0, 8]), w)).toThrow(/^conv2d: expected a 3-D .* got \[1, 3, 0, 8\] float32/);
    expect(() => sn.conv2d(x, z([4, 3, 3]))).toThrow(/^conv2d: expected a 4-D weight with non-zero sizes after the first dim, got \[4, 3, 3\] float32/);
    expect(() => sn.conv2d(x, z([4, 3, 0, 3]))).toThrow(/^conv2d: expected a 4-D weight with non-zero sizes after the first dim, got \[4, 3, 0, 3\] float32/);
    expect(() => sn.conv2d(z([1, 3, 8, 8], 'int32'), w)).toThrow(/^conv2d: expected float tensors \(float32 or float16\), got \[1, 3, 8, 8\] int32/);
    expect(() => sn.conv2d(x, z([4, 2, 3, 3]))).toThrow(/^conv2d: input \[1, 3, 8, 8\] float32 has 3 channels but weight \[4, 2, 3, 3\] float32 expects 2×groups\(1\)=2/);
    expect(() => sn.conv2d(z([1, 4, 8, 8]), z([5, 2, 3, 3]), { groups: 2 })).toThrow(/^conv2d: weight \[5, 2, 3, 3\] float32 has 5 output channels, which is not divisible by groups \(2\)/);
    expect(() => sn.conv2d(z([1, 1, 2, 2]), z([1, 1, 3, 3]))).toThrow(/^conv2d: kernel 3×3 \(3×3 with dilation\) is larger than the padded input 2×2 of \[1, 1, 2, 2\] float32/);
    expect(() => sn.conv2d(z([1, 1, 4, 4]), z([1, 1, 2, 2]), { dilation: 4 })).toThrow(/^conv2d: kernel 2×2 \(5×5 with dilation\) is larger than the padded input 4×4/);
    expect(() => sn.conv2d(x, w, { padding: 'same', stride: 2 })).toThrow(/^conv2d: padding='same' is not supported for strided convolutions \(stride \[2, 2\]\)/);
    expect(() => sn.conv2d(x, w, z([3]))).toThrow(/^conv2d: bias must be 1-D of size 4 \(the output channels\), got \[3\] float32/);
    expect(() => sn.conv2d(x, w, { stride: 0 })).toThrow(/^conv2d: stride must be integers ≥ 1, got \[0, 0\]/);
    expect(() => sn.conv2d(x, w, { padding: [1, -1] })).toThrow(/^conv2d: padding \[top, bottom, left, right\] must be integers ≥ 0, got \[1, 1, -1, -1\]/);
    expect(() => sn.conv2d(x, w, { dilation: [1, 0] })).toThrow(/^conv2d: dilation must be integers ≥ 1, got \[1, 0\]/);
    expect(() => sn.conv2d(x, w, { groups: 1.5 })).toThrow(/^conv2d: groups must be an integer ≥ 1, got 1.5/);
    expect(() => sn.conv2d(x, w, { padding: 'full' as 'same' })).toThrow(/^conv2d: padding must be a number, an \[h, w\] pair, 'valid' or 'same', got "full"/);
    expect(() => sn.conv2d(x, w, { stride: [1, 2, 3] })).toThrow(/^conv2d: stride must be a number or an \[h, w\] pair of numbers, got \[1,2,3\]/);
    expect(() => sn.conv2d(x, w, { strides: 2 } as object)).toThrow(/^conv2d: unknown option strides; expected stride, padding, dilation, groups/);
    expect(() => sn.conv2d(x, w, 2 as unknown as Tensor)).toThrow(/^conv2d: options must be an object, got 2/);
    expect(() => sn.conv2d(x, [1] as unknown as Tensor)).toThrow(/^conv2d: argument 1 must be a Tensor, got Array/);
  });
});

describe.each(WITH_WEBGPU)('convTranspose2d on %s', (device) => {
  it.each([...F.map((dtype) => [dtype, false] as const), ['float32', true] as const])('matches the scatter definition (%s; groups, stride, dilation, padding, outputPadding, strided views; only stride = kernel, unpadded: %s)', async (dtype, strideIsKernel) => {
    await fc.assert(
      fc.asyncProperty(convTranspose2dArb(dtype, strideIsKernel), async ([o, cx, cw, cb]) => {
        const x = makeTensor(cx, device), w = makeTensor(cw, device), b = cb ? makeTensor(cb, device) : null;
        const y = sn.convTranspose2d(x, w, b, { stride: asArg(o.stride), padding: asArg(o.padding), outputPadding: asArg(o.outputPadding), dilation: asArg(o.dilation), groups: o.groups });
        const expected = convTranspose2dRef(asBatch(cx), refOf(cw), cb ? refOf(cb) : null, o);
        expect(y.dtype).toBe(dtype);
        await expectProduct(y, unbatch(expected, cx.shape.length === 4), (cw.shape[0]! / o.groups) * cw.shape[2]! * cw.shape[3]!);
        for (const t of [x, w, b, y]) t?.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 50) }),
    );
  });

  it('computes known values and output sizes', async () => {
    const x = sn.arange(1, 5, { dtype: 'float32', device }).reshape(1, 1, 2, 2);
    await expectClose(sn.convTranspose2d(x, sn.ones([1, 1, 2, 2], { device })), ref([1, 1, 3, 3], [1, 3, 2, 4, 10, 6, 3, 7, 4]));
    await expectClose(sn.convTranspose2d(x, sn.ones([1, 1, 1, 1], { device }), { stride: 2, outputPadding: 1 }), ref([1, 1, 4, 4], [1, 0, 2, 0, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0]));
    const y = sn.convTranspose2d(sn.zeros([2, 4, 5, 7], { device }), sn.zeros([4, 3, 3, 2], { device }), { stride: [2, 3], padding: [1, 0], outputPadding: [1, 2], dilation: [2, 1], groups: 2 });
    expect(y.shape).toEqual([2, 6, (5 - 1) * 2 - 2 + 2 * 2 + 1 + 1, (7 - 1) * 3 + 1 + 2 + 1]);
  });

  it('handles strided input rows and a GEMM taller than one block', async () => {
    const { mc } = GEMM_BLOCKS;
    // A transposed (non-row-contiguous) input and kh·kw·Cout rows beyond one M block.
    const x = sn.randn([1, 3, 6, 5], { seed: 40, device }).transpose(2, 3), w = sn.randn([3, Math.ceil(mc / 9) + 2, 3, 3], { seed: 41, device });
    const o = { stride: [2, 2] as [number, number], padding: [1, 1] as [number, number], outputPadding: [1, 0] as [number, number], dilation: [1, 1] as [number, number], groups: 1 };
    const expected = convTranspose2dRef(ref(x.shape, await x.data()), ref(w.shape, await w.data()), null, o);
    await expectProduct(sn.convTranspose2d(x, w, o), expected, 27);
  });

  it('rejects bad shapes and options with messages naming them', () => {
    const z = (...shape: number[]) => sn.zeros(shape, { device });
    const x = z(1, 4, 5, 5), w = z(4, 3, 3, 3);
    expect(() => sn.convTranspose2d(x, w, { stride: 2, outputPadding: 2 })).toThrow(/^convTranspose2d: outputPadding \[2, 2\] must be smaller than either stride \[2, 2\] or dilation \[1, 1\] in each dim/);
    expect(() => sn.convTranspose2d(x, w, { outputPadding: [0, 1] })).toThrow(/^convTranspose2d: outputPadding \[0, 1\] must be smaller/);
    expect(() => sn.convTranspose2d(z(1, 3, 5, 5), w)).toThrow(/^convTranspose2d: input \[1, 3, 5, 5\] float32 has 3 channels but weight \[4, 3, 3, 3\] float32 expects 4/);
    expect(() => sn.convTranspose2d(x, w, { groups: 3 })).toThrow(/^convTranspose2d: weight \[4, 3, 3, 3\] float32 has 4 input channels, which is not divisible by groups \(3\)/);
    expect(() => sn.convTranspose2d(z(1, 4, 1, 1), z(4, 3, 1, 1), { padding: 1 })).toThrow(/^convTranspose2d: the output size -1×-1 for input \[1, 4, 1, 1\] float32 and weight \[4, 3, 1, 1\] float32 is not positive/);
    expect(() => sn.convTranspose2d(x, w, z(3), { groups: 2 })).toThrow(/^convTranspose2d: bias must be 1-D of size 6 \(the output channels\), got \[3\] float32/);
    expect(() => sn.convTranspose2d(z(4, 5), w)).toThrow(/^convTranspose2d: expected a 3-D \[C, H, W\] or 4-D/);
    expect(() => sn.convTranspose2d(x, w, { padding: -1 })).toThrow(/^convTranspose2d: padding must be integers ≥ 0, got \[-1, -1\]/);
    expect(() => sn.convTranspose2d(x, w, { padding: 'same' } as object)).toThrow(/^convTranspose2d: padding must be a number or an \[h, w\] pair of numbers, got "same"/);
    expect(() => sn.convTranspose2d(x, w, { output_padding: 1 } as object)).toThrow(/^convTranspose2d: unknown option output_padding/);
  });
});


describe.each(GEMM_KERNELS)('convolutions on the WebGPU GEMM kernel %s', (kind) => {
  const device = 'webgpu';
  const host = async (t: Tensor) => ref(t.shape, await t.data());
  const r = (shape: number[], seed: number, dtype: DType = 'float32') => sn.randn(shape, { seed, device, dtype });
  type Pair = [number, number];
  const one: Pair = [1, 1];

  // Output channels per group and pixels overhanging the tiles (64×64, 8×8 per invocation, quads of 4 tiles).
  it('conv2d matches the direct definition at tile edges (groups, stride, dilation, padding, float16 packed)', () =>
    withGemmKernel(kind, async () => {
      type Case = [string, number[], number[], { stride: Pair; padding: Pair; dilation: Pair; groups: number }, DType];
      const cases: Case[] = [
        ['two groups of 33 channels, dilated', [2, 4, 10, 9], [66, 2, 3, 3], { stride: one, padding: one, dilation: [1, 2], groups: 2 }, 'float32'],
        ['stride 2, asymmetric kernel', [1, 3, 17, 15], [35, 3, 3, 2], { stride: [2, 2], padding: [1, 0], dilation: one, groups: 1 }, 'float32'],
        ['float16, an odd pixel count', [1, 3, 7, 7], [33, 3, 3, 3], { stride: one, padding: one, dilation: one, groups: 1 }, 'float16'],
        ['depthwise', [1, 8, 12, 12], [8, 1, 3, 3], { stride: one, padding: one, dilation: one, groups: 8 }, 'float32'],
      ];
      for (const [i, [what, xs, ws, o, dtype]] of cases.entries()) {
        const x = r(xs, 50 + i, dtype), w = r(ws, 60 + i, dtype), b = r([ws[0]!], 70 + i, dtype), y = sn.conv2d(x, w, b, o);
        await expectProduct(y, conv2dRef(await host(x), await host(w), await host(b), o), ws[1]! * ws[2]! * ws[3]!, what);
        for (const t of [x, w, b, y]) t.dispose();
      }
      // A permuted (channels-last) input, read in place.
      const x = r([1, 9, 11, 5], 80).permute(0, 3, 1, 2), w = r([40, 5, 3, 3], 81);
      const o = { stride: one, padding: one, dilation: one, groups: 1 };
      await expectProduct(sn.conv2d(x, w, null, o), conv2dRef(await host(x), await host(w), null, o), 45, 'permuted input');
    }));

  it('convTranspose2d matches the scatter definition at tile edges', () =>
    withGemmKernel(kind, async () => {
      const x = r([2, 4, 6, 5], 90);
      // Two groups of 2 input and 34 output channels; then one group, dilated.
      const w2 = r([4, 34, 3, 3], 91), b = r([68], 92);
      const o = { stride: [2, 2] as Pair, padding: one, outputPadding: [1, 0] as Pair, dilation: one, groups: 2 };
      await expectProduct(sn.convTranspose2d(x, w2, b, o), convTranspose2dRef(await host(x), await host(w2), await host(b), o), 18, 'groups');
      const w1 = r([4, 34, 3, 3], 93);
      const o1 = { ...o, groups: 1, dilation: [2, 1] as Pair };
      await expectProduct(sn.convTranspose2d(x, w1, null, o1), convTranspose2dRef(await host(x), await host(w1), null, o1), 36, 'dilation');
    }));
});
