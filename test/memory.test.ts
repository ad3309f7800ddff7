import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { WITH_WEBGPU } from './helpers.js';

describe.each(WITH_WEBGPU)('memory on %s', (device) => {
  const live = () => sn.memory().devices[device] ?? { storages: 0, bytes: 0, peakBytes: 0 };

  it('dispose frees storage once its last view is gone, and is idempotent', () => {
    const before = live();
    const x = sn.zeros([4, 4], { device });
    expect(live().bytes - before.bytes).toBe(64);
    const v = x.t();
    x.dispose();
    expect(live().bytes - before.bytes).toBe(64); // the view still holds the storage
    v.dispose();
    v.dispose();
    expect(live()).toMatchObject({ storages: before.storages, bytes: before.bytes });
    expect(x.isDisposed).toBe(true);
  });

  it('reports bytes per dtype as stored on the device', () => {
    const before = live().bytes;
    const ts = [sn.zeros([10], { dtype: 'float16', device }), sn.zeros([10], { dtype: 'int8', device }), sn.zeros([10], { dtype: 'int32', device })];
    // float16 takes 2 bytes a value on both devices; WebGPU buffers hold whole 32-bit words: ten int8 take 12 bytes there.
    expect(live().bytes - before).toBe(20 + (device === 'webgpu' ? 12 : 10) + 40);
    ts.forEach((t) => t.dispose());
    expect(sn.memory().tensors).toBeGreaterThanOrEqual(0);
  });

  it('tidy disposes everything created inside except what is returned', () => {
    const before = sn.memory();
    const x = sn.ones([3], { device });
    const out = sn.tidy(() => {
      const a = x.mul(2);
      const b = a.add(1).relu();
      return { b, list: [a.neg()], n: 3 };
    });
    expect(sn.memory().tensors).toBe(before.tensors + 3); // x, b, list[0]
    expect(out.b.isDisposed).toBe(false);
    expect(out.list[0]!.isDisposed).toBe(false);
    [x, out.b, out.list[0]!].forEach((t) => t.dispose());
    expect(sn.memory()).toMatchObject({ tensors: before.tensors, bytes: before.bytes });
  });

  it('nested tidy hands returned tensors to the enclosing scope; keep() opts out', () => {
    const before = sn.memory().tensors;
    let kept!: sn.Tensor, inner!: sn.Tensor;
    sn.tidy(() => {
      inner = sn.tidy(() => sn.ones([2], { device }).mul(3));
      kept = sn.keep(sn.zeros([2], { device }));
      expect(inner.isDisposed).toBe(false);
    });
    expect(inner.isDisposed).toBe(true);
    expect(kept.isDisposed).toBe(false);
    kept.dispose();
    expect(sn.memory().tensors).toBe(before);
  });

  it('tidy cleans up when the function throws, and refuses async functions', () => {
    const before = sn.memory().tensors;
    expect(() => sn.tidy(() => { sn.ones([2], { device }); throw new Error('boom'); })).toThrow('boom');
    expect(() => sn.tidy(async () => sn.ones([2], { device }))).toThrow(/tidy: the function returned a Promise/);
    expect(sn.memory().tensors).toBe(before);
  });

  it('using a disposed tensor is an error naming the op', async () => {
    const x = sn.ones([2, 2], { device });
    x.dispose();
    expect(() => sn.add(x, 1)).toThrow(/add: tensor\(float32, \[2, 2\]\) was disposed and cannot be used/);
    expect(() => x.reshape(4)).toThrow(/reshape: tensor\(float32, \[2, 2\]\) was disposed/);
    expect(() => x.data()).toThrow(/data: tensor\(float32, \[2, 2\]\) was disposed/);
  });
});
