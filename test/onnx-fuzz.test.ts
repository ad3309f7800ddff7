import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName } from '../src/index.js';
import { ONNX_SCHEMA } from '../src/io/onnx/schema.js';
import { propertyConfig } from '../src/testing/index.js';
import { FUZZ_CASES, fuzzOne, loadFuzzCase, modelCodec, mutate, mutationArb } from '../scripts/fuzz-onnx.mjs';

// The ONNX loader under fuzzing (scripts/fuzz-onnx.mjs has the mutations and runs thousands): truncated files, byte
// flips, fields of the wrong type, dims claiming 10^12 elements, dangling and cyclic node references, huge attribute
// lists. Each mutated model must load and run, or fail with a SinterError — fuzzOne rethrows anything else.

const codec = modelCodec(ONNX_SCHEMA);
const cases = await Promise.all(FUZZ_CASES.map((n) => loadFuzzCase(sn, n)));

describe.each([['cpu', 150], ['webgpu', 30]] as [DeviceName, number][])('ONNX loader fuzzing on %s', (device, runs) => {
  it(`${runs} mutated models give a SinterError or a finished run`, async () => {
    const counts = { error: 0, ran: 0 };
    await fc.assert(fc.asyncProperty(mutationArb, async (m) => {
      const c = cases[m.caseIndex]!;
      counts[await fuzzOne(sn, c, mutate(codec, c.bytes, m), device, `${m.kind} of ${c.name}`)]++;
    }), propertyConfig({ numRuns: runs }));
    // Both outcomes occur: the mutations are neither all fatal nor all harmless.
    expect(counts.error).toBeGreaterThan(runs / 10);
    expect(counts.ran).toBeGreaterThan(runs / 10);
  }, 120_000);
});
