import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName, Tensor } from '../src/index.js';
import { adapterInfo } from '../src/backend/device.js';
import { TOLERANCES, assertClose } from '../src/testing/index.js';
import { withCaps } from './helpers.js';

// Every float16 op on WebGPU against the CPU (which rounds each result to binary16 from doubles). An
// adapter with `shader-f16` stores float16 natively (array<f16>); one without packs two per u32
// word. SwiftShader lacks the feature, so the native kernels run only on a GPU that has it (see
// scripts/gpu-check.sh): that test is skipped, saying why, only where the adapter lacks the feature.
// A few of the cases run here always on the packed path (every op's packed kernels have their own
// property tests), which checks the harness itself; all of them take a minute on SwiftShader.

/** Deterministic values in [lo, hi), as float16 would hold them. */
function values(n: number, seed: number, lo = -3, hi = 3): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + ((s >>> 8) / 2 ** 24) * (hi - lo);
  });
}
const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

interface Case {
  name: string;
  /** Input shapes and value ranges. */
  inputs: { shape: number[]; lo?: number; hi?: number }[];
  run: (...xs: Tensor[]) => Tensor;
}

const pos = (shape: number[]) => ({ shape, lo: 0.1, hi: 4 });
const any = (shape: number[]) => ({ shape });
const unary = (name: string, f: (x: Tensor) => Tensor, input = any([5, 7])): Case => ({ name, inputs: [input], run: f });

/** An elementwise chain the JIT fuses into one kernel: f16 steps (mul, add, relu, sub) around f32 ones (sigmoid, exp). */
const fusedChain = sn.jit((x: Tensor, b: Tensor) => sn.sigmoid(sn.relu(x.mul(1.5).add(b)).sub(0.25)).mul(sn.exp(x.neg())).add(b));

const F16_CASES: Case[] = [
  ...(['neg', 'abs', 'exp', 'tanh', 'sigmoid', 'relu', 'gelu', 'silu', 'softplus', 'erf', 'sin', 'cos', 'floor', 'ceil', 'round', 'sign', 'expm1', 'log1p', 'elu', 'relu6'] as const).map((n) => unary(n, (x) => (sn[n] as (t: Tensor) => Tensor)(x), n === 'log1p' ? pos([5, 7]) : any([5, 7]))),
  ...(['log', 'sqrt', 'rsqrt', 'reciprocal'] as const).map((n) => unary(n, (x) => (sn[n] as (t: Tensor) => Tensor)(x), pos([5, 7]))),
  unary('leakyRelu', (x) => sn.leakyRelu(x, 0.1)),
  unary('clamp', (x) => sn.clamp(x, -1, 1.5)),
  unary('mul scalar', (x) => x.mul(1.7).add(-0.25)),
  unary('cast to float32 and back', (x) => x.to('float32').mul(3).to('float16')),
  ...(['add', 'sub', 'mul', 'div', 'maximum', 'minimum'] as const).map((n): Case => ({ name: n, inputs: [any([4, 6]), pos([6])], run: (a, b) => (sn[n] as (x: Tensor, y: Tensor) => Tensor)(a, b) })),
  { name: 'pow', inputs: [pos([4, 6]), any([4, 1])], run: (a, b) => sn.pow(a, b) },
  { name: 'where', inputs: [any([4, 6]), any([4, 6])], run: (a, b) => sn.where(sn.gt(a, 0), a, b) },
  // Computed in f16 on adapters with shader-f16 (exact there), with f32 steps widened between them.
  { name: 'add alpha', inputs: [any([4, 6]), any([6])], run: (a, b) => sn.add(a, b, { alpha: 0.5 }) },
  { name: 'compare and select', inputs: [any([4, 6]), any([4, 6])], run: (a, b) => sn.where(sn.le(a, b), a.sub(b), sn.relu(b.neg())) },
  { name: 'contiguous (vec4)', inputs: [any([8, 16]), any([8, 16]), any([1])], run: (a, b, c) => a.add(b).mul(c).to('float32').add(a.to('float32')).to('float16') },
  { name: 'compares', inputs: [any([4, 6]), any([4, 1])], run: (a, b) => sn.where(sn.eq(a, b).logicalOr(sn.lt(a, b)), a.abs(), sn.where(sn.ne(a, b).logicalAnd(sn.ge(a, b.neg())), b.floor(), a.round())) },
  { name: 'fused chain', inputs: [any([4, 6]), any([6])], run: (a, b) => fusedChain(a, b) },
  { name: 'through float32', inputs: [any([4, 6]), any([6])], run: (a, b) => a.to('float32').mul(b).add(1e-3).to('float16').mul(a) },
  { name: 'strided view', inputs: [any([6, 8])], run: (x) => x.transpose(0, 1).narrow(0, 1, 5).mul(2) },
  ...(['sum', 'mean', 'amax'] as const).map((n) => unary(n, (x) => (sn[n] as (t: Tensor, d: number) => Tensor)(x, 1), any([9, 33]))),
  unary('sum all', (x) => sn.sum(x), any([17, 31])),
  unary('var', (x) => sn.var(x, 0), any([20, 6])),
  unary('softmax', (x) => sn.softmax(x, -1), any([5, 19])),
  unary('logSoftmax', (x) => sn.logSoftmax(x, 0), any([7, 5])),
  unary('cumsum', (x) => sn.cumsum(x, 1), any([3, 40])),
  unary('logsumexp', (x) => sn.logsumexp(x, 1), any([4, 9])),
  { name: 'matmul', inputs: [any([9, 24]), any([24, 13])], run: (a, b) => sn.matmul(a, b) },
  { name: 'matmul aligned (vec4 loads and stores)', inputs: [any([12, 16]), any([16, 20])], run: (a, b) => sn.matmul(a, b) },
  { name: 'bmm', inputs: [any([2, 5, 8]), any([2, 8, 7])], run: (a, b) => sn.bmm(a, b) },
  { name: 'linear', inputs: [any([3, 16]), any([5, 16]), any([5])], run: (x, w, b) => sn.linear(x, w, b) },
  { name: 'conv2d', inputs: [any([1, 3, 9, 9]), any([4, 3, 3, 3]), any([4])], run: (x, w, b) => sn.conv2d(x, w, b, { padding: 1 }) },
  unary('maxPool2d', (x) => sn.maxPool2d(x, 2), any([1, 2, 8, 8])),
  unary('avgPool2d', (x) => sn.avgPool2d(x, 2), any([1, 2, 8, 8])),
  { name: 'layerNorm', inputs: [any([4, 12]), any([12]), any([12])], run: (x, w, b) => sn.layerNorm(x, [12], w, b) },
  unary('interpolate', (x) => sn.interpolate(x, { scaleFactor: 2, mode: 'bilinear' }), any([1, 1, 4, 5])),
  { name: 'cat', inputs: [any([3, 4]), any([2, 4])], run: (a, b) => sn.cat([a, b], 0) },
];

/** Runs the cases on WebGPU and on the CPU and compares within float16's tolerance. */
async function check(cases: readonly Case[]): Promise<void> {
  const tol = TOLERANCES.webgpu.float16;
  for (const c of cases) {
    const make = (device: DeviceName) => c.inputs.map((spec, k) => sn.tensor(values(numel(spec.shape), 7 + k, spec.lo, spec.hi), { dtype: 'float16', device }).reshape(spec.shape));
    const [want, got] = await Promise.all((['cpu', 'webgpu'] as const).map(async (device) => {
      const xs = make(device);
      const y = c.run(...xs);
      expect(y.dtype, c.name).toBe('float16');
      const data = await y.data();
      for (const t of [...xs, y]) t.dispose();
      return data;
    }));
    // Loose in proportion to the work: float16 results of long sums round more than one op does.
    assertClose(got!, want!, { rtol: tol.rtol * 4, atol: tol.atol * 4, what: `float16 ${c.name}` });
  }
}

describe('float16 ops on WebGPU', () => {
  it('float16 ops match the CPU with float16 packed two per word (the path of adapters without shader-f16)', async () => {
    const sample = new Set(['exp', 'add', 'contiguous (vec4)', 'add alpha', 'compares', 'compare and select', 'fused chain', 'through float32', 'strided view', 'sum', 'softmax', 'matmul', 'matmul aligned (vec4 loads and stores)']);
    await withCaps({ f16: false }, () => check(F16_CASES.filter((c) => sample.has(c.name))));
  });

  const info = adapterInfo();
  const reason = `the adapter (${info?.adapter ?? 'none'}) lacks shader-f16, so native float16 kernels cannot run here; scripts/gpu-check.sh runs them on a GPU`;
  if (!info?.features.shaderF16) console.info(`test/webgpu-f16.test.ts: native float16 skipped: ${reason}`);
  it.skipIf(!info?.features.shaderF16)('every float16 op matches the CPU with native f16 storage (shader-f16)', async () => {
    await withCaps({ f16: true }, () => check(F16_CASES));
  });
});
