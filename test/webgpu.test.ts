import { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { getBackend } from '../src/backend/backend.js';
import { adapterInfo } from '../src/backend/device.js';
import type { WebGpuBackend } from '../src/backend/webgpu/backend.js';
import { isSoftwareAdapter } from '../src/backend/webgpu/adapter.js';
import { bindings } from '../src/kernels/wgsl/dtype.js';
import { mapKernel } from '../src/kernels/wgsl/map.js';
import { call, input } from '../src/ops/expr.js';
import { GRID_PARAMS, grid } from '../src/kernels/wgsl/grid.js';
import { checkBinding } from '../src/kernels/wgsl/kernel.js';
import { offsetOf, unravel } from '../src/kernels/wgsl/strided.js';
import { apply1, defineOp } from '../src/ops/op.js';
import { castRef } from './reference/core.js';

// The WebGPU backend itself: device choice, buffer pool, batching, errors. Ops are tested on
// WebGPU beside the CPU in their own files (WITH_WEBGPU).
const device = 'webgpu';
const gpu = () => getBackend('webgpu') as WebGpuBackend;

/** y = 2·x for float32 x: a minimal op written against the kernel-form contract. */
const double = defineOp<Record<string, never>>({
  name: 'double',
  infer: ([x]) => [{ shape: x!.shape, dtype: 'float32' }],
  cpu: () => {
    throw new Error('not used');
  },
  webgpu([x], _attrs, [y], caps) {
    const n = y!.shape.reduce((a, b) => a * b, 1), g = grid('double', n, 64, caps);
    const { lines, idx } = unravel('e', x!.shape);
    return {
      workgroups: g.workgroups,
      source: `${bindings(['float32'], ['float32'], caps)}
        @compute @workgroup_size(64) fn main(${GRID_PARAMS}) {
          let e = ${g.index}; if (e >= ${n}u) { return; }
          ${lines.join(' ')} out0[e] = 2.0 * in0[${offsetOf(x!.offset, x!.strides, idx)}];
        }`,
    };
  },
});

/** out[i] = table[index[i]] for a float32 table and int32 indices, with the device-side check 0 ≤ index < table length. */
const pick = defineOp<Record<string, never>>({
  name: 'pick',
  infer: ([table, index]) => [{ shape: index!.shape, dtype: 'float32' }],
  cpu: () => {
    throw new Error('not used');
  },
  webgpu([table, index], _attrs, [out], caps) {
    const n = out!.shape.reduce((a, b) => a * b, 1), size = table!.shape[0]!;
    return {
      workgroups: [Math.ceil(n / 64)],
      checks: [`index {value} at position {at} is out of range for a table of ${size} (expected 0 ≤ index < ${size})`],
      source: `${bindings(['float32', 'int32'], ['float32'], caps)}
        ${checkBinding(3)}
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
          let i = gid.x; if (i >= ${n}u) { return; }
          let k = in1[${index!.offset}u + i * ${index!.strides[0]}u];
          if (k < 0 || k >= ${size}) { fail_check(1u, k, i); out0[i] = 0.0; return; }
          out0[i] = in0[${table!.offset}u + u32(k) * ${table!.strides[0]}u];
        }`,
    };
  },
});

/**
 * y = 10·Σx + x for float32 vectors of up to 64 elements, in three passes through two scratch
 * buffers: Σx by one workgroup, 10·Σx, then y. The middle pass checks that the sum is finite.
 */
const spread = defineOp<Record<string, never>>({
  name: 'spread',
  infer: ([x]) => [x!],
  cpu: () => {
    throw new Error('not used');
  },
  webgpu([x], _attrs, [y], caps) {
    const n = x!.shape[0]!;
    const decls = `${bindings(['float32'], ['float32'], caps)}
      @group(0) @binding(2) var<storage, read_write> sc0: array<f32>;
      @group(0) @binding(3) var<storage, read_write> sc1: array<f32>;`;
    const total = `${decls}
      @compute @workgroup_size(1) fn main() {
        var s = 0.0;
        for (var i = 0u; i < ${n}u; i++) { s += in0[i]; }
        sc0[0] = s;
      }`;
    const scale = `${decls}
      ${checkBinding(4)}
      @compute @workgroup_size(1) fn main() {
        let s = sc0[0];
        if ((bitcast<u32>(s) & 0x7fffffffu) >= 0x7f800000u) { fail_check(1u, 0, 0u); }
        sc1[0] = 10.0 * s;
      }`;
    const out = `${decls}
      @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
        if (gid.x < ${n}u) { out0[gid.x] = sc1[0] + in0[gid.x]; }
      }`;
    return {
      scratch: [{ bytes: 4 }, { bytes: 4 }],
      passes: [{ source: total, workgroups: [1] }, { source: scale, workgroups: [1], checks: ['the sum is not finite'], label: 'spread.scale' }, { source: out, workgroups: [1] }],
    };
  },
});

describe('webgpu backend', () => {
  it('synchronize waits for queued work on the device (and resolves at once on the CPU)', async () => {
    const y = sn.add(sn.ones([4096], { device }), 1);
    await sn.synchronize('webgpu');
    await sn.synchronize('cpu');
    expect(await y.sum().item()).toBe(8192);
    expect(() => sn.synchronize('tpu' as 'cpu')).toThrow(/synchronize: unknown device "tpu"/);
  });

  it('says which adapter it chose and why, in one line', () => {
    const info = adapterInfo()!;
    expect(info.line).toMatch(/^sinter: WebGPU on .+: .+; optional features: .+$/);
    expect(info.line).toContain(info.adapter);
    expect(info.line.includes('\n')).toBe(false);
    // Without a GPU (as in CI) Dawn finds nothing and SwiftShader is used; with one, Dawn's adapter.
    if (/swiftshader/i.test(info.adapter)) expect(info.line).toMatch(/SwiftShader's Vulkan driver/);
  });

  it('runs an op written against the kernel-form contract on strided views', async () => {
    const x = sn.arange(12, { dtype: 'float32', device }).reshape(3, 4).t().slice(0, 1, 4);
    expect(await apply1(double, [x], {}).toArray()).toEqual([[2, 10, 18], [4, 12, 20], [6, 14, 22]]);
  });

  it('vectorised (aligned, contiguous) and strided kernels agree with the CPU', async () => {
    const base = sn.randn([24], { seed: 3 });
    const cases = (d: 'cpu' | 'webgpu') => {
      const x = base.to(d), i = sn.arange(24, { device: d });
      return [
        sn.add(x, 1.5), // vec4 with a scalar constant
        sn.mul(x.slice(0, 4, 20), sn.tensor(2.5, { device: d }).expand(16)), // aligned offset, broadcast value
        sn.sub(x.slice(0, 1, 17), x.slice(0, 8, 24)), // unaligned offset: scalar path
        sn.mul(i, sn.sub(i, 12)), // int32
        sn.maximum(x.reshape(4, 6).t(), 0), // transposed: strided path
      ];
    };
    const want = await Promise.all(cases('cpu').map((t) => t.data()));
    const got = await Promise.all(cases('webgpu').map((t) => t.data()));
    got.forEach((g, k) => expect(Array.from(g), `case ${k}`).toEqual(Array.from(want[k]!)));
    const view = { shape: [16], strides: [1], offset: 4, dtype: 'float32' } as const;
    expect(mapKernel(call('neg', [input(0, 'float32')], 'float32'), [view], { ...view, offset: 0 }, gpu().caps, 'neg').source).toContain('array<vec4<f32>>');
  });

  it('moves tensors between devices: to() from the CPU, toDevice() back', async () => {
    const c = sn.arange(6, { dtype: 'int8' }).reshape(2, 3).t();
    const g = c.to('webgpu');
    expect([g.device, g.dtype, g.shape]).toEqual(['webgpu', 'int8', [3, 2]]);
    expect(await g.toArray()).toEqual([[0, 3], [1, 4], [2, 5]]);
    expect(() => g.to('cpu')).toThrow(/^to: moving tensor\(int8, \[3, 2\]\) from webgpu to cpu needs a GPU readback, which is asynchronous: use `await x.toDevice\('cpu'\)`/);
    const back = await g.toDevice('cpu');
    expect([back.device, await back.toArray()]).toEqual(['cpu', [[0, 3], [1, 4], [2, 5]]]);
    expect(() => sn.add(g, c)).toThrow(/^add: expected all tensors on one device/);
  });

  it('reuses pooled buffers: no growth over many repeated ops', async () => {
    const x = sn.randn([33, 17], { seed: 1, device });
    const step = () => sn.tidy(() => sn.relu(x.mul(2).add(1)).sub(x.t().t()));
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) step().dispose();
      const y = step();
      await y.data();
      y.dispose();
    };
    await run(5);
    const created = gpu().pool.created, reserved = sn.memory().devices.webgpu!.reservedBytes, bytes = sn.memory().devices.webgpu!.bytes;
    await run(300);
    expect(gpu().pool.created).toBe(created);
    expect(sn.memory().devices.webgpu!.reservedBytes).toBe(reserved);
    // Not equal: tensors earlier tests dropped undisposed may be collected meanwhile (and released).
    expect(sn.memory().devices.webgpu!.bytes).toBeLessThanOrEqual(bytes);
    x.dispose();
  });

  it('memory() reports bytes in use, reserved and peak for the device', () => {
    const before = sn.memory().devices.webgpu!;
    const x = sn.zeros([1000], { device });
    const during = sn.memory().devices.webgpu!;
    expect(during.bytes - before.bytes).toBe(4000);
    expect(during.reservedBytes).toBeGreaterThanOrEqual(during.bytes);
    expect(during.peakBytes).toBeGreaterThanOrEqual(during.bytes);
    x.dispose();
    const after = sn.memory().devices.webgpu!;
    expect(after.bytes).toBe(before.bytes);
    expect(after.reservedBytes).toBe(during.reservedBytes); // kept for reuse
    const y = sn.zeros([1000], { device });
    expect(sn.memory().devices.webgpu!.reservedBytes).toBe(during.reservedBytes); // reused
    y.dispose();
  });

  it('records a chain of ops into one submit, made at readback', async () => {
    const x = sn.rand([7, 5], { seed: 2, device });
    const chain = () => sn.tidy(() => {
      let y = x;
      for (let i = 0; i < 20; i++) y = sn.tanh(y.mul(1.5).add(0.25));
      return y;
    });
    await chain().data(); // compiles the pipelines (a new one is submitted alone)
    const submits = gpu().batch.submits;
    const y = chain();
    expect(gpu().batch.submits).toBe(submits);
    await y.data();
    expect(gpu().batch.submits).toBe(submits + 1);
  });

  it('an upload into a reused buffer lands after the queued kernels that read its old contents', async () => {
    const step = (x: sn.Tensor) => x.add(1);
    step(sn.ones([64], { device })).dispose(); // compiles the kernel, so the next dispatch stays queued
    const x = sn.ones([64], { device });
    const y = step(x);
    x.dispose();
    const z = sn.full([64], 7, { device }); // takes x's buffer from the pool
    expect(new Set(await y.data())).toEqual(new Set([2]));
    expect(new Set(await z.data())).toEqual(new Set([7]));
  });

  it('throws a clear error for an op without a WebGPU kernel, and frees its outputs', async () => {
    const cpuOnly = defineOp<Record<string, never>>({ name: 'cpuOnly', infer: ([x]) => [x!], cpu: () => {} });
    const x = sn.ones([2, 3], { device });
    const bytes = sn.memory().devices.webgpu!.bytes;
    expect(() => apply1(cpuOnly, [x], {})).toThrow(/^cpuOnly: no WebGPU kernel for cpuOnly yet/);
    expect(sn.memory().devices.webgpu!.bytes).toBe(bytes);
    expect(apply1(cpuOnly, [await x.toDevice('cpu')], {}).device).toBe('cpu');
  });

  it('a WGSL compile error surfaces as a SinterError naming the op and device, and spoils nothing else', async () => {
    const broken = defineOp<Record<string, never>>({
      name: 'broken',
      infer: ([x]) => [x!],
      cpu: () => {},
      webgpu: () => ({ source: `${'@group(0) @binding(0) var<storage, read> in0: array<f32>;'}\nfn main( {`, workgroups: [1] }),
    });
    const x = sn.ones([4], { device });
    await Promise.all([sn.add(x, 1).data(), sn.mul(x, 3).data()]); // compiled: these now share batches
    const ok = sn.add(x, 1);
    const y = apply1(broken, [x], {});
    const again = apply1(broken, [x], {}); // its check still runs: kept apart from others' work too
    const after = sn.mul(x, 3);
    const dependent = sn.add(y, 1); // queued before the compile check is known: fails on read too
    const error = await y.data().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(sn.SinterError);
    expect((error as Error).message).toMatch(/^broken: the WGSL kernel was rejected on webgpu \(.+\): line 2:\d+: /);
    await expect(again.data()).rejects.toThrow(/^broken: the WGSL kernel was rejected/);
    await expect(dependent.data()).rejects.toThrow(/^broken: the WGSL kernel was rejected/);
    expect(() => apply1(broken, [x], {})).toThrow(/^broken: the WGSL kernel was rejected/); // known now: at once
    expect(await ok.toArray()).toEqual([2, 2, 2, 2]);
    expect(await after.toArray()).toEqual([3, 3, 3, 3]);
  });

  it('runs multi-pass programs: passes in order, sharing scratch buffers, each pass with its own checks', async () => {
    const x = sn.tensor([1, 2, 3.5], { device });
    expect(await apply1(spread, [x], {}).toArray()).toEqual([66, 67, 68.5]);
    const bad = apply1(spread, [sn.tensor([1, Infinity, -Infinity], { device })], {});
    await expect(bad.data()).rejects.toThrow(/^spread\.scale: the sum is not finite$/);
    // Scratch buffers return to the pool: repeated runs create no buffers.
    const run = async () => {
      for (let i = 0; i < 20; i++) apply1(spread, [x], {}).dispose();
      const y = apply1(spread, [x], {});
      await y.data();
      y.dispose();
    };
    await run();
    const created = gpu().pool.created;
    await run();
    expect(gpu().pool.created).toBe(created);
  });

  it('device-side checks: a bad index fails the read of the result and of anything computed from it, naming op, value and range', async () => {
    const table = sn.tensor([10, 11, 12, 13, 14], { device });
    const good = sn.tensor([4, 0, 2, 2], { dtype: 'int32', device });
    expect(await apply1(pick, [table, good], {}).toArray()).toEqual([14, 10, 12, 12]);
    const index = sn.tensor([1, 2, 7, 3, 0, 1, 2], { dtype: 'int32', device });
    const y = apply1(pick, [table, index], {});
    const z = sn.mul(sn.add(y, 1), 2); // queued before the check's verdict is in: inherits it
    const other = sn.add(table, 1); // independent work in the same batch is not spoiled
    const message = /^pick: index 7 at position 2 is out of range for a table of 5 \(expected 0 ≤ index < 5\)$/;
    const error = await z.data().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(sn.SinterError);
    expect((error as Error).message).toMatch(message);
    await expect(y.data()).rejects.toThrow(message);
    expect(await other.toArray()).toEqual([11, 12, 13, 14, 15]);
    expect(() => sn.neg(y)).toThrow(message); // known now: at once
    expect(() => sn.neg(z)).toThrow(message);
    const negative = apply1(pick, [table, sn.tensor([-3], { dtype: 'int32', device })], {});
    await expect(negative.data()).rejects.toThrow(/^pick: index -3 at position 0 is out of range/);
    // A strided index view of good values passes after bad ones were seen.
    const view = sn.tensor([0, 9, 1, 9, 2], { dtype: 'int32', device }).slice(0, 0, 5, 2);
    expect(await apply1(pick, [table, view], {}).toArray()).toEqual([10, 11, 12]);
    // Across batches (64 dispatches each), each dispatch's verdict stays its own.
    const bad = sn.tensor([5], { dtype: 'int32', device }), fine = sn.tensor([3], { dtype: 'int32', device });
    const many = Array.from({ length: 150 }, (_, i) => apply1(pick, [table, i === 70 || i === 140 ? bad : fine], {}));
    for (const i of [0, 63, 64, 69, 70, 71, 127, 128, 139, 140, 141, 149]) {
      const r = await many[i]!.data().then((v) => v[0], (e: Error) => e.message);
      expect(r, `dispatch ${i}`).toEqual(i === 70 || i === 140 ? expect.stringMatching(/^pick: index 5 at position 0 is out of range/) : 13);
    }
  });

  it('device-side checks cost no submit of their own', async () => {
    const table = sn.arange(8, { dtype: 'float32', device }), index = sn.tensor([7, 1, 3], { dtype: 'int32', device });
    const chain = () => sn.add(apply1(pick, [table, index], {}), apply1(pick, [table, index], {}));
    await chain().data(); // compiles
    const submits = gpu().batch.submits;
    const ys = Array.from({ length: 10 }, chain);
    expect(gpu().batch.submits).toBe(submits);
    expect(await ys[9]!.toArray()).toEqual([14, 2, 6]);
    expect(gpu().batch.submits).toBe(submits + 1);
  });

  it('casts in kernels as the CPU does: binary16 rounding, wrapping float → int', async () => {
    const values = [
      1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519.99, 65520, 1e6, 2 ** -25, 3 * 2 ** -25, 2 ** -24 * 0.75, 1e-8, 6.1e-5, -0, 0.1,
      300.7, -129.5, 255.9, 3e9, -3e9, 2 ** 31, -(2 ** 31), 2 ** 40 + 2 ** 20, 1e20, Infinity, -Infinity, NaN,
    ].flatMap((v) => [v, -v]);
    const x = sn.tensor(values, { device });
    for (const dtype of ['float16', 'int32', 'int8', 'uint8', 'bool'] as const) {
      const want = values.map((v) => castRef(dtype, Math.fround(v)));
      expect(Array.from(await x.to(dtype).data()), dtype).toEqual(want);
    }
  });

  it('splits launches beyond 65535 workgroups over two grid dimensions', async () => {
    const n = 65535 * 256 + 1000;
    const y = sn.full([n], 1.5, { device }).add(1);
    const v = await y.data();
    expect([v[0], v[n - 1001], v[n - 1]]).toEqual([2.5, 2.5, 2.5]);
    y.dispose();
  });

  it('a script using WebGPU exits on its own when its work is done', () => {
    const script = `
      const sn = await import('sinter');
      await sn.init({ device: 'webgpu', quiet: true });
      const y = sn.add(sn.ones([1000], { device: 'webgpu' }), 1).relu();
      console.log(JSON.stringify(Array.from(await y.data()).reduce((a, b) => a + b, 0)));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'ignore'] });
    expect(out.trim()).toBe('2000');
  });

  it("without an adapter 'auto' falls back to the CPU and says why; 'webgpu' throws the reason", () => {
    const script = `
      const sn = await import('sinter');
      console.log(await sn.init());
      console.log(await sn.init({ device: 'webgpu' }).catch((e) => e.message));`;
    const env = { ...process.env, VK_ICD_FILENAMES: '/nonexistent/icd.json' };
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, env, stdio: ['ignore', 'pipe', 'ignore'] });
    expect(out.trim().split('\n')).toEqual([
      'sinter: using the CPU: Dawn found no adapter with VK_ICD_FILENAMES=/nonexistent/icd.json',
      'cpu',
      "init: device 'webgpu' was requested but no WebGPU adapter is available: Dawn found no adapter with VK_ICD_FILENAMES=/nonexistent/icd.json",
    ]);
  });

  it("'auto' picks the CPU over a software adapter (SwiftShader) and says why, 'webgpu' still opens it, and Vulkan's loader noise stays off stderr", () => {
    // As a user runs it: no VK_ICD_FILENAMES nor XDG_RUNTIME_DIR of ours.
    const env = { ...process.env };
    delete env.VK_ICD_FILENAMES;
    delete env.XDG_RUNTIME_DIR;
    const script = `
      const sn = await import('sinter');
      console.log(await sn.init());
      console.log(await sn.init({ device: 'webgpu', quiet: true }), sn.adapterInfo().adapter);
      console.log(await sn.init());`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, env });
    const lines = run.stdout.trim().split('\n');
    expect(run.stderr).not.toMatch(/XDG_RUNTIME_DIR|shaderUniform|Loader Message/);
    if (!gpu().software) {
      // A machine with a GPU (scripts/gpu-check.sh): 'auto' takes it.
      expect(lines[0]).toMatch(/^sinter: WebGPU on .*: Dawn's hardware adapter/);
      expect(lines.slice(1, 2)).toEqual(['webgpu']);
      expect(lines.at(-1)).toBe('webgpu');
      return;
    }
    // This machine has no GPU, only SwiftShader.
    expect(lines[0]).toMatch(/^sinter: using the CPU: no hardware adapter was found, and a software one \(SwiftShader\) would be slower than the CPU backend \(`init\(\{ device: 'webgpu' \}\)` uses it anyway\)$/);
    expect(lines.slice(1, 3)).toEqual(['cpu', 'webgpu google swiftshader (SwiftShader driver 5.0.0)']);
    expect(lines[3]).toMatch(/^sinter: using the CPU: the open adapter \(google swiftshader .*\) is a software one/);
    expect(lines[4]).toBe('cpu');
  });

  it('isSoftwareAdapter recognises software adapters by what they say of themselves', () => {
    const adapter = (info: Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean }) => ({ info: { vendor: '', architecture: '', device: '', description: '', ...info } }) as unknown as GPUAdapter;
    expect(isSoftwareAdapter(adapter({ vendor: 'google', architecture: 'swiftshader' }))).toBe(true);
    expect(isSoftwareAdapter(adapter({ vendor: 'mesa', description: 'llvmpipe (LLVM 15.0.6, 256 bits)' }))).toBe(true);
    expect(isSoftwareAdapter(adapter({ vendor: 'microsoft', description: 'Microsoft Basic Render Driver', isFallbackAdapter: true }))).toBe(true);
    expect(isSoftwareAdapter(adapter({ vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H100 80GB HBM3' }))).toBe(false);
    expect(isSoftwareAdapter(adapter({ vendor: 'apple', architecture: 'metal-3' }))).toBe(false);
  });

  it('a lost device fails ops with a clear error, and init opens a new one', async () => {
    const x = sn.ones([3], { device });
    gpu().device.destroy();
    await gpu().device.lost;
    expect(() => sn.add(x, 1)).toThrow(/^add: the WebGPU device \(.+\) was lost \(destroyed.*`await init\(\{ device: 'webgpu' \}\)` opens a new device; then create the tensors again/);
    await expect(x.data()).rejects.toThrow(/^data: the WebGPU device .+ was lost/);
    await sn.init({ device: 'webgpu', quiet: true });
    await sn.init({ device: 'cpu' });
    expect(await sn.ones([2], { device }).add(1).toArray()).toEqual([2, 2]);
  });
});
