import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName } from '../src/index.js';
import { BASELINE_FILE, runConformance, summary } from '../scripts/conformance.mjs';

// ONNX's own node test cases (../shared/conformance/onnx-node) through loadOnnx on each device, as `npm run
// conformance` runs them. Every case that is not unsupported (a dtype the engine lacks) must pass, and
// every case in the committed baseline must keep passing. On WebGPU, ops whose kernels are still being written fail
// with "no WebGPU kernel for X yet": those are reported but tolerated, and kept out of the baseline.

const baseline = JSON.parse(await readFile(BASELINE_FILE, 'utf8')) as Record<DeviceName, string[]>;

describe.each(['cpu', 'webgpu'] as DeviceName[])('ONNX node conformance on %s', (device) => {
  it('passes every supported case, and every case of the baseline', async () => {
    const results = (await runConformance(sn, { devices: [device] }))[device]!;
    console.info(`${device}: ${summary(results)}`);
    const passed = new Set(results.filter((r) => r.status === 'PASS').map((r) => r.name));
    expect(baseline[device].filter((name) => !passed.has(name)), 'baseline cases that no longer pass').toEqual([]);
    const pending = results.filter((r) => r.status === 'FAIL' && device === 'webgpu' && /no WebGPU kernel for \S+ yet/.test(r.reason));
    if (pending.length > 0) console.info(`${device}: ${pending.length} cases wait for WebGPU kernels: ${pending.map((r) => r.name).join(', ')}`);
    const failed = results.filter((r) => r.status === 'FAIL' && !pending.includes(r));
    expect(failed.map((r) => `${r.name}: ${r.reason}`), 'supported cases that fail').toEqual([]);
  }, 30 * 60_000);
});
