import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName, OnnxFeed, OnnxTensorData } from '../src/index.js';
import { assertClose } from '../src/testing/index.js';
import { WITH_WEBGPU } from './helpers.js';

// The com.microsoft ops of transformer exports, each in a model built with onnx.helper (test/fixtures/onnx/generate.py)
// whose expected outputs onnxruntime-node computed (test/fixtures/onnx/expected-ort.mjs). Floats within rtol 1e-3
// and atol 1e-4 (attention sums over keys), integers exactly.

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'onnx');
const names = (await readdir(dir)).filter((f) => f.startsWith('contrib_') && f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();

describe.each(WITH_WEBGPU as DeviceName[])('com.microsoft ops on %s', (device) => {
  it('covers every op the brief lists', () => {
    expect(names).toEqual([
      'contrib_attention', 'contrib_embed_layer_norm', 'contrib_fused_ops', 'contrib_gelus', 'contrib_group_query_attention', 'contrib_group_query_attention_packed',
      'contrib_multi_head_attention', 'contrib_multi_head_attention_cache', 'contrib_rotary_embedding', 'contrib_simplified_layer_norm', 'contrib_skip_layer_norm', 'contrib_skip_simplified_layer_norm',
    ]);
  });

  it.each(names)('%s matches onnxruntime', async (name) => {
    const fixture = JSON.parse(await readFile(path.join(dir, `${name}.json`), 'utf8')) as { inputs: Record<string, OnnxTensorData>; outputs: Record<string, OnnxTensorData> };
    const model = await sn.loadOnnx(new Uint8Array(await readFile(path.join(dir, `${name}.onnx`))), { device });
    const feeds: Record<string, OnnxFeed> = {};
    for (const [k, v] of Object.entries(fixture.inputs)) feeds[k] = v.dtype === 'float32' ? sn.tensor(Float32Array.from(v.data), { device }).reshape([...v.shape]) : v;
    const out = await model.run(feeds);
    for (const [k, want] of Object.entries(fixture.outputs)) {
      expect(out[k]!.shape, `${name}: output '${k}' shape`).toEqual(want.shape);
      const exact = want.dtype !== 'float32';
      assertClose(await out[k]!.data(), want.data, { rtol: exact ? 0 : 1e-3, atol: exact ? 0 : 1e-4, shape: want.shape, what: `${name}: output '${k}'` });
    }
    model.dispose();
  }, 60_000);
});
