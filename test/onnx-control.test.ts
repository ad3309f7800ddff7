import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName } from '../src/index.js';
import { WITH_WEBGPU } from './helpers.js';
import { TYPE, graph, graphAttr, info, int, ints, model, node, values } from './onnx-builder.js';

// If, Loop and Scan with subgraphs (ONNX's semantics): outer-scope values, nested subgraphs, loop-carried state,
// scan outputs. Conditions known while tracing are resolved then (the model stays compiled); conditions computed
// from tensor values make the model run eagerly, which report() says. Expected values are computed here by hand.

const scalarBool = (name: string) => info(name, 'bool', []);
const boolConst = (name: string, v: boolean) => ({ name, dims: [], dataType: TYPE.bool, int32Data: [v ? 1 : 0] });
const int64Const = (name: string, v: number[], dims = [v.length]) => ({ name, dims, dataType: TYPE.int64, int64Data: v });

/** then: x + 1; else: x * 10 — both read x from the outer scope. */
const branches = [
  graphAttr('then_branch', graph({ nodes: [node('Add', ['x', 'one'], ['t'])], inputs: [], outputs: [info('t', 'float32', [3])], initializers: [{ name: 'one', dims: [], dataType: TYPE.float32, floatData: [1] }] }, 'then')),
  graphAttr('else_branch', graph({ nodes: [node('Mul', ['x', 'ten'], ['e'])], inputs: [], outputs: [info('e', 'float32', [3])], initializers: [{ name: 'ten', dims: [], dataType: TYPE.float32, floatData: [10] }] }, 'else')),
];

describe.each(WITH_WEBGPU as DeviceName[])('ONNX control flow on %s', (device) => {
  it('an If on a constant condition is resolved while tracing: only its branch is compiled', async () => {
    for (const cond of [true, false]) {
      const m = await sn.loadOnnx(model({
        nodes: [node('If', ['c'], ['y'], branches)],
        inputs: [info('x', 'float32', [3])],
        outputs: [info('y', 'float32', [3])],
        initializers: [boolConst('c', cond)],
      }), { device });
      const { y } = await m.run({ x: sn.tensor([1, 2, 3], { device }) });
      expect(await values(y!)).toEqual(cond ? [2, 3, 4] : [10, 20, 30]);
      const report = m.report();
      expect(report.execution).toBe('jit');
      expect(m.graph.nodes.filter((g) => g.kind === 'op').map((g) => sn.opLabel(g))).toEqual([cond ? 'add' : 'mul']);
      m.dispose();
    }
  });

  it('an If on a condition computed from tensor values runs eagerly, and report() says why', async () => {
    const m = await sn.loadOnnx(model({
      // Sigmoid has no host form, so the condition is computed on the device.
      nodes: [node('Sigmoid', ['x'], ['p']), node('ReduceSum', ['p'], ['s'], [int('keepdims', 0)]), node('Greater', ['s', 'half'], ['c']), node('If', ['c'], ['y'], branches)],
      inputs: [info('x', 'float32', [3])],
      outputs: [info('y', 'float32', [3])],
      initializers: [{ name: 'half', dims: [], dataType: TYPE.float32, floatData: [1.5] }],
    }), { device });
    // Σ sigmoid: 2.57 (then) and 1.12 (else).
    expect(await values((await m.run({ x: sn.tensor([1, 2, 3], { device }) })).y!)).toEqual([2, 3, 4]);
    expect(await values((await m.run({ x: sn.tensor([-1, -2, 1], { device }) })).y!)).toEqual([-10, -20, 10]);
    const report = m.report();
    expect(report.execution).toBe('eager');
    expect(report.reason).toMatch(/node 3 'if_y' \(If, opset 17\): the condition is computed from tensor values/);
    expect(String(report)).toMatch(/^eager: every call runs op by op/);
    m.dispose();
  });

  it('a Loop with a trip count: loop-carried state, outer-scope values and scan outputs (unrolled while tracing)', async () => {
    // y ← y + x, four times; the scan output collects y after each iteration; i counts the iterations.
    const body = graph({
      nodes: [node('Identity', ['cond_in'], ['cond_out']), node('Add', ['y_in', 'x'], ['y_out']), node('Identity', ['y_out'], ['scan']), node('Add', ['i_in', 'iter'], ['i_out'])],
      inputs: [info('iter', 'int64', []), scalarBool('cond_in'), info('y_in', 'float32', [2]), info('i_in', 'int64', [])],
      outputs: [scalarBool('cond_out'), info('y_out', 'float32', [2]), info('i_out', 'int64', []), info('scan', 'float32', [2])],
    });
    const m = await sn.loadOnnx(model({
      nodes: [node('Loop', ['M', 'c', 'y0', 'i0'], ['y', 'i', 'ys'], [graphAttr('body', body)])],
      inputs: [info('x', 'float32', [2]), info('y0', 'float32', [2])],
      outputs: [info('y', 'float32', [2]), info('i', 'int64', []), info('ys', 'float32', [4, 2])],
      initializers: [int64Const('M', [4], []), boolConst('c', true), int64Const('i0', [0], [])],
    }), { device });
    const out = await m.run({ x: sn.tensor([1, 10], { device }), y0: sn.tensor([0, 5], { device }) });
    expect(await values(out.y!)).toEqual([4, 45]);
    // The iteration numbers 0 + 1 + 2 + 3.
    expect(await values(out.i!)).toEqual([6]);
    expect(out.ys!.shape).toEqual([4, 2]);
    expect(await values(out.ys!)).toEqual([1, 15, 2, 25, 3, 35, 4, 45]);
    expect(m.report().execution).toBe('jit');
    m.dispose();
  });

  it('a Loop that ends on a computed condition (a while loop) runs eagerly', async () => {
    // while sum(y) < 20: y ← y * 2
    const body = graph({
      nodes: [node('Mul', ['y_in', 'two'], ['y_out']), node('ReduceSum', ['y_out'], ['s'], [int('keepdims', 0)]), node('Less', ['s', 'limit'], ['cond_out'])],
      inputs: [info('iter', 'int64', []), scalarBool('cond_in'), info('y_in', 'float32', [2])],
      outputs: [scalarBool('cond_out'), info('y_out', 'float32', [2])],
      initializers: [{ name: 'two', dims: [], dataType: TYPE.float32, floatData: [2] }],
    });
    const m = await sn.loadOnnx(model({
      nodes: [node('Loop', ['', 'c', 'y0'], ['y'], [graphAttr('body', body)])],
      inputs: [info('y0', 'float32', [2]), info('limit', 'float32', [])],
      outputs: [info('y', 'float32', [2])],
      initializers: [boolConst('c', true)],
    }), { device });
    const out = await m.run({ y0: sn.tensor([1, 2], { device }), limit: sn.tensor(20, { device }) });
    expect(await values(out.y!)).toEqual([8, 16]);
    expect(m.report().execution).toBe('eager');
    // 40 iterations leave nothing behind but the output (each iteration's temporaries are freed as the loop goes).
    const y0 = sn.tensor([1, 2], { device }), limit = sn.tensor(3e12, { device });
    const before = sn.memory().tensors;
    const long = await m.run({ y0, limit });
    expect(await values(long.y!)).toEqual([2 ** 40, 2 ** 41]);
    long.y!.dispose();
    expect(sn.memory().tensors).toBe(before);
    m.dispose();
  });

  it('nested subgraphs: an If inside a Loop body, on the iteration number, reads values two scopes out', async () => {
    // Even iterations add x, odd ones subtract it: after 5 iterations y = y0 + x.
    const inner = [
      graphAttr('then_branch', graph({ nodes: [node('Add', ['y_in', 'x'], ['a'])], inputs: [], outputs: [info('a', 'float32', [2])] }, 'then')),
      graphAttr('else_branch', graph({ nodes: [node('Sub', ['y_in', 'x'], ['b'])], inputs: [], outputs: [info('b', 'float32', [2])] }, 'else')),
    ];
    const body = graph({
      nodes: [node('Mod', ['iter', 'two'], ['r']), node('Equal', ['r', 'zero'], ['even']), node('If', ['even'], ['y_out'], inner), node('Identity', ['cond_in'], ['cond_out'])],
      inputs: [info('iter', 'int64', []), scalarBool('cond_in'), info('y_in', 'float32', [2])],
      outputs: [scalarBool('cond_out'), info('y_out', 'float32', [2])],
      initializers: [int64Const('two', [2], []), int64Const('zero', [0], [])],
    });
    const m = await sn.loadOnnx(model({
      nodes: [node('Loop', ['M', '', 'y0'], ['y'], [graphAttr('body', body)])],
      inputs: [info('x', 'float32', [2]), info('y0', 'float32', [2])],
      outputs: [info('y', 'float32', [2])],
      initializers: [int64Const('M', [5], [])],
    }), { device });
    const out = await m.run({ x: sn.tensor([1, 2], { device }), y0: sn.tensor([10, 20], { device }) });
    expect(await values(out.y!)).toEqual([11, 22]);
    expect(m.report().execution).toBe('jit');
    m.dispose();
  });

  it('Scan: a running sum over axis 0 forward and a reversed scan input, scan outputs on axis 1', async () => {
    // state s ← s + row; out_f collects s; out_r collects each row of the reversed input.
    const body = graph({
      nodes: [node('Add', ['s_in', 'row'], ['s_out']), node('Identity', ['s_out'], ['f']), node('Identity', ['rrow'], ['r'])],
      inputs: [info('s_in', 'float32', [2]), info('row', 'float32', [2]), info('rrow', 'float32', [2])],
      outputs: [info('s_out', 'float32', [2]), info('f', 'float32', [2]), info('r', 'float32', [2])],
    });
    const m = await sn.loadOnnx(model({
      nodes: [node('Scan', ['s0', 'xs', 'xs'], ['s', 'fs', 'rs'], [graphAttr('body', body), int('num_scan_inputs', 2), ints('scan_input_directions', [0, 1]), ints('scan_output_axes', [1, 0])])],
      inputs: [info('s0', 'float32', [2]), info('xs', 'float32', [3, 2])],
      outputs: [info('s', 'float32', [2]), info('fs', 'float32', [2, 3]), info('rs', 'float32', [3, 2])],
    }), { device });
    const out = await m.run({ s0: sn.tensor([0, 100], { device }), xs: sn.tensor([[1, 2], [3, 4], [5, 6]], { device }) });
    expect(await values(out.s!)).toEqual([9, 112]);
    expect(out.fs!.shape).toEqual([2, 3]);
    expect(await values(out.fs!)).toEqual([1, 4, 9, 102, 106, 112]);
    expect(await values(out.rs!)).toEqual([5, 6, 3, 4, 1, 2]);
    m.dispose();
  });

  it('a graph input that a subgraph reads as a shape is fed on the host, so the model stays compiled', async () => {
    const reshapeBranch = (name: string) => graphAttr(name, graph({ nodes: [node('Reshape', ['x', 's'], [`r_${name}`])], inputs: [], outputs: [info(`r_${name}`, 'float32', [2, 3])] }, name));
    const m = await sn.loadOnnx(model({
      nodes: [node('If', ['c'], ['y'], [reshapeBranch('then_branch'), reshapeBranch('else_branch')])],
      inputs: [info('x', 'float32', [6]), info('s', 'int64', [2])],
      outputs: [info('y', 'float32', [2, 3])],
      initializers: [boolConst('c', true)],
    }), { device });
    const { y } = await m.run({ x: sn.arange(6, { dtype: 'float32', device }), s: { dtype: 'int64', shape: [2], data: [2, 3] } });
    expect(y!.shape).toEqual([2, 3]);
    expect(m.report().execution).toBe('jit');
    m.dispose();
  });

  it('sequences: SplitToSequence, SequenceAt/Erase/Insert/Length, ConcatFromSequence, and a sequence carried by a Loop', async () => {
    // The loop appends row i of x at each iteration to a sequence that starts empty.
    const body = graph({
      nodes: [node('Gather', ['x', 'iter'], ['row'], [int('axis', 0)]), node('SequenceInsert', ['seq_in', 'row'], ['seq_out']), node('Identity', ['cond_in'], ['cond_out'])],
      inputs: [info('iter', 'int64', []), scalarBool('cond_in'), { name: 'seq_in' }],
      outputs: [scalarBool('cond_out'), { name: 'seq_out' }],
    });
    const m = await sn.loadOnnx(model({
      nodes: [
        node('SplitToSequence', ['x'], ['rows'], [int('keepdims', 0)]),
        node('SequenceAt', ['rows', 'minus_one'], ['last']),
        node('SequenceErase', ['rows', 'zero'], ['rest']),
        node('SequenceInsert', ['rest', 'last', 'zero'], ['rotated']),
        node('SequenceLength', ['rotated'], ['n']),
        node('ConcatFromSequence', ['rotated'], ['stacked'], [int('axis', 0), int('new_axis', 1)]),
        node('SequenceEmpty', [], ['empty'], [int('dtype', TYPE.float32)]),
        node('Loop', ['three', '', 'empty'], ['collected'], [graphAttr('body', body)]),
        node('ConcatFromSequence', ['collected'], ['looped'], [int('axis', 0)]),
      ],
      inputs: [info('x', 'float32', [4, 2])],
      outputs: [info('stacked', 'float32', [4, 2]), info('n', 'int64', []), info('looped', 'float32', [6])],
      initializers: [int64Const('minus_one', [-1], []), int64Const('zero', [0], []), int64Const('three', [3], [])],
    }), { device });
    const out = await m.run({ x: sn.tensor([[1, 2], [3, 4], [5, 6], [7, 8]], { device }) });
    expect(await values(out.stacked!)).toEqual([7, 8, 3, 4, 5, 6, 7, 8]);
    expect(await values(out.n!)).toEqual([4]);
    expect(await values(out.looped!)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(m.report().execution).toBe('jit');
    m.dispose();
  });

  it('refuses a Loop with neither a trip count nor a condition, naming the node', async () => {
    const body = graph({ nodes: [node('Identity', ['cond_in'], ['cond_out'])], inputs: [info('iter', 'int64', []), scalarBool('cond_in')], outputs: [scalarBool('cond_out')] });
    const m = await sn.loadOnnx(model({
      nodes: [node('Loop', ['', ''], [], [graphAttr('body', body)]), node('Identity', ['x'], ['y'])],
      inputs: [info('x', 'float32', [1])],
      outputs: [info('y', 'float32', [1])],
    }), { device });
    await expect(m.run({ x: sn.tensor([1], { device }) })).rejects.toThrow(/node 0 'loop_undefined' \(Loop, opset 17\): has neither a trip count M nor a condition/);
    m.dispose();
  });
});
