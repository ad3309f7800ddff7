// ONNX backend node conformance: runs every case of ../shared/conformance/onnx-node (ONNX's own test models, inputs and
// expected outputs) through loadOnnx on each device and compares with the stored outputs: rtol 1e-3, atol 1e-5
// (NaN matches NaN), exact for integer and bool outputs; shapes must match exactly, and an int64 output may come back
// as int32, a float64 one as float32 (the device narrows both). Prints `PASS|FAIL|UNSUPPORTED case (reason)` per case and a summary per device.
// Usage: node scripts/conformance.mjs [--device cpu|webgpu]... [--filter SUBSTRING] [--eager] [--update-baseline]   (after npm run build)
// --update-baseline rewrites test/onnx-conformance-baseline.json with the cases that pass now (per device).
// The vitest suite (test/onnx-conformance.test.ts) runs the same cases through `runConformance` with the sources.
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const CASES_DIR = path.resolve(here, '..', '..', 'shared', 'conformance', 'onnx-node');
export const BASELINE_FILE = path.resolve(here, '..', 'test', 'onnx-conformance-baseline.json');
export const RTOL = 1e-3;
export const ATOL = 1e-5;

const FLOATS = new Set(['float32', 'float16', 'float64', 'bfloat16']);

/** Every case folder name, sorted. */
export async function listCases(dir = CASES_DIR) {
  return (await readdir(dir)).filter((n) => n.startsWith('test_')).sort();
}

/** Why `actual` (a sinter tensor) differs from the expected ONNX tensor, or null when it matches. */
async function mismatch(name, actual, expected) {
  const shape = (s) => `[${s.join(', ')}]`;
  if (actual.shape.length !== expected.shape.length || actual.shape.some((d, i) => d !== expected.shape[i])) {
    return `output '${name}' has shape ${shape(actual.shape)}, expected ${shape(expected.shape)}`;
  }
  const narrowed = (expected.dtype === 'int64' && actual.dtype === 'int32') || (expected.dtype === 'float64' && actual.dtype === 'float32');
  if (actual.dtype !== expected.dtype && !narrowed) return `output '${name}' is ${actual.dtype}, expected ${expected.dtype}`;
  const got = await actual.data();
  const exact = !FLOATS.has(expected.dtype);
  let worst = null;
  for (let i = 0; i < got.length; i++) {
    const a = got[i], e = expected.data[i];
    const ok = exact ? a === e : (Number.isNaN(e) ? Number.isNaN(a) : a === e || Math.abs(a - e) <= ATOL + RTOL * Math.abs(e));
    if (!ok) {
      const err = Math.abs(a - e);
      if (!worst || !(err <= worst.err)) worst = { i, a, e, err };
    }
  }
  return worst && `output '${name}' differs at flat index ${worst.i}: got ${worst.a}, expected ${worst.e}${exact ? ' (exact)' : ` (|diff| ${worst.err.toPrecision(3)})`}`;
}

/**
 * Runs one case on `device` with the library `lib` (the sinter module: its loadOnnx, readOnnxTensor,
 * OnnxUnsupportedError). Returns { status: 'PASS' | 'FAIL' | 'UNSUPPORTED', reason }.
 */
export async function runCase(lib, caseName, device, { dir = CASES_DIR, jit = true } = {}) {
  const folder = path.join(dir, caseName);
  let model;
  try {
    model = await lib.loadOnnx(await readFile(path.join(folder, 'model.onnx')), { device });
  } catch (e) {
    if (e instanceof lib.OnnxUnsupportedError) return { status: 'UNSUPPORTED', reason: e.unsupported.map((u) => `${u.op}: ${u.reason}`).join('; ') };
    return { status: 'FAIL', reason: `load: ${e.message}` };
  }
  const data = path.join(folder, 'test_data_set_0');
  const files = await readdir(data);
  const index = (f) => parseInt(f.slice(f.indexOf('_') + 1));
  const read = async (kind) => Promise.all(files.filter((f) => f.startsWith(`${kind}_`)).sort((a, b) => index(a) - index(b))
    .map(async (f) => lib.readOnnxTensor(await readFile(path.join(data, f)))));
  let outputs = {};
  try {
    const inputs = await read('input'), expected = await read('output');
    const feeds = Object.fromEntries(model.inputs.map((info, i) => [info.name, inputs[i]]));
    outputs = await model.run(feeds, { jit });
    for (let i = 0; i < model.outputs.length; i++) {
      const name = model.outputs[i].name;
      const why = await mismatch(name, outputs[name], expected[i]);
      if (why) return { status: 'FAIL', reason: why };
    }
    return { status: 'PASS', reason: '' };
  } catch (e) {
    return { status: 'FAIL', reason: String(e?.message ?? e).split('\n')[0] };
  } finally {
    for (const t of Object.values(outputs)) t.dispose();
    model.dispose();
  }
}

/** Runs every case (or those whose name contains `filter`) on each device; `onResult` sees each result as it comes. */
export async function runConformance(lib, { devices = ['cpu', 'webgpu'], filter = '', jit = true, onResult = () => {} } = {}) {
  const cases = (await listCases()).filter((c) => c.includes(filter));
  const results = {};
  for (const device of devices) {
    results[device] = [];
    for (const name of cases) {
      const r = { name, ...(await runCase(lib, name, device, { jit })) };
      results[device].push(r);
      onResult(device, r);
    }
  }
  return results;
}

/** "N passed, M failed, K unsupported" for one device's results. */
export function summary(results) {
  const count = (s) => results.filter((r) => r.status === s).length;
  return `${count('PASS')} passed, ${count('FAIL')} failed, ${count('UNSUPPORTED')} unsupported`;
}

async function main() {
  const args = process.argv.slice(2);
  const devices = [], opts = { filter: '', jit: true };
  let update = false;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--device') devices.push(args[++i]);
    else if (args[i] === '--filter') opts.filter = args[++i];
    else if (args[i] === '--eager') opts.jit = false;
    else if (args[i] === '--update-baseline') update = true;
    else throw new Error(`unknown argument ${args[i]}; usage: node scripts/conformance.mjs [--device cpu|webgpu]... [--filter SUBSTRING] [--eager] [--update-baseline]`);
  }
  const lib = await import('../dist/index.js');
  const wanted = devices.length ? devices : ['cpu', 'webgpu'];
  if (wanted.includes('webgpu')) await lib.init({ device: 'webgpu' });
  await lib.init({ device: 'cpu', quiet: true });
  const baseline = JSON.parse(await readFile(BASELINE_FILE, 'utf8'));
  const results = await runConformance(lib, {
    ...opts,
    devices: wanted,
    onResult: (device, r) => console.log(`[${device}] ${r.status} ${r.name}${r.reason ? ` (${r.reason})` : ''}`),
  });
  let regressions = 0;
  for (const [device, list] of Object.entries(results)) {
    const failed = new Set(list.filter((r) => r.status !== 'PASS').map((r) => r.name));
    const lost = (baseline[device] ?? []).filter((n) => failed.has(n));
    regressions += lost.length;
    console.log(`${device}: ${summary(list)}${lost.length ? `; ${lost.length} baseline case(s) no longer pass: ${lost.join(', ')}` : ''}`);
  }
  if (update) {
    // Cases this run left out (--filter) keep their entries.
    for (const [device, list] of Object.entries(results)) {
      const ran = new Set(list.map((r) => r.name));
      baseline[device] = [...(baseline[device] ?? []).filter((n) => !ran.has(n)), ...list.filter((r) => r.status === 'PASS').map((r) => r.name)].sort();
    }
    await writeFile(BASELINE_FILE, `${JSON.stringify(baseline, null, 1)}\n`);
    console.log(`wrote ${BASELINE_FILE}`);
  }
  process.exitCode = regressions > 0 ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
