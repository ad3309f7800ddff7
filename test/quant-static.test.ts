import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { WITH_WEBGPU } from './helpers.js';

// Static post-training quantisation of a small CNN: BN folded, ReLU fused, observers calibrated, int8
// layers after convert; then compare() against the float model.
function smallCnn(device: sn.DeviceName): sn.nn.Sequential {
  sn.manualSeed(11);
  const bn = new sn.nn.BatchNorm2d(8);
  const m = new sn.nn.Sequential(
    new sn.nn.Conv2d(3, 8, 3, { padding: 1 }), bn, new sn.nn.ReLU(),
    new sn.nn.Conv2d(8, 8, 3, { padding: 1, groups: 8 }), new sn.nn.ReLU(),
    new sn.nn.Flatten(), new sn.nn.Linear(8 * 6 * 6, 10),
  ).to(device);
  // Non-trivial running statistics, as a trained BN has.
  bn.registerBuffer('running_mean', sn.mul(sn.randn([8], { seed: 5 }), 0.1).to(device), 'runningMean');
  bn.registerBuffer('running_var', sn.add(sn.rand([8], { seed: 6 }), 0.5).to(device), 'runningVar');
  return m.eval() as sn.nn.Sequential;
}

describe.each(WITH_WEBGPU)('prepare / convert on %s', (device) => {
  it('folds BN, fuses ReLU, calibrates and runs int8 layers close to the float model', async () => {
    const reference = smallCnn(device), model = smallCnn(device);
    const calib = Array.from({ length: 4 }, (_, i) => sn.randn([2, 3, 6, 6], { seed: 100 + i, device }));
    const prepared = sn.quant.prepare(model, { qconfig: sn.quant.getDefaultQconfig('x86') });
    expect(prepared.at(0)).toBeInstanceOf(sn.quant.ObservedLayer);
    expect(prepared.at(1)).toBeInstanceOf(sn.nn.Identity); // BN folded into the conv
    expect(prepared.at(2)).toBeInstanceOf(sn.nn.Identity); // ReLU fused
    // The folded float model still computes what the reference does.
    const x0 = calib[0]!;
    const [a, b] = [await reference.forward(x0).data(), await prepared.forward(x0).data()];
    a.forEach((v, i) => expect(Math.abs(v - b[i]!)).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(v))));
    for (const x of calib) prepared.forward(x).dispose();
    await sn.quant.synchronize(prepared);
    // Sensitivity: each layer quantised alone, worst first; the observers record nothing meanwhile.
    const observer = (prepared.at(0) as sn.quant.ObservedLayer).inputObserver as sn.quant.HistogramObserver;
    const seen = [observer.minVal, observer.maxVal];
    const ranking = await sn.quant.sensitivity(prepared, calib.slice(0, 2));
    expect(ranking.map((r) => r.name).sort()).toEqual(['0', '3', '6']);
    ranking.forEach((r, i) => {
      expect(Number.isFinite(r.sqnrDb) && r.sqnrDb > 10, `${r.name}: ${r.sqnrDb} dB`).toBe(true);
      if (i > 0) expect(r.sqnrDb).toBeGreaterThanOrEqual(ranking[i - 1]!.sqnrDb);
    });
    expect([observer.minVal, observer.maxVal]).toEqual(seen);
    expect(prepared.at(0)).toBeInstanceOf(sn.quant.ObservedLayer);
    const q = sn.quant.convert(prepared);
    expect(q.at(0)).toBeInstanceOf(sn.quant.QuantizedLayer);
    expect((q.at(0) as sn.quant.QuantizedLayer).relu).toBe(true);
    expect((q.at(6) as sn.quant.QuantizedLayer).weight.qscheme()).toBe('perChannelAffine');
    const test = Array.from({ length: 3 }, (_, i) => sn.randn([2, 3, 6, 6], { seed: 200 + i, device }));
    // Under jit the int8 layers run in a compiled plan (quantise/dequantise fused at the borders) and give the eager result.
    const f = sn.jit((x: sn.Tensor) => q.forward(x));
    const [eager, jitted] = [await q.forward(test[0]!).data(), await f(test[0]!).data()];
    expect(Array.from(jitted)).toEqual(Array.from(eager));
    expect(f.report().kernels.map((k) => k.name)).toContain('qgemm');
    const report = await sn.quant.compare(reference, q, test);
    expect(report.outputs).toHaveLength(1);
    expect(report.outputs[0]!.cosine).toBeGreaterThan(0.99);
    expect(report.outputs[0]!.sqnrDb).toBeGreaterThan(15);
    expect(report.outputs[0]!.top1Agreement).toBeGreaterThanOrEqual(0.5);
    expect(report.quantizedBytes!).toBeLessThan(0.4 * report.referenceBytes!);
    expect(String(report)).toMatch(/model bytes[\s\S]*SQNR/);
  });

  it('calibrate runs the batches, reports progress and leaves the observers ready for convert', async () => {
    const model = sn.quant.prepare(smallCnn(device));
    const seen: [number, number][] = [];
    const batches = Array.from({ length: 5 }, (_, i) => sn.randn([1, 3, 6, 6], { seed: 300 + i, device }));
    await sn.quant.calibrate(model, batches, { every: 2, onProgress: (done, total) => seen.push([done, total]) });
    expect(seen).toEqual([[2, 5], [4, 5], [5, 5]]);
    expect(sn.quant.convert(model).at(0)).toBeInstanceOf(sn.quant.QuantizedLayer);
    await expect(sn.quant.calibrate(model, batches, { every: 0 })).rejects.toThrow(/calibrate: every must be a positive integer/);
  });

  it('a qconfig mapping keeps chosen layers in float', () => {
    const model = smallCnn(device);
    sn.quant.prepare(model, { qconfigMapping: { byType: { Linear: null }, byName: { '3': null } } });
    expect(model.at(0)).toBeInstanceOf(sn.quant.ObservedLayer);
    expect(model.at(3)).toBeInstanceOf(sn.nn.Conv2d);
    expect(model.at(6)).toBeInstanceOf(sn.nn.Linear);
  });
});

describe('prepare / convert: errors', () => {
  it('convert needs a prepared model, and GPU observers read back first', () => {
    expect(() => sn.quant.convert(new sn.nn.Sequential(new sn.nn.Linear(2, 2)))).toThrow(/convert: the model has no observed layers/);
    const m = sn.quant.prepare(new sn.nn.Sequential(new sn.nn.Linear(2, 2).to('webgpu')));
    m.forward(sn.rand([1, 2], { device: 'webgpu' }));
    expect(() => sn.quant.convert(m)).toThrow(/synchronize/);
  });
});
