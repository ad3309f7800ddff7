import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName } from '../src/index.js';
import { type ScatterReduction, gatherND, scatterElements, scatterND } from '../src/ops/scatter.js';
import { propertyConfig } from '../src/testing/index.js';
import { WITH_WEBGPU } from './helpers.js';

// scatterElements, scatterND and gatherND (src/ops/scatter.ts, ONNX's ScatterElements/ScatterND/GatherND) against
// plain float64 loops written here: random shapes (size-1 dims included), negative and repeated indices, every
// reduction, on both backends. Sums of at most a few float32 values: rtol 1e-6.

const REDUCTIONS: ScatterReduction[] = ['none', 'add', 'mul', 'max', 'min'];

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}
const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
function apply(r: ScatterReduction, a: number, b: number): number {
  return r === 'none' ? b : r === 'add' ? a + b : r === 'mul' ? a * b : r === 'max' ? Math.max(a, b) : Math.min(a, b);
}
const f32 = (v: number[]) => Array.from(Float32Array.from(v));

const valuesArb = (n: number) => fc.array(fc.float({ min: -8, max: 8, noNaN: true, noDefaultInfinity: true }), { minLength: n, maxLength: n });

const elementsCase = fc.record({ shape: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }), reduction: fc.constantFrom(...REDUCTIONS) })
  .chain(({ shape, reduction }) => fc.record({
    shape: fc.constant(shape), reduction: fc.constant(reduction),
    axis: fc.integer({ min: 0, max: shape.length - 1 }),
    indexShape: fc.tuple(...shape.map((d) => fc.integer({ min: 1, max: d + 1 }))),
  }))
  .chain((c) => {
    const size = c.shape[c.axis]!, n = prod(c.indexShape);
    // Outside the axis the index may not be larger than the data.
    const indexShape = c.indexShape.map((d, i) => (i === c.axis ? d : Math.min(d, c.shape[i]!)));
    return fc.record({
      ...Object.fromEntries(Object.entries(c).map(([k, v]) => [k, fc.constant(v)])) as { shape: fc.Arbitrary<number[]>; reduction: fc.Arbitrary<ScatterReduction>; axis: fc.Arbitrary<number> },
      indexShape: fc.constant(indexShape),
      data: valuesArb(prod(c.shape)),
      index: fc.array(fc.integer({ min: -size, max: size - 1 }), { minLength: prod(indexShape), maxLength: prod(indexShape) }),
      updates: valuesArb(prod(indexShape)),
      unused: fc.constant(n),
    });
  });

describe.each(WITH_WEBGPU as DeviceName[])('scatter and gatherND on %s', (device) => {
  it('scatterElements matches a float64 reference (negative and repeated indices, every reduction)', async () => {
    await fc.assert(fc.asyncProperty(elementsCase, async ({ shape, axis, reduction, indexShape, data, index, updates }) => {
      const out = f32(data).slice(), ds = strides(shape), is = strides(indexShape), size = shape[axis]!;
      for (let i = 0; i < index.length; i++) {
        let at = 0;
        for (let d = 0; d < shape.length; d++) {
          const c = Math.floor(i / is[d]!) % indexShape[d]!;
          at += (d === axis ? (index[i]! < 0 ? index[i]! + size : index[i]!) : c) * ds[d]!;
        }
        out[at] = apply(reduction, out[at]!, f32([updates[i]!])[0]!);
      }
      const y = scatterElements(sn.tensor(data, { device }).reshape(shape), sn.tensor(index, { dtype: 'int32', device }).reshape(indexShape),
        sn.tensor(updates, { device }).reshape(indexShape), { axis, reduction });
      const got = Array.from(await y.data());
      got.forEach((v, i) => expect(Math.abs(v - out[i]!), `element ${i}`).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(out[i]!)) * 4));
    }), propertyConfig({ numRuns: device === 'cpu' ? 60 : 15 }));
  });

  it('scatterND and gatherND match float64 references', async () => {
    const ndCase = fc.record({ shape: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }), tuples: fc.integer({ min: 1, max: 5 }), reduction: fc.constantFrom(...REDUCTIONS) })
      .chain(({ shape, tuples, reduction }) => fc.record({
        shape: fc.constant(shape), tuples: fc.constant(tuples), reduction: fc.constant(reduction), k: fc.integer({ min: 1, max: shape.length }),
      })).chain((c) => fc.record({
        c: fc.constant(c),
        index: fc.array(fc.tuple(...c.shape.slice(0, c.k).map((d) => fc.integer({ min: -d, max: d - 1 }))), { minLength: c.tuples, maxLength: c.tuples }),
        data: valuesArb(prod(c.shape)),
        updates: valuesArb(c.tuples * prod(c.shape.slice(c.k))),
      }));
    await fc.assert(fc.asyncProperty(ndCase, async ({ c: { shape, tuples, reduction, k }, index, data, updates }) => {
      const ds = strides(shape), slice = prod(shape.slice(k));
      const base = (t: number) => index[t]!.reduce((a, v, j) => a + (v < 0 ? v + shape[j]! : v) * ds[j]!, 0);
      const out = f32(data).slice(), upd = f32(updates);
      for (let t = 0; t < tuples; t++) for (let s = 0; s < slice; s++) out[base(t) + s] = apply(reduction, out[base(t) + s]!, upd[t * slice + s]!);
      const idx = sn.tensor(index.flat(), { dtype: 'int32', device }).reshape([tuples, k]);
      const x = sn.tensor(data, { device }).reshape(shape);
      const y = scatterND(x, idx, sn.tensor(updates, { device }).reshape([tuples, ...shape.slice(k)]), { reduction });
      const got = Array.from(await y.data());
      got.forEach((v, i) => expect(Math.abs(v - out[i]!), `scatterND element ${i}`).toBeLessThanOrEqual(4e-6 * Math.max(1, Math.abs(out[i]!))));
      const g = gatherND(x, idx);
      expect(g.shape).toEqual([tuples, ...shape.slice(k)]);
      const want = Array.from({ length: tuples * slice }, (_, i) => f32(data)[base(Math.floor(i / slice)) + (i % slice)]!);
      expect(Array.from(await g.data())).toEqual(want);
    }), propertyConfig({ numRuns: device === 'cpu' ? 60 : 15 }));
  });

  it('an index out of range is a SinterError naming the op and the indices', async () => {
    const x = sn.zeros([3, 2], { device });
    const bad = sn.tensor([[0, 3]], { dtype: 'int32', device });
    // The CPU throws when the op runs, WebGPU when the result is read: both surface from the read.
    const read = (f: () => sn.Tensor) => (async () => f().data())();
    await expect(read(() => scatterElements(x, bad, sn.ones([1, 2], { device }), { axis: 0 }))).rejects.toThrow(/scatterElements: index 3 .*out of range/);
    await expect(read(() => gatherND(x, sn.tensor([[5, 0]], { dtype: 'int32', device })))).rejects.toThrow(/gatherND: .*out of range/);
    await expect(read(() => scatterND(x, sn.tensor([[-4]], { dtype: 'int32', device }), sn.ones([1, 2], { device })))).rejects.toThrow(/scatterND: .*out of range/);
    expect(() => scatterND(x, sn.tensor([[0]], { dtype: 'int32', device }), sn.ones([2, 2], { device }))).toThrow(/scatterND: updates .* must have shape \[1, 2\]/);
  });
});
