import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName, OnnxFeed, OnnxTensorData } from '../src/index.js';
import { assertClose } from '../src/testing/index.js';
import { WITH_WEBGPU } from './helpers.js';

// Models exported from PyTorch 1.13 (LSTM, GRU, RNN, a GPT-style decoder whose causal mask exports as Trilu) and
// graphs written with onnx.helper (If inside Loop, Scan, opset 6, TopK/Trilu/OneHot/NonZero/Unique/CumSum), with
// PyTorch's or numpy's outputs: test/fixtures/onnx/generate.py writes them; generate_exports.py the pt_* exports. Floats within rtol 1e-3 (the README's
// definition of a match) and atol 1e-5; integer outputs exactly (int64 comes back as int32).

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'onnx');

interface Fixture {
  inputs: Record<string, OnnxTensorData>;
  outputs: Record<string, OnnxTensorData>;
}

async function fixture(name: string): Promise<{ bytes: Uint8Array; data: Fixture }> {
  return {
    bytes: new Uint8Array(await readFile(path.join(dir, `${name}.onnx`))),
    data: JSON.parse(await readFile(path.join(dir, `${name}.json`), 'utf8')) as Fixture,
  };
}

const CASES: [string, 'jit' | 'eager'][] = [
  ['lstm_bidirectional', 'jit'], ['gru_two_layers', 'jit'], ['rnn_relu', 'jit'], ['gpt_decoder', 'jit'],
  // The Loop's If reads the sum of a row of x, a small input that is therefore fed on the host: the model stays compiled.
  ['control_flow', 'jit'], ['opset6_cnn', 'jit'],
  // NonZero and Unique read their inputs on the host: here those come from graph inputs, which are then read on the
  // host before the trace, so the model stays compiled.
  ['selection_ops', 'jit'],
  // LRN, ReverseSequence, MaxPool storage_order=1, Mod, Range, ScatterND, ScatterElements, GatherND.
  ['more_ops', 'jit'],
  // DFT, STFT, window generators, Sinh/Cosh/Asinh/Acosh/Atanh, Shrink, EyeLike, MeanVarianceNormalization, LpNormalization.
  ['signal_ops', 'jit'],
  // generate_exports.py: a BERT-style encoder (attention mask, token types), a GPT-style decoder with past key/values,
  // an LSTM over packed sequences (its lengths feed TopK/Gather on the host: eager), a 3-layer bidirectional GRU at
  // opset 7 (double Constants cast to int64), a MobileNet-style CNN with squeeze-excitation and self-attention at
  // opset 9 (Upsample), a U-Net-style ConvTranspose/PixelShuffle decoder, and a CNN converted to opset 6.
  ['pt_bert_op11', 'jit'], ['pt_gpt_past_op17', 'jit'], ['pt_lstm_packed_op14', 'eager'], ['pt_gru_bi3_op7', 'jit'],
  ['pt_mobilenet_se_attn_op9', 'jit'], ['pt_unet_convT_op13', 'jit'], ['pt_opset6_cnn', 'jit'],
  // Conv → LSTM at opset 7: the LSTM's zero initial states come from ConstantFill (experimental, opsets 1–9).
  ['pt_cnn_lstm_op7', 'jit'],
];
/** SwiftShader compiles every pipeline slowly: WebGPU runs the cases that cover distinct ops (GRU shares LSTM's kernels). */
const WEBGPU_CASES = new Set([
  'lstm_bidirectional', 'rnn_relu', 'gpt_decoder', 'control_flow', 'opset6_cnn', 'selection_ops', 'more_ops', 'signal_ops',
  // Of the pt_* exports, those whose ops the cases above do not already cover on WebGPU.
  'pt_bert_op11', 'pt_gpt_past_op17', 'pt_gru_bi3_op7', 'pt_mobilenet_se_attn_op9', 'pt_opset6_cnn', 'pt_cnn_lstm_op7',
]);

describe.each(WITH_WEBGPU as DeviceName[])('exported ONNX models on %s', (device) => {
  it.each(CASES.filter(([name]) => device === 'cpu' || WEBGPU_CASES.has(name)))('%s matches PyTorch/numpy', async (name, execution) => {
    const { bytes, data } = await fixture(name);
    const model = await sn.loadOnnx(bytes, { device });
    const feeds: Record<string, OnnxFeed> = {};
    for (const [k, v] of Object.entries(data.inputs)) feeds[k] = v.dtype === 'float32' ? sn.tensor(Float32Array.from(v.data), { device }).reshape([...v.shape]) : v;
    const out = await model.run(feeds);
    for (const [k, want] of Object.entries(data.outputs)) {
      const got = out[k]!;
      expect(got.shape, `${name}: output '${k}' shape`).toEqual(want.shape);
      const exact = want.dtype !== 'float32' && want.dtype !== 'float16';
      assertClose(await got.data(), want.data, { rtol: exact ? 0 : 1e-3, atol: exact ? 0 : 1e-5, shape: want.shape, what: `${name}: output '${k}'` });
    }
    expect(model.report().execution).toBe(execution);
    model.dispose();
  }, 60_000);

  it('the GPT decoder runs at another sequence length (a symbolic dim) and its causal mask holds', async () => {
    const { bytes, data } = await fixture('gpt_decoder');
    const model = await sn.loadOnnx(bytes, { device });
    const ids = data.inputs.ids!;
    const [b, t] = ids.shape as [number, number];
    // The first 5 tokens of each row: with a causal mask, their logits equal the first 5 of the full run's.
    const short: OnnxTensorData = { dtype: 'int64', shape: [b, 5], data: Array.from({ length: b * 5 }, (_, i) => ids.data[Math.floor(i / 5) * t + (i % 5)]!) };
    await model.run({ ids });
    const misses = () => sn.memory().devices.webgpu?.pipelines?.misses ?? 0;
    const before = misses();
    const { logits } = await model.run({ ids: short });
    // A new sequence length retraces, but kernels whose sizes are uniforms reuse their pipelines (measured: 10 new of 23).
    const kernels = model.report().jit?.kernels.length ?? 0;
    if (device === 'webgpu') expect(misses() - before).toBeLessThanOrEqual(Math.floor(0.6 * kernels));
    const full = data.outputs.logits!, vocab = full.shape[2]!;
    const want = Array.from({ length: b * 5 * vocab }, (_, i) => {
      const row = Math.floor(i / (5 * vocab)), rest = i % (5 * vocab);
      return full.data[row * t * vocab + rest]!;
    });
    assertClose(await logits!.data(), want, { rtol: 1e-3, atol: 1e-5, what: 'logits of the first 5 tokens' });
    model.dispose();
  });
});
