import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { ObserverOptions } from '../src/quant/index.js';
import fixtures from './fixtures/quant/observers.json' with { type: 'json' };
import edge from './fixtures/quant/edge.json' with { type: 'json' };

// Observers and default qconfigs against PyTorch 1.13's own results (test/fixtures/quant/generate.py):
// zero points and integer ranges exactly, scales (float32) exactly or, where PyTorch sums in another
// order, within one float32 rounding.
const CLASSES = {
  MinMaxObserver: sn.quant.MinMaxObserver,
  MovingAverageMinMaxObserver: sn.quant.MovingAverageMinMaxObserver,
  PerChannelMinMaxObserver: sn.quant.PerChannelMinMaxObserver,
  MovingAveragePerChannelMinMaxObserver: sn.quant.MovingAveragePerChannelMinMaxObserver,
  HistogramObserver: sn.quant.HistogramObserver,
} as const;

describe.each(['cpu', 'webgpu'] as const)("observers match PyTorch's on %s", (device) => {
  for (const name of Object.keys(CLASSES) as (keyof typeof CLASSES)[]) {
    it(name, async () => {
      const cases = fixtures.cases.filter((c) => c.observer === name);
      expect(cases.length).toBeGreaterThan(3);
      for (const c of cases) {
        const o = new CLASSES[name](c.options as ObserverOptions);
        for (const b of c.batches) {
          const x = sn.tensor(Float32Array.from(b.x), { device }).reshape(b.shape);
          expect(o.forward(x)).toBe(x);
          x.dispose();
        }
        await o.synchronize();
        const what = `${name} ${JSON.stringify(c.options)}`;
        expect([o.quantMin, o.quantMax], what).toEqual([c.quantMin, c.quantMax]);
        const [scale, zp] = o.calculateQparams();
        expect(scale.dtype).toBe('float32');
        expect(zp.dtype).toBe('int32');
        expect(Array.from(await zp.data()), what).toEqual(c.zeroPoint);
        const s = Array.from(await scale.data());
        s.forEach((v, i) => expect(Math.abs(v - c.scale[i]!), what).toBeLessThanOrEqual(Math.abs(c.scale[i]!) * 2 ** -23));
        if (name !== 'HistogramObserver' && 'minVal' in c) {
          const mins = (o as unknown as { minVal: number | Float32Array }).minVal;
          expect(typeof mins === 'number' ? [mins] : Array.from(mins), what).toEqual(c.minVal!.map(Math.fround));
        }
      }
    });
  }
});

describe.each(['cpu', 'webgpu'] as const)('observers on edge inputs match PyTorch on %s', (device) => {
  it('a constant first batch, a zero batch, a single value', async () => {
    for (const c of edge.observers) {
      const o = new CLASSES[c.observer as keyof typeof CLASSES](c.options as ObserverOptions);
      for (const b of c.batches) o.forward(sn.tensor(Float32Array.from(b.x), { device }).reshape(b.shape));
      await o.synchronize();
      const what = `${c.observer} ${JSON.stringify(c.batches.map((b) => b.shape))}`;
      const [scale, zp] = o.calculateQparams();
      expect(Array.from(await zp.data()), what).toEqual(c.zeroPoint);
      Array.from(await scale.data()).forEach((v, i) => expect(Math.abs(v - c.scale[i]!), what).toBeLessThanOrEqual(Math.abs(c.scale[i]!) * 2 ** -23));
    }
  });
});

describe('qconfigs and observer options', () => {
  it("getDefaultQconfig gives PyTorch's observers for x86, fbgemm and qnnpack", () => {
    for (const backend of ['x86', 'fbgemm', 'qnnpack'] as const) {
      const qc = sn.quant.getDefaultQconfig(backend);
      const want = (fixtures.qconfig as Record<string, Record<string, Record<string, unknown>>>)[backend]!;
      for (const role of ['activation', 'weight'] as const) {
        const o = qc[role]();
        expect({ observer: o.name, dtype: o.dtype, qscheme: o.qscheme, reduceRange: o.reduceRange, quantMin: o.quantMin, quantMax: o.quantMax }, `${backend} ${role}`).toEqual(want[role]);
        expect(qc[role]()).not.toBe(o); // a factory: a fresh observer per layer
      }
    }
    expect(() => sn.quant.getDefaultQconfig('tpu' as 'x86')).toThrow(/getDefaultQconfig: unknown backend "tpu"/);
  });

  it('an observer that saw nothing gives scale 1 and zero point 0, as PyTorch does', async () => {
    const [s, z] = new sn.quant.MinMaxObserver().calculateQparams();
    expect(Array.from(await s.data())).toEqual([1]);
    expect(Array.from(await z.data())).toEqual([0]);
  });

  it('rejects bad options with errors naming the observer', () => {
    expect(() => new sn.quant.MinMaxObserver({ qscheme: 'perChannelAffine' })).toThrow(/MinMaxObserver: qscheme must be one of perTensorAffine, perTensorSymmetric/);
    expect(() => new sn.quant.PerChannelMinMaxObserver({ qscheme: 'perChannelSymmetric', reduceRange: true })).toThrow(/cannot reduce the range for symmetric/);
    expect(() => new sn.quant.MinMaxObserver({ quantMin: 1, quantMax: 10 })).toThrow(/must be integers that include 0/);
    expect(() => new sn.quant.MinMaxObserver({ dtype: 'qint8', quantMin: -200, quantMax: 10 })).toThrow(/does not fit qint8/);
    expect(() => new sn.quant.HistogramObserver({ bins: 0 })).toThrow(/bins must be a positive integer/);
    const o = new sn.quant.PerChannelMinMaxObserver({ chAxis: 1 });
    o.forward(sn.zeros([2, 3]));
    expect(() => o.forward(sn.zeros([2, 4]))).toThrow(/observed 4 channels along axis 1, but earlier batches had 3/);
    expect(() => o.forward(sn.zeros([2], { dtype: 'int32' }))).toThrow(/observes float tensors/);
  });

  it('a GPU batch must be read back before calculateQparams (synchronize), and batches apply in order', async () => {
    const o = new sn.quant.MovingAverageMinMaxObserver({ averagingConstant: 0.5 });
    o.forward(sn.tensor([0, 4], { device: 'webgpu' }));
    expect(() => o.calculateQparams()).toThrow(/synchronize/);
    o.forward(sn.tensor([-2, 8]));
    await o.synchronize();
    expect([o.minVal, o.maxVal]).toEqual([-1, 6]);
  });
});
