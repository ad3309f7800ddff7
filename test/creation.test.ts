import fc from 'fast-check';
import ndarray from 'ndarray';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { propertyConfig } from '../src/testing/index.js';
import { WITH_WEBGPU } from './helpers.js';

describe.each(WITH_WEBGPU)('creation on %s', (device) => {
  it('tensor() infers shape and dtype from nested arrays and typed arrays', async () => {
    const a = sn.tensor([[1, 2, 3], [4, 5, 6]], { device });
    expect([a.shape, a.dtype, a.device]).toEqual([[2, 3], 'float32', device]);
    expect(await a.toArray()).toEqual([[1, 2, 3], [4, 5, 6]]);
    expect(sn.tensor([true, false], { device }).dtype).toBe('bool');
    expect(sn.tensor(new Int32Array([1, 2]), { device }).dtype).toBe('int32');
    expect(sn.tensor(new Uint8Array([1, 2]), { device }).dtype).toBe('uint8');
    expect(sn.tensor(new Int8Array([1, 2]), { device }).dtype).toBe('int8');
    expect(sn.tensor(3.5, { device }).shape).toEqual([]);
    expect(await sn.tensor(3.5, { device }).item()).toBe(3.5);
    expect(await sn.tensor(new Float32Array(6).fill(2), { shape: [3, 2], device }).toArray()).toEqual([[2, 2], [2, 2], [2, 2]]);
    expect(sn.tensor([[]], { device }).shape).toEqual([1, 0]);
    expect(() => sn.tensor([[1, 2], [3]], { device })).toThrow(/tensor: ragged nested array: expected length 2 at \[1\], got 1/);
    expect(() => sn.tensor([1, 2, 3], { shape: [2, 2], device })).toThrow(/tensor: shape \[2, 2\] needs 4 values but the data has 3/);
    expect(() => sn.tensor([1], { dtype: 'float64' as sn.DType, device })).toThrow(/tensor: unknown dtype "float64"/);
  });

  it('float16 round-trips exactly to IEEE binary16', async () => {
    // Every finite binary16 value survives; others round to nearest even, overflow goes to infinity.
    const halves = Array.from({ length: 0x7c00 }, (_, h) => {
      const e = h >> 10, m = h & 0x3ff;
      return e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15);
    });
    const values = [...halves, ...halves.map((v) => -v)];
    expect(Array.from(await sn.tensor(values, { dtype: 'float16', device }).data())).toEqual(values);
    expect(Array.from(await sn.tensor([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 1e-8, 3e-8], { dtype: 'float16', device }).data())).toEqual([1, 1 + 2 ** -9, Infinity, 0, 2 ** -24]);
  });

  it('zeros, ones, full, empty and the *Like forms', async () => {
    expect(await sn.zeros(2, 3, { device }).toArray()).toEqual([[0, 0, 0], [0, 0, 0]]);
    expect(await sn.ones([2], { dtype: 'int8', device }).toArray()).toEqual([1, 1]);
    expect(await sn.full([2, 1], 7, { dtype: 'int32', device }).toArray()).toEqual([[7], [7]]);
    expect(await sn.full([1], true, { device }).toArray()).toEqual([true]);
    expect(sn.empty(0, 3, { device }).shape).toEqual([0, 3]);
    const x = sn.ones([2, 2], { dtype: 'float16', device });
    expect([sn.zerosLike(x).dtype, sn.onesLike(x).shape, sn.fullLike(x, 2, { dtype: 'int32' }).dtype]).toEqual(['float16', [2, 2], 'int32']);
    expect(() => sn.zeros([2, -1])).toThrow(/zeros: expected a shape \(an array of non-negative integers\), got \[2,-1\]/);
  });

  it('arange and linspace follow PyTorch', async () => {
    expect(await sn.arange(5, { device }).toArray()).toEqual([0, 1, 2, 3, 4]);
    expect(sn.arange(5, { device }).dtype).toBe('int32');
    expect(await sn.arange(1, 2, 0.25, { device }).toArray()).toEqual([1, 1.25, 1.5, 1.75]);
    expect(sn.arange(0, 1, 0.5, { device }).dtype).toBe('float32');
    expect(await sn.arange(5, 0, -2, { device }).toArray()).toEqual([5, 3, 1]);
    expect(await sn.arange(3, { dtype: 'float32', device }).toArray()).toEqual([0, 1, 2]);
    expect(() => sn.arange(0, 5, -1)).toThrow(/arange: upper bound and step are inconsistent/);
    expect(() => sn.arange(0, 5, 0)).toThrow(/arange: step must be nonzero/);
    expect(await sn.linspace(0, 1, 5, { device }).toArray()).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(await sn.linspace(-1, 1, 1, { device }).toArray()).toEqual([-1]);
    const l = await sn.linspace(-3.3, 7.1, 11, { device }).data();
    expect(l[0]).toBe(Math.fround(-3.3));
    expect(l[10]).toBe(Math.fround(7.1));
  });

  it('eye', async () => {
    expect(await sn.eye(2, { device }).toArray()).toEqual([[1, 0], [0, 1]]);
    expect(await sn.eye(2, 3, { dtype: 'int32', device }).toArray()).toEqual([[1, 0, 0], [0, 1, 0]]);
  });

  it('rand/randn/randint are reproducible from a seed and have the right distribution', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer(), async (seed) => {
        const a = await sn.rand([50], { seed, device }).data();
        expect(Array.from(await sn.rand([50], { seed, device }).data())).toEqual(Array.from(a));
        expect(a.every((v) => v >= 0 && v < 1)).toBe(true);
        const r = await sn.randint(-3, 4, [50], { seed, device }).data();
        expect(r.every((v) => Number.isInteger(v) && v >= -3 && v < 4)).toBe(true);
      }),
      propertyConfig({ numRuns: 20 }),
    );
    const n = Array.from(await sn.randn([20000], { seed: 1, device }).data());
    const mean = n.reduce((a, b) => a + b, 0) / n.length;
    const variance = n.reduce((a, b) => a + (b - mean) ** 2, 0) / n.length;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
    const u = Array.from(await sn.rand([20000], { seed: 2, device }).data());
    expect(Math.abs(u.reduce((a, b) => a + b, 0) / u.length - 0.5)).toBeLessThan(0.01);
    expect(sn.randint(10, [3], { device }).dtype).toBe('int32');
    // Without a seed the default generator continues; manualSeed resets it.
    sn.manualSeed(5);
    const first = await sn.rand([4], { device }).data();
    const second = await sn.rand([4], { device }).data();
    sn.manualSeed(5);
    expect(Array.from(await sn.rand([4], { device }).data())).toEqual(Array.from(first));
    expect(Array.from(second)).not.toEqual(Array.from(first));
  });

  it('toArray gives nested arrays, booleans for bool, and data() a typed array per dtype', async () => {
    expect(await sn.tensor([[true], [false]], { device }).toArray()).toEqual([[true], [false]]);
    expect((await sn.tensor([1], { dtype: 'float16', device }).data()) instanceof Float32Array).toBe(true);
    expect((await sn.tensor([1], { dtype: 'bool', device }).data()) instanceof Uint8Array).toBe(true);
    expect((await sn.tensor([1], { dtype: 'int8', device }).data()) instanceof Int8Array).toBe(true);
    expect(await sn.tensor(2, { dtype: 'int32', device }).toArray()).toBe(2);
  });

  it('fromNdarray/toNdarray interoperate with the ndarray package, strides included', async () => {
    const nd = ndarray(new Float64Array([1, 2, 3, 4, 5, 6]), [2, 3]).transpose(1, 0);
    const t = sn.fromNdarray(nd, { device });
    expect([t.shape, t.dtype]).toEqual([[3, 2], 'float32']);
    expect(await t.toArray()).toEqual([[1, 4], [2, 5], [3, 6]]);
    expect(sn.fromNdarray(ndarray(new Int32Array([1, 2]), [2]), { device }).dtype).toBe('int32');
    const back = await sn.toNdarray(t);
    expect(back.shape).toEqual([3, 2]);
    expect(back.get(2, 1)).toBe(6);
    expect(() => sn.fromNdarray({} as never)).toThrow(/fromNdarray: expected an ndarray/);
  });
});
