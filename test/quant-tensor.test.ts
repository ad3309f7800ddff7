import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { QDType } from '../src/index.js';
import { makeTensor, propertyConfig, shapeArb, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU } from './helpers.js';
import fixtures from './fixtures/quant/quantize.json' with { type: 'json' };

// Quantised tensors against PyTorch 1.13's own results (test/fixtures/quant/generate.py) and against
// a float64 reference of PyTorch's formula: q = clamp(roundHalfEven(x · fround(1/scale)) + zeroPoint).
const RANGE = { qint8: [-128, 127], quint8: [0, 255] } as const;

function roundHalfEven(v: number): number {
  const f = Math.floor(v), r = v - f;
  return r > 0.5 ? f + 1 : r < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}
/** The reference quantiser: the product x · (1/scale) is rounded to float32 as PyTorch computes it. */
function quantizeRef(x: number, scale: number, zp: number, dtype: QDType): number {
  const [lo, hi] = RANGE[dtype];
  return Math.min(hi, Math.max(lo, roundHalfEven(Math.fround(x * Math.fround(1 / Math.fround(scale)))) + zp));
}

describe.each(WITH_WEBGPU)('quantised tensors on %s', (device) => {
  it("match PyTorch's quantize_per_tensor / quantize_per_channel, int_repr and dequantize exactly", async () => {
    for (const c of fixtures.cases) {
      const x = sn.tensor(Float32Array.from(c.x), { device }).reshape(c.shape);
      const q = c.kind === 'perTensor'
        ? sn.quantizePerTensor(x, c.scale!, c.zeroPoint!, c.dtype as QDType)
        : sn.quantizePerChannel(x, c.scales!, c.zeroPoints!, c.axis!, c.dtype as QDType);
      expect(q.dtype).toBe(c.dtype);
      expect(q.shape).toEqual(c.shape);
      const repr = q.intRepr();
      expect(repr.dtype).toBe(c.dtype === 'qint8' ? 'int8' : 'uint8');
      expect(Array.from(await repr.data()), `${c.kind} ${c.dtype}`).toEqual(c.intRepr);
      const dq = q.dequantize();
      const back = Array.from(await dq.data()), want = c.dequantized.map(Math.fround);
      // Per channel PyTorch multiplies by the double scale: exact on the CPU; WebGPU compilers may
      // reassociate the split product, so there it is within one float32 rounding (2⁻²³ relative).
      if (device === 'cpu' || c.kind === 'perTensor') expect(back).toEqual(want);
      else back.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThanOrEqual(Math.abs(want[i]!) * 2 ** -23));
      if (c.kind === 'perTensor') {
        expect(q.qscheme()).toBe('perTensorAffine');
        expect(q.qScale()).toBe(c.qScale);
        expect(q.qZeroPoint()).toBe(c.zeroPoint);
      } else {
        expect(q.qscheme()).toBe('perChannelAffine');
        expect(q.qPerChannelAxis()).toBe(c.axis);
        expect(Array.from(await q.qPerChannelScales().data())).toEqual(c.qPerChannelScales!.map(Math.fround));
        expect(Array.from(await q.qPerChannelZeroPoints().data())).toEqual(c.qPerChannelZeroPoints);
      }
      for (const t of [x, repr, dq]) t.dispose();
      q.dispose();
    }
  });

  it('quantize → dequantize is within scale/2 inside the range and saturates outside (any shape and layout)', async () => {
    const arb = fc.record({
      shape: shapeArb({ maxRank: 3, maxDim: 7 }),
      dtype: fc.constantFrom<QDType>('qint8', 'quint8'),
      scale: fc.double({ min: 1e-3, max: 2, noNaN: true }),
      zpFrac: fc.double({ min: 0, max: 1, noNaN: true }),
    }).chain((p) => tensorCaseArb(p.shape, { min: -300 * p.scale, max: 300 * p.scale }).map((c) => ({ ...p, c })));
    await fc.assert(
      fc.asyncProperty(arb, async ({ dtype, scale, zpFrac, c }) => {
        const [lo, hi] = RANGE[dtype];
        const zp = Math.round(lo + zpFrac * (hi - lo));
        const x = makeTensor(c, device);
        const q = sn.quantizePerTensor(x, scale, zp, dtype);
        const repr = q.intRepr(), dq = q.dequantize();
        const [ints, back] = [await repr.data(), await dq.data()];
        const s = Math.fround(scale);
        c.values.forEach((v, i) => {
          expect(ints[i], `q(${v})`).toBe(quantizeRef(v, scale, zp, dtype));
          const inRange = v >= s * (lo - zp) && v <= s * (hi - zp);
          if (inRange) expect(Math.abs(back[i]! - v)).toBeLessThanOrEqual(s / 2 * (1 + 1e-5) + 1e-7);
          else expect(ints[i]).toBe(v < 0 ? lo : hi);
        });
        for (const t of [x, repr, dq]) t.dispose();
        q.dispose();
      }),
      propertyConfig({ numRuns: 25 }),
    );
  });

  it('per channel: any axis and layout equals the reference quantiser of its channel', async () => {
    const arb = fc.record({ shape: shapeArb({ minRank: 1, maxRank: 3, maxDim: 5 }), dtype: fc.constantFrom<QDType>('qint8', 'quint8'), axisFrac: fc.double({ min: 0, max: 0.999, noNaN: true }) })
      .chain((p) => {
        const axis = Math.floor(p.axisFrac * p.shape.length), n = p.shape[axis]!;
        const [lo, hi] = RANGE[p.dtype];
        return fc.record({
          c: tensorCaseArb(p.shape, { min: -50, max: 50 }),
          scales: fc.array(fc.double({ min: 0.01, max: 1, noNaN: true }), { minLength: n, maxLength: n }),
          zps: fc.array(fc.integer({ min: lo, max: hi }), { minLength: n, maxLength: n }),
        }).map((v) => ({ ...p, axis, ...v }));
      });
    await fc.assert(
      fc.asyncProperty(arb, async ({ shape, dtype, axis, c, scales, zps }) => {
        const x = makeTensor(c, device);
        const q = sn.quantizePerChannel(x, scales, zps, axis, dtype);
        const ints = await q.intRepr().data();
        const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
        c.values.forEach((v, i) => {
          const ch = Math.floor(i / inner) % shape[axis]!;
          expect(ints[i], `q(${v}) channel ${ch}`).toBe(quantizeRef(v, scales[ch]!, zps[ch]!, dtype));
        });
        x.dispose();
        q.dispose();
      }),
      propertyConfig({ numRuns: 15 }),
    );
  });

  it('per channel: each slice along the axis uses its own scale and zero point', async () => {
    const x = sn.tensor([[[-1, 0.5], [2, 3]], [[4, -5], [6.5, 7]]], { device });
    const q = sn.quantizePerChannel(x, [0.5, 0.25], [1, -2], -1, 'qint8');
    expect(q.qPerChannelAxis()).toBe(2);
    expect(Array.from(await q.intRepr().data())).toEqual([-1, 0, 5, 10, 9, -22, 14, 26]);
    q.dispose();
  });
});

describe('quantised tensors: devices, disposal and errors', () => {
  it('move between devices with their parameters and dispose like tensors', async () => {
    const before = sn.memory().tensors;
    const x = sn.tensor([0.1, -0.7, 1.3, 2.05]);
    const q = sn.quantizePerTensor(x, 0.1, 3, 'quint8');
    const g = q.to('webgpu');
    expect(g.device).toBe('webgpu');
    expect(g.qScale()).toBe(0.1);
    expect(Array.from(await g.intRepr().data())).toEqual([0.1, -0.7, 1.3, 2.05].map((v) => quantizeRef(Math.fround(v), 0.1, 3, 'quint8')));
    const back = await g.toDevice('cpu');
    expect(Array.from(await back.dequantize().data())).toEqual(Array.from(await q.dequantize().data()));
    for (const t of [q, g, back]) t.dispose();
    x.dispose();
    expect(q.isDisposed).toBe(true);
    expect(() => q.intRepr()).toThrow(/disposed/);
    expect(sn.memory().tensors).toBeLessThanOrEqual(before + 6); // the data() checks above leave their own results
  });

  it('ops that do not take quantised tensors say so, naming the op and the dtype', () => {
    const q = sn.quantizePerTensor(sn.tensor([1, 2]), 0.5, 0, 'qint8');
    expect(() => sn.relu(q as unknown as sn.Tensor)).toThrow(/relu: argument 0 is a quantised tensor \(qint8\)/);
    expect(() => sn.matmul(q as unknown as sn.Tensor, sn.tensor([[1], [2]]))).toThrow(/matmul: .*quantised tensor \(qint8\)/);
    expect(() => sn.add(q as unknown as sn.Tensor, 1)).toThrow(/add: argument 0 is a quantised tensor \(qint8\)/);
    expect(() => sn.mul(sn.tensor([1, 2]), q as unknown as sn.Tensor)).toThrow(/mul: .*quantised tensor \(qint8\)/);
    expect(() => sn.quantizePerTensor(q as unknown as sn.Tensor, 1, 0, 'qint8')).toThrow(/quantizePerTensor: .*already quantised/);
    q.dispose();
  });

  it('rejects bad parameters before computing', () => {
    const x = sn.tensor([1, 2, 3]);
    expect(() => sn.quantizePerTensor(x, 0, 0, 'qint8')).toThrow(/quantizePerTensor: scale must be a positive finite number, got 0/);
    expect(() => sn.quantizePerTensor(x, 0.1, 200, 'qint8')).toThrow(/zero point must be an integer in \[-128, 127\] for qint8, got 200/);
    expect(() => sn.quantizePerTensor(x, 0.1, 0, 'int8' as QDType)).toThrow(/unknown quantised dtype "int8"/);
    expect(() => sn.quantizePerTensor(sn.tensor([1], { dtype: 'int32' }), 0.1, 0, 'qint8')).toThrow(/quantises float tensors/);
    expect(() => sn.quantizePerChannel(x, [1, 2], [0, 0], 0, 'quint8')).toThrow(/expected 3 scales and zero points/);
    const q = sn.quantizePerChannel(x, [1, 2, 3], [0, 0, 0], 0, 'quint8');
    expect(() => q.qScale()).toThrow(/qScale: .*per channel/);
    const p = sn.quantizePerTensor(x, 1, 0, 'quint8');
    expect(() => p.qPerChannelAxis()).toThrow(/per tensor/);
  });
});
