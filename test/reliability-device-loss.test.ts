import protobuf from 'protobufjs/light.js';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { getBackend } from '../src/backend/backend.js';
import type { WebGpuBackend } from '../src/backend/webgpu/backend.js';
import { ONNX_SCHEMA } from '../src/io/onnx/schema.js';

// A WebGPU device can be lost at any time (driver reset, GPU removed, device.destroy()). Everything
// on it is gone; what the library must guarantee: disposing old tensors afterwards never touches the
// new device, using one is a clear error that says what to do, and jitted functions and ONNX models
// rebuild on the new device at their next call.

const gpu = () => getBackend('webgpu') as WebGpuBackend;

/** A model computing y = relu(x * w + b) for x of shape [4], built the way an exporter writes it. */
function tinyModel(): Uint8Array {
  const root = protobuf.Root.fromJSON(ONNX_SCHEMA as protobuf.INamespace);
  const ModelProto = root.lookupType('onnx.ModelProto');
  const tensorInfo = (name: string) => ({ name, type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 4 }] } } } });
  const raw = (name: string, values: number[]) => ({ name, dims: [4], dataType: 1, rawData: new Uint8Array(new Float32Array(values).buffer) });
  return ModelProto.encode(ModelProto.fromObject({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'tiny',
      node: [
        { opType: 'Mul', input: ['x', 'w'], output: ['xw'], name: 'mul' },
        { opType: 'Add', input: ['xw', 'b'], output: ['z'], name: 'add' },
        { opType: 'Relu', input: ['z'], output: ['y'], name: 'relu' },
      ],
      input: [tensorInfo('x')],
      output: [tensorInfo('y')],
      initializer: [raw('w', [1, -2, 3, -4]), raw('b', [0.5, 0.5, -0.5, -0.5])],
    },
  })).finish();
}
const modelExpect = (x: number[]) => x.map((v, i) => Math.max(0, v * [1, -2, 3, -4][i]! + [0.5, 0.5, -0.5, -0.5][i]!));

describe('WebGPU device loss and re-initialisation', () => {
  it('survives device.destroy(): old tensors dispose safely, using them is a clear error, jit and ONNX rebuild', async () => {
    await sn.init({ device: 'webgpu', quiet: true });
    const first = gpu();
    const f = sn.jit((a: sn.Tensor) => a.mul(3).add(1).relu());
    const model = await sn.loadOnnx(tinyModel(), { device: 'webgpu' });
    const xs = [1, -1, 2, -2];
    const x = sn.tensor(xs, { device: 'webgpu' });
    const kept = sn.tensor([5, 6, 7], { device: 'webgpu' });
    const views = [x.mul(2), x.add(1).reshape([2, 2]).transpose(0, 1)];
    expect(Array.from(await f(x).data())).toEqual(xs.map((v) => Math.max(0, 3 * v + 1)));
    expect(Array.from(await (await model.run({ x })).y!.data())).toEqual(modelExpect(xs));

    first.device.destroy();
    // On the lost device, before a new one: a clear error naming the op that says what to do.
    await first.settle();
    expect(() => x.add(1)).toThrow(/was lost .*`await init\(\{ device: 'webgpu' \}\)` opens a new device; then create the tensors again/);

    await sn.init({ device: 'webgpu', quiet: true });
    const second = gpu();
    expect(second).not.toBe(first);
    expect(second.generation).toBeGreaterThan(first.generation);

    // Using an old tensor on the new device: a SinterError saying its values are gone and what to do.
    expect(() => kept.add(1)).toThrow(sn.SinterError);
    expect(() => kept.add(1)).toThrow(/lives on WebGPU device #\d+ .*which was lost; device #\d+ has been opened since.*Create the tensor again/);
    expect(() => kept.data()).toThrow(/which was lost/);
    const { reservedBytes: reservedBefore, idleBytes: idleBefore } = second.pool.stats();

    // Disposing old tensors (and views of them) never puts a dead device's buffer into the new pool.
    for (const t of [x, kept, ...views]) t.dispose();
    expect(second.pool.stats().idleBytes).toBe(idleBefore);
    expect(second.pool.stats().reservedBytes).toBe(reservedBefore);

    // Keep computing on the new device: many ops, so pooled buffers are reused.
    const y = sn.tensor(xs, { device: 'webgpu' });
    for (let i = 0; i < 20; i++) {
      const z = sn.tidy(() => y.mul(i).add(1).relu().sum());
      expect(await z.item()).toBeCloseTo(xs.reduce((a, v) => a + Math.max(0, v * i + 1), 0), 4);
      z.dispose();
    }
    // The jitted function and the ONNX model rebuild on the new device at their next call.
    expect(Array.from(await f(y).data())).toEqual(xs.map((v) => Math.max(0, 3 * v + 1)));
    expect(Array.from(await (await model.run({ x: y })).y!.data())).toEqual(modelExpect(xs));
    // A jitted function that captured a tensor of the lost device says what to do.
    const w = sn.tensor([1, 2, 3, 4], { device: 'webgpu' });
    const g = sn.jit((a: sn.Tensor) => a.mul(w));
    expect(Array.from(await g(y).data())).toEqual([1, -2, 6, -8]);
    gpu().device.destroy();
    await sn.init({ device: 'webgpu', quiet: true });
    const y3 = sn.tensor(xs, { device: 'webgpu' });
    expect(() => g(y3)).toThrow(/captures .*which was lost.*Create the tensor again/);
    f.dispose();
    g.dispose();
    model.dispose();
    w.dispose();
    y.dispose();
    y3.dispose();
    expect(gpu().pool.stats().reservedBytes - gpu().pool.stats().idleBytes).toBeGreaterThanOrEqual(0);
  });
});
