import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { propertyConfig } from '../src/testing/index.js';
import { WITH_WEBGPU } from './helpers.js';

// Weight-only quantisation: blockwise 8/4-bit weights dequantised inside the matmul. Checked against a
// float64 reference that quantises the weights by the same rule (scale = absmax/(2^(bits−1)−1) or
// (max−min)/(2^bits−1) per block, round half to even), and the stored bytes against the packed size.
function roundHalfEven(v: number): number {
  const f = Math.floor(v), r = v - f;
  return r > 0.5 ? f + 1 : r < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

function dequantRef(w: Float32Array, n: number, k: number, bits: number, bs: number, symmetric: boolean): Float64Array {
  const out = new Float64Array(n * k), levels = (1 << bits) - 1, mid = 1 << (bits - 1);
  for (let r = 0; r < n; r++) for (let b = 0; b < k / bs; b++) {
    const vals = Array.from(w.subarray(r * k + b * bs, r * k + (b + 1) * bs));
    const lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
    const scale = Math.max(Math.fround(symmetric ? Math.max(-lo, hi) / (mid - 1) : (hi - lo) / levels), 2 ** -23);
    const zp = symmetric ? mid : Math.min(levels, Math.max(0, roundHalfEven(-Math.fround(lo / scale))));
    const inv = Math.fround(1 / scale);
    vals.forEach((v, j) => {
      const q = Math.min(levels, Math.max(0, roundHalfEven(Math.fround(v * inv)) + zp));
      out[r * k + b * bs + j] = scale * (q - zp);
    });
  }
  return out;
}

describe.each(WITH_WEBGPU)('quantizeWeights on %s', (device) => {
  it('int8 and int4 (symmetric and asymmetric) Linear layers match the float64 reference of their dequantised weights', async () => {
    const arb = fc.record({ bits: fc.constantFrom<8 | 4>(8, 4), symmetric: fc.boolean(), bs: fc.constantFrom(2, 4, 8), blocks: fc.integer({ min: 1, max: 4 }), n: fc.integer({ min: 1, max: 7 }), m: fc.integer({ min: 1, max: 3 }), bias: fc.boolean(), seed: fc.integer({ min: 0, max: 1000 }) });
    await fc.assert(fc.asyncProperty(arb, async ({ bits, symmetric, bs, blocks, n, m, bias, seed }) => {
      const k = bs * blocks;
      const lin = new sn.nn.Linear(k, n, { bias, seed }).to(device);
      const w = (await lin.weight.data()) as Float32Array;
      const b = bias ? await lin.bias!.data() : null;
      const q = sn.quant.quantizeWeights(lin, { bits, blockSize: bs, symmetric }) as sn.quant.WeightOnlyLinear;
      const x = sn.randn([m, k], { device, seed: seed + 1 });
      const xs = await x.data();
      const y = await q.forward(x).data();
      const wd = dequantRef(w, n, k, bits, bs, symmetric);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
        let ref = b ? b[j]! : 0, mag = Math.abs(ref);
        for (let t = 0; t < k; t++) { ref += xs[i * k + t]! * wd[j * k + t]!; mag += Math.abs(xs[i * k + t]! * wd[j * k + t]!); }
        expect(Math.abs(y[i * n + j]! - ref), `[${i}, ${j}]`).toBeLessThanOrEqual(1e-5 * mag + 1e-6);
      }
      // Stored bytes: the packed integers, float32 scales and (asymmetric) a byte per block; WebGPU
      // buffers hold whole 32-bit words, so there each tensor rounds up to a multiple of 4 bytes.
      const held = (bytes: number) => (device === 'webgpu' ? Math.ceil(bytes / 4) * 4 : bytes);
      expect(q.weightPacked.dtype).toBe('uint8');
      expect(q.weightBytes()).toBe(held((n * k * bits) / 8) + n * blocks * 4 + (symmetric ? 0 : held(n * blocks)));
      x.dispose();
    }), propertyConfig({ numRuns: device === 'webgpu' ? 8 : 20 }));
  });

  it('replaces the Linear layers of a model; memory() counts the packed size', async () => {
    const model = new sn.nn.Sequential(new sn.nn.Linear(64, 32, { seed: 1 }), new sn.nn.ReLU(), new sn.nn.Linear(32, 8, { seed: 2 })).to(device);
    const x = sn.randn([3, 64], { device, seed: 3 });
    const ref = await model.forward(x).data();
    const before = sn.memory().devices[device]!.bytes;
    sn.quant.quantizeWeights(model, { bits: 4, blockSize: 16 });
    const [q0, q2] = [model.at(0), model.at(2)] as sn.quant.WeightOnlyLinear[];
    expect(q0).toBeInstanceOf(sn.quant.WeightOnlyLinear);
    expect(q0!.weightBytes()).toBe((32 * 64) / 2 + 32 * 4 * 4);
    // What quantisation added to the device is exactly the packed weights and their scales (biases are shared).
    expect(sn.memory().devices[device]!.bytes - before).toBe(q0!.weightBytes() + q2!.weightBytes());
    const y = await model.forward(x).data();
    const err = Math.max(...Array.from(y, (v, i) => Math.abs(v - ref[i]!))), top = Math.max(...Array.from(ref, Math.abs));
    expect(err).toBeLessThan(0.25 * top); // 4-bit weights: a sanity bound; the property test above checks the kernel exactly
  });
});

describe('quantizeWeights: errors', () => {
  it('checks bits and block sizes', () => {
    expect(() => sn.quant.quantizeWeights(new sn.nn.Linear(8, 2), { bits: 3 as 4 })).toThrow(/quantizeWeights: bits must be 8 or 4, got 3/);
    expect(() => sn.quant.quantizeWeights(new sn.nn.Linear(8, 2), { blockSize: 3 })).toThrow(/blockSize must be a positive integer and even for 4 bits, got 3/);
    expect(() => sn.quant.quantizeWeights(new sn.nn.Linear(10, 2), { blockSize: 4 })).toThrow(/blockSize 4 must divide the input features/);
  });
});
