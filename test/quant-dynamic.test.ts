import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { WITH_WEBGPU } from './helpers.js';

// Dynamic quantisation of Linear layers: int8 per-channel weights, the input quantised per call from its
// own range. Each output must be within the error bound of quantising its operands:
// |y − y_f32| ≤ Σ_k (|w_k|·sx/2 + |x_k|·sw/2 + sx·sw/4), with sx, sw the two scales.
describe.each(WITH_WEBGPU)('quantizeDynamic on %s', (device) => {
  it('replaces Linear layers and stays within the quantisation error bound of the float model', async () => {
    sn.manualSeed(7);
    const model = new sn.nn.Sequential(new sn.nn.Linear(19, 12), new sn.nn.ReLU(), new sn.nn.Linear(12, 5)).to(device);
    const x = sn.randn([2, 3, 19], { device });
    const first = model.at(0) as sn.nn.Linear;
    const [w, b] = [await first.weight.data(), await first.bias!.data()];
    const yf = first.forward(x);
    const ref = await yf.data();
    const xs = await x.data();
    const q = sn.quant.quantizeDynamic(model);
    expect(q).toBe(model);
    const layer = model.at(0) as sn.quant.DynamicQuantizedLinear;
    expect(layer).toBeInstanceOf(sn.quant.DynamicQuantizedLinear);
    expect(model.at(2)).toBeInstanceOf(sn.quant.DynamicQuantizedLinear);
    expect(layer.weightInt.dtype).toBe('int8');
    // The weights are quantised as PyTorch's per-channel symmetric observer says (exactly on the CPU).
    const wCpu = sn.tensor(w).reshape([12, 19]);
    const obs = new sn.quant.PerChannelMinMaxObserver({ dtype: 'qint8', qscheme: 'perChannelSymmetric' });
    obs.forward(wCpu);
    const { scales, zeroPoints } = obs.qparams();
    const want = await sn.quantizePerChannel(wCpu, scales, zeroPoints, 0, 'qint8').intRepr().data();
    const have = await layer.weightInt.data();
    const scaleHave = await layer.weightScale.data();
    if (device === 'cpu') {
      expect(Array.from(have)).toEqual(Array.from(want));
      expect(Array.from(scaleHave)).toEqual(Array.from(scales));
    } else {
      have.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThanOrEqual(1));
    }
    const y = layer.forward(x);
    expect(y.shape).toEqual([2, 3, 12]);
    const got = await y.data();
    const sw = await layer.weightScale.data();
    const lo = Math.min(0, ...xs), hi = Math.max(0, ...xs), sx = (hi - lo) / 255;
    for (let r = 0; r < 6; r++) for (let n = 0; n < 12; n++) {
      let bound = 1e-5 * (1 + Math.abs(ref[r * 12 + n]!));
      for (let k = 0; k < 19; k++) bound += Math.abs(w[n * 19 + k]!) * sx / 2 + Math.abs(xs[r * 19 + k]!) * sw[n]! / 2 + sx * sw[n]! / 4;
      expect(Math.abs(got[r * 12 + n]! - ref[r * 12 + n]!), `row ${r} out ${n}`).toBeLessThanOrEqual(bound);
    }
    expect(b.length).toBe(12);
    const out = model.forward(x);
    expect(out.shape).toEqual([2, 3, 5]);
    for (const t of [x, yf, y, out]) t.dispose();
  });
});

describe('quantizeDynamic: errors', () => {
  it('rejects what it cannot quantise', () => {
    expect(() => sn.quant.quantizeDynamic({} as sn.nn.Module)).toThrow(/quantizeDynamic: expects an nn.Module/);
    expect(() => sn.quant.quantizeDynamic(new sn.nn.Linear(2, 2), { dtype: 'float16' as 'qint8' })).toThrow(/only dtype 'qint8'/);
    const l = sn.quant.quantizeDynamic(new sn.nn.Linear(3, 2)) as sn.quant.DynamicQuantizedLinear;
    expect(() => l.forward(sn.rand([2, 4]))).toThrow(/DynamicQuantizedLinear: expected a float input \[..., 3\]/);
  });
});
