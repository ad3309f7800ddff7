import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { assertClose } from '../src/testing/index.js';

const { nn } = sn;

/** The small CNN of the benchmarks: conv-bn-relu blocks, pooling, a linear head. */
function smallCnn(): sn.nn.Sequential {
  return new nn.Sequential(
    new nn.Conv2d(3, 8, 3, { padding: 1 }), new nn.BatchNorm2d(8), new nn.ReLU(),
    new nn.Conv2d(8, 16, 3, { stride: 2, padding: 1 }), new nn.BatchNorm2d(16), new nn.ReLU(),
    new nn.AdaptiveAvgPool2d(1), new nn.Flatten(), new nn.Linear(16, 10),
  );
}

describe('nn modules', () => {
  it('compute what the functional ops compute with their parameters', async () => {
    sn.manualSeed(1);
    const x = sn.randn([2, 3, 9, 9], { seed: 2 });
    const m = smallCnn().eval();
    const [c1, b1, , c2, b2, , , , fc] = m.layers as [sn.nn.Conv2d, sn.nn.BatchNorm2d, sn.nn.ReLU, sn.nn.Conv2d, sn.nn.BatchNorm2d, sn.nn.ReLU, sn.nn.Module, sn.nn.Module, sn.nn.Linear];
    let y = sn.relu(sn.batchNorm(sn.conv2d(x, c1.weight, c1.bias, { padding: 1 }), b1.runningMean, b1.runningVar, b1.weight, b1.bias));
    y = sn.relu(sn.batchNorm(sn.conv2d(y, c2.weight, c2.bias, { stride: 2, padding: 1 }), b2.runningMean, b2.runningVar, b2.weight, b2.bias));
    const want = sn.linear(sn.adaptiveAvgPool2d(y, 1).flatten(1), fc.weight, fc.bias);
    const got = m.forward(x);
    expect(got.shape).toEqual([2, 10]);
    assertClose(await got.data(), await want.data(), { rtol: 1e-6, atol: 1e-7 });
  });

  it('initialise like PyTorch: U(±1/√fan_in) for linear/conv weights and biases, BN to identity', async () => {
    const conv = new nn.Conv2d(6, 4, [3, 2], { groups: 2 });
    const bound = 1 / Math.sqrt(3 * 3 * 2);
    expect(conv.weight.shape).toEqual([4, 3, 3, 2]);
    for (const t of [conv.weight, conv.bias!]) for (const v of await t.data()) expect(Math.abs(v)).toBeLessThanOrEqual(bound);
    const ct = new nn.ConvTranspose2d(4, 6, 3, { groups: 2 });
    expect(ct.weight.shape).toEqual([4, 3, 3, 3]);
    const bn = new nn.BatchNorm2d(3);
    expect([await bn.weight!.toArray(), await bn.runningVar.toArray()]).toEqual([[1, 1, 1], [1, 1, 1]]);
    expect(new nn.Linear(4, 2, { bias: false }).bias).toBeNull();
  });

  it('state dicts use PyTorch key names, and loading checks keys, shapes and converts dtypes', async () => {
    const m = smallCnn();
    expect(Object.keys(m.stateDict())).toEqual([
      '0.weight', '0.bias', '1.weight', '1.bias', '1.running_mean', '1.running_var', '1.num_batches_tracked',
      '3.weight', '3.bias', '4.weight', '4.bias', '4.running_mean', '4.running_var', '4.num_batches_tracked', '8.weight', '8.bias',
    ]);
    const other = smallCnn();
    const state = other.stateDict();
    const halfState = { ...state, '8.bias': state['8.bias']!.to('float16') };
    m.loadStateDict(halfState);
    expect(m.stateDict()['8.bias']!.dtype).toBe('float32');
    assertClose(await (m.layers[0] as sn.nn.Conv2d).weight.data(), await state['0.weight']!.data(), { rtol: 0, atol: 0 });
    const { '0.bias': _dropped, ...missing } = smallCnn().stateDict();
    expect(() => m.loadStateDict({ ...missing, extra: sn.zeros([1]) })).toThrow('loadStateDict: Error(s) in loading state_dict for Sequential:\n\tUnexpected key(s) in state_dict: "extra".\n\tMissing key(s) in state_dict: "0.bias".');
    expect(m.loadStateDict({ ...missing, extra: sn.zeros([1]) }, { strict: false })).toEqual({ missingKeys: ['0.bias'], unexpectedKeys: ['extra'] });
    expect(() => m.loadStateDict({ ...smallCnn().stateDict(), '8.weight': sn.zeros([10, 15]) })).toThrow(
      'size mismatch for 8.weight: copying a param with shape [10, 15] from checkpoint, the shape in current model is [10, 16].',
    );
  });

  it('batch norm runs in eval mode only; dropout is the identity in eval and scales in training', async () => {
    const x = sn.randn([2, 3, 4, 4], { seed: 3 });
    expect(() => new nn.BatchNorm2d(3).forward(x)).toThrow(/BatchNorm2d: training-mode batch norm .* call \.eval\(\)/);
    const d = new nn.Dropout(0.25, new sn.Generator(7));
    expect(d.eval().forward(x)).toBe(x);
    const y = await d.train().forward(sn.ones([20000])).data();
    const zeros = y.filter((v) => v === 0).length;
    expect(Math.abs(zeros / y.length - 0.25)).toBeLessThan(0.02);
    expect(y.every((v) => v === 0 || Math.abs(v - 1 / 0.75) < 1e-6)).toBe(true);
  });

  it('embedding looks rows up and zeroes the padding row at init', async () => {
    const e = new nn.Embedding(5, 3, { paddingIdx: -1 });
    expect(e.paddingIdx).toBe(4);
    expect(await e.weight.slice(0, 4).toArray()).toEqual([[0, 0, 0]]);
    const out = e.forward(sn.tensor([[1, 4]], { dtype: 'int32' }));
    expect(out.shape).toEqual([1, 2, 3]);
    expect(await out.slice(1, 1).toArray()).toEqual([[[0, 0, 0]]]);
  });

  it('to(dtype) converts floating-point parameters only; layer norm, group norm and activations run', async () => {
    const m = new nn.Sequential(new nn.Conv2d(2, 4, 1), new nn.BatchNorm2d(4), new nn.GroupNorm(2, 4), new nn.GELU('tanh'), new nn.SiLU(), new nn.Hardswish(), new nn.Sigmoid()).eval().to('float16');
    expect(m.stateDict()['1.num_batches_tracked']!.dtype).toBe('int32');
    expect(m.stateDict()['0.weight']!.dtype).toBe('float16');
    expect(m.forward(sn.randn([1, 2, 3, 3], { dtype: 'float16' })).dtype).toBe('float16');
    expect(new nn.LayerNorm([3, 3]).forward(sn.randn([2, 3, 3])).shape).toEqual([2, 3, 3]);
    expect(new nn.MaxPool2d(2).forward(sn.randn([1, 1, 4, 4])).shape).toEqual([1, 1, 2, 2]);
    expect(new nn.AvgPool2d(2, { stride: 1 }).forward(sn.randn([1, 1, 4, 4])).shape).toEqual([1, 1, 3, 3]);
  });
});

describe('safetensors', () => {
  it('round-trips every dtype and a whole model', async () => {
    const tensors = {
      f32: sn.randn([2, 3], { seed: 1 }), f16: sn.randn([5], { seed: 2, dtype: 'float16' }), i32: sn.randint(-1000, 1000, [4], { seed: 3 }),
      i8: sn.randint(-128, 128, [2, 2], { seed: 4, dtype: 'int8' }), u8: sn.randint(0, 256, [3], { seed: 5, dtype: 'uint8' }),
      b: sn.tensor([true, false, true]), empty: sn.zeros([0, 4]), scalar: sn.tensor(3.5),
    };
    const bytes = await sn.saveSafetensors(tensors, { format: 'pt' });
    expect(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8).toBe(0);
    const { tensors: back, metadata } = sn.loadSafetensors(bytes);
    expect(metadata).toEqual({ format: 'pt' });
    for (const [k, t] of Object.entries(tensors)) {
      expect([k, back[k]!.dtype, back[k]!.shape]).toEqual([k, t.dtype, t.shape]);
      expect(Array.from(await back[k]!.data())).toEqual(Array.from(await t.data()));
    }
    const m = smallCnn();
    const restored = smallCnn();
    restored.loadStateDict(sn.loadSafetensors(await sn.saveSafetensors(m.stateDict())).tensors);
    const x = sn.randn([1, 3, 8, 8], { seed: 9 });
    assertClose(await restored.eval().forward(x).data(), await m.eval().forward(x).data(), { rtol: 0, atol: 0 });
  });

  /** A safetensors file written by hand, as another tool would write it. */
  function file(header: object, data: number[]): Uint8Array {
    const json = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(8 + json.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8);
    out.set(data, 8 + json.length);
    return out;
  }

  it('reads BF16, F64 and I64 (narrowed) written by other tools', async () => {
    const bf16 = [0x80, 0x3f, 0x40, 0xc0]; // 1.0, -3.0
    const f64 = Array.from(new Uint8Array(new Float64Array([0.1]).buffer));
    const i64 = Array.from(new Uint8Array(new BigInt64Array([-7n, 5n]).buffer));
    const bytes = file({ a: { dtype: 'BF16', shape: [2], data_offsets: [0, 4] }, b: { dtype: 'F64', shape: [], data_offsets: [4, 12] }, c: { dtype: 'I64', shape: [2], data_offsets: [12, 28] } }, [...bf16, ...f64, ...i64]);
    const { tensors } = sn.loadSafetensors(bytes);
    expect(await tensors.a!.toArray()).toEqual([1, -3]);
    expect(await tensors.b!.toArray()).toBe(Math.fround(0.1));
    expect([tensors.c!.dtype, await tensors.c!.toArray()]).toEqual(['int32', [-7, 5]]);
  });

  it('refuses malformed files with a clear error', () => {
    expect(() => sn.loadSafetensors(new Uint8Array(4))).toThrow(/loadSafetensors: not a safetensors file: 4 bytes/);
    expect(() => sn.loadSafetensors(file({}, []).subarray(0, 9))).toThrow(/the header claims 2 bytes but only 1 follow/);
    const bad = file({}, []);
    bad[8] = 0x7b; bad[9] = 0x7b;
    expect(() => sn.loadSafetensors(bad)).toThrow(/the header is not JSON/);
    expect(() => sn.loadSafetensors(file({ a: { dtype: 'C64', shape: [1], data_offsets: [0, 8] } }, new Array(8).fill(0)))).toThrow(/tensor 'a' has dtype C64, which sinter cannot load/);
    expect(() => sn.loadSafetensors(file({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, new Array(4).fill(0)))).toThrow(/tensor 'a' \(F32 \[2\]\) has data_offsets \[0, 4\], which do not hold its 8 bytes/);
    const big = Array.from(new Uint8Array(new BigInt64Array([2n ** 40n]).buffer));
    expect(() => sn.loadSafetensors(file({ a: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, big))).toThrow(/holds the int64 value 1099511627776 at element 0, which does not fit int32/);
  });
});
