import { expect, it } from 'vitest';
import * as sn from '../src/index.js';

// Issue 3's memory promise: the demo net's forward pass, repeated 1,000 times on WebGPU (eagerly,
// with tidy, as the demo runs it), neither leaks tensors nor grows the device's reserved bytes
// once the buffer pool has warmed up.
it('1,000 forward passes of the demo net on webgpu leave memory where it started', async () => {
  const device = 'webgpu';
  const g = new sn.Generator(0);
  const param = (shape: number[]) => sn.rand(shape, { generator: g, device }).sub(0.5).mul(0.2);
  const { blocks, fc } = sn.tidy(() => ({
    blocks: [[3, 16], [16, 32], [32, 64]].map(([cin, cout]) => ({
      weight: param([cout!, cin!, 3, 3]), bias: param([cout!]), mean: param([cout!]), var: sn.rand([cout!], { generator: g, device }).add(0.5),
    })),
    fc: { weight: param([10, 64]), bias: param([10]) },
  }));
  const forward = (x: sn.Tensor) =>
    sn.tidy(() => {
      for (const [i, b] of blocks.entries()) x = sn.relu(sn.batchNorm(sn.conv2d(x, b.weight, b.bias, { padding: 1, stride: i === 0 ? 1 : 2 }), b.mean, b.var));
      return sn.softmax(sn.linear(sn.adaptiveAvgPool2d(x, 1).flatten(1), fc.weight, fc.bias), -1);
    });
  const input = sn.randn([1, 3, 32, 32], { seed: 42, device });
  const pass = async () => {
    const y = forward(input);
    await y.data();
    y.dispose();
  };
  for (let i = 0; i < 20; i++) await pass(); // warm the pool
  const before = sn.memory();
  for (let i = 0; i < 1000; i++) await pass();
  const after = sn.memory();
  // At most (not exactly): tensors other tests dropped undisposed may be collected and released meanwhile.
  expect(after.tensors).toBeLessThanOrEqual(before.tensors);
  expect(after.devices.webgpu!.bytes).toBeLessThanOrEqual(before.devices.webgpu!.bytes);
  expect(after.devices.webgpu!.reservedBytes).toBe(before.devices.webgpu!.reservedBytes);
}, 600_000);
