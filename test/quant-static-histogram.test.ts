import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { WITH_WEBGPU, sqnr } from './helpers.js';

// PyTorch 1.13's HistogramObserver counts each batch with histc(x, min=int(min_val), max=int(max_val)): values
// outside the integer-truncated range are dropped and the rest are read as spread over [min_val, max_val]. The
// observer API keeps that (default truncateEdges: true; test/quant-observer.test.ts checks 1.13's scales), and
// static quantisation on the graph counts over the observed range (as PyTorch 2.0): with 1.13's count, the PP-OCR
// models' activations got ranges that miss their data. A bimodal batch in [−0.96, 2.26] (a pre-activation with a
// learnable shift, as PP-OCRv4's LCNetV3 blocks have) shows it: truncated to [0, 2], every negative value is lost.

/** Seeded bimodal values: half about −0.6, half about 1.5. */
async function bimodal(seed: number, shape: number[], device: sn.DeviceName): Promise<sn.Tensor> {
  const r = await sn.randn(shape, { seed }).data();
  return sn.tensor(r.map((v) => (v < 0 ? -0.6 + 0.1 * v : 1.5 + 0.2 * v)), { device }).reshape(shape);
}

describe.each(WITH_WEBGPU)('HistogramObserver edges on %s', (device) => {
  it("truncateEdges: false counts over the observed range; 1.13's default truncated count loses the negative mode", async () => {
    const batches = await Promise.all([0, 1, 2, 3].map((i) => bimodal(10 + i, [4096], device)));
    const roundTrip = async (o: sn.quant.HistogramObserver) => {
      for (const x of batches) o.forward(x);
      await o.synchronize();
      const { scales, zeroPoints } = o.qparams();
      let worst = Infinity;
      for (const x of batches) worst = Math.min(worst, sqnr(await x.data(), await sn.quant.quantizePerTensor(x, scales[0]!, zeroPoints[0]!, 'quint8').dequantize().data()));
      return { low: -zeroPoints[0]! * scales[0]!, worst };
    };
    const v113 = new sn.quant.HistogramObserver({ dtype: 'quint8', reduceRange: true });
    expect(v113.truncateEdges).toBe(true);
    const exact = new sn.quant.HistogramObserver({ dtype: 'quint8', reduceRange: true, truncateEdges: false });
    const [a, b] = [await roundTrip(v113), await roundTrip(exact)];
    // Exact edges: the range reaches the negative mode and 7-bit quantisation keeps ~45 dB.
    expect(b.low).toBeLessThan(-0.9);
    expect(b.worst).toBeGreaterThan(40);
    // 1.13: the range starts at 0, clipping half the values.
    expect(a.low).toBeGreaterThan(-0.01);
    expect(a.worst).toBeLessThan(15);
    for (const x of batches) x.dispose();
  });

  it('graph PTQ observes activations over their range even when the qconfig holds 1.13 histograms', async () => {
    const w = sn.randn([6, 2, 3, 3], { seed: 1, device }).mul(0.3), bias = sn.randn([6], { seed: 2, device }).mul(0.1);
    const fn = (x: sn.Tensor) => sn.conv2d(x, w, bias, { padding: 1 });
    const calib = await Promise.all([0, 1, 2, 3].map((i) => bimodal(100 + i, [1, 2, 32, 40], device)));
    const qconfig = sn.quant.getDefaultQconfig('x86');
    expect((qconfig.activation() as sn.quant.HistogramObserver).truncateEdges).toBe(true);
    const prepared = sn.quant.prepare(fn, { exampleInputs: calib[0]!, qconfig });
    await sn.quant.calibrate(prepared, calib);
    const q = sn.quant.convert(prepared);
    const x = await bimodal(200, [1, 2, 32, 40], device);
    // With 1.13's count the input's range started at 0 and the output SQNR was ~8 dB.
    expect(sqnr(await fn(x).data(), await (q(x) as sn.Tensor).data())).toBeGreaterThan(30);
    q.dispose();
    prepared.dispose();
    for (const t of [w, bias, x, ...calib]) t.dispose();
  });
});
