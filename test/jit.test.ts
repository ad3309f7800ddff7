import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName, Tensor } from '../src/index.js';
import { assertClose, propertyConfig } from '../src/testing/index.js';
import { Plan } from '../src/jit/plan.js';
import * as internals from '../src/jit-internals.js';
import { getBackend } from '../src/backend/backend.js';
import type { WebGpuCaps } from '../src/kernels/wgsl/kernel.js';
import { WITH_WEBGPU, withCaps } from './helpers.js';

// A random program is a list of steps over a pool of [B, N]-broadcastable tensors (inputs x, z of
// [B, N], y of [N], and a captured constant), so every step's operands fit together.
type Step =
  | { op: 'unary'; fn: number; a: number }
  | { op: 'binary'; fn: number; a: number; b: number }
  | { op: 'scalar'; fn: number; a: number; s: number }
  | { op: 'where'; a: number; b: number }
  | { op: 'sum'; a: number }
  | { op: 'softmax'; a: number }
  /** A reduction of a fresh elementwise result (which the 'default' strategy fuses in as a prologue). */
  | { op: 'reduce'; kind: number; fn: number; a: number; b: number; dim: number }
  /** softmax or logSoftmax of a·s + b, fused into one kernel by 'default'. */
  | { op: 'softmaxOf'; a: number; b: number; s: number; log: boolean }
  | { op: 'matmul'; a: number }
  | { op: 'transposedCopy'; a: number }
  /** Random values drawn per call (a graph node under jit): noise added, or a dropout-like mask. */
  | { op: 'random'; a: number; mask: boolean };

const UNARY = [sn.relu, sn.tanh, sn.sigmoid, sn.neg, sn.abs, sn.sin, (x: Tensor) => sn.gelu(x), sn.silu, (x: Tensor) => sn.clamp(x, -1, 1)];
const BINARY = [sn.add, sn.sub, sn.mul, sn.maximum, sn.minimum];
const SCALAR = [(x: Tensor, s: number) => sn.mul(x, s), (x: Tensor, s: number) => sn.add(x, s), (x: Tensor, s: number) => sn.sub(s, x)];
// Reductions keep their dims, so results broadcast against the pool's [B, N] tensors.
const REDUCE = [
  (x: Tensor, d: number | null) => sn.sum(x, d, true),
  (x: Tensor, d: number | null) => sn.mean(x, d, true),
  (x: Tensor, d: number | null) => sn.amax(x, d, true),
  (x: Tensor, d: number | null) => sn.std(x, d, { keepdim: true, correction: 0 }),
];
const REDUCE_DIMS = [-1, 0, null];
const ALL_STEPS: Step['op'][] = ['unary', 'binary', 'scalar', 'where', 'sum', 'softmax', 'reduce', 'softmaxOf', 'matmul', 'transposedCopy', 'random'];

const stepArb = (ops: Step['op'][]): fc.Arbitrary<Step> => {
  const i = fc.nat(20);
  const all: Record<Step['op'], fc.Arbitrary<Step>> = {
    unary: fc.record({ op: fc.constant('unary' as const), fn: fc.nat(UNARY.length - 1), a: i }),
    binary: fc.record({ op: fc.constant('binary' as const), fn: fc.nat(BINARY.length - 1), a: i, b: i }),
    scalar: fc.record({ op: fc.constant('scalar' as const), fn: fc.nat(SCALAR.length - 1), a: i, s: fc.constantFrom(0.5, 1.5, -2) }),
    where: fc.record({ op: fc.constant('where' as const), a: i, b: i }),
    sum: fc.record({ op: fc.constant('sum' as const), a: i }),
    softmax: fc.record({ op: fc.constant('softmax' as const), a: i }),
    reduce: fc.record({ op: fc.constant('reduce' as const), kind: fc.nat(REDUCE.length - 1), fn: fc.nat(BINARY.length - 1), a: i, b: i, dim: fc.nat(REDUCE_DIMS.length - 1) }),
    softmaxOf: fc.record({ op: fc.constant('softmaxOf' as const), a: i, b: i, s: fc.constantFrom(0.125, -2), log: fc.boolean() }),
    matmul: fc.record({ op: fc.constant('matmul' as const), a: i }),
    transposedCopy: fc.record({ op: fc.constant('transposedCopy' as const), a: i }),
    random: fc.record({ op: fc.constant('random' as const), a: i, mask: fc.boolean() }),
  };
  return fc.oneof(...ops.map((o) => all[o]));
};

/** Views a result may be returned through: the tensor itself, or views of it as eager ops give them. */
const OUTPUT_VIEWS = [
  (t: Tensor) => t,
  (t: Tensor) => t.unsqueeze(0),
  (t: Tensor) => (t.dim() >= 2 ? t.t() : t.unsqueeze(1)),
  (t: Tensor) => sn.slice(t, -1, 1, Infinity, 2),
  (t: Tensor) => t.expand([2, ...t.shape]),
];

function program(steps: Step[], weight: Tensor, constant: Tensor, extraOutput: number, viewOutput = 0, viewKind = 0) {
  return (x: Tensor, y: Tensor, z: Tensor): Tensor[] => {
    const pool: Tensor[] = [x, y, z, constant];
    const pick = (k: number) => pool[k % pool.length]!;
    for (const s of steps) {
      const a = pick(s.a);
      switch (s.op) {
        case 'unary': pool.push(UNARY[s.fn]!(a)); break;
        case 'binary': pool.push(BINARY[s.fn]!(a, pick(s.b))); break;
        case 'scalar': pool.push(SCALAR[s.fn]!(a, s.s)); break;
        case 'where': pool.push(sn.where(sn.gt(a, 0), a, pick(s.b))); break;
        case 'sum': pool.push(sn.sum(a, -1, true)); break;
        case 'softmax': pool.push(sn.softmax(a.expand(x.shape), -1)); break;
        case 'reduce': pool.push(REDUCE[s.kind]!(BINARY[s.fn]!(a, pick(s.b)), REDUCE_DIMS[s.dim]!)); break;
        case 'softmaxOf': pool.push((s.log ? sn.logSoftmax : sn.softmax)(sn.add(sn.mul(a, s.s), pick(s.b)), -1)); break;
        case 'matmul': pool.push(sn.matmul(a.expand(x.shape), weight)); break;
        // A permuted view of a copy: fusion must not read it as if it were in order.
        case 'transposedCopy': pool.push(a.expand(x.shape).t().contiguous().t()); break;
        case 'random': pool.push(s.mask ? a.mul(sn.lt(sn.rand(a.shape, { device: a.device }), 0.5)) : a.add(sn.randn(a.shape, { device: a.device }))); break;
      }
    }
    // Also returned: a pool entry (an input, the captured constant or a result) and a view of one.
    return [pool[pool.length - 1]!.add(0), pick(extraOutput), OUTPUT_VIEWS[viewKind % OUTPUT_VIEWS.length]!(pick(viewOutput))];
  };
}

const progArb = (ops: Step['op'][]) =>
  fc.record({
    steps: fc.array(stepArb(ops), { minLength: 1, maxLength: 10 }),
    b: fc.integer({ min: 1, max: 4 }),
    n: fc.integer({ min: 1, max: 6 }),
    seed: fc.nat(1000),
    extra: fc.nat(20),
    viewOutput: fc.nat(20),
    viewKind: fc.nat(OUTPUT_VIEWS.length - 1),
    /** Per input x, y, z: 0 contiguous, 1 transposed (x, z) or a column (y), 2 every other element of a wider tensor. */
    layouts: fc.tuple(fc.nat(2), fc.nat(2), fc.nat(2)),
  });

/** A [b, n] or [n] input laid out as `layout` says (see progArb). */
function laidOut(shape: number[], layout: number, seed: number, device: DeviceName): Tensor {
  if (layout === 0) return sn.randn(shape, { seed, device });
  if (layout === 1) return shape.length === 2 ? sn.randn([shape[1]!, shape[0]!], { seed, device }).t() : sn.randn([shape[0]!, 3], { seed, device }).narrow(1, 0, 1).squeeze(1);
  const wide = [...shape.slice(0, -1), 2 * shape[shape.length - 1]! + 1];
  return sn.slice(sn.randn(wide, { seed, device }), -1, 1, Infinity, 2);
}

describe.each(WITH_WEBGPU)('jit on %s', (device: DeviceName) => {
  const ops = ALL_STEPS;
  const tol = device === 'cpu' ? { rtol: 1e-6, atol: 1e-7 } : { rtol: 1e-5, atol: 1e-6 };

  it('jit(fn) equals eager fn on random programs under every built-in strategy', async () => {
    await fc.assert(
      fc.asyncProperty(progArb(ops), async ({ steps, b, n, seed, extra, viewOutput, viewKind, layouts }) => {
        // Everything is freed at the end: the leak check counts live tensors, and garbage the collector frees would skew it.
        const [x, y, z] = sn.tidy(() => [laidOut([b, n], layouts[0], seed, device), laidOut([n], layouts[1], seed + 1, device), laidOut([b, n], layouts[2], seed + 2, device)]);
        const w = sn.randn([n, n], { seed: seed + 3, device }), c = sn.randn([b, 1], { seed: seed + 4, device });
        const fn = program(steps, w, c, extra, viewOutput, viewKind);
        // Random steps draw from the default generator: a call seeded as an eager run draws what it drew,
        // and the two calls are seeded differently (a draw frozen into the plan would repeat the first).
        const wants = [0, 1].map((call) => {
          sn.manualSeed(seed + call);
          return sn.tidy(() => fn(x!, y!, z!));
        });
        for (const fusion of ['none', 'elementwise', 'default'] as const) {
          const f = sn.jit(fn, { fusion });
          for (let call = 0; call < 2; call++) {
            const live = sn.memory().tensors;
            sn.manualSeed(seed + call);
            const got = f(x!, y!, z!);
            const want = wants[call]!;
            // Every output is a fresh tensor (never an argument), and a call after the first (which keeps
            // the graph's constants) leaves nothing else behind (at most: the collector may free other
            // tests' garbage meanwhile, which only lowers the count).
            if (call > 0) expect(sn.memory().tensors - live).toBeLessThanOrEqual(new Set(got).size);
            for (const t of got) expect([x, y, z, c].includes(t)).toBe(false);
            for (let i = 0; i < got.length; i++) {
              expect(got[i]!.shape).toEqual(want[i]!.shape);
              assertClose(await got[i]!.data(), await want[i]!.data(), { ...tol, what: `${fusion} output ${i} (call ${call})` });
            }
            got.forEach((t) => t.dispose());
          }
          const kernels = f.report().kernels;
          if (fusion === 'none') expect(kernels.every((k) => k.ops.length === 1)).toBe(true);
          // Only 'default' fuses into reductions and softmax.
          const reductions = new Set(['sum', 'mean', 'max', 'std', 'softmax', 'logSoftmax']);
          if (fusion !== 'default') expect(kernels.every((k) => k.ops.length === 1 || !k.ops.some((o) => reductions.has(o)))).toBe(true);
          f.dispose();
        }
        for (const t of [x!, y!, z!, w, c, ...wants.flat()]) t.dispose();
      }),
      propertyConfig({ numRuns: device === 'cpu' ? 40 : 15 }),
    );
  });

  it('fuses an elementwise chain with broadcasts and scalars into one kernel', async () => {
    const f = sn.jit((x: Tensor, bias: Tensor) => sn.sigmoid(sn.relu(x.mul(1.5).add(0.5)).sub(0.25)).mul(x).add(bias));
    const x = sn.randn([3, 5], { seed: 1, device }), bias = sn.randn([5], { seed: 2, device });
    const want = sn.sigmoid(sn.relu(x.mul(1.5).add(0.5)).sub(0.25)).mul(x).add(bias);
    assertClose(await f(x, bias).data(), await want.data(), tol);
    const r = f.report();
    expect(r.kernels.map((k) => k.ops)).toEqual([['mul', 'add', 'relu', 'sub', 'sigmoid', 'mul', 'add']]);
    expect(r.kernels[0]!.source).toContain(device === 'cpu' ? 'Math.exp' : '@compute');
    expect(r.kernels[0]!.bytesRead).toBe((15 + 5) * 4);
    expect(r.kernels[0]!.bytesWritten).toBe(15 * 4);
    expect(r.peakBytes).toBe(0);
  });

  it('fuses elementwise prologues into reductions and softmax: sum(x*x), mean(relu(a+b)), softmax(x*0.125 + mask) are one kernel each', async () => {
    const x = sn.randn([3, 7], { seed: 1, device }), b = sn.randn([7], { seed: 2, device }), mask = sn.randn([1, 7], { seed: 3, device });
    const cases: [string, (...t: Tensor[]) => Tensor, Tensor[], string[]][] = [
      ['sum(x*x)', (t) => sn.sum(t.mul(t), -1), [x], ['mul', 'sum']],
      ['mean(relu(a+b))', (p, q) => sn.mean(sn.relu(p.add(q))), [x, b], ['add', 'relu', 'mean']],
      ['softmax(x*0.125 + mask)', (p, m) => sn.softmax(p.mul(0.125).add(m), -1), [x, mask], ['mul', 'add', 'softmax']],
      ['logSoftmax(x - b, 0)', (p, q) => sn.logSoftmax(p.sub(q), 0), [x, b], ['sub', 'logSoftmax']],
      ['cumsum(|x|, 1)', (t) => sn.cumsum(t.abs(), 1), [x], ['abs', 'cumsum']],
    ];
    for (const [what, fn, args, ops] of cases) {
      const f = sn.jit(fn);
      assertClose(await f(...args).data(), await fn(...args).data(), { ...tol, what });
      const r = f.report();
      expect(r.kernels.map((k) => k.ops), what).toEqual([ops]);
      // Each input is read once, in place; nothing is stored between the ops.
      expect(r.kernels[0]!.bytesRead, what).toBe(args.reduce((a, t) => a + t.numel() * 4, 0));
      expect(r.peakBytes, what).toBe(0);
      if (device === 'webgpu') expect(r.kernels[0]!.source, what).toContain('fn prologue(');
      // The 'elementwise' strategy leaves the reduction a kernel of its own.
      const g = sn.jit(fn, { fusion: 'elementwise' });
      g(...args);
      expect(g.report().kernels.map((k) => k.ops), what).toEqual(ops.length > 2 ? [ops.slice(0, -1), ops.slice(-1)] : ops.map((o) => [o]));
    }
  });

  it('fuses epilogues into their matmul/conv2d: a small CNN is one kernel per conv block, relu(matmul(a, b) + bias + residual) one kernel', async () => {
    const { nn } = sn;
    sn.manualSeed(11);
    const block = (c: number, o: number, stride: number) => [new nn.Conv2d(c, o, 3, { stride, padding: 1 }), new nn.BatchNorm2d(o), new nn.ReLU()];
    const cnn = new nn.Sequential(...block(3, 8, 1), ...block(8, 16, 2), ...block(16, 16, 2), new nn.AdaptiveAvgPool2d(1), new nn.Flatten(), new nn.Linear(16, 10)).eval();
    // Non-trivial statistics, so the folded weights differ from the originals.
    const stats: Record<string, Tensor> = {};
    for (const [i, o] of [[1, 8], [4, 16], [7, 16]] as const) {
      stats[`${i}.running_mean`] = sn.randn([o], { seed: i });
      stats[`${i}.running_var`] = sn.rand([o], { seed: i + 1 }).add(0.5);
      stats[`${i}.weight`] = sn.randn([o], { seed: i + 2 });
    }
    cnn.loadStateDict({ ...cnn.stateDict(), ...stats });
    if (device === 'webgpu') cnn.to('webgpu');
    const x = sn.randn([2, 3, 9, 9], { seed: 12, device });
    const f = sn.jit((t: Tensor) => cnn.forward(t));
    assertClose(await f(x).data(), await cnn.forward(x).data(), { rtol: 1e-4, atol: 1e-5 });
    const convs = f.report().kernels.filter((k) => k.ops.includes('conv2d'));
    expect(convs.map((k) => k.ops)).toEqual([['conv2d', 'relu'], ['conv2d', 'relu'], ['conv2d', 'relu']]);
    expect(f.report().kernels.some((k) => k.ops.includes('batchNorm'))).toBe(false);

    const residual = (a: Tensor, b: Tensor, bias: Tensor, r: Tensor) => sn.relu(sn.matmul(a, b).add(bias).add(r));
    const a = sn.randn([5, 7], { seed: 13, device }), b = sn.randn([7, 6], { seed: 14, device });
    const bias = sn.randn([6], { seed: 15, device }), r = sn.randn([5, 6], { seed: 16, device });
    const g = sn.jit(residual);
    assertClose(await g(a, b, bias, r).data(), await residual(a, b, bias, r).data(), tol);
    expect(g.report().kernels.map((k) => k.ops)).toEqual([['matmul', 'add', 'add', 'relu']]);
    // The report counts the epilogue's arithmetic and shows the code the kernel runs.
    const [k] = g.report().kernels;
    expect(k!.flops).toBe(2 * 5 * 6 * 7 + 3 * 5 * 6);
    expect(k!.source).toContain(device === 'cpu' ? 'function map' : 'fn epilogue');
    // Two producers meeting in one add: the add joins the first producer's epilogue only.
    const twoConvs = (x: Tensor, w1: Tensor, w2: Tensor) => sn.relu(sn.add(sn.matmul(x, w1), sn.matmul(x, w2)));
    const w2 = sn.randn([7, 6], { seed: 17, device });
    const m2 = sn.jit(twoConvs);
    assertClose(await m2(a, b, w2).data(), await twoConvs(a, b, w2).data(), tol);
    expect(m2.report().kernels.map((k) => k.ops).sort()).toEqual([['matmul'], ['matmul', 'add', 'relu']]);
    // A value the chain needs elsewhere ends the epilogue there; the rest stays one elementwise kernel.
    const shared = (p: Tensor, q: Tensor) => {
      const y = sn.linear(p, q).mul(2);
      return y.sigmoid().add(y.sum(-1, true));
    };
    const h = sn.jit(shared);
    assertClose(await h(a, b.t()).data(), await shared(a, b.t()).data(), tol);
    expect(h.report().kernels.map((k) => k.ops)).toEqual([['linear', 'mul'], ['sum'], ['sigmoid', 'add']]);
  });

  it('on the CPU an epilogue goes on through a value several elementwise ops read once they meet again (hardSwish written out); WebGPU keeps the chain rule', async () => {
    const x = sn.randn([1, 3, 7, 5], { seed: 21, device }), w = sn.randn([4, 3, 3, 3], { seed: 22, device });
    const conv = (t: Tensor, k: Tensor) => sn.conv2d(t, k, null, { padding: 1 }).mul(0.5).add(0.25);
    const hardSwish = (t: Tensor, k: Tensor) => {
      const y = conv(t, k);
      return y.mul(sn.clamp(y.add(3), 0, 6)).div(6).mul(1.5).add(-0.5);
    };
    const f = sn.jit(hardSwish);
    assertClose(await f(x, w).data(), await hardSwish(x, w).data(), tol);
    const ops = (g: { report(): { kernels: { ops: string[] }[] } }) => g.report().kernels.map((k) => k.ops);
    const head = ['conv2d', 'mul', 'add'], branches = ['add', 'clamp', 'mul', 'div', 'mul', 'add'];
    expect(ops(f)).toEqual(device === 'cpu' ? [[...head, ...branches]] : [head, branches]);
    // Branches that never meet (two results), or meet only after one of them left as a result: the epilogue stops where they part.
    const apart = (t: Tensor, k: Tensor) => { const y = conv(t, k); return [y.relu(), y.sigmoid()] as const; };
    const g = sn.jit(apart);
    const [gr, gs] = g(x, w), [er, es] = apart(x, w);
    assertClose(await gr.data(), await er.data(), tol);
    assertClose(await gs.data(), await es.data(), tol);
    expect(ops(g)).toEqual([head, ['relu'], ['sigmoid']]);
    const leaves = (t: Tensor, k: Tensor) => { const y = conv(t, k), z = y.add(3); return [y.mul(z.relu()), z] as const; };
    const h = sn.jit(leaves);
    const [hp, hz] = h(x, w), [ep, ez] = leaves(x, w);
    assertClose(await hp.data(), await ep.data(), tol);
    assertClose(await hz.data(), await ez.data(), tol);
    expect(ops(h)[0]).toEqual(head);
  });

  it('results never alias between calls; a new signature retraces', async () => {
    const f = sn.jit((x: Tensor) => x.mul(2).relu());
    const a = f(sn.ones([2], { device })), b = f(sn.full([2], 3, { device }));
    expect([await a.toArray(), await b.toArray()]).toEqual([[2, 2], [6, 6]]);
    expect(f.graph().inputs[0]!.outputs[0]!.shape).toEqual([2]);
    const c = f(sn.ones([3, 1], { device }));
    expect(await c.toArray()).toEqual([[2], [2], [2]]);
    expect(f.graph().inputs[0]!.outputs[0]!.shape).toEqual([3, 1]);
    expect(f.report().warmMs).toBeNull();
  });
});

describe('jit on webgpu: prologue fusion within the device limits', () => {
  it('refuses a group needing more storage buffers than the device allows, and the default strategy stays within them', async () => {
    const caps = (getBackend('webgpu') as unknown as { caps: WebGpuCaps }).caps;
    const [a, b, c, d] = [1, 2, 3, 4].map((seed) => sn.randn([3, 5], { seed, device: 'webgpu' })) as [Tensor, Tensor, Tensor, Tensor];
    const fn = (p: Tensor, q: Tensor, r: Tensor, s: Tensor) => sn.sum(p.mul(q).add(r.mul(s)), -1);
    const want = await fn(a, b, c, d).data();
    const all = sn.jit(fn, { fusion: (g) => [g.nodes.filter((n) => n.kind === 'op').map((n) => n.id)] });
    assertClose(await all(a, b, c, d).data(), want, { rtol: 1e-5, atol: 1e-6 });
    expect(all.report().kernels.map((k) => k.ops)).toEqual([['mul', 'mul', 'add', 'sum']]);
    await withCaps({ limits: { ...caps.limits, maxStorageBuffersPerShaderStage: 4 } }, async () => {
      // Four inputs and the output: five buffers.
      expect(() => sn.jit(fn, { fusion: (g) => [g.nodes.filter((n) => n.kind === 'op').map((n) => n.id)] })(a, b, c, d)).toThrow(
        /fusion group 0 \[\d+, \d+, \d+, \d+\] is illegal: the fused kernel would bind 5 buffers \(inputs, output and scratch\), more than the device's 4 storage buffers per shader stage/,
      );
      const f = sn.jit(fn);
      assertClose(await f(a, b, c, d).data(), want, { rtol: 1e-5, atol: 1e-6 });
      expect(f.report().kernels.map((k) => k.ops)).toEqual([['mul'], ['mul', 'add', 'sum']]);
    });
  });
});

describe('jit on cpu: passes, memory plan, strategies and errors', () => {
  it('folds conv+batchnorm and linear+batchnorm exactly; BN disappears from the graph', async () => {
    sn.manualSeed(3);
    const { nn } = sn;
    const m = new nn.Sequential(new nn.Conv2d(3, 6, 3, { padding: 1 }), new nn.BatchNorm2d(6, { eps: 1e-3 }), new nn.ReLU(), new nn.Flatten(), new nn.Linear(6 * 25, 4)).eval();
    // Non-trivial statistics and affine parameters.
    const stats = { '1.running_mean': sn.randn([6], { seed: 4 }), '1.running_var': sn.rand([6], { seed: 5 }).add(0.2), '1.weight': sn.randn([6], { seed: 6 }), '1.bias': sn.randn([6], { seed: 7 }) };
    m.loadStateDict({ ...m.stateDict(), ...stats });
    const f = sn.jit((x: Tensor) => m.forward(x));
    const x = sn.randn([2, 3, 5, 5], { seed: 8 });
    assertClose(await f(x).data(), await m.forward(x).data(), { rtol: 1e-5, atol: 1e-5 });
    const ops = f.graph().nodes.filter((n) => n.kind === 'op').map((n) => sn.opLabel(n));
    expect(ops).toEqual(['conv2d', 'relu', 'linear']);
    // linear + BatchNorm1d (a 2-D batch norm over features).
    const w = sn.randn([4, 3], { seed: 9 }), mean = sn.randn([4], { seed: 10 }), v = sn.rand([4], { seed: 11 }).add(0.5);
    const g = sn.jit((x: Tensor) => sn.batchNorm(sn.linear(x, w), mean, v, null, null, { eps: 1e-5 }));
    const xs = sn.randn([5, 3], { seed: 12 });
    assertClose(await g(xs).data(), await sn.batchNorm(sn.linear(xs, w), mean, v).data(), { rtol: 1e-5, atol: 1e-6 });
    expect(g.graph().nodes.filter((n) => n.kind === 'op').map((n) => sn.opLabel(n))).toEqual(['linear']);
  });

  it('eliminates dead code and common subexpressions, and folds constant subgraphs', () => {
    const w = sn.randn([4], { seed: 1 });
    const f = sn.jit((x: Tensor) => {
      x.exp(); // dead
      const a = x.mul(2), b = x.mul(2); // the same
      return a.add(b).add(w.mul(3).relu()); // w·3 then relu: constants
    });
    f(sn.ones([4]));
    const text = f.graph().toString();
    expect(text.match(/= mul\(/g)).toHaveLength(1);
    expect(text).not.toMatch(/= exp\(/);
    expect(text).not.toMatch(/= relu\(/);
    expect(f.graph().nodes.filter((n) => n.kind === 'op')).toHaveLength(3);
  });

  it('plans memory: intermediates share buffers by liveness, never while both are live', async () => {
    const f = sn.jit((x: Tensor, w: Tensor) => {
      let h = x;
      for (let i = 0; i < 6; i++) h = sn.softmax(sn.matmul(h, w), -1);
      return h;
    });
    f(sn.randn([8, 16], { seed: 1 }), sn.randn([16, 16], { seed: 2 }));
    const r = f.report();
    expect(r.unplannedBytes).toBe(11 * 8 * 16 * 4);
    expect(r.peakBytes).toBe(2 * 8 * 16 * 4);
  });

  it('the memory plan validator holds on random graphs and catches a broken plan', async () => {
    await fc.assert(
      fc.asyncProperty(progArb(ALL_STEPS), async ({ steps, b, n, seed, extra }) => {
        const fn = program(steps, sn.randn([n, n], { seed }), sn.randn([b, 1], { seed: seed + 1 }), extra);
        const f = sn.jit(fn, { fusion: 'none' });
        f(sn.randn([b, n], { seed }), sn.randn([n], { seed }), sn.randn([b, n], { seed }));
        const plan = new Plan(f.graph(), new Map());
        const values = plan.kernels.flatMap((k) => k.outputs);
        internals.validateMemoryPlan(plan.memory, values);
        plan.dispose();
        f.dispose();
      }),
      propertyConfig({ numRuns: 40 }),
    );
    const broken = { slots: [{ dtype: 'float32' as const, length: 4 }], slotOf: new Map([[1, 0], [2, 0]]), live: new Map<number, [number, number]>([[1, [0, 2]], [2, [1, 3]]]), peakBytes: 16, unplannedBytes: 32 };
    expect(() => internals.validateMemoryPlan(broken, [])).toThrow('memory plan: values %1 (live 0–2) and %2 (live 1–3) share slot 0');
  });

  it('takes a user strategy and rejects illegal groups with a clear error', async () => {
    const fn = (x: Tensor) => {
      const a = x.exp(), b = a.mul(2), c = sn.sum(b, -1, true);
      return b.add(c).relu();
    };
    const x = sn.randn([3, 4], { seed: 1 });
    const ids = (f: (g: sn.Graph) => number[][]) => () => sn.jit(fn, { fusion: f })(x);
    const byName = (g: sn.Graph, ...names: string[]) => g.nodes.filter((n) => n.kind === 'op' && names.includes(sn.opLabel(n))).map((n) => n.id);
    // exp+mul is legal: only mul's value leaves the group (to sum and add).
    const custom = sn.jit(fn, { fusion: (g) => [byName(g, 'exp', 'mul')] });
    assertClose(await custom(x).data(), await fn(x).data(), { rtol: 1e-6 });
    expect(custom.report().kernels.map((k) => k.ops)).toEqual([['exp', 'mul'], ['sum'], ['add'], ['relu']]);
    // mul feeds sum outside the group, whose result comes back into add: two values would leave (a cycle).
    expect(ids((g) => [byName(g, 'mul', 'add')])).toThrow(/fusion group 0 \[\d+, \d+\] is illegal: exactly one node's value may be used outside the group .* but 2 are/);
    // exp feeds sum only through mul, which stays outside.
    expect(ids((g) => [byName(g, 'exp', 'sum')])).toThrow(/node \d+'s value is used outside the group \(by node \d+\); only the result of node \d+ \(sum\) may leave a prologue group/);
    expect(ids((g) => [byName(g, 'exp', 'mul', 'sum')])).toThrow(/node \d+'s value is used outside the group \(by node \d+\); only the result of node \d+ \(sum\) may leave/);
    expect(ids((g) => [[...byName(g, 'exp'), g.inputs[0]!.id]])).toThrow(/node \d+ \(input\) cannot be fused: the code generator fuses elementwise ops, elementwise ops into the reduction/);
    expect(ids((g) => [byName(g, 'exp'), byName(g, 'exp')])).toThrow(/is in more than one group/);
    expect(ids(() => [[999]])).toThrow(/node 999 is not in the graph/);
    expect(ids((g) => [byName(g, 'add', 'relu', 'mul', 'exp')])).toThrow(/is illegal/);
    expect(() => sn.jit(fn, { fusion: 'greedy' as 'none' })).toThrow(/jit: unknown fusion strategy "greedy"/);
  });

  it('rejects illegal prologue groups with clear errors', async () => {
    const byName = (g: sn.Graph, ...names: string[]) => g.nodes.filter((n) => n.kind === 'op' && names.includes(sn.opLabel(n))).map((n) => n.id);
    const x = sn.randn([3, 4], { seed: 1 }), y = sn.randn([4], { seed: 2 }), w = sn.randn([5, 4], { seed: 3 });
    const fused = (fn: (...t: Tensor[]) => Tensor, ...names: string[]) => () => sn.jit(fn, { fusion: (g) => [byName(g, ...names)] })(x, y);
    expect(fused((p) => sn.sum(sn.softmax(p.exp(), -1), -1), 'exp', 'softmax', 'sum')).toThrow(
      /fusion group 0 \[\d+, \d+, \d+\] is illegal: nodes \d+ \(softmax\) and \d+ \(sum\) are both reduction-like; a prologue group fuses elementwise ops into one of them/,
    );
    expect(fused((p) => sn.sum(sn.linear(p, w).relu(), -1), 'linear', 'relu', 'sum')).toThrow(/node \d+ \(linear\) is not elementwise: only elementwise ops can be fused into node \d+ \(sum\)/);
    expect(fused((p, q) => sn.sum(q.exp().add(p), -1), 'exp', 'add', 'sum')).toThrow(/node \d+ computes \[4\], not the shape \[3, 4\] that node \d+ \(sum\) reduces/);
    expect(fused((p) => sn.sum(p.mul(2).t(), -1), 'mul', 'sum')).toThrow(/node \d+ reads node \d+ through a view; fused values must be read whole/);
    // The same shapes of ops, legally grouped.
    const legal = (p: Tensor) => sn.softmax(p.exp(), -1).add(p);
    const f = sn.jit(legal, { fusion: (g) => [byName(g, 'exp', 'softmax')] });
    assertClose(await f(x).data(), await legal(x).data(), { rtol: 1e-6 });
    expect(f.report().kernels.map((k) => k.ops)).toEqual([['exp', 'softmax'], ['add']]);
  });

  it('rejects illegal epilogue groups with clear errors', async () => {
    const byName = (g: sn.Graph, ...names: string[]) => g.nodes.filter((n) => n.kind === 'op' && names.includes(sn.opLabel(n))).map((n) => n.id);
    const x = sn.randn([3, 4], { seed: 1 }), w = sn.randn([5, 4], { seed: 3 }), v = sn.randn([4, 4], { seed: 4 });
    const fused = (fn: (...t: Tensor[]) => Tensor, ...names: string[]) => () => sn.jit(fn, { fusion: (g) => [byName(g, ...names)] })(x, w, v);
    expect(fused((p, q, r) => sn.matmul(p, r).add(sn.linear(p, q).sum(-1, true)).relu(), 'matmul', 'linear', 'relu')).toThrow(
      /fusion group 0 \[\d+, \d+, \d+\] is illegal: nodes \d+ \(matmul\) and \d+ \(linear\) both produce; an epilogue group fuses elementwise ops into one matmul, linear or conv2d/,
    );
    expect(fused((p, q) => { const y = sn.linear(p, q); return y.exp().add(y.sum(-1, true)); }, 'linear', 'exp')).toThrow(
      /node \d+'s value is used outside the group \(by node \d+\); only the last node's \(\d+\) value may leave an epilogue group/,
    );
    expect(fused((p, q) => sn.linear(p, q).t().exp(), 'linear', 'exp')).toThrow(/node \d+ computes \[5, 3\], not the shape \[3, 5\] of node \d+ \(linear\)/);
    expect(fused((p, q) => p.exp().sum(-1, true).add(sn.linear(p, q)), 'exp', 'linear')).toThrow(/node \d+ \(exp\) runs before node \d+ \(linear\); an epilogue group's elementwise ops must follow its producer/);
    expect(fused((p, q) => sn.gt(sn.linear(p, q), 0), 'linear', 'gt')).toThrow(/turns node \d+'s float32 result into bool; an epilogue may only change a float result's float dtype/);
    // Legal: the producer's value read twice inside the group, a broadcast extra operand.
    const legal = (p: Tensor, q: Tensor, r: Tensor) => { const y = sn.matmul(p, r); return y.mul(y).add(q.sum(0)).tanh(); };
    const f = sn.jit(legal, { fusion: (g) => [byName(g, 'matmul', 'mul', 'add', 'tanh')] });
    assertClose(await f(x, w, v).data(), await legal(x, w, v).data(), { rtol: 1e-6, atol: 1e-7 });
    expect(f.report().kernels.map((k) => k.ops)).toEqual([['sum'], ['matmul', 'mul', 'add', 'tanh']]);
  });

  it('joins sibling convs and linears on one input into one op (horizontal fusion)', async () => {
    const { nn } = sn;
    sn.manualSeed(5);
    const a = new nn.Conv2d(4, 3, 3, { padding: 1 }), b = new nn.Conv2d(4, 5, 3, { padding: 1 }), c = new nn.Conv2d(4, 2, 1, { bias: false });
    const branches = (x: Tensor) => sn.cat([a.forward(x), b.forward(x), c.forward(x)], 1);
    const x = sn.randn([2, 4, 5, 5], { seed: 6 });
    const f = sn.jit(branches);
    assertClose(await f(x).data(), await branches(x).data(), { rtol: 1e-5, atol: 1e-6 });
    // c has no bias, so it stays apart from a and b.
    expect(f.report().kernels.filter((k) => k.name === 'conv2d').map((k) => k.ops)).toEqual([['conv2d', 'conv2d'], ['conv2d']]);
    // Under 'default', a conv whose result feeds an elementwise chain takes it as its epilogue instead of joining its siblings.
    const activated = (x: Tensor) => sn.cat([a.forward(x).relu(), b.forward(x).sigmoid(), c.forward(x)], 1);
    const fa = sn.jit(activated);
    assertClose(await fa(x).data(), await activated(x).data(), { rtol: 1e-5, atol: 1e-6 });
    expect(fa.report().kernels.filter((k) => k.ops.includes('conv2d')).map((k) => k.ops)).toEqual([['conv2d', 'relu'], ['conv2d', 'sigmoid'], ['conv2d']]);
    const [q, k, v] = [new nn.Linear(6, 6), new nn.Linear(6, 6), new nn.Linear(6, 6)];
    const attention = (h: Tensor) => sn.matmul(sn.softmax(sn.matmul(q.forward(h), k.forward(h).transpose(-1, -2)), -1), v.forward(h));
    const h = sn.randn([2, 3, 6], { seed: 7 });
    const g = sn.jit(attention);
    assertClose(await g(h).data(), await attention(h).data(), { rtol: 1e-5, atol: 1e-6 });
    expect(g.report().kernels.filter((k) => k.name === 'linear').map((k) => k.ops)).toEqual([['linear', 'linear', 'linear']]);
    const byName = (gr: sn.Graph, name: string) => gr.nodes.filter((n) => n.kind === 'op' && sn.opLabel(n) === name).map((n) => n.id);
    const y = sn.randn([2, 4, 5, 5], { seed: 8 });
    expect(() => sn.jit((p: Tensor, r: Tensor) => a.forward(p).add(b.forward(r).sum(1, true)), { fusion: (gr) => [byName(gr, 'conv2d')] })(x, y)).toThrow(/reads another input than node/);
    const noBias = new nn.Conv2d(4, 2, 3, { padding: 1, bias: false });
    expect(() => sn.jit((p: Tensor) => a.forward(p).add(noBias.forward(p).sum(1, true)), { fusion: (gr) => [byName(gr, 'conv2d')] })(x)).toThrow(/must both have a bias or both have none/);
    expect(() => sn.jit((p: Tensor) => a.forward(p).add(c.forward(p).sum(1, true)), { fusion: (gr) => [byName(gr, 'conv2d')] })(x)).toThrow(/has other attributes than node/);
  });

  it('composeViews rewrites permuted, sliced and broadcast views onto a slice of a larger buffer', () => {
    const at = (v: sn.View, idx: readonly number[]) => v.offset + idx.reduce((a, x, i) => a + x * v.strides[i]!, 0);
    const unravel = (i: number, shape: readonly number[]) => shape.map((_, d) => Math.floor(i / shape.slice(d + 1).reduce((a, b) => a * b, 1)) % shape[d]!);
    const arb = fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }).chain((shape) =>
      fc.record({
        shape: fc.constant(shape),
        perm: fc.shuffledSubarray([...shape.keys()], { minLength: shape.length, maxLength: shape.length }),
        start: fc.tuple(...shape.map((d) => fc.integer({ min: 0, max: d - 1 }))),
        step: fc.tuple(...shape.map(() => fc.integer({ min: 1, max: 2 }))),
        dim: fc.integer({ min: 0, max: shape.length - 1 }),
        before: fc.integer({ min: 0, max: 3 }),
        after: fc.integer({ min: 0, max: 3 }),
      }),
    );
    fc.assert(
      fc.property(arb, ({ shape, perm, start, step, dim, before, after }) => {
        const c = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
        // The value sits at [before, before + shape[dim]) along `dim` of a larger contiguous buffer.
        const big = shape.map((d, i) => (i === dim ? d + before + after : d));
        const bs = big.map((_, i) => big.slice(i + 1).reduce((a, b) => a * b, 1));
        const inner = { shape, strides: bs, offset: before * bs[dim]! };
        // The reader: a step-slice of the value, permuted.
        const sizes = shape.map((d, i) => Math.ceil((d - start[i]!) / step[i]!));
        const outer = { shape: perm.map((p) => sizes[p]!), strides: perm.map((p) => c[p]! * step[p]!), offset: start.reduce((a, x, i) => a + x * c[i]!, 0) };
        const composed = internals.composeViews(shape, inner, outer);
        expect(composed).not.toBeNull();
        for (let i = 0; i < outer.shape.reduce((a, b) => a * b, 1); i++) {
          const idx = unravel(i, outer.shape);
          const valueIdx = unravel(at(outer, idx), shape);
          expect(at(composed!, idx)).toBe(at(inner, valueIdx));
        }
      }),
      propertyConfig({ numRuns: 200 }),
    );
    expect(internals.composeViews([2, 3, 4], { shape: [2, 3, 4], strides: [12, 4, 1], offset: 0 }, { shape: [6, 4], strides: [4, 1], offset: 0 })).toBeNull();
  });

  it('dispose frees the plan and the graph constants, folded ones included, but not the user tensors', async () => {
    const { nn } = sn;
    const m = new nn.Sequential(new nn.Conv2d(2, 3, 3), new nn.BatchNorm2d(3), new nn.ReLU()).eval();
    const x = sn.randn([1, 2, 6, 6], { seed: 1 });
    const before = sn.memory().bytes;
    const f = sn.jit((t: Tensor) => m.forward(t));
    f(x).dispose();
    expect(sn.memory().bytes).toBeGreaterThan(before);
    f.dispose();
    // At most, not equal: during an await the garbage collector may release tensors earlier code dropped undisposed.
    expect(sn.memory().bytes).toBeLessThanOrEqual(before);
    expect(await m.forward(x).sum().item()).toBeTypeOf('number');
  });

  it('reading values while tracing is an error that explains why', async () => {
    const f = sn.jit((x: Tensor) => {
      void x.data();
      return x;
    });
    expect(() => f(sn.ones([2]))).toThrow(/data: cannot read the values of tensor\(float32, \[2\]\) while jit is tracing: .*data-dependent control flow cannot be traced/);
    const g = sn.jit((x: Tensor) => x.to('webgpu'));
    expect(() => g(sn.ones([2]))).toThrow(/to: cannot move tensor\(float32, \[2\]\) between devices while jit is tracing/);
    expect(() => sn.jit(() => sn.ones([1]))()).toThrow(/jit: the jitted function needs at least one tensor argument/);
  });

  it('prints the graph as text, DOT with fusion clusters, and JSON; returns nested outputs', async () => {
    const f = sn.jit((x: Tensor) => ({ y: x.t().mul(2).add(1), parts: [x.sum()] }));
    const out = f(sn.ones([2, 3]));
    expect(out.y.shape).toEqual([3, 2]);
    expect(await out.parts[0]!.item()).toBe(6);
    const text = f.graph().toString();
    expect(text).toContain('= input(0)');
    expect(text).toContain('mul(%0.view([3, 2], strides=[1, 3]))');
    const dot = f.graph().toDot(f.report().groups);
    expect(dot).toMatch(/subgraph cluster_0 \{[\s\S]*mul[\s\S]*add/);
    expect(JSON.parse(JSON.stringify(f.graph().toJSON())).nodes[1]).toMatchObject({ kind: 'op', op: 'mul', inputs: [{ value: 0, view: { shape: [3, 2], strides: [1, 3] } }] });
  });
});
