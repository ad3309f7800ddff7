import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { getBackend } from '../src/backend/backend.js';
import type { WebGpuBackend } from '../src/backend/webgpu/backend.js';
import { WITH_WEBGPU } from './helpers.js';

// A tensor that cannot exist is refused at once, before anything is allocated or generated, with a
// SinterError naming the op, the shape, the bytes and the limit (not a bare RangeError, and not after
// seconds of generating values and gigabytes of host memory).

/** Runs `fn`, expecting a SinterError matching `message` within 200 ms. */
function refusesFast(fn: () => unknown, message: RegExp): void {
  const t0 = performance.now();
  let error: unknown = null;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  const ms = performance.now() - t0;
  expect(error, `expected ${message}`).toBeInstanceOf(sn.SinterError);
  expect((error as Error).message).toMatch(message);
  expect(ms).toBeLessThan(200);
}

describe('sizes are checked before allocating', () => {
  for (const device of WITH_WEBGPU) {
    it(`every creation function refuses a tensor too large for one host array on ${device}`, () => {
      const huge = /needs \d+ bytes \(.*\): more than the 4294967296 elements one JavaScript typed array holds/;
      refusesFast(() => sn.zeros([1e6, 1e6], { device }), /^zeros: a float32 tensor of shape \[1000000, 1000000\] needs 4000000000000 bytes \(3\.64 TiB\)/);
      refusesFast(() => sn.ones([1e6, 1e6], { device, dtype: 'int8' }), /^ones: a int8 tensor of shape \[1000000, 1000000\] needs 1000000000000 bytes/);
      refusesFast(() => sn.full([1e5, 1e5], 2, { device }), huge);
      refusesFast(() => sn.empty(1e5, 1e5, { device }), /^empty: /);
      refusesFast(() => sn.randn([1e6, 1e5], { device }), /^randn: .*\[1000000, 100000\]/);
      refusesFast(() => sn.rand([1e6, 1e5], { device, seed: 1 }), /^rand: /);
      refusesFast(() => sn.randint(0, 10, [1e6, 1e5], { device }), /^randint: a int32 tensor/);
      refusesFast(() => sn.arange(0, 2 ** 33, { device }), /^arange: .*\[8589934592\]/);
      refusesFast(() => sn.linspace(0, 1, 2 ** 33, { device }), /^linspace: /);
      refusesFast(() => sn.eye(2 ** 17, { device }), /^eye: .*\[131072, 131072\]/);
    });

    it(`an op whose output is too large is refused before allocating it on ${device}`, () => {
      const a = sn.zeros([100_000, 1], { device }), b = sn.zeros([1, 100_000], { device });
      refusesFast(() => sn.add(a, b), /^add: a float32 tensor of shape \[100000, 100000\] needs 40000000000 bytes/);
      a.dispose();
      b.dispose();
    });
  }

  it("on WebGPU, refuses what one buffer cannot hold (the device's maxBufferSize / maxStorageBufferBindingSize) at once", () => {
    const { limits } = (getBackend('webgpu') as WebGpuBackend).caps;
    const limit = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
    // Twice the limit in float32 elements, within one host array: refused by the device's limit alone.
    const rows = 2 * Math.ceil(limit / 4 / 4096);
    // (A device whose buffers hold more than a host array does is refused by the host's limit first.)
    const pattern = rows * 4096 > 2 ** 32 ? /more than the 4294967296 elements one JavaScript typed array holds/ : new RegExp(`more than the ${limit} bytes \\(.*\\) one buffer may hold and bind on .*maxBufferSize`);
    refusesFast(() => sn.randn([rows, 4096], { device: 'webgpu' }), new RegExp(`^randn: a float32 tensor of shape \\[${rows}, 4096\\].*${pattern.source}`));
    refusesFast(() => sn.zeros([rows, 4096], { device: 'webgpu' }), pattern);
    const a = sn.zeros([rows, 1], { device: 'webgpu' }), b = sn.zeros([1, 4096], { device: 'webgpu' });
    refusesFast(() => a.mul(b), pattern);
    a.dispose();
    b.dispose();
  });

  it('sizes within the limits still work, zero-size included', async () => {
    for (const device of WITH_WEBGPU) {
      expect(await sn.zeros([0, 5], { device }).sum().item()).toBe(0);
      expect(await sn.ones([3, 4], { device }).sum().item()).toBe(12);
    }
  });
});
