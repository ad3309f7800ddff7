import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { WITH_WEBGPU } from './helpers.js';
import { expectTensor, fixture } from './torch-fixtures.js';

// Functional lstm/gru/rnn against PyTorch 1.13's nn.LSTM/GRU/RNN outputs (test/fixtures/torch/,
// made by generate.py there), float32 within 1e-5; and the options PyTorch's modules do not use
// (ONNX's gate orders, sequence lengths, clip) against the same cells written out by hand.

/** PyTorch's weights of one layer and direction, e.g. weight_ih_l1_reverse. */
function layerWeights(f: Record<string, Tensor>, layer: number, reverse: boolean): sn.RnnWeights {
  const s = `_l${layer}${reverse ? '_reverse' : ''}`;
  return { wIh: f[`weight_ih${s}`]!, wHh: f[`weight_hh${s}`]!, bIh: f[`bias_ih${s}`], bHh: f[`bias_hh${s}`] };
}

describe.each(WITH_WEBGPU)('recurrent functions on %s', (device) => {
  it('lstm: two bidirectional layers with initial states match PyTorch', async () => {
    const f = fixture('lstm', device);
    const x = f['io.x']!, h0 = f['io.h0']!, c0 = f['io.c0']!;
    const layer0 = sn.lstm(x, [layerWeights(f, 0, false), layerWeights(f, 0, true)], { h0: h0.narrow(0, 0, 2), c0: c0.narrow(0, 0, 2) });
    const layer1 = sn.lstm(layer0.output, [layerWeights(f, 1, false), layerWeights(f, 1, true)], { h0: h0.narrow(0, 2, 2), c0: c0.narrow(0, 2, 2) });
    await expectTensor(layer1.output, f['io.y']!);
    await expectTensor(sn.cat([layer0.h, layer1.h], 0), f['io.hn']!);
    await expectTensor(sn.cat([layer0.c, layer1.c], 0), f['io.cn']!);
  });

  it('gru: bidirectional, batch first, matches PyTorch', async () => {
    const f = fixture('gru', device);
    const r = sn.gru(f['io.x']!, [layerWeights(f, 0, false), layerWeights(f, 0, true)], { batchFirst: true });
    await expectTensor(r.output, f['io.y']!);
    await expectTensor(r.h, f['io.hn']!);
  });

  it('rnn: two relu layers match PyTorch', async () => {
    const f = fixture('rnn', device);
    const l0 = sn.rnn(f['io.x']!, [layerWeights(f, 0, false)], { nonlinearity: 'relu' });
    const l1 = sn.rnn(l0.output, [layerWeights(f, 1, false)], { nonlinearity: 'relu' });
    await expectTensor(l1.output, f['io.y']!);
    await expectTensor(sn.cat([l0.h, l1.h], 0), f['io.hn']!);
  });

  it('ONNX gate orders give the same result as PyTorch\'s with the weight rows permuted', async () => {
    const f = fixture('lstm', device);
    const w = layerWeights(f, 0, false);
    // PyTorch ifgo → ONNX iofc: blocks [0, 3, 1, 2].
    const perm = (t: Tensor) => sn.cat([0, 3, 1, 2].map((b) => t.narrow(0, b * 4, 4)), 0);
    const onnx = { wIh: perm(w.wIh), wHh: perm(w.wHh), bIh: perm(w.bIh!), bHh: perm(w.bHh!) };
    const a = sn.lstm(f['io.x']!, [w]), b = sn.lstm(f['io.x']!, [onnx], { gateOrder: 'iofc' });
    await expectTensor(b.output, a.output, 1e-6);
    const g = fixture('gru', device);
    const wg = layerWeights(g, 0, false);
    const permG = (t: Tensor) => sn.cat([1, 0, 2].map((b) => t.narrow(0, b * 4, 4)), 0);
    const x = g['io.x']!;
    const pg = sn.gru(x, [wg], { batchFirst: true }), og = sn.gru(x, [{ wIh: permG(wg.wIh), wHh: permG(wg.wHh), bIh: permG(wg.bIh!), bHh: permG(wg.bHh!) }], { batchFirst: true, gateOrder: 'zrh' });
    await expectTensor(og.output, pg.output, 1e-6);
  });

  it('sequence lengths freeze finished sequences and zero their outputs; reverse starts at the last valid step', async () => {
    const f = fixture('gru', device);
    const w = layerWeights(f, 0, true);
    const x = f['io.x']!; // [2, 3, 5] batch first
    const full = sn.gru(x.narrow(0, 1, 1).narrow(1, 0, 2), [w], { batchFirst: true, reverse: true });
    const padded = sn.gru(x, [w], { batchFirst: true, reverse: true, sequenceLens: [3, 2] });
    // Sequence 1 has length 2: its outputs are those of its first two steps alone, then zero.
    await expectTensor(padded.output.narrow(0, 1, 1).narrow(1, 0, 2), full.output, 1e-6);
    expect(await padded.output.narrow(0, 1, 1).narrow(1, 2, 1).abs().sum().item()).toBe(0);
    await expectTensor(padded.h.narrow(1, 1, 1), full.h, 1e-6);
    const lens = sn.tensor([3, 2], { dtype: 'int32', device });
    await expectTensor(sn.gru(x, [w], { batchFirst: true, reverse: true, sequenceLens: lens }).output, padded.output, 0);
  });

  it('linearBeforeReset: false applies the reset gate before the hidden projection (ONNX default)', async () => {
    const f = fixture('gru', device);
    const w = layerWeights(f, 0, false);
    const x = f['io.x']!.narrow(0, 0, 1).narrow(1, 0, 1).reshape([1, 1, 5]);
    const h0 = sn.randn([1, 1, 4], { device, seed: 3 });
    const r = sn.gru(x, [w], { linearBeforeReset: false, h0 });
    // One step by hand: n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn).
    const rows = (t: Tensor, g: number) => t.narrow(0, g * 4, 4);
    const xs = x.reshape([1, 5]), h = h0.reshape([1, 4]);
    const rg = sn.sigmoid(sn.add(sn.linear(xs, rows(w.wIh, 0), rows(w.bIh!, 0)), sn.linear(h, rows(w.wHh, 0), rows(w.bHh!, 0))));
    const z = sn.sigmoid(sn.add(sn.linear(xs, rows(w.wIh, 1), rows(w.bIh!, 1)), sn.linear(h, rows(w.wHh, 1), rows(w.bHh!, 1))));
    const n = sn.tanh(sn.add(sn.linear(xs, rows(w.wIh, 2), rows(w.bIh!, 2)), sn.linear(sn.mul(rg, h), rows(w.wHh, 2), rows(w.bHh!, 2))));
    const want = sn.add(sn.mul(sn.sub(1, z), n), sn.mul(z, h));
    await expectTensor(r.h.reshape([1, 4]), want, 1e-6);
  });

  it('rejects mismatched weights and states with shapes in the message', () => {
    const x = sn.zeros([3, 2, 5], { device });
    const w = { wIh: sn.zeros([16, 5], { device }), wHh: sn.zeros([16, 4], { device }) };
    expect(() => sn.gru(x, [w])).toThrow(/gru: wIh of direction 0 must have shape \[12, 5\]/);
    expect(() => sn.lstm(x, [w], { h0: sn.zeros([2, 2, 4], { device }) })).toThrow(/lstm: h0 must be \[1, 2, 4\]/);
    expect(() => sn.lstm(x, [w], { gateOrder: 'ifgx' })).toThrow(/lstm: gateOrder must name the gates i, f, g, o/);
  });
});
