import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName, Tensor } from '../src/index.js';
import { assertClose } from '../src/testing/index.js';
import { WITH_WEBGPU, withCaps } from './helpers.js';
import { getBackend } from '../src/backend/backend.js';
import { bumpVersion } from '../src/tensor/version.js';
import type { WebGpuCaps } from '../src/kernels/wgsl/kernel.js';

// Guards, random nodes, failures and the bounded caches of jit (src/jit/jit.ts).

/** Values of a jitted call's results, then the results freed. */
async function values(t: Tensor): Promise<number[]> {
  const v = [...(await t.data())];
  t.dispose();
  return v;
}

describe.each(WITH_WEBGPU)('jit on %s', (device: DeviceName) => {
  it('returns inputs and views of non-contiguous inputs as fresh tensors, leaking nothing', async () => {
    // (Tests that count live tensors leave no garbage: the collector would free it mid-count.)
    const flat = sn.arange(12, { device });
    const base = flat.reshape([3, 4]);
    const x = base.t();
    const f = sn.jit((a: Tensor) => [a, a.t(), sn.slice(a, 0, 1, 4, 2)]);
    const live = sn.memory().tensors;
    for (let call = 0; call < 2; call++) {
      const [same, back, sliced] = f(x);
      expect(same).not.toBe(x);
      expect(await values(same!)).toEqual([0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
      expect(await values(back!)).toEqual([...Array(12).keys()]);
      expect(await values(sliced!)).toEqual([1, 5, 9, 3, 7, 11]);
    }
    f.dispose();
    // At most, not equal: during an await the garbage collector may release tensors earlier code dropped undisposed.
    expect(sn.memory().tensors).toBeLessThanOrEqual(live);
    for (const t of [flat, base, x]) t.dispose();
  });

  it('retraces when a captured parameter was replaced (loadStateDict) or the training flag changed', async () => {
    const m = new sn.nn.Linear(3, 2, { device, seed: 1 });
    const f = sn.jit((x: Tensor) => m.forward(x));
    const x = sn.randn([4, 3], { seed: 2, device });
    const before = await values(f(x));
    assertClose(before, await values(m.forward(x)), { rtol: 1e-5, atol: 1e-6 });
    const other = new sn.nn.Linear(3, 2, { device, seed: 7 });
    m.loadStateDict({ weight: other.weight.clone(), bias: other.bias!.clone() });
    const after = await values(f(x));
    assertClose(after, await values(other.forward(x)), { rtol: 1e-5, atol: 1e-6 });
    expect(after).not.toEqual(before);
    expect(f.stats()).toMatchObject({ retraces: 1, entries: 1 });

    // Dropout: the identity in eval, a fresh mask per call in training, switching retraces.
    const net = new sn.nn.Sequential(new sn.nn.Linear(3, 64, { device, seed: 3 }), new sn.nn.Dropout(0.5));
    const g = sn.jit((t: Tensor) => net.forward(t));
    net.eval();
    const evalOut = await values(g(x));
    assertClose(evalOut, await values(net.forward(x)), { rtol: 1e-5, atol: 1e-6 });
    net.train();
    const a = await values(g(x)), b = await values(g(x));
    expect(a).not.toEqual(b);
    for (const v of [a, b]) {
      // Each element is dropped or doubled.
      v.forEach((e, i) => expect(e === 0 || Math.abs(e - 2 * evalOut[i]!) < 1e-4).toBe(true));
      expect(v.filter((e) => e === 0).length).toBeGreaterThan(32);
    }
    net.eval();
    expect(await values(g(x))).toEqual(evalOut);
    expect(g.stats().retraces).toBe(2);
    for (const h of [f, g]) h.dispose();
    for (const t of [m, other, net, x]) t.dispose();
  });

  it('rand, randn and randint draw fresh values per call; after manualSeed a call equals the eager function', async () => {
    const fn = (x: Tensor) => [x.add(sn.randn(x.shape, { device })), sn.rand([5], { device }), sn.randint(0, 1000, [4], { device }), sn.rand([2], { device, seed: 9 })];
    const f = sn.jit(fn);
    const x = sn.zeros([2, 3], { device });
    const first = f(x), second = f(x);
    for (let i = 0; i < 3; i++) expect(await values(first[i]!)).not.toEqual(await values(second[i]!));
    // A draw with its own seed is the same on every call, as eagerly.
    expect(await values(first[3]!)).toEqual(await values(second[3]!));
    sn.manualSeed(123);
    const eager = sn.tidy(() => fn(x));
    sn.manualSeed(123);
    const jitted = f(x);
    for (let i = 0; i < 4; i++) expect(await values(jitted[i]!)).toEqual(await values(eager[i]!));
    // An explicit generator is drawn from too, so seeding it replays the call.
    const gen = new sn.Generator(5);
    const h = sn.jit((t: Tensor) => t.add(sn.rand(t.shape, { device, generator: gen })));
    const r1 = await values(h(x));
    gen.manualSeed(5);
    expect(await values(h(x))).toEqual(r1);
    expect(f.graph().toString()).toMatch(/= randn\(\)/);
    for (const j of [f, h]) j.dispose();
    x.dispose();
  });
});

describe('jit on cpu: errors, failed compiles, caches and reports', () => {
  let rejections: unknown[] = [];
  const onRejection = (e: unknown) => rejections.push(e);
  beforeAll(() => process.on('unhandledRejection', onRejection));
  afterAll(() => process.off('unhandledRejection', onRejection));

  it('an async fn is a synchronous SinterError at the first call, and no rejection escapes', async () => {
    rejections = [];
    const w = sn.ones([3]);
    // (TypeScript refuses an async fn; JavaScript callers are not stopped.)
    const f = sn.jit((async (x: Tensor) => {
      await Promise.resolve();
      return x.mul(w);
    }) as unknown as (x: Tensor) => Tensor);
    const x = sn.ones([3]);
    const live = sn.memory().tensors;
    expect(() => f(x)).toThrow(/^jit: fn returned a Promise; traced functions must be synchronous$/);
    expect(() => f(x)).toThrow(sn.SinterError);
    await new Promise((r) => setTimeout(r, 20));
    expect(rejections).toEqual([]);
    expect(sn.memory().tensors).toBeLessThanOrEqual(live);
    for (const t of [w, x]) t.dispose();
  });

  it('retraces when a captured tensor was written in place (its storage version bumped), so folded constants are fresh', async () => {
    const w = sn.tensor([1, 2, 3]);
    const f = sn.jit((x: Tensor) => x.add(w.mul(10)));
    const x = sn.zeros([3]);
    expect(await values(f(x))).toEqual([10, 20, 30]);
    // An in-place write (as a weight loader writing into existing tensors would make), declared by bumping the version.
    (w.storage as unknown as { data: Float32Array }).data.set([4, 5, 6]);
    bumpVersion(w.storage);
    expect(await values(f(x))).toEqual([40, 50, 60]);
    expect(f.stats().retraces).toBe(1);
    expect(await values(f(x))).toEqual([40, 50, 60]);
    expect(f.stats().retraces).toBe(1);
    f.dispose();
    for (const t of [w, x]) t.dispose();
  });

  it('number arguments key the signature by value, NaN, ±Infinity, −0 and bigints kept apart', async () => {
    const f = sn.jit((x: Tensor, s: number | bigint | null) => x.mul(typeof s === 'number' ? s : s === null ? 2 : Number(s)));
    const x = sn.ones([2]);
    const got = async (s: number | bigint | null) => [...(await values(f(x, s)))];
    expect(await got(Infinity)).toEqual([Infinity, Infinity]);
    expect(await got(NaN)).toEqual([NaN, NaN]);
    expect(await got(-Infinity)).toEqual([-Infinity, -Infinity]);
    expect(await got(null)).toEqual([2, 2]);
    expect(await got(0)).toEqual([0, 0]);
    expect(Object.is((await got(-0))[0], -0)).toBe(true);
    expect(await got(3n)).toEqual([3, 3]);
    expect(f.stats()).toMatchObject({ misses: 7, hits: 0 });
    f.dispose();
    x.dispose();
  });

  it('tensors nested in an argument are an error (they would be frozen as constants), not a stale result', () => {
    const f = sn.jit((xs: Tensor[]) => xs[0]!.add(1) as Tensor);
    const x = sn.ones([2]);
    expect(() => f([x])).toThrow(/^jit: argument 0 holds tensors inside an array or object: pass each tensor as an argument of its own$/);
    x.dispose();
  });

  it('a failed trace or compile frees the captured and folded constants', () => {
    const w = sn.randn([4, 4], { seed: 1 }), b = sn.randn([4], { seed: 2 });
    const x = sn.randn([2, 4], { seed: 3 });
    const live = sn.memory().tensors;
    // A rejected fusion group, after constant folding made a new constant (w·2 + b).
    const fn = (t: Tensor) => sn.matmul(t, w.mul(2)).add(b).relu().sum(1);
    const bad = sn.jit(fn, { fusion: (g) => [g.nodes.filter((n) => n.kind === 'op').map((n) => n.id)] });
    expect(() => bad(x)).toThrow(/jit:/);
    expect(sn.memory().tensors).toBeLessThanOrEqual(live);
    // A function that throws half-way through, after capturing.
    const throws = sn.jit((t: Tensor) => {
      t.add(b);
      throw new Error('user bug');
    });
    expect(() => throws(x)).toThrow('user bug');
    expect(sn.memory().tensors).toBeLessThanOrEqual(live);
    // Constants dead after folding are freed with the plan.
    const ok = sn.jit(fn);
    ok(x).dispose();
    ok.dispose();
    expect(sn.memory().tensors).toBeLessThanOrEqual(live);
    for (const t of [w, b, x]) t.dispose();
  });

  it('the signature cache is an LRU of cacheSize plans, with hits, misses and evictions; timings are a running summary', async () => {
    const w = sn.randn([1, 8], { seed: 1 });
    const f = sn.jit((x: Tensor) => x.mul(w).relu(), { cacheSize: 2 });
    const xs = [1, 2, 3].map((b) => sn.randn([b, 8], { seed: b }));
    // Each plan holds the captured w as a constant, and (on the CPU) its kernel's view of it.
    const live = sn.memory().tensors + 4;
    f(xs[0]!).dispose();
    f(xs[1]!).dispose();
    f(xs[0]!).dispose(); // a hit, making [2, 8] the least recently used
    f(xs[2]!).dispose(); // evicts [2, 8]
    expect(f.stats()).toEqual({ entries: 2, capacity: 2, hits: 1, misses: 3, evictions: 1, retraces: 0 });
    f(xs[0]!).dispose();
    expect(f.stats().hits).toBe(2);
    f(xs[1]!).dispose(); // compiled again, evicting [3, 8]
    expect(f.stats()).toMatchObject({ misses: 4, evictions: 2 });
    expect(sn.memory().tensors).toBeLessThanOrEqual(live);
    for (let i = 0; i < 300; i++) f(xs[1]!).dispose();
    const r = f.report();
    expect(r.warm).toMatchObject({ count: 300 });
    expect(r.warm!.minMs).toBeLessThanOrEqual(r.warm!.medianMs);
    expect(r.warm!.medianMs).toBeLessThanOrEqual(r.warm!.maxMs);
    expect(r.warmMs).toBe(r.warm!.medianMs);
    expect(() => sn.jit((x: Tensor) => x, { cacheSize: 0 })).toThrow(/jit: cacheSize must be a positive integer, got 0/);
    f.dispose();
    expect(sn.memory().tensors).toBeLessThanOrEqual(live - 4);
    for (const t of [w, ...xs]) t.dispose();
  });

  it('report() prints as a table (console.log too), with the generated source behind an option', async () => {
    const f = sn.jit((x: Tensor, y: Tensor) => sn.matmul(x.mul(2).relu(), y).sum(1));
    const x = sn.randn([3, 5], { seed: 1 }), y = sn.randn([5, 4], { seed: 2 });
    f(x, y).dispose();
    f(x, y).dispose();
    const r = f.report();
    const text = String(r);
    expect(text).toMatch(/^jit plan on cpu \(fusion 'default'\): \d+ kernels?\n/);
    expect(text).toMatch(/#\s+kernel \(ops fused\)\s+ops\s+read\s+written\s+FLOPs/);
    expect(text).toMatch(/\n\s+total\s+\d+\s/);
    expect(text).toMatch(/warm [\d.]+ (ms|µs) median of 1/);
    expect(text).toContain('mul+relu');
    expect(text).not.toContain('function map');
    expect(r.toString({ source: true })).toContain('function map');
    expect(inspect(r)).toBe(text);
    const p = await f.profile(x, y);
    expect(String(p)).toMatch(/FLOPs\s+time\n/);
    f.dispose();
    for (const t of [x, y]) t.dispose();
  });
});

describe('jit on webgpu: warm times include the GPU; a plan the device refuses leaks nothing', () => {
  it('frees captured and folded constants when the device refuses a fusion group', async () => {
    const caps = (getBackend('webgpu') as unknown as { caps: WebGpuCaps }).caps;
    const w = sn.randn([5], { seed: 1, device: 'webgpu' }), v = sn.randn([5], { seed: 2, device: 'webgpu' });
    const p = sn.randn([3, 5], { seed: 3, device: 'webgpu' }), q = sn.randn([3, 5], { seed: 4, device: 'webgpu' });
    const live = sn.memory().tensors;
    await withCaps({ limits: { ...caps.limits, maxStorageBuffersPerShaderStage: 4 } }, async () => {
      // p, w, q, the folded v·2 and the output: five buffers, one more than allowed.
      const f = sn.jit((a: Tensor, b: Tensor) => sn.sum(a.mul(w).add(b.mul(v.mul(2))), -1), { fusion: (g) => [g.nodes.filter((n) => n.kind === 'op').map((n) => n.id)] });
      expect(() => f(p, q)).toThrow(/is illegal: the fused kernel would bind 5 buffers/);
    });
    expect(sn.memory().tensors).toBeLessThanOrEqual(live);
    for (const t of [w, v, p, q]) t.dispose();
  });


  it('warm calls are timed until the device finished (sampled), host time apart', async () => {
    const x = sn.randn([64, 64], { seed: 1, device: 'webgpu' });
    const f = sn.jit((t: Tensor) => sn.matmul(t, t).relu());
    for (let i = 0; i < 5; i++) {
      f(x).dispose();
      await sn.synchronize();
    }
    // The measurement resolves when the device reports the work done: wait for it (bounded).
    for (let i = 0; i < 200 && !f.report().warm; i++) await new Promise((r) => setTimeout(r, 10));
    const r = f.report();
    expect(f.stats()).toMatchObject({ misses: 1, hits: 4 });
    expect(r.hostMs!.count).toBe(4);
    expect(r.warm!.count).toBeGreaterThanOrEqual(1);
    expect(r.warm!.count).toBeLessThanOrEqual(4);
    expect(String(r)).toMatch(/until the GPU finished/);
    expect(String(r)).not.toContain('@compute');
    expect(r.toString({ source: true })).toContain('@compute');
    f.dispose();
    x.dispose();
  });
});
