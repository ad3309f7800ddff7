import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { WITH_WEBGPU } from './helpers.js';
import { expectTensor, fixture } from './torch-fixtures.js';

const { nn } = sn;

// PyTorch 1.13 state dicts (test/fixtures/torch/*.safetensors, made by generate.py) load into the
// layers by their PyTorch names (strict: every key matches), and the layers reproduce PyTorch's
// outputs on both backends within 2e-5 (float32).

/** The module's weights of a fixture (everything but 'io.*'), loaded strictly. */
function load<M extends sn.nn.Module>(m: M, f: Record<string, Tensor>): M {
  const state = Object.fromEntries(Object.entries(f).filter(([k]) => !k.startsWith('io.')));
  expect(m.loadStateDict(state)).toEqual({ missingKeys: [], unexpectedKeys: [] });
  return m.eval();
}
const bool = (t: Tensor) => t.to('bool');

describe.each(WITH_WEBGPU)('PyTorch layers on %s', (device) => {
  const opts = { device, dimFeedforward: 16, dropout: 0 };

  it('MultiheadAttention (batch first, padding and float masks, averaged weights) matches PyTorch', async () => {
    const f = fixture('mha', device);
    const mha = load(new nn.MultiheadAttention(8, 2, { batchFirst: true, device }), f);
    expect(Object.keys(mha.stateDict())).toEqual(['in_proj_weight', 'in_proj_bias', 'out_proj.weight', 'out_proj.bias']);
    const [out, w] = mha.forward(f['io.q']!, f['io.k']!, f['io.v']!, { keyPaddingMask: bool(f['io.key_padding_mask']!), attnMask: f['io.attn_mask'] });
    await expectTensor(out, f['io.out']!);
    await expectTensor(w!, f['io.weights']!);
    const [fast, none] = mha.forward(f['io.q']!, f['io.k']!, f['io.v']!, { keyPaddingMask: bool(f['io.key_padding_mask']!), attnMask: f['io.attn_mask'], needWeights: false });
    expect(none).toBeNull();
    await expectTensor(fast, f['io.out']!);
  });

  it('MultiheadAttention with kdim/vdim, no bias, a bool causal mask and per-head weights matches PyTorch', async () => {
    const f = fixture('mha_kv', device);
    const mha = load(new nn.MultiheadAttention(8, 2, { kdim: 3, vdim: 5, bias: false, device }), f);
    expect(Object.keys(mha.stateDict())).toEqual(['q_proj_weight', 'k_proj_weight', 'v_proj_weight', 'out_proj.weight']);
    const [out, w] = mha.forward(f['io.q']!, f['io.k']!, f['io.v']!, { attnMask: bool(f['io.attn_mask']!), averageAttnWeights: false });
    await expectTensor(out, f['io.out']!);
    await expectTensor(w!, f['io.weights']!);
  });

  it('TransformerEncoderLayer (post-norm, masks) and pre-norm with gelu match PyTorch', async () => {
    const f = fixture('encoder_layer', device);
    const layer = load(new nn.TransformerEncoderLayer(8, 2, { ...opts, batchFirst: true }), f);
    await expectTensor(layer.forward(f['io.src']!, { srcMask: f['io.src_mask'], srcKeyPaddingMask: bool(f['io.src_key_padding_mask']!) }), f['io.y']!);
    const g = fixture('encoder_layer_prenorm', device);
    const pre = load(new nn.TransformerEncoderLayer(8, 2, { ...opts, activation: 'gelu', normFirst: true }), g);
    await expectTensor(pre.forward(g['io.src']!), g['io.y']!);
  });

  it('TransformerEncoder (two layers and a final norm) matches PyTorch', async () => {
    const f = fixture('encoder', device);
    const enc = load(new nn.TransformerEncoder(new nn.TransformerEncoderLayer(8, 2, { ...opts, batchFirst: true }), 2, { norm: new nn.LayerNorm(8, { device }) }), f);
    await expectTensor(enc.forward(f['io.src']!, { srcKeyPaddingMask: bool(f['io.src_key_padding_mask']!) }), f['io.y']!);
  });

  it('TransformerDecoderLayer (causal bool mask, memory padding) matches PyTorch', async () => {
    const f = fixture('decoder_layer', device);
    const dec = load(new nn.TransformerDecoderLayer(8, 2, { ...opts, batchFirst: true }), f);
    const y = dec.forward(f['io.tgt']!, f['io.memory']!, { tgtMask: bool(f['io.tgt_mask']!), memoryKeyPaddingMask: bool(f['io.memory_key_padding_mask']!) });
    await expectTensor(y, f['io.y']!);
    const causal = dec.forward(f['io.tgt']!, f['io.memory']!, { tgtIsCausal: true, memoryKeyPaddingMask: bool(f['io.memory_key_padding_mask']!) });
    await expectTensor(causal, f['io.y']!);
  });

  it('LSTM, GRU and RNN modules load PyTorch state dicts and match its outputs', async () => {
    const f = fixture('lstm', device);
    const lstm = load(new nn.LSTM(5, 4, { numLayers: 2, bidirectional: true, device }), f);
    const [y, [h, c]] = lstm.forward(f['io.x']!, [f['io.h0']!, f['io.c0']!]);
    await expectTensor(y, f['io.y']!);
    await expectTensor(h, f['io.hn']!);
    await expectTensor(c, f['io.cn']!);
    const g = fixture('gru', device);
    const gru = load(new nn.GRU(5, 4, { bidirectional: true, batchFirst: true, device }), g);
    const [gy, gh] = gru.forward(g['io.x']!);
    await expectTensor(gy, g['io.y']!);
    await expectTensor(gh, g['io.hn']!);
    // Unbatched input gives the batched result's slice.
    const [one] = gru.forward(g['io.x']!.select(0, 1));
    await expectTensor(one, g['io.y']!.select(0, 1));
    const r = fixture('rnn', device);
    const rnn = load(new nn.RNN(5, 4, { numLayers: 2, nonlinearity: 'relu', device }), r);
    await expectTensor(rnn.forward(r['io.x']!)[0], r['io.y']!);
    expect(String(lstm)).toBe('LSTM(5, 4, num_layers=2, bidirectional=True)');
  });

  it('RMSNorm, Conv1d, Upsample and PixelShuffle compute their functional forms', async () => {
    const x = sn.randn([2, 3, 6], { seed: 1, device });
    const rms = new nn.RMSNorm(6, { device });
    await expectTensor(rms.forward(x), sn.rmsNorm(x, [6], rms.weight));
    expect(String(rms)).toBe('RMSNorm((6,), eps=None, elementwise_affine=True)');
    const conv = new nn.Conv1d(3, 4, 3, { padding: 1, device });
    await expectTensor(conv.forward(x), sn.conv1d(x, conv.weight, conv.bias, { padding: 1 }));
    expect(String(conv)).toBe('Conv1d(3, 4, kernel_size=(3,), stride=(1,), padding=(1,))');
    const up = new nn.Upsample({ scaleFactor: 2, mode: 'nearest' });
    expect(up.forward(sn.randn([1, 1, 2, 3], { device })).shape).toEqual([1, 1, 4, 6]);
    expect(String(up)).toBe("Upsample(scale_factor=2.0, mode='nearest')");
    expect(new nn.PixelShuffle(2).forward(sn.randn([1, 8, 2, 2], { device })).shape).toEqual([1, 2, 4, 4]);
  });
});

describe('PyTorch options the layers do not implement', () => {
  it('are refused with a clear error, not ignored', () => {
    const opts = (o: object) => o as sn.nn.MultiheadAttentionOptions;
    expect(() => new nn.MultiheadAttention(8, 2, opts({ addBiasKv: true }))).toThrow('MultiheadAttention: addBiasKv: true is not supported');
    expect(() => new nn.MultiheadAttention(8, 2, opts({ addZeroAttn: true }))).toThrow('MultiheadAttention: addZeroAttn: true is not supported');
    expect(() => new nn.MultiheadAttention(8, 2, opts({ addBiasKv: false }))).not.toThrow();
  });
});
