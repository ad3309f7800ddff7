import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { WITH_WEBGPU } from './helpers.js';

// Quantised ONNX models from test/fixtures/quant/generate_onnx.py (expected outputs: the ONNX definitions in numpy
// float64): QDQ Conv/MatMul rewritten at load into the integer kernels, and com.microsoft MatMulNBits on the
// weight-only int4 kernel.

const DIR = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures/quant');

interface Fixture {
  inputs: Record<string, { shape: number[]; data: number[] }>;
  expected: Record<string, { shape: number[]; data: number[] }>;
  outputScale?: number;
}

async function load(name: string, device: sn.DeviceName) {
  const model = await sn.loadOnnx(new Uint8Array(await readFile(path.join(DIR, `${name}.onnx`))), { device });
  const fx = JSON.parse(await readFile(path.join(DIR, `${name}.json`), 'utf8')) as Fixture;
  const feeds = Object.fromEntries(Object.entries(fx.inputs).map(([k, v]) => [k, sn.tensor(Float32Array.from(v.data), { shape: v.shape, device })]));
  const out = await model.run(feeds);
  return { model, fx, got: await out.out!.data(), shape: out.out!.shape };
}

describe.each(WITH_WEBGPU)('quantised ONNX models on %s', (device) => {
  it.each(['qdq_conv', 'qdq_matmul'])('%s: the QDQ pattern runs on the integer GEMM, within one output step of the float definition', async (name) => {
    const { model, fx, got, shape } = await load(name, device);
    const want = fx.expected.out!;
    expect(shape).toEqual(want.shape);
    // The integer path requantises acc · (sx·sw/sy) once, the float definition rounds x·w/sy: equal except where a
    // value sits on a rounding boundary, then one output step apart.
    let exact = 0;
    want.data.forEach((v, i) => {
      const d = Math.abs(v - got[i]!);
      expect(d).toBeLessThanOrEqual(fx.outputScale! * 1.001);
      if (d < 1e-6) exact++;
    });
    expect(exact / want.data.length).toBeGreaterThan(0.95);
    const report = model.report();
    expect(report.qdqRewritten.length).toBe(1);
    expect(String(report)).toMatch(/^QDQ: 1 Conv\/MatMul node\(s\) rewritten/);
    expect(report.jit!.kernels.some((k) => k.name.includes('qgemm'))).toBe(true);
    // No float convolution or matmul is left.
    expect(report.jit!.kernels.some((k) => /(^|\+)(conv2d|matmul)($|\+)/.test(k.name))).toBe(false);
    model.dispose();
  });

  it('com.microsoft MatMulNBits (4-bit blocks of 16, no zero points) on the weight-only kernel, to float32 rounding', async () => {
    const { model, fx, got, shape } = await load('matmulnbits', device);
    const want = fx.expected.out!;
    expect(shape).toEqual(want.shape);
    want.data.forEach((v, i) => expect(Math.abs(v - got[i]!)).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(v))));
    expect(model.report().jit!.kernels.map((k) => k.name)).toContain('weightOnlyMatmul');
    model.dispose();
  });
});
