import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName, OnnxModel, OnnxUnsupportedError, Tensor } from '../src/index.js';
import { assertClose } from '../src/testing/index.js';

import { TYPE, float, info, int, ints, model, node, rawFloat, str, values } from './onnx-builder.js';
import { WITH_WEBGPU } from './helpers.js';

// Models built here with protobufjs and ONNX's schema (test/onnx-builder.ts), the way an exporter writes them.

describe('loadOnnx', () => {
  it('reads initializers from raw_data and from the typed fields (float_data, int32_data, int64_data)', async () => {
    const bytes = model({
      nodes: [
        node('Add', ['x', 'a_raw'], ['y_raw']),
        node('Add', ['x', 'a_fields'], ['y_fields']),
        node('Reshape', ['x', 'shape_fields'], ['y_reshaped']),
        node('Reshape', ['x', 'shape_raw'], ['y_reshaped_raw']),
        node('Cast', ['h'], ['y_half'], [int('to', TYPE.float32)]),
        node('Cast', ['i32'], ['y_int32'], [int('to', TYPE.float32)]),
        node('Cast', ['u8'], ['y_uint8'], [int('to', TYPE.float32)]),
        node('Cast', ['b'], ['y_bool'], [int('to', TYPE.float32)]),
      ],
      inputs: [info('x', 'float32', [3])],
      outputs: [
        info('y_raw', 'float32', [3]), info('y_fields', 'float32', [3]), info('y_reshaped', 'float32', [3, 1]), info('y_reshaped_raw', 'float32', [1, 3]),
        info('y_half', 'float32', [2]), info('y_int32', 'float32', [2]), info('y_uint8', 'float32', [2]), info('y_bool', 'float32', [3]),
      ],
      initializers: [
        rawFloat('a_raw', [3], [10, 20, 30]),
        { name: 'a_fields', dims: [3], dataType: TYPE.float32, floatData: [0.5, 1.5, 2.5] },
        { name: 'shape_fields', dims: [2], dataType: TYPE.int64, int64Data: [3, 1] },
        { name: 'shape_raw', dims: [2], dataType: TYPE.int64, rawData: new Uint8Array(new BigInt64Array([1n, -1n]).buffer) },
        // float16 bit patterns in int32_data: 1.5 is 0x3e00, -2 is 0xc000.
        { name: 'h', dims: [2], dataType: TYPE.float16, int32Data: [0x3e00, 0xc000] },
        { name: 'i32', dims: [2], dataType: TYPE.int32, int32Data: [-7, 2147483647] },
        { name: 'u8', dims: [2], dataType: TYPE.uint8, int32Data: [0, 255] },
        { name: 'b', dims: [3], dataType: TYPE.bool, rawData: new Uint8Array([1, 0, 1]) },
      ],
    });
    const m = await sn.loadOnnx(bytes);
    const out = await m.run({ x: sn.tensor([1, 2, 3]) });
    expect(await values(out.y_raw!)).toEqual([11, 22, 33]);
    expect(await values(out.y_fields!)).toEqual([1.5, 3.5, 5.5]);
    expect(out.y_reshaped!.shape).toEqual([3, 1]);
    expect(out.y_reshaped_raw!.shape).toEqual([1, 3]);
    expect(await values(out.y_half!)).toEqual([1.5, -2]);
    expect(await values(out.y_int32!)).toEqual([-7, 2147483648]);
    expect(await values(out.y_uint8!)).toEqual([0, 255]);
    expect(await values(out.y_bool!)).toEqual([1, 0, 1]);
    m.dispose();
  });

  it('loads a model from a file path', async () => {
    const file = path.join(await mkdtemp(path.join(tmpdir(), 'sinter-onnx-')), 'relu.onnx');
    await writeFile(file, model({ nodes: [node('Relu', ['x'], ['y'])], inputs: [info('x', 'float32', [2])], outputs: [info('y', 'float32', [2])] }));
    const m = await sn.loadOnnx(file);
    expect(await values((await m.run({ x: sn.tensor([-1, 2]) })).y!)).toEqual([0, 2]);
  });

  it('refuses external data it cannot find, naming the tensor and what to pass', async () => {
    const ext = (location: string, extra: { key: string; value: string }[] = []) => model({
      nodes: [node('Add', ['x', 'w'], ['y'])],
      inputs: [info('x', 'float32', [2])],
      outputs: [info('y', 'float32', [2])],
      initializers: [{ name: 'w', dims: [2], dataType: TYPE.float32, dataLocation: 1, externalData: [{ key: 'location', value: location }, ...extra] }],
    });
    await expect(sn.loadOnnx(ext('weights.bin'))).rejects.toThrow("loadOnnx: tensor 'w' keeps its data in 'weights.bin': pass its bytes or URL as loadOnnx(bytes, { externalData: { 'weights.bin': … } })");
    await expect(sn.loadOnnx(ext('../secret.bin'), { externalData: {} })).rejects.toThrow("external data location '../secret.bin' must be a file beside the model");
    const data = new Uint8Array(new Float32Array([1, 2]).buffer);
    await expect(sn.loadOnnx(ext('w.bin', [{ key: 'offset', value: '4' }, { key: 'length', value: '8' }]), { externalData: { 'w.bin': data } })).rejects.toThrow("tensor 'w' claims bytes 4–12 of 'w.bin', which holds 8");
  });

  it('lists every unsupported op (name, domain, opset) and type when the model loads', async () => {
    const bytes = model({
      nodes: [
        node('Relu', ['x'], ['a']),
        node('NotAnOnnxOp', ['a'], ['b']),
        node('NhwcConv', ['b'], ['c'], [], 'com.microsoft'),
        node('Cast', ['c'], ['d'], [int('to', TYPE.uint64)]),
        node('Loop', ['d'], ['y']),
        node('Scan', ['d'], ['z'], [int('num_scan_inputs', 1)], '', ),
      ],
      inputs: [info('x', 'float32', [2])],
      outputs: [info('y', 'float32', [2])],
      initializers: [{ name: 'unused', dims: [1], dataType: TYPE.uint64, uint64Data: [1] }],
    }, { '': 17, 'com.microsoft': 1 });
    const err = await sn.loadOnnx(bytes).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(sn.OnnxUnsupportedError);
    const listed = (err as OnnxUnsupportedError).unsupported.map((u) => [u.op, u.domain, u.opset]);
    expect(listed).toEqual([['graph', '', 17], ['NotAnOnnxOp', '', 17], ['NhwcConv', 'com.microsoft', 1], ['Cast', '', 17], ['Loop', '', 17], ['Scan', '', 17]]);
    const message = (err as Error).message;
    expect(message).toContain('the model uses 6 unsupported ops/types');
    expect(message).toContain("needs the graph attribute 'body'");
    expect(message).toContain("graph (opset 17) at initializer 'unused': uint64: the engine has no uint64 dtype");
    expect(message).toContain("com.microsoft.NhwcConv (opset 1) at node 2 'nhwcconv_c' (com.microsoft.NhwcConv, opset 1): not implemented in the domain 'com.microsoft'");
    expect(message).toContain('casts to uint64: the engine has no uint64 dtype');
    // Ops whose oldest supported opset is later than the model's are reported too, as are graph inputs of types the engine lacks.
    const old = model({ nodes: [node('Upsample', ['x'], ['y'])], inputs: [info('x', 'uint64', [2])], outputs: [info('y', 'uint64', [2])] }, { '': 6 });
    await expect(sn.loadOnnx(old)).rejects.toThrow(/Upsample \(opset 6\) at node 0 'upsample_y' \(Upsample, opset 6\): opset 6 is older than the oldest supported \(7\)/);
    await expect(sn.loadOnnx(old)).rejects.toThrow(/graph \(opset 6\) at input 'x': uint64: the engine has no uint64 dtype/);
  });

  it('describes its inputs and outputs, with symbolic dims by name', async () => {
    const m = await sn.loadOnnx(model({
      nodes: [node('Shape', ['x'], ['y'])],
      inputs: [info('x', 'float32', ['batch', 3])],
      outputs: [info('y', 'int64', [2])],
    }));
    expect(m.inputs).toEqual([{ name: 'x', dtype: 'float32', shape: ['batch', 3] }]);
    expect(m.outputs).toEqual([{ name: 'y', dtype: 'int64', shape: [2] }]);
    // int64 results come back as int32 tensors.
    const y = (await m.run({ x: sn.zeros([5, 3]) })).y!;
    expect(y.dtype).toBe('int32');
    expect(await values(y)).toEqual([5, 3]);
  });

  it('names the input and the expected signature when run gets bad inputs', async () => {
    const m = await sn.loadOnnx(model({
      nodes: [node('Add', ['a', 'b'], ['y'])],
      inputs: [info('a', 'float32', ['N', 3]), info('b', 'float32', ['N', 3])],
      outputs: [info('y', 'float32', ['N', 3])],
    }));
    const sig = "the model's inputs are a: float32[N, 3], b: float32[N, 3]";
    const ok = sn.zeros([2, 3]);
    await expect(m.run({ a: ok })).rejects.toThrow(`run: missing 'b'; ${sig}`);
    await expect(m.run({ a: ok, b: ok, c: ok })).rejects.toThrow(`run: unknown input 'c'; ${sig}`);
    await expect(m.run({ a: ok, b: sn.zeros([2, 3], { dtype: 'int32' }) })).rejects.toThrow(`run: input 'b' is int32 but the model expects float32; ${sig}`);
    await expect(m.run({ a: ok, b: sn.zeros([2, 3, 1]) })).rejects.toThrow(`run: input 'b' has shape [2, 3, 1], but the model expects rank 2; ${sig}`);
    await expect(m.run({ a: ok, b: sn.zeros([2, 4]) })).rejects.toThrow(`run: input 'b' has shape [2, 4], but the model expects 3 in dim 1; ${sig}`);
    await expect(m.run({ a: ok, b: sn.zeros([4, 3]) })).rejects.toThrow(`run: input 'b' has shape [4, 3], but dim 0 is 'N', which an earlier input set to 2; ${sig}`);
  });

  it('folds shape arithmetic (Shape → Gather → Concat → Reshape) while tracing, per input shape', async () => {
    const m = await sn.loadOnnx(model({
      nodes: [
        node('Shape', ['x'], ['s']),
        node('Gather', ['s', 'zero'], ['n'], [int('axis', 0)]),
        node('Unsqueeze', ['n', 'axes0'], ['n1']),
        node('Concat', ['n1', 'minus1'], ['target'], [int('axis', 0)]),
        node('Reshape', ['x', 'target'], ['flat']),
        node('Relu', ['flat'], ['y']),
      ],
      inputs: [info('x', 'float32', ['N', 3, 4])],
      outputs: [info('y', 'float32', ['N', 12])],
      initializers: [
        { name: 'zero', dims: [], dataType: TYPE.int64, int64Data: [0] },
        { name: 'axes0', dims: [1], dataType: TYPE.int64, int64Data: [0] },
        { name: 'minus1', dims: [1], dataType: TYPE.int64, int64Data: [-1] },
      ],
    }));
    for (const n of [2, 5]) {
      const x = sn.randn([n, 3, 4], { seed: n });
      const y = (await m.run({ x })).y!;
      expect(y.shape).toEqual([n, 12]);
      expect(await values(y)).toEqual((await values(x)).map((v) => Math.max(v, 0)));
      // Only the relu is left: the shape computation became the reshape's constant target (a view).
      const ops = m.graph.nodes.filter((g) => g.kind === 'op').map((g) => sn.opLabel(g));
      expect(ops).toEqual(['relu']);
    }
  });

  it('runs a model whose shapes depend on tensor values eagerly, and report() says why', async () => {
    const m = await sn.loadOnnx(model({
      nodes: [node('Sigmoid', ['s'], ['p']), node('Cast', ['p'], ['k'], [int('to', TYPE.int64)]), node('Add', ['k', 'two'], ['shape']), node('Reshape', ['x', 'shape'], ['y'])],
      inputs: [info('x', 'float32', [4]), info('s', 'float32', [2])],
      outputs: [info('y', 'float32', [2, 2])],
      initializers: [{ name: 'two', dims: [1], dataType: TYPE.int64, int64Data: [2] }],
    }));
    // sigmoid(±1) casts to 0, so the shape is [2, 2].
    const { y } = await m.run({ x: sn.tensor([1, 2, 3, 4]), s: sn.tensor([1, -1]) });
    expect(y!.shape).toEqual([2, 2]);
    expect(await values(y!)).toEqual([1, 2, 3, 4]);
    const report = m.report();
    expect(report.execution).toBe('eager');
    expect(report.reason).toMatch(/node 3 'reshape_y' \(Reshape, opset 17\): input 1 \('shape'\) is computed from tensor values/);
  });

  it('folds a BatchNormalization into the Conv before it, matching eager execution', async () => {
    const c = 4;
    const r = (n: number, seed: number, shift = 0) => Array.from({ length: n }, (_, i) => Math.sin(seed * 7.1 + i * 1.3) + shift);
    const m = await sn.loadOnnx(model({
      nodes: [node('Conv', ['x', 'w', 'b'], ['c'], [ints('pads', [1, 1, 1, 1])]), node('BatchNormalization', ['c', 'g', 'beta', 'mean', 'var'], ['y'], [float('epsilon', 1e-3)])],
      inputs: [info('x', 'float32', [1, 3, 5, 5])],
      outputs: [info('y', 'float32', [1, c, 5, 5])],
      initializers: [
        rawFloat('w', [c, 3, 3, 3], r(c * 27, 1)), rawFloat('b', [c], r(c, 2)), rawFloat('g', [c], r(c, 3, 1.5)),
        rawFloat('beta', [c], r(c, 4)), rawFloat('mean', [c], r(c, 5)), rawFloat('var', [c], r(c, 6, 2)),
      ],
    }));
    const x = sn.randn([1, 3, 5, 5], { seed: 3 });
    const traced = (await m.run({ x })).y!;
    expect(m.graph.nodes.filter((g) => g.kind === 'op').map((g) => sn.opLabel(g))).toEqual(['conv2d']);
    const eager = (await m.run({ x }, { jit: false })).y!;
    assertClose(await traced.data(), await eager.data(), { rtol: 1e-5, atol: 1e-5 });
  });

  it('computes a 3-D Conv (strided, dilated, padded) as the direct sum', async () => {
    const [n, c, o, d, h, w] = [1, 2, 3, 6, 4, 6], k = [2, 3, 2], strides = [2, 1, 2], dil = [2, 1, 2], pads = [1, 0, 1, 0, 1, 1];
    const m = await sn.loadOnnx(model({
      nodes: [node('Conv', ['x', 'w'], ['y'], [ints('strides', strides), ints('dilations', dil), ints('pads', pads)])],
      inputs: [info('x', 'float32', [n, c, d, h, w]), info('w', 'float32', [o, c, ...k])],
      outputs: [info('y', 'float32', [])],
    }));
    const x = sn.randn([n, c, d, h, w], { seed: 11 }), wt = sn.randn([o, c, ...k], { seed: 12 });
    const y = (await m.run({ x, w: wt })).y!;
    const xs = await x.data(), ws = await wt.data();
    const size = [d, h, w], out = size.map((s, i) => Math.floor((s + pads[i]! + pads[i + 3]! - dil[i]! * (k[i]! - 1) - 1) / strides[i]!) + 1);
    expect(y.shape).toEqual([n, o, ...out]);
    const want: number[] = [];
    for (let oc = 0; oc < o; oc++) for (let z = 0; z < out[0]!; z++) for (let r = 0; r < out[1]!; r++) for (let q = 0; q < out[2]!; q++) {
      let acc = 0;
      for (let ic = 0; ic < c; ic++) for (let a = 0; a < k[0]!; a++) for (let b = 0; b < k[1]!; b++) for (let e = 0; e < k[2]!; e++) {
        const [zi, ri, qi] = [z * strides[0]! - pads[0]! + a * dil[0]!, r * strides[1]! - pads[1]! + b * dil[1]!, q * strides[2]! - pads[2]! + e * dil[2]!];
        if (zi < 0 || zi >= d || ri < 0 || ri >= h || qi < 0 || qi >= w) continue;
        acc += xs[((ic * d + zi) * h + ri) * w + qi]! * ws[(((oc * c + ic) * k[0]! + a) * k[1]! + b) * k[2]! + e]!;
      }
      want.push(acc);
    }
    assertClose(await y.data(), Float64Array.from(want), { rtol: 1e-5, atol: 1e-5 });
  });

  it('narrows int64 values to int32 on the device, refusing values that do not fit', async () => {
    const build = (big: number) => model({
      nodes: [node('Add', ['x', 'c'], ['y'])],
      inputs: [info('x', 'int64', [2])],
      outputs: [info('y', 'int64', [2])],
      initializers: [{ name: 'c', dims: [2], dataType: TYPE.int64, int64Data: [1, big] }],
    });
    const small = await sn.loadOnnx(build(100));
    const y = (await small.run({ x: { dtype: 'int64', shape: [2], data: [5, -7] } })).y!;
    expect(y.dtype).toBe('int32');
    expect(await values(y)).toEqual([6, 93]);
    const large = await sn.loadOnnx(build(2 ** 40));
    await expect(large.run({ x: sn.tensor([1, 2], { dtype: 'int32' }) })).rejects.toThrow(/holds 1099511627776 \(at flat index 1\), which does not fit int32/);
  });

  it('narrows float64 to float32 on the device: double shape constants (opset-7 exports) fold exactly, doubles compute as floats', async () => {
    const build = (big: number) => model({
      nodes: [
        // PyTorch 1.13 at opset 7 writes Reshape targets as double Constants cast to int64.
        node('Constant', [], ['shape_d'], [{ name: 'value', type: 4, t: { dims: [2], dataType: TYPE.float64, doubleData: [0, -1] } }]),
        node('Cast', ['shape_d'], ['shape'], [int('to', TYPE.int64)]),
        node('Reshape', ['x', 'shape'], ['r']),
        node('Cast', ['r'], ['r64'], [int('to', TYPE.float64)]),
        node('Mul', ['r64', 'k'], ['y']),
      ],
      inputs: [info('x', 'float32', [2, 3])],
      outputs: [info('y', 'float64', [2, 3])],
      initializers: [{ name: 'k', dims: [3], dataType: TYPE.float64, doubleData: [0.5, -2, big] }],
    }, { '': 7 });
    const m = await sn.loadOnnx(build(3));
    expect(m.outputs[0]!.dtype).toBe('float64');
    for (const jit of [false, true]) {
      const y = (await m.run({ x: sn.tensor([1, 2, 3, 4, 5, 6], { shape: [2, 3] }) }, { jit })).y!;
      expect(y.dtype).toBe('float32');
      expect(y.shape).toEqual([2, 3]);
      expect(await values(y)).toEqual([0.5, -4, 9, 2, -10, 18]);
    }
    const large = await sn.loadOnnx(build(1e300));
    await expect(large.run({ x: sn.tensor([1, 2, 3, 4, 5, 6], { shape: [2, 3] }) })).rejects.toThrow(/float64 and holds 1e\+300 \(at flat index 2\), which does not fit float32/);
  });

  it('runs nodes listed out of order (as float16 converters append input Casts) and refuses a cycle at load, naming a node on it', async () => {
    // onnxconverter-common's float16 converter appends the Cast of each float32 graph input after every other node,
    // as in @imgly/background-removal's fp16 model; onnxruntime sorts such graphs.
    const outOfOrder = await sn.loadOnnx(model({
      nodes: [
        node('Mul', ['x16', 'w'], ['m16']),
        node('Cast', ['m16'], ['y'], [int('to', TYPE.float32)]),
        node('Cast', ['x'], ['x16'], [int('to', TYPE.float16)]),
      ],
      inputs: [info('x', 'float32', [2])],
      outputs: [info('y', 'float32', [2])],
      initializers: [{ name: 'w', dims: [2], dataType: TYPE.float16, int32Data: [0x3e00, 0xc000] }],
    }));
    for (const jit of [false, true]) expect(await values((await outOfOrder.run({ x: sn.tensor([2, 3]) }, { jit })).y!)).toEqual([3, -6]);
    const cyclic = model({
      nodes: [node('Relu', ['x'], ['a']), node('Add', ['a', 'c'], ['b']), node('Neg', ['b'], ['c'])],
      inputs: [info('x', 'float32', [2])],
      outputs: [info('c', 'float32', [2])],
    });
    await expect(sn.loadOnnx(cyclic)).rejects.toThrow(/the graph has a cycle: this node reads .* a value that depends on its own output/);
    await expect(sn.loadOnnx(cyclic)).rejects.toThrow(sn.OnnxUnsupportedError);
  });

  it('computes Einsum as numpy does (contractions, batches, ellipsis, implicit output)', async () => {
    const run = async (equation: string, inputs: Tensor[]): Promise<Tensor> => {
      const names = inputs.map((_, i) => `x${i}`);
      const m = await sn.loadOnnx(model({
        nodes: [node('Einsum', names, ['y'], [str('equation', equation)])],
        inputs: inputs.map((t, i) => info(names[i]!, 'float32', [...t.shape])),
        outputs: [info('y', 'float32', [])],
      }, { '': 12 }));
      return (await m.run(Object.fromEntries(inputs.map((t, i) => [names[i]!, t])))).y!;
    };
    const a = sn.randn([2, 3, 4], { seed: 1 }), b = sn.randn([2, 4, 5], { seed: 2 }), v = sn.randn([4], { seed: 3 });
    const close = async (got: Tensor, want: Tensor) => {
      expect(got.shape).toEqual(want.shape);
      assertClose(await got.data(), await want.data(), { rtol: 1e-5, atol: 1e-5 });
    };
    await close(await run('bij,bjk->bik', [a, b]), sn.matmul(a, b));
    await close(await run('...ij,...jk->...ik', [a, b]), sn.matmul(a, b));
    await close(await run('bij,j', [a, v]), sn.matmul(a, v));
    await close(await run('bij->bji', [a]), a.transpose(1, 2));
    const m2 = sn.randn([3, 4], { seed: 4 });
    await close(await run('ji', [m2]), m2.t());
    await close(await run('bij->', [a]), sn.sum(a));
  });
});

describe.each(['cpu', 'webgpu'] as DeviceName[])('an ONNX model on %s', (device) => {
  it('gives the same results eagerly and traced', async () => {
    const m: OnnxModel = await sn.loadOnnx(model({
      nodes: [
        node('Mul', ['x', 'k'], ['a']),
        node('Sigmoid', ['a'], ['b']),
        node('Transpose', ['b'], ['c'], [ints('perm', [1, 0])]),
        node('ReduceSum', ['c', 'axes'], ['d'], [int('keepdims', 0)]),
        node('Softmax', ['x'], ['e'], [int('axis', -1)]),
      ],
      inputs: [info('x', 'float32', [3, 4])],
      outputs: [info('d', 'float32', [4]), info('e', 'float32', [3, 4])],
      initializers: [rawFloat('k', [4], [1, -2, 0.5, 3]), { name: 'axes', dims: [1], dataType: TYPE.int64, int64Data: [1] }],
    }), { device });
    const x = sn.randn([3, 4], { seed: 7, device });
    const traced = await m.run({ x }), eager = await m.run({ x }, { jit: false });
    for (const name of ['d', 'e']) {
      expect(traced[name]!.device).toBe(device);
      assertClose(await traced[name]!.data(), await eager[name]!.data(), { rtol: 1e-5, atol: 1e-6 });
    }
    m.dispose();
  });
});

describe.each(WITH_WEBGPU as DeviceName[])('ONNX opsets 1–6 on %s', (device) => {
  it('legacy broadcast/axis attributes, BatchNormalization-6, Softmax-1', async () => {
    const m = await sn.loadOnnx(model({
      nodes: [
        // B [3] aligned to A [2, 3, 2] at axis 1: b broadcasts over dims 0 and 2.
        node('Add', ['a', 'b'], ['sum'], [int('broadcast', 1), int('axis', 1)]),
        node('Mul', ['a', 'a'], ['sq']),
        node('Cast', ['a'], ['half'], [int('to', TYPE.float16)]),
        node('Concat', ['sum', 'sq'], ['cat'], [int('axis', 1)]),
        node('BatchNormalization', ['a', 'g', 'beta', 'mean', 'var'], ['bn'], [int('is_test', 1), int('spatial', 1), float('epsilon', 0)]),
        node('Softmax', ['a'], ['sm'], [int('axis', 1)]),
      ],
      inputs: [info('a', 'float32', [2, 3, 2])],
      outputs: [info('sum', 'float32', [2, 3, 2]), info('half', 'float16', [2, 3, 2]), info('cat', 'float32', [2, 6, 2]), info('bn', 'float32', [2, 3, 2]), info('sm', 'float32', [2, 3, 2])],
      initializers: [rawFloat('b', [3], [10, 20, 30]), rawFloat('g', [3], [1, 2, 3]), rawFloat('beta', [3], [0, 1, 2]), rawFloat('mean', [3], [1, 1, 1]), rawFloat('var', [3], [1, 4, 9])],
    }, { '': 6 }), { device });
    const a = Array.from({ length: 12 }, (_, i) => i);
    const out = await m.run({ a: sn.tensor(a, { device }).reshape([2, 3, 2]) });
    expect(await values(out.sum!)).toEqual(a.map((v, i) => v + [10, 20, 30][Math.floor(i / 2) % 3]!));
    expect(out.half!.dtype).toBe('float16');
    expect(out.cat!.shape).toEqual([2, 6, 2]);
    // (x − 1) / sqrt(var) · g + beta = (x − 1) + beta per channel (g = sqrt(var)).
    expect(await values(out.bn!)).toEqual(a.map((v, i) => v - 1 + [0, 1, 2][Math.floor(i / 2) % 3]!));
    // Softmax-1 coerces to 2-D at axis 1: each batch row of 6 values sums to 1.
    const sm = await values(out.sm!);
    expect(sm.slice(0, 6).reduce((x, y) => x + y)).toBeCloseTo(1, 5);
    expect(sm[5]! / sm[4]!).toBeCloseTo(Math.E, 4);
    m.dispose();
  });

  it('Cast-1 names its target type; Concat-1 concatenates on axis 1 by default; Reshape-1 takes its shape as an attribute', async () => {
    const m = await sn.loadOnnx(model({
      nodes: [node('Cast', ['a'], ['y'], [str('to', 'INT32')]), node('Concat', ['a', 'a'], ['c']), node('Reshape', ['a'], ['r'], [ints('shape', [2, 1])])],
      inputs: [info('a', 'float32', [1, 2])],
      outputs: [info('y', 'int32', [1, 2]), info('c', 'float32', [1, 4]), info('r', 'float32', [2, 1])],
    }, { '': 1 }), { device });
    const { y, c, r } = await m.run({ a: sn.tensor([[1.7, -2.2]], { device }) });
    expect(r!.shape).toEqual([2, 1]);
    expect(y!.dtype).toBe('int32');
    expect(await values(y!)).toEqual([1, -2]);
    expect(c!.shape).toEqual([1, 4]);
  });

  it('experimental ops of old exports: ImageScaler, Scale, ScaledTanh, ParametricSoftplus, Affine', async () => {
    const floats = (name: string, v: number[]) => ({ name, type: 6, floats: v });
    const m = await sn.loadOnnx(model({
      nodes: [
        node('ImageScaler', ['x'], ['img'], [float('scale', 2), floats('bias', [1, -1])]),
        node('Scale', ['x'], ['sc'], [float('scale', 3)]),
        node('ScaledTanh', ['x'], ['st'], [float('alpha', 2), float('beta', 0.5)]),
        node('ParametricSoftplus', ['x'], ['ps'], [float('alpha', 2), float('beta', 0.5)]),
        node('Affine', ['x'], ['af'], [float('alpha', 2), float('beta', 1)]),
      ],
      inputs: [info('x', 'float32', [1, 2, 1, 2])],
      outputs: ['img', 'sc', 'st', 'ps', 'af'].map((n) => info(n, 'float32', [1, 2, 1, 2])),
    }, { '': 8 }), { device });
    const x = [0, 1, 2, -2];
    const out = await m.run({ x: sn.tensor(x, { device }).reshape([1, 2, 1, 2]) });
    expect(await values(out.img!)).toEqual([1, 3, 3, -5]);
    expect(await values(out.sc!)).toEqual([0, 3, 6, -6]);
    assertClose(await out.st!.data(), x.map((v) => 2 * Math.tanh(0.5 * v)), { rtol: 1e-5, atol: 1e-6 });
    assertClose(await out.ps!.data(), x.map((v) => 2 * Math.log1p(Math.exp(0.5 * v))), { rtol: 1e-5, atol: 1e-6 });
    expect(await values(out.af!)).toEqual([1, 3, 5, -3]);
  });

  it('refuses mismatched shapes without broadcast=1 before opset 7', async () => {
    const m = await sn.loadOnnx(model({ nodes: [node('Add', ['a', 'b'], ['y'])], inputs: [info('a', 'float32', [2, 3]), info('b', 'float32', [3])], outputs: [info('y', 'float32', [2, 3])] }, { '': 6 }), { device });
    await expect(m.run({ a: sn.zeros([2, 3], { device }), b: sn.zeros([3], { device }) })).rejects.toThrow(/Add, opset 6\): inputs .*\[2, 3\].* and .*\[3\].* differ in shape, and before opset 7 that needs broadcast=1/);
  });
});

describe.each(WITH_WEBGPU as DeviceName[])('ONNX RoiAlign on %s', (device) => {
  it('avg and max modes as onnxruntime computes them (max takes the largest weighted corner)', async () => {
    // One region over the 2×2 image, one bin, one sample at (0.5, 0.5): every corner weighs 1/4.
    const roi = (mode: string) => model({
      nodes: [node('RoiAlign', ['x', 'rois', 'batch'], ['y'], [str('mode', mode), int('sampling_ratio', 1), str('coordinate_transformation_mode', 'output_half_pixel')])],
      inputs: [info('x', 'float32', [1, 2, 2, 2])],
      outputs: [info('y', 'float32', [1, 2, 1, 1])],
      initializers: [rawFloat('rois', [1, 4], [0, 0, 1, 1]), { name: 'batch', dims: [1], dataType: TYPE.int64, int64Data: [0] }],
    });
    const x = sn.tensor([1, 2, 3, 4, -1, -8, 5, 2], { device }).reshape([1, 2, 2, 2]);
    const avg = await (await sn.loadOnnx(roi('avg'), { device })).run({ x });
    expect(await values(avg.y!)).toEqual([2.5, -0.5]);
    const max = await (await sn.loadOnnx(roi('max'), { device })).run({ x });
    expect(await values(max.y!)).toEqual([1, 1.25]);
  });
});

describe.each(WITH_WEBGPU as DeviceName[])('loadOnnx({ fusion }) on %s', (device) => {
  // Two elementwise chains, one of them feeding a reduction: 'default' fuses both (the second as the sum's prologue),
  // 'elementwise' only the chains, 'none' runs one kernel per op.
  const bytes = model({
    nodes: [
      node('Mul', ['x', 'k'], ['a']),
      node('Sigmoid', ['a'], ['b']),
      node('Add', ['b', 'x'], ['c']),
      node('Tanh', ['c'], ['d']),
      node('Mul', ['d', 'd'], ['e']),
      node('ReduceSum', ['e', 'axes'], ['f'], [int('keepdims', 0)]),
    ],
    inputs: [info('x', 'float32', [3, 5])],
    outputs: [info('d', 'float32', [3, 5]), info('f', 'float32', [3])],
    initializers: [rawFloat('k', [5], [1, -2, 0.5, 3, -0.25]), { name: 'axes', dims: [1], dataType: TYPE.int64, int64Data: [1] }],
  });

  it("runs with each strategy: 'none' compiles more kernels than 'default', and the outputs agree", async () => {
    const x = sn.randn([3, 5], { seed: 11, device });
    const kernels: Record<string, number> = {};
    const outputs: Record<string, number[][]> = {};
    for (const fusion of ['none', 'elementwise', 'default'] as const) {
      const m = await sn.loadOnnx(bytes, { device, fusion });
      const out = await m.run({ x });
      outputs[fusion] = [await values(out.d!), await values(out.f!)];
      const report = m.report();
      expect(report.execution).toBe('jit');
      expect(report.jit!.strategy).toBe(fusion);
      kernels[fusion] = report.jit!.kernels.length;
      Object.values(out).forEach((t) => t.dispose());
      m.dispose();
    }
    expect(kernels.none).toBeGreaterThan(kernels.elementwise!);
    expect(kernels.elementwise).toBeGreaterThan(kernels.default!);
    // Fused or not, every value is computed in float32 by the same formulas: agreement to float32 rounding.
    for (const fusion of ['elementwise', 'default']) {
      outputs[fusion]!.forEach((got, i) => assertClose(got, outputs.none![i]!, { rtol: 1e-6, atol: 1e-6 }));
    }
    x.dispose();
  });
});

describe('loadOnnx fusion option', () => {
  it('refuses an unknown strategy before reading the model, naming the choices', async () => {
    // The path does not exist: the option is checked first.
    const load = (fusion: unknown) => sn.loadOnnx('/nonexistent/model.onnx', { fusion: fusion as 'none' });
    await expect(load('fast')).rejects.toThrow(/^loadOnnx: fusion must be 'none', 'elementwise', 'default', a strategy object .*; got "fast"$/);
    await expect(load(3)).rejects.toThrow(/loadOnnx: fusion must be .*; got a number$/);
    await expect(load({ name: 'mine' })).rejects.toThrow(/got an object without a groups function$/);
    await expect(load(null)).rejects.toThrow(/got null$/);
  });
});
