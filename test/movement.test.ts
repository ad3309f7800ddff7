import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, Tensor } from '../src/index.js';
import { type TensorCase, makeTensor, propertyConfig, shapeArb, tensorCaseArb, valueArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose } from './helpers.js';
import { type Ref, castRef, ref, refOf } from './reference/core.js';
import { type PadMode, catRef, embeddingRef, flipRef, gatherRef, indexSelectRef, narrowRef, padRef, repeatRef, stackRef } from './reference/movement.js';

// Data movement is exact for every dtype on both backends: values are copied, or converted once by
// dtype promotion (castRef), so the comparisons use TOLERANCES, which are 0 for ints and bool and
// only matter for float16 promotion, where src and reference round the same value once.

// Every new shape compiles a new WebGPU pipeline (shapes are baked into the WGSL; ~5 ms each on
// SwiftShader), so the GPU runs fewer random cases to keep this file quick.
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 2) : n);

const ALL: DType[] = ['float32', 'float16', 'int32', 'int8', 'uint8', 'bool'];
const dtypeArb = fc.constantFrom(...ALL);
/** A dim of a rank-r tensor, negative half the time. */
const dimArb = (r: number) => fc.integer({ min: -r, max: r - 1 });
const norm = (d: number, r: number) => (d < 0 ? d + r : d);
const castAll = (r: Ref, dtype: DType): Ref => ({ shape: r.shape, data: r.data.map((v) => castRef(dtype, v)) });

function expectError(err: unknown, parts: readonly (string | RegExp)[]): void {
  expect(err, 'expected an error').toBeInstanceOf(sn.SinterError);
  for (const p of parts) expect((err as Error).message).toMatch(p);
}

function expectThrows(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expectError(err, parts);
}

/** For bad index values: the CPU rejects them when the op runs, WebGPU (where the index lives on the GPU) when its result is read. */
async function expectFails(fn: () => Tensor, ...parts: (string | RegExp)[]): Promise<void> {
  let err: unknown;
  try {
    await fn().data();
  } catch (e) {
    err = e;
  }
  expectError(err, parts);
}

describe.each(WITH_WEBGPU)('cat and stack on %s', (device) => {
  it('cat matches the reference across dims, dtypes (promoted), layouts and skipped 1-D empties', async () => {
    const arb = shapeArb({ minRank: 1, maxRank: 4, maxDim: 4 }).chain((shape) =>
      fc.tuple(dimArb(shape.length), fc.array(fc.tuple(fc.integer({ min: 0, max: 4 }), dtypeArb), { minLength: 1, maxLength: 4 })).chain(([dim, parts]) =>
        fc.tuple(
          fc.constant(dim),
          fc.tuple(...parts.map(([n, dtype]) => tensorCaseArb(shape.map((s, i) => (i === norm(dim, shape.length) ? n : s)), { dtype }))),
          fc.option(fc.tuple(fc.nat(parts.length), dtypeArb)),
        ),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([dim, cases, empty]) => {
        const all: TensorCase[] = [...cases];
        if (empty) all.splice(empty[0], 0, { shape: [0], dtype: empty[1], values: [], layout: { kind: 'contiguous' } });
        const xs = all.map((c) => makeTensor(c, device));
        const dtype = all.map((c) => c.dtype).reduce(sn.promoteTypes);
        const y = sn.cat(xs, dim);
        await expectClose(y, castAll(catRef(all.map(refOf), norm(dim, cases[0]!.shape.length)), dtype), { dtype });
        await expectClose(sn.cat(xs, { dim }), castAll(catRef(all.map(refOf), norm(dim, cases[0]!.shape.length)), dtype));
        for (const t of [...xs, y]) t.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 50) }),
    );
  });

  it('stack matches the reference for every new dim, dtypes promoted', async () => {
    const arb = shapeArb({ maxRank: 3, maxDim: 4 }).chain((shape) =>
      fc.tuple(
        fc.integer({ min: -shape.length - 1, max: shape.length }),
        fc.array(dtypeArb, { minLength: 1, maxLength: 4 }).chain((ds) => fc.tuple(...ds.map((dtype) => tensorCaseArb(shape, { dtype })))),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([dim, cases]) => {
        const xs = cases.map((c) => makeTensor(c, device));
        const dtype = cases.map((c) => c.dtype).reduce(sn.promoteTypes);
        await expectClose(sn.stack(xs, dim), castAll(stackRef(cases.map(refOf), norm(dim, cases[0]!.shape.length + 1)), dtype), { dtype });
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it('cat joins more tensors than one WebGPU kernel can bind, converting each value once', async () => {
    // 130 inputs exceed any kernel's storage-buffer bindings (12 on SwiftShader), so WebGPU joins
    // them in groups, and the groups again. The int32 values are not float16 numbers: had a group
    // of int32 and float16 been joined as float16 on the way to float32, 4097 would become 4096.
    const dtypes: DType[] = ['int32', 'float16', 'uint8', 'int8', 'bool'];
    const all: TensorCase[] = Array.from({ length: 130 }, (_, k) => {
      if (k % 17 === 5) return { shape: [0], dtype: 'float16', values: [], layout: { kind: 'contiguous' } };
      const dtype = k === 129 ? 'float32' : dtypes[k % dtypes.length]!, n = 1 + (k % 3);
      const values = Array.from({ length: 2 * n }, (_, i) => castRef(dtype, dtype === 'int32' ? 4097 + 100 * k + i : k + i));
      return { shape: [2, n], dtype, values, layout: k % 2 ? { kind: 'permuted', perm: [1, 0] } : { kind: 'contiguous' } };
    });
    const xs = all.map((c) => makeTensor(c, device));
    const y = sn.cat(xs, 1);
    await expectClose(y, catRef(all.map(refOf), 1), { dtype: 'float32' });
    for (const t of [...xs, y]) t.dispose();
  });

  it('cat of only skipped empties is an empty 1-D tensor; cat keeps empty dims of other ranks', async () => {
    const e = sn.tensor([], { dtype: 'int32', device });
    const y = sn.cat([e, sn.tensor([], { device })], 3);
    expect(y.shape).toEqual([0]);
    expect(y.dtype).toBe('float32');
    expect(sn.cat([sn.zeros([2, 0], { device }), sn.zeros([3, 0], { device })]).shape).toEqual([5, 0]);
  });

  it('rejects bad input with clear errors', () => {
    const a = sn.zeros([2, 3], { device }), b = sn.zeros([2, 4], { device }), s = sn.tensor(1, { device });
    expectThrows(() => sn.cat([]), /^cat:/, 'non-empty');
    expectThrows(() => sn.cat([a, b]), /^cat:/, 'dim 0', '[2, 3] float32', '[2, 4] float32', 'position 1');
    expectThrows(() => sn.cat([a, sn.zeros([2, 3, 1], { device })], 1), /^cat:/, 'same rank');
    expectThrows(() => sn.cat([s, s]), /^cat:/, '0-d');
    expectThrows(() => sn.cat([a, b], 2), /^cat:/, 'dim 2 is out of range');
    expectThrows(() => sn.stack([]), /^stack:/, 'non-empty');
    expectThrows(() => sn.stack([a, b]), /^stack:/, 'tensor(float32, [2, 4]) at position 1');
    expectThrows(() => sn.stack([a, a], 3), /^stack:/, 'dim 3 is out of range');
  });
});

describe.each(WITH_WEBGPU)('split and chunk on %s', (device) => {
  async function expectPieces(x: Tensor, c: TensorCase, pieces: Tensor[], sizes: number[], dim: number): Promise<void> {
    expect(pieces.map((p) => p.shape[dim])).toEqual(sizes);
    let start = 0;
    for (const p of pieces) {
      expect(p.storage, 'a piece is a view').toBe(x.storage);
      await expectClose(p, narrowRef(refOf(c), dim, start, p.shape[dim]!));
      start += p.shape[dim]!;
    }
  }

  it('split by size and by sections gives views matching the reference', async () => {
    const arb = shapeArb({ minRank: 1, maxRank: 4, maxDim: 7 }).chain((shape) =>
      dimArb(shape.length).chain((dim) => {
        const n = shape[norm(dim, shape.length)]!;
        const sections = fc.array(fc.nat(n), { minLength: 1, maxLength: 4 }).map((cuts) => {
          const at = [0, ...[...cuts].sort((a, b) => a - b), n];
          return at.slice(1).map((v, i) => v - at[i]!);
        });
        return fc.tuple(tensorCaseArb(shape, { dtype: 'float16' }), fc.constant(dim), fc.oneof(fc.integer({ min: 1, max: n + 1 }), sections));
      }),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([c, dim, how]) => {
        const x = makeTensor(c, device);
        const d = norm(dim, c.shape.length), n = c.shape[d]!;
        const sizes = typeof how === 'number' ? Array.from({ length: Math.ceil(n / how) }, (_, i) => Math.min(how, n - i * how)) : how;
        await expectPieces(x, c, sn.split(x, how, dim), sizes, d);
        await expectPieces(x, c, x.split(how, { dim }), sizes, d);
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it('chunk follows PyTorch: pieces of ceil(n / chunks), possibly fewer than asked', async () => {
    const arb = shapeArb({ minRank: 1, maxRank: 3, maxDim: 7 }).chain((shape) =>
      fc.tuple(tensorCaseArb(shape, { dtype: 'int8' }), dimArb(shape.length), fc.integer({ min: 1, max: 8 })),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([c, dim, chunks]) => {
        const x = makeTensor(c, device);
        const d = norm(dim, c.shape.length), n = c.shape[d]!, s = Math.ceil(n / chunks);
        const sizes = Array.from({ length: Math.ceil(n / s) }, (_, i) => Math.min(s, n - i * s));
        await expectPieces(x, c, x.chunk(chunks, dim), sizes, d);
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
    // The documented example: 6 elements in 4 chunks give 3 pieces of 2; 5 in 3 give 2, 2, 1.
    expect(sn.chunk(sn.arange(6, { device }), 4).map((p) => p.shape[0])).toEqual([2, 2, 2]);
    expect(sn.chunk(sn.arange(5, { device }), 3).map((p) => p.shape[0])).toEqual([2, 2, 1]);
    // An empty dim still gives `chunks` empty pieces; split of an empty dim gives one.
    expect(sn.chunk(sn.zeros([0, 2], { device }), 3).map((p) => p.shape)).toEqual([[0, 2], [0, 2], [0, 2]]);
    expect(sn.split(sn.zeros([0, 2], { device }), 2).map((p) => p.shape)).toEqual([[0, 2]]);
  });

  it('rejects bad input with clear errors', () => {
    const x = sn.zeros([5, 2], { device });
    expectThrows(() => sn.split(x, [2, 2]), /^split:/, 'sum to 4', 'size 5');
    expectThrows(() => sn.split(x, [6, -1]), /^split:/, 'non-negative');
    expectThrows(() => sn.split(x, 0), /^split:/, 'only be 0');
    expectThrows(() => sn.split(x, 1.5), /^split:/, 'non-negative integer');
    expectThrows(() => sn.split(sn.tensor(1, { device }), 1), /^split:/, 'at least one dim');
    expectThrows(() => sn.split(x, 1, 2), /^split:/, 'dim 2 is out of range');
    expectThrows(() => sn.chunk(x, 0), /^chunk:/, 'positive integer');
    expectThrows(() => sn.chunk(sn.tensor(1, { device }), 1), /^chunk:/, 'at least one dim');
  });
});

describe.each(WITH_WEBGPU)('pad on %s', (device) => {
  it('constant mode pads and crops (negative widths) any rank and dtype', async () => {
    const arb = shapeArb({ minRank: 1, maxRank: 4, maxDim: 4 }).chain((shape) =>
      fc.tuple(
        dtypeArb.chain((dtype) => fc.tuple(tensorCaseArb(shape, { dtype }), valueArb(dtype))),
        fc.integer({ min: 1, max: shape.length }).chain((k) =>
          fc.tuple(...Array.from({ length: k }, (_, i) => {
            const s = shape[shape.length - 1 - i]!;
            // Output size s + l + r must stay ≥ 0.
            return fc.tuple(fc.integer({ min: -s, max: 3 }), fc.integer({ min: -2, max: 3 })).map(([l, r]) => [l, Math.max(r, -s - l)]);
          })),
        ),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([[c, value], pairs]) => {
        const x = makeTensor(c, device);
        const widths = pairs.flat();
        const y = sn.pad(x, widths, { value });
        await expectClose(y, padRef(refOf(c), widths, 'constant', value), { dtype: c.dtype });
        x.dispose();
        y.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 50) }),
    );
  });

  const MODES: { mode: PadMode; pair: (s: number) => fc.Arbitrary<[number, number]> }[] = [
    // Pads below the size (so one reflection suffices); negative pads crop; output ≥ 1.
    { mode: 'reflect', pair: (s) => fc.tuple(fc.integer({ min: 1 - s, max: s - 1 }), fc.integer({ min: 1 - s, max: s - 1 })).filter(([l, r]) => s + l + r >= 1) },
    { mode: 'replicate', pair: (s) => fc.tuple(fc.integer({ min: -s, max: 5 }), fc.integer({ min: -s, max: 5 })).filter(([l, r]) => s + l + r >= 1) },
    // Pads at most what is left after cropping, so the wrap goes around at most once.
    {
      mode: 'circular',
      pair: (s) => fc.tuple(fc.integer({ min: -s, max: s }), fc.integer({ min: -s, max: s })).filter(([l, r]) => {
        const kept = s - Math.max(-l, 0) - Math.max(-r, 0);
        return kept >= 0 && l <= kept && r <= kept;
      }),
    },
  ];
  for (const { mode, pair } of MODES) {
    it(`${mode} mode matches the reference for 1 to 3 padded dims with 1 or 2 leading dims`, async () => {
      const arb = fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 2 })).chain(([k, lead]) =>
        fc.tuple(shapeArb({ minRank: lead, maxRank: lead, maxDim: 3 }), shapeArb({ minRank: k, maxRank: k, maxDim: 5 })).chain(([front, spatial]) =>
          fc.tuple(
            dtypeArb.chain((dtype) => tensorCaseArb([...front, ...spatial], { dtype })),
            fc.tuple(...spatial.map((_, i) => pair(spatial[spatial.length - 1 - i]!))),
          ),
        ),
      );
      await fc.assert(
        fc.asyncProperty(arb, async ([c, pairs]) => {
          const x = makeTensor(c, device);
          const widths = pairs.flat();
          const y = sn.pad(x, widths, mode);
          await expectClose(y, padRef(refOf(c), widths, mode, 0), { dtype: c.dtype });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: runs(device, 40) }),
      );
    });
  }

  it('matches hand-worked PyTorch results', async () => {
    const x = sn.tensor([[[1, 2, 3]]], { device });
    await expectClose(sn.pad(x, [2, 1], 'reflect'), ref([1, 1, 6], [3, 2, 1, 2, 3, 2]));
    await expectClose(sn.pad(x, [2, 1], 'replicate'), ref([1, 1, 6], [1, 1, 1, 2, 3, 3]));
    await expectClose(sn.pad(x, [2, 1], 'circular'), ref([1, 1, 6], [2, 3, 1, 2, 3, 1]));
    // Circular after cropping wraps over what is left: [2, 3] padded by 2 on the right.
    await expectClose(sn.pad(x, [-1, 2], 'circular'), ref([1, 1, 4], [2, 3, 2, 3]));
    await expectClose(sn.pad(x, [1, -2], { value: 9 }), ref([1, 1, 2], [9, 1]));
    await expectClose(sn.pad(sn.tensor([true], { device }), [1, 0], { value: 5 }), ref([2], [1, 1]));
  });

  it('rejects bad input with clear errors', () => {
    const x = sn.zeros([1, 2, 3], { device });
    expectThrows(() => sn.pad(x, [1]), /^pad:/, 'even length');
    expectThrows(() => sn.pad(x, [1, 1, 1, 1, 1, 1, 1, 1]), /^pad:/, 'only 3');
    expectThrows(() => sn.pad(x, [0.5, 1]), /^pad:/, 'integers');
    expectThrows(() => sn.pad(x, [-2, -2]), /^pad:/, 'negative output size', 'dim 2 of size 3');
    expectThrows(() => sn.pad(x, [3, 0], 'reflect'), /^pad:/, 'less than', 'dim 2 of size 3', '(3, 0)');
    expectThrows(() => sn.pad(x, [4, 0], 'circular'), /^pad:/, 'more than once');
    expectThrows(() => sn.pad(x, [-1, 3], 'circular'), /^pad:/, 'more than once', 'at most 2');
    expectThrows(() => sn.pad(x, [1, 1], 'reflect', 2), /^pad:/, 'no fill value');
    expectThrows(() => sn.pad(x, [1, 1, 1, 1, 1, 1], 'replicate'), /^pad:/, '4-D or 5-D', '[1, 2, 3] float32');
    expectThrows(() => sn.pad(sn.zeros([3], { device }), [1, 1], 'replicate'), /^pad:/, '2-D or 3-D');
    expectThrows(() => sn.pad(x, [-2, -1], 'replicate'), /^pad:/, 'non-empty');
    expectThrows(() => sn.pad(x, [1, 1], 'wrap' as PadMode), /^pad:/, "mode must be one of 'constant'");
    expectThrows(() => sn.pad(sn.zeros([2], { dtype: 'int8', device }), [1, 1], { value: 300 }), /^pad:/, '300', 'int8');
  });
});

describe.each(WITH_WEBGPU)('gather, indexSelect and embedding on %s', (device) => {
  it('gather matches the reference for random dims, index shapes and layouts', async () => {
    const arb = shapeArb({ minRank: 1, maxRank: 4, maxDim: 4 }).chain((shape) =>
      fc.tuple(dimArb(shape.length), fc.constantFrom<DType>('int32', 'int32', 'int8', 'uint8')).chain(([dim, idtype]) => {
        const d = norm(dim, shape.length);
        const ishape = fc.tuple(...shape.map((s, i) => (i === d ? fc.integer({ min: 0, max: 5 }) : fc.integer({ min: 1, max: s }))));
        return fc.tuple(
          dtypeArb.chain((dtype) => tensorCaseArb(shape, { dtype })),
          fc.constant(dim),
          ishape.chain((is) => tensorCaseArb(is, { dtype: idtype, min: 0, max: shape[d]! - 1 })),
        );
      }),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([c, dim, ci]) => {
        const x = makeTensor(c, device), index = makeTensor(ci, device);
        const want = gatherRef(refOf(c), norm(dim, c.shape.length), refOf(ci));
        await expectClose(sn.gather(x, dim, index), want, { dtype: c.dtype });
        await expectClose(x.gather(dim, index), want);
      }),
      propertyConfig({ numRuns: runs(device, 50) }),
    );
  });

  it('indexSelect matches the reference (repeated indices, empty index, 0-d index)', async () => {
    const arb = shapeArb({ minRank: 1, maxRank: 4, maxDim: 4 }).chain((shape) =>
      dimArb(shape.length).chain((dim) =>
        fc.tuple(
          dtypeArb.chain((dtype) => tensorCaseArb(shape, { dtype })),
          fc.constant(dim),
          fc.oneof(fc.constant([]), fc.constant([1])).chain((ishape) =>
            fc.integer({ min: 0, max: 6 }).chain((n) => tensorCaseArb(ishape.length ? [n] : [], { dtype: 'int32', min: 0, max: shape[norm(dim, shape.length)]! - 1 })),
          ),
        ),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([c, dim, ci]) => {
        const x = makeTensor(c, device), index = makeTensor(ci, device);
        const want = indexSelectRef(refOf(c), norm(dim, c.shape.length), ci.values);
        await expectClose(sn.indexSelect(x, dim, index), want, { dtype: c.dtype });
        await expectClose(x.indexSelect(dim, index), want);
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it('embedding picks weight rows for int input of any shape', async () => {
    const arb = fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 5 }), fc.constantFrom<DType>('float32', 'float16', 'int8', 'uint8')).chain(([num, dim, dtype]) =>
      fc.tuple(tensorCaseArb([num, dim], { dtype }), shapeArb({ maxRank: 3, maxDim: 4 }).chain((s) => tensorCaseArb(s, { dtype: 'int32', min: 0, max: num - 1 }))),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([cw, ci]) => {
        const w = makeTensor(cw, device), input = makeTensor(ci, device);
        await expectClose(sn.embedding(input, w, { paddingIdx: 0 }), embeddingRef(refOf(ci), refOf(cw)), { dtype: cw.dtype });
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it('gather and indexSelect take 0-d tensors as PyTorch does', async () => {
    const v = sn.tensor([5, 6, 7], { device }), i = sn.tensor(2, { dtype: 'int32', device });
    await expectClose(sn.gather(v, 0, i), ref([], [7]));
    await expectClose(sn.gather(sn.tensor(4, { device }), 0, sn.tensor([0, 0], { dtype: 'int32', device })), ref([2], [4, 4]));
    await expectClose(sn.indexSelect(sn.tensor(4, { device }), 0, i.sub(2)), ref([], [4]));
    await expectClose(sn.indexSelect(v, 0, i), ref([1], [7]));
  });

  it('rejects bad input and out-of-range indices with clear errors', async () => {
    const x = sn.zeros([3, 4], { device });
    const idx = (values: number[][] | number[], dtype: DType = 'int32') => sn.tensor(values, { dtype, device });
    expectThrows(() => sn.gather(x, 0, idx([[0.5]], 'float32')), /^gather:/, 'integer tensor', '[1, 1] float32');
    expectThrows(() => sn.gather(x, 0, idx([0, 1])), /^gather:/, 'same rank');
    expectThrows(() => sn.gather(x, 0, idx([[0, 0, 0, 0, 0]])), /^gather:/, 'dim 1', '[1, 5] int32', '[3, 4] float32');
    // The GPU names the bad index by its flat position in the index tensor.
    await expectFails(() => sn.gather(x, 1, idx([[0], [4]])), /^gather:/, 'index 4', 'dim 1', device === 'cpu' ? 'position [1, 0]' : 'flat position 1', '[3, 4] float32');
    await expectFails(() => sn.gather(x, 0, idx([[-1]], 'int8')), /^gather:/, 'index -1');
    expectThrows(() => sn.gather(x, 2, idx([[0]])), /^gather:/, 'dim 2 is out of range');
    expectThrows(() => sn.indexSelect(x, 0, idx([[0]])), /^indexSelect:/, '0-d or 1-D');
    await expectFails(() => sn.indexSelect(x, 0, idx([0, 3])), /^indexSelect:/, 'index 3', 'dim 0', '[3, 4] float32');
    await expectFails(() => sn.indexSelect(x, 1, idx([-1])), /^indexSelect:/, 'index -1');
    await expectFails(() => sn.indexSelect(sn.tensor(1, { device }), 0, idx([1], 'uint8')), /^indexSelect:/, 'index 1', '(valid: 0 to 0)');
    expectThrows(() => sn.indexSelect(x, 0, idx([true] as unknown as number[], 'bool')), /^indexSelect:/, 'integer tensor');
    expectThrows(() => sn.indexSelect(sn.tensor(1, { device }), 0, idx([0, 0])), /^indexSelect:/, 'exactly one index');
    await expectFails(() => sn.embedding(idx([0, 3]), x), /^embedding:/, 'index 3', '[3, 4] float32', '3 rows');
    expectThrows(() => sn.embedding(idx([0]), sn.zeros([3], { device })), /^embedding:/, '2-D');
    expectThrows(() => sn.embedding(idx([0], 'float32'), x), /^embedding:/, 'input must be an integer tensor');
    expectThrows(() => sn.embedding(idx([0]), x, 3), /^embedding:/, 'paddingIdx 3');
  });
});

describe.each(WITH_WEBGPU)('repeat and flip on %s', (device) => {
  it('repeat matches Tensor.repeat with extra leading dims', async () => {
    const arb = shapeArb({ maxRank: 3, maxDim: 3 }).chain((shape) =>
      fc.tuple(
        dtypeArb.chain((dtype) => tensorCaseArb(shape, { dtype })),
        fc.integer({ min: shape.length, max: shape.length + 2 }).chain((n) => fc.array(fc.integer({ min: 0, max: 3 }), { minLength: n, maxLength: n })),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([c, sizes]) => {
        const x = makeTensor(c, device);
        await expectClose(sn.repeat(x, ...sizes), repeatRef(refOf(c), sizes), { dtype: c.dtype });
        await expectClose(x.repeat(sizes), repeatRef(refOf(c), sizes));
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it('flip reverses the given dims (negative dims too)', async () => {
    const arb = shapeArb({ maxRank: 4, maxDim: 5 }).chain((shape) =>
      fc.tuple(
        dtypeArb.chain((dtype) => tensorCaseArb(shape, { dtype })),
        fc.subarray(Array.from({ length: shape.length }, (_, i) => i)).chain((ds) => fc.tuple(...ds.map((d) => fc.constantFrom(d, d - shape.length)))),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([c, dims]) => {
        const x = makeTensor(c, device);
        const want = flipRef(refOf(c), dims.map((d) => norm(d, c.shape.length)));
        await expectClose(sn.flip(x, dims), want, { dtype: c.dtype });
        await expectClose(x.flip(...dims), want);
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it('rejects bad input with clear errors', () => {
    const x = sn.zeros([2, 3], { device });
    expectThrows(() => sn.repeat(x, 2), /^repeat:/, '[2, 3] float32', '[2]');
    expectThrows(() => sn.repeat(x, 2, -1), /^repeat:/, 'non-negative');
    expectThrows(() => sn.flip(x, [0, -2]), /^flip:/, 'repeat a dim');
    expectThrows(() => sn.flip(x, 2), /^flip:/, 'dim 2 is out of range');
  });
});

describe.each(WITH_WEBGPU)('outputs spanning many workgroups on %s', (device) => {
  // Odd sizes that fill neither a workgroup (256 invocations) nor, for packed dtypes, a last word.
  it.each<DType>(['int8', 'float16', 'float32'])('cat, pad, flip, repeat and indexSelect of a [3, 37, 41] %s tensor', async (dtype) => {
    const shape = [3, 37, 41];
    const arb = fc.tuple(tensorCaseArb(shape, { dtype }), tensorCaseArb([45], { dtype: 'int32', min: 0, max: 40 }));
    await fc.assert(
      fc.asyncProperty(arb, async ([c, ci]) => {
        const x = makeTensor(c, device), index = makeTensor(ci, device), r = refOf(c);
        await expectClose(sn.cat([x, x], 1), catRef([r, r], 1));
        await expectClose(sn.pad(x, [5, -3, 2, 7], 'reflect'), padRef(r, [5, -3, 2, 7], 'reflect', 0));
        await expectClose(sn.pad(x, [3, 2, -1, 4], { value: 7 }), padRef(r, [3, 2, -1, 4], 'constant', 7));
        await expectClose(sn.flip(x, [0, 2]), flipRef(r, [0, 2]));
        await expectClose(sn.repeat(x, 2, 1, 3), repeatRef(r, [2, 1, 3]));
        await expectClose(sn.indexSelect(x, 2, index), indexSelectRef(r, 2, ci.values));
      }),
      propertyConfig({ numRuns: 2 }),
    );
  });
});
