import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { TOLERANCES, assertClose } from '../src/testing/index.js';

// Per-call attributes of ops are kernel parameters (uniforms), not WGSL text: the norms' eps, the
// attention scale, triu/tril's diagonal, maskedFill's value, nanToNum's replacements, the unary
// activations' attributes, and the views' offsets (oneHot, sort, the norms). Each test runs an op on
// WebGPU with several values and checks (a) every result against the CPU backend and (b) that after
// the first value compiled its pipelines, the other values compile none.

const tol = TOLERANCES.webgpu.float32;
const pipelines = () => sn.memory().devices.webgpu!.pipelines!;

/**
 * Sums of products (convolutions, matmuls) on the two devices add in different orders, in float32: their difference
 * grows with the number and size of the terms (here up to 125 products of unit normals), past float32's rtol where
 * the sum cancels to a small value.
 */
const products = { ...tol, atol: 1e-4 };

/** `op` on webgpu and on cpu for every value: results agree (bit for bit with `exact`), and values after the first compile no pipeline. */
async function oneCompileFor<V>(values: readonly V[], op: (device: sn.DeviceName, v: V) => Tensor, compare: 'exact' | typeof tol = tol): Promise<void> {
  const check = async (v: V) => {
    const [got, want] = await Promise.all((['webgpu', 'cpu'] as const).map(async (d) => {
      const t = op(d, v);
      const data = Array.from(await t.data());
      t.dispose();
      return data;
    }));
    if (compare === 'exact') expect(got, String(v)).toEqual(want);
    else assertClose(got!, want!, compare);
  };
  await check(values[0]!);
  const before = pipelines().misses;
  for (const v of values.slice(1)) await check(v);
  expect(pipelines().misses - before, 'pipelines compiled after the first value').toBe(0);
}

/** The same seeded random tensor on either device. */
const randn = (shape: number[], seed: number, device: sn.DeviceName) => sn.randn(shape, { seed, device: 'cpu' }).to(device);

describe('norm eps is a kernel parameter', () => {
  const eps = [1e-5, 1e-3, 0.25, 3];
  it('layerNorm', async () => {
    await oneCompileFor(eps, (d, e) => sn.tidy(() => sn.layerNorm(randn([5, 37], 1, d), [37], randn([37], 2, d), randn([37], 3, d), e)));
  });
  it('groupNorm', async () => {
    await oneCompileFor(eps, (d, e) => sn.tidy(() => sn.groupNorm(randn([2, 6, 5], 1, d), 3, randn([6], 2, d), randn([6], 3, d), e)));
  });
  it('instanceNorm, with input statistics and with running statistics', async () => {
    await oneCompileFor(eps, (d, e) => sn.tidy(() => sn.instanceNorm(randn([2, 3, 7], 1, d), { eps: e })));
    await oneCompileFor(eps, (d, e) => sn.tidy(() => sn.instanceNorm(randn([2, 3, 7], 1, d), { useInputStats: false, runningMean: randn([3], 4, d), runningVar: randn([3], 5, d).abs(), eps: e })));
  });
  it('batchNorm', async () => {
    await oneCompileFor(eps, (d, e) => sn.tidy(() => sn.batchNorm(randn([3, 4, 5], 1, d), randn([4], 2, d), randn([4], 3, d).abs(), randn([4], 4, d), null, { eps: e })));
  });
  it('rmsNorm', async () => {
    await oneCompileFor(eps, (d, e) => sn.tidy(() => sn.rmsNorm(randn([4, 9], 1, d), [9], randn([9], 2, d), e)));
  });
  it('layerNorm of rows at different offsets of one buffer', async () => {
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.layerNorm(randn([6, 11], 1, d).narrow(0, i, 3), [11])));
  });
});

describe('other op attributes are kernel parameters', () => {
  it('scaledDotProductAttention scale (fused kernel), with and without a causal mask', async () => {
    for (const isCausal of [false, true]) {
      await oneCompileFor([0.5, 0.125, 1.75, -2], (d, scale) => sn.tidy(() => sn.scaledDotProductAttention(randn([2, 5, 8], 1, d), randn([2, 6, 8], 2, d), randn([2, 6, 3], 3, d), { scale, isCausal })));
    }
  });
  it('triu and tril diagonal, including diagonals past the matrix and beyond int32', async () => {
    const diagonals = [0, 1, -1, 3, -4, 7, -7, 1e12, -1e12];
    await oneCompileFor(diagonals, (d, k) => sn.tidy(() => sn.triu(randn([2, 4, 5], 1, d), k)), 'exact');
    await oneCompileFor(diagonals, (d, k) => sn.tidy(() => sn.tril(randn([2, 4, 5], 1, d), k)), 'exact');
    // Beyond int32 the kernel's clamped diagonal keeps or drops every element.
    const x = sn.ones([3, 3], { device: 'webgpu' });
    expect(Array.from(await x.triu(1e12).data())).toEqual(Array(9).fill(0));
    expect(Array.from(await x.triu(-1e12).data())).toEqual(Array(9).fill(1));
  });
  it('maskedFill value (float and int) and nanToNum replacements', async () => {
    const mask = (d: sn.DeviceName) => randn([4, 6], 7, d).gt(0);
    await oneCompileFor([0, -1e9, 3.5, NaN, -Infinity], (d, v) => sn.tidy(() => sn.maskedFill(randn([4, 6], 1, d), mask(d), v)), 'exact');
    await oneCompileFor([0, -7, 2147483647, 12], (d, v) => sn.tidy(() => sn.maskedFill(sn.arange(0, 24, 1, { device: d, dtype: 'int32' }).reshape([4, 6]), mask(d), v)), 'exact');
    const special = (d: sn.DeviceName) => sn.tensor([NaN, Infinity, -Infinity, 1.5, -0.25], { device: d });
    await oneCompileFor([[0, 1, -1], [9, 1e30, -1e30], [-3, 5, 6]] as const, (d, [nan, posinf, neginf]) => sn.tidy(() => sn.nanToNum(special(d), { nan, posinf, neginf })), 'exact');
  });
  it('elu, leakyRelu, softplus and clamp attributes', async () => {
    const x = (d: sn.DeviceName) => randn([3, 7], 1, d).mul(4);
    const values = [0.5, 1, 2.5, 0.01];
    await oneCompileFor(values, (d, a) => sn.tidy(() => sn.elu(x(d), a)));
    await oneCompileFor(values, (d, s) => sn.tidy(() => sn.leakyRelu(x(d), s)));
    await oneCompileFor(values, (d, b) => sn.tidy(() => sn.softplus(x(d), b, 4 * b)));
    await oneCompileFor(values, (d, c) => sn.tidy(() => sn.clamp(x(d), -c, 2 * c)), 'exact');
  });
  it('oneHot and argsort of views at different offsets', async () => {
    const classes = (d: sn.DeviceName) => sn.tensor([3, 0, 2, 1, 1, 4, 0, 2, 3], { device: d, dtype: 'int32' });
    await oneCompileFor([0, 2, 5], (d, i) => sn.tidy(() => sn.oneHot(classes(d).narrow(0, i, 4), 5)), 'exact');
    await oneCompileFor([0, 1, 4], (d, i) => sn.tidy(() => sn.argsort(randn([9, 6], 1, d).narrow(0, i, 3), 1)), 'exact');
  });
  it('the bitonic sort of long rows compiles one pipeline for all its compare-exchange steps', async () => {
    const x = (d: sn.DeviceName) => randn([2, 2100], 3, d);
    const before = pipelines().misses;
    const [got, want] = await Promise.all((['webgpu', 'cpu'] as const).map((d) => sn.tidy(() => sn.argsort(x(d), 1)).data()));
    expect(Array.from(got!)).toEqual(Array.from(want!));
    // Fill, one compare-exchange step for all 78 steps of a 4096-wide network, write-out (and the random input's kernels).
    expect(pipelines().misses - before).toBeLessThanOrEqual(6);
    // Descending, of a view at another offset: only the fill pass (its key order) is new.
    const rows = (d: sn.DeviceName) => randn([3, 2100], 4, d).narrow(0, 1, 2);
    const mid = pipelines().misses;
    const [g2, w2] = await Promise.all((['webgpu', 'cpu'] as const).map((d) => sn.tidy(() => sn.argsort(rows(d), 1, true)).data()));
    expect(Array.from(g2!)).toEqual(Array.from(w2!));
    expect(pipelines().misses - mid).toBeLessThanOrEqual(3);
  });
});

describe('view offsets and per-call scalars of gathers, pooling, interpolation, cumprod and erfinv are kernel parameters', () => {
  const ints = (values: number[], shape: number[], d: sn.DeviceName) => sn.tensor(values, { device: d, dtype: 'int32' }).reshape(shape);
  const indices = [3, 0, 5, 1, 2, 4, 0, 0, 5, 5, 1, 3, 2, 2, 4, 1, 0, 3, 5, 4, 1, 2, 3, 0];
  it('gather, indexSelect, embedding and cat of views at different offsets (input and index both)', async () => {
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.gather(randn([6, 6], 1, d).narrow(0, i, 3), 1, ints(indices, [6, 4], d).narrow(0, i, 3))), 'exact');
    await oneCompileFor([0, 2, 5], (d, i) => sn.tidy(() => sn.indexSelect(randn([6, 9], 1, d).narrow(1, i, 4), 0, ints(indices, [24], d).narrow(0, 2 * i, 7))), 'exact');
    await oneCompileFor([0, 1, 4], (d, i) => sn.tidy(() => sn.embedding(ints(indices, [4, 6], d).narrow(1, i, 2), randn([10, 3], 2, d).narrow(0, i, 6))), 'exact');
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.cat([randn([5, 5], 1, d).narrow(0, i, 2), randn([6, 5], 2, d).narrow(0, 3 - i, 3)], 0)), 'exact');
  });
  it('maxPool2d, avgPool2d and adaptiveAvgPool2d of views at different offsets', async () => {
    const x = (d: sn.DeviceName, i: number) => randn([2, 3, 7, 9], 1, d).narrow(3, i, 6);
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.maxPool2d(x(d, i), 3, { stride: 2, padding: 1 })), 'exact');
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.avgPool2d(x(d, i), 2, { padding: 1, countIncludePad: false })));
    // A 6×6 window is summed by a team of invocations per output (the global-pooling path).
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.avgPool2d(x(d, i), [7, 6])));
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.adaptiveAvgPool2d(x(d, i), [2, 4])));
  });
  it('avgPool2d divisorOverride, with one invocation and with a team per window', async () => {
    const divisors = [1, 3, 7, 100];
    await oneCompileFor(divisors, (d, v) => sn.tidy(() => sn.avgPool2d(randn([2, 3, 7, 9], 1, d), 3, { stride: 2, divisorOverride: v })));
    await oneCompileFor(divisors, (d, v) => sn.tidy(() => sn.avgPool2d(randn([2, 3, 7, 9], 1, d), [7, 6], { divisorOverride: v })));
  });
  it('interpolate (nearest, linear, bilinear) of views at different offsets and scale factors giving one size', async () => {
    const x = (d: sn.DeviceName, i: number) => randn([2, 3, 5, 8], 1, d).narrow(3, i, 5);
    for (const mode of ['nearest', 'bilinear'] as const) {
      await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.interpolate(x(d, i), { size: [7, 8], mode })), mode === 'nearest' ? 'exact' : tol);
      // 5 × 1.62, 1.7 and 1.78 all floor to 8: one output shape, three source scales.
      await oneCompileFor([1.62, 1.7, 1.78], (d, f) => sn.tidy(() => sn.interpolate(x(d, 0), { scaleFactor: f, mode })), mode === 'nearest' ? 'exact' : tol);
    }
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.interpolate(x(d, i).reshape([6, 5, 5]).narrow(0, i, 3), { size: 9, mode: 'linear', alignCorners: true })));
    await oneCompileFor([1.62, 1.7, 1.78], (d, f) => sn.tidy(() => sn.interpolate(randn([2, 3, 5], 1, d), { scaleFactor: f, mode: 'linear' })));
  });
  it('cumprod and erfinv of views at different offsets', async () => {
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.cumprod(randn([4, 9], 1, d).narrow(1, i, 5), 1)));
    await oneCompileFor([0, 2, 5], (d, i) => sn.tidy(() => sn.cumprod(ints(indices, [24], d).narrow(0, i, 12), 0)), 'exact');
    const unit = (d: sn.DeviceName) => sn.randn([6, 7], { seed: 1, device: 'cpu' }).mul(0.5).tanh().to(d);
    await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => sn.erfinv(unit(d).narrow(0, i, 3))));
  });
});

describe('view offsets of scatterElements, scatterND and gatherND are kernel parameters', () => {
  // These are ONNX ops (src/ops/scatter.ts), not top-level functions; imported here so this block stays self-contained.
  const scatter = () => import('../src/ops/scatter.js');
  const ints = (values: number[], shape: number[], d: sn.DeviceName) => sn.tensor(values, { device: d, dtype: 'int32' }).reshape(shape);
  it('scatterElements (data, indices and updates all views at different offsets), with and without a reduction', async () => {
    const { scatterElements } = await scatter();
    // Indices along axis 1 of a [3, 5] view: negative and repeated ones included.
    const index = (d: sn.DeviceName, i: number) => ints([4, -1, 0, 2, 1, 1, -5, 3, 0, 4, 2, -2, 3, 3, 1, 0, -3, 2, 4, 1], [5, 4], d).narrow(0, i, 3);
    for (const reduction of ['none', 'add'] as const) {
      await oneCompileFor([0, 1, 2], (d, i) => sn.tidy(() => scatterElements(randn([6, 5], 1, d).narrow(0, i, 3), index(d, i), randn([5, 4], 2, d).narrow(0, 2 - i, 3), { axis: 1, reduction })),
        reduction === 'none' ? 'exact' : tol);
    }
  });
  it('scatterND (rows of data at index tuples; repeated rows add in order)', async () => {
    const { scatterND } = await scatter();
    const index = (d: sn.DeviceName, i: number) => ints([2, -1, 0, 2, 1, -4], [6, 1], d).narrow(0, i, 3);
    for (const reduction of ['none', 'add'] as const) {
      await oneCompileFor([0, 1, 3], (d, i) => sn.tidy(() => scatterND(randn([7, 5], 1, d).narrow(0, i, 4), index(d, i), randn([6, 5], 2, d).narrow(0, 3 - i, 3), { reduction })),
        reduction === 'none' ? 'exact' : tol);
    }
  });
  it('gatherND of views at different offsets', async () => {
    const { gatherND } = await scatter();
    const index = (d: sn.DeviceName, i: number) => ints([2, -1, 0, 3, -3, 0, 1, 1, 2, -4], [5, 2], d).narrow(0, i, 3);
    await oneCompileFor([0, 1, 2], (d, i) => sn.tidy(() => gatherND(randn([6, 4, 3], 1, d).narrow(0, i, 3), index(d, i))), 'exact');
    // batchDims 1: each row of indices picks from its own row of data.
    await oneCompileFor([0, 1, 2], (d, i) => sn.tidy(() => gatherND(randn([5, 4, 3], 1, d).narrow(0, i, 3), index(d, i).narrow(1, 1, 1), { batchDims: 1 })), 'exact');
  });
});

describe('sizes of convolutions and matrix products are kernel parameters', () => {
  // Layers of one structure (padded sides, groups, stride 1 or not for the transpose) at different
  // sizes and kernel sizes share a pipeline. The sizes are picked so that the few size-dependent
  // choices that stay in the source (register tile and workgroup shape, vec4 stores) are equal across
  // them: more than 64 output pixels per image, not a multiple of 4.
  it('conv2d 3×3 with padding and bias: channels, image sizes and strides', async () => {
    const shapes = [[4, 9, 9, 1], [8, 11, 13, 1], [4, 17, 17, 2], [8, 21, 13, 2]] as const;
    await oneCompileFor(shapes, (d, [c, h, w, stride]) => sn.tidy(() => sn.conv2d(randn([2, c, h, w], 1, d), randn([8, c, 3, 3], 2, d), randn([8], 3, d), { padding: 1, stride })), products);
  });
  it('conv2d with padding: kernel sizes (3×3, 5×5, 1×3), dilations and k mod 4 share one pipeline', async () => {
    // [in channels, kernel height, kernel width, dilation]: k = 36, 125, 9, 36; 99 to 169 output pixels, all odd.
    const shapes = [[4, 3, 3, 1], [5, 5, 5, 1], [3, 1, 3, 1], [4, 3, 3, 2]] as const;
    await oneCompileFor(shapes, (d, [c, kh, kw, dilation]) =>
      sn.tidy(() => sn.conv2d(randn([1, c, 11, 13], 1, d), randn([8, c, kh, kw], 2, d), randn([8], 3, d), { padding: 1, dilation })), products);
  });
  it('convTranspose2d with stride 2: kernel sizes 3×3 and 5×5 share one pipeline', async () => {
    const shapes = [[4, 3], [6, 5]] as const;
    await oneCompileFor(shapes, (d, [c, k]) => sn.tidy(() => sn.convTranspose2d(randn([1, c, 6, 7], 1, d), randn([c, 8, k, k], 2, d), randn([8], 3, d), { stride: 2, padding: 1 })), products);
  });
  it('depthwise conv2d: channels and image sizes', async () => {
    const shapes = [[3, 9, 9], [8, 11, 13], [5, 13, 9]] as const;
    await oneCompileFor(shapes, (d, [c, h, w]) => sn.tidy(() => sn.conv2d(randn([1, c, h, w], 1, d), randn([c, 1, 3, 3], 2, d), { padding: 1, groups: c })), products);
  });
  it('depthwise conv2d 5×5 (kernel size in the source): channels and image sizes', async () => {
    const shapes = [[3, 9, 9], [8, 11, 13]] as const;
    await oneCompileFor(shapes, (d, [c, h, w]) => sn.tidy(() => sn.conv2d(randn([1, c, h, w], 1, d), randn([c, 1, 5, 5], 2, d), randn([c], 3, d), { padding: 2, groups: c })), products);
  });
  it('convTranspose2d with stride 2: channels and image sizes', async () => {
    const shapes = [[4, 5, 5], [8, 6, 7], [12, 7, 5]] as const;
    await oneCompileFor(shapes, (d, [c, h, w]) => sn.tidy(() => sn.convTranspose2d(randn([1, c, h, w], 1, d), randn([c, 8, 3, 3], 2, d), randn([8], 3, d), { stride: 2, padding: 1 })), products);
  });
  it('conv2d 1×1 without padding (a plain product): channels and image sizes', async () => {
    // Channel counts (k) all multiples of 4: whether the weight's rows load as vec4 is in the source.
    const shapes = [[4, 9, 9], [8, 11, 13], [12, 13, 9]] as const;
    await oneCompileFor(shapes, (d, [c, h, w]) => sn.tidy(() => sn.conv2d(randn([2, c, h, w], 1, d), randn([12, c, 1, 1], 2, d), randn([12], 3, d))), products);
  });
  it('convTranspose2d with stride = kernel 2×2 (one tap per output pixel): channels and image sizes', async () => {
    const shapes = [[4, 5, 5], [8, 6, 7], [12, 7, 5]] as const;
    await oneCompileFor(shapes, (d, [c, h, w]) => sn.tidy(() => sn.convTranspose2d(randn([2, c, h, w], 1, d), randn([c, 8, 2, 2], 2, d), randn([8], 3, d), { stride: 2 })), products);
  });
  it('matmul with bias (linear): m, n and k', async () => {
    const shapes = [[9, 67, 12], [13, 75, 20], [15, 99, 28]] as const;
    await oneCompileFor(shapes, (d, [m, n, k]) => sn.tidy(() => sn.linear(randn([m, k], 1, d), randn([n, k], 2, d), randn([n], 3, d))), products);
  });
  it('a jit-compiled conv2d with a fused activation and residual: one pipeline for every size', async () => {
    const block = sn.jit((x: Tensor, w: Tensor, b: Tensor) => sn.conv2d(x, w, b, { padding: 1 }).relu().add(x));
    const shapes = [[8, 9, 9], [8, 11, 13], [8, 13, 9]] as const;
    await oneCompileFor(shapes, (d, [c, h, w]) => sn.tidy(() => {
      const args = [randn([1, c, h, w], 1, d), randn([c, c, 3, 3], 2, d), randn([c], 3, d)] as const;
      return d === 'webgpu' ? block(...args) : sn.conv2d(args[0], args[1], args[2], { padding: 1 }).relu().add(args[0]);
    }), products);
  });
});
