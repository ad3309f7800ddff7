// Finds what aborts Node when int8 GEMMs run on SwiftShader (issue 10: "The futex facility returned an
// unexpected error code" once K reached 256). Each probe runs in its own child process, so an abort is
// observed (SIGABRT) instead of killing this script.
//
//   node bench/quant-swiftshader-probe.mjs            # kernel variants × K, then worker teardown mid-dispatch
//
// Finding (2026-12-06, SwiftShader via Dawn in Node 20, this repo's container): every int8 kernel shape
// runs and is exact up to K = 4096 — byte-by-byte loads, dot4I8Packed, 4× unrolled dot4, loop bounds as
// constants or uniforms, 8×8 and 16×16 tiles through workgroup memory with barriers. What aborts the
// process is terminating the worker thread that owns the Dawn device while a dispatch is still running
// (SIGABRT after `FATAL ERROR: … napi_throw` or futex errors), for any kernel, int8 or f32: larger K only made
// the int8 dispatch long enough to still be running when a test worker was torn down. So the shipped
// kernels (plain and dot4, chosen by the packed_4x8_integer_dot_product capability) are safe; code that
// runs GPU work inside worker threads must await its readbacks before the worker exits.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

const BODIES = {
  plain: (kw) => `for (var k = 0u; k < ${kw}u; k++) { let a = A[m * ${kw}u + k]; let b = B[n * ${kw}u + k];
    for (var j = 0u; j < 4u; j++) { acc += extractBits(bitcast<i32>(a), j * 8u, 8u) * extractBits(bitcast<i32>(b), j * 8u, 8u); } }`,
  dot4: (kw) => `for (var k = 0u; k < ${kw}u; k++) { acc += dot4I8Packed(A[m * ${kw}u + k], B[n * ${kw}u + k]); }`,
  dot4unroll: (kw) => `for (var k = 0u; k < ${kw}u; k += 4u) { for (var u = 0u; u < 4u; u++) { acc += dot4I8Packed(A[m * ${kw}u + k + u], B[n * ${kw}u + k + u]); } }`,
  tiled: () => '',
};

function source(variant, K, M, N) {
  const kw = K / 4;
  if (variant === 'tiled') {
    const T = 16, TW = T / 4;
    return `@group(0) @binding(0) var<storage, read> A: array<u32>;
@group(0) @binding(1) var<storage, read> B: array<u32>;
@group(0) @binding(2) var<storage, read_write> C: array<i32>;
var<workgroup> ta: array<u32, ${T * TW}>; var<workgroup> tb: array<u32, ${T * TW}>;
@compute @workgroup_size(${T}, ${T}) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let m = wid.y * ${T}u + lid.y; let n = wid.x * ${T}u + lid.x; var acc = 0i;
  for (var k0 = 0u; k0 < ${kw}u; k0 += ${TW}u) {
    if (lid.x < ${TW}u) { ta[lid.y * ${TW}u + lid.x] = A[(wid.y * ${T}u + lid.y) * ${kw}u + k0 + lid.x]; tb[lid.y * ${TW}u + lid.x] = B[(wid.x * ${T}u + lid.y) * ${kw}u + k0 + lid.x]; }
    workgroupBarrier();
    for (var k = 0u; k < ${TW}u; k++) { acc += dot4I8Packed(ta[lid.y * ${TW}u + k], tb[lid.x * ${TW}u + k]); }
    workgroupBarrier();
  }
  C[m * ${N}u + n] = acc;
}`;
  }
  return `@group(0) @binding(0) var<storage, read> A: array<u32>;
@group(0) @binding(1) var<storage, read> B: array<u32>;
@group(0) @binding(2) var<storage, read_write> C: array<i32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
  let e = gid.x; if (e >= ${M * N}u) { return; }
  let m = e / ${N}u; let n = e % ${N}u; var acc = 0i;
  ${BODIES[variant](kw)}
  C[e] = acc;
}`;
}

/** Runs one int8 GEMM [M, K]·[N, K]ᵀ and checks it; `onSubmitted` is called once the dispatch is queued. */
async function gemm(variant, K, M, N, onSubmitted) {
  const dawn = createRequire(import.meta.url)('webgpu');
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create([]);
  const device = await (await gpu.requestAdapter()).requestDevice();
  const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const a = new Int8Array(M * K).map((_, i) => ((i * 37) % 255) - 127), b = new Int8Array(N * K).map((_, i) => ((i * 91) % 255) - 127);
  const buf = (bytes, usage = S) => device.createBuffer({ size: bytes, usage });
  const [bufA, bufB, bufC, read] = [buf(a.byteLength), buf(b.byteLength), buf(M * N * 4), buf(M * N * 4, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST)];
  device.queue.writeBuffer(bufA, 0, a);
  device.queue.writeBuffer(bufB, 0, b);
  const module = device.createShaderModule({ code: source(variant, K, M, N) });
  const pipe = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const bg = device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [bufA, bufB, bufC].map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipe);
  pass.setBindGroup(0, bg);
  if (variant === 'tiled') pass.dispatchWorkgroups(N / 16, M / 16);
  else pass.dispatchWorkgroups(Math.ceil((M * N) / 64));
  pass.end();
  enc.copyBufferToBuffer(bufC, 0, read, 0, M * N * 4);
  device.queue.submit([enc.finish()]);
  onSubmitted?.();
  await read.mapAsync(GPUMapMode.READ);
  const c = new Int32Array(read.getMappedRange().slice(0));
  for (let e = 0; e < M * N; e++) {
    const m = Math.floor(e / N), n = e % N;
    let s = 0;
    for (let k = 0; k < K; k++) s += a[m * K + k] * b[n * K + k];
    if (s !== c[e]) return false;
  }
  return true;
}

const [mode, variant, K, M] = process.argv.slice(2);
if (!isMainThread) {
  await gemm(workerData.variant, workerData.K, workerData.M, 64, () => parentPort.postMessage('submitted'));
} else if (mode === 'child') {
  console.log(await gemm(variant, Number(K), Number(M), 64) ? 'exact' : 'WRONG');
  process.exit(0);
} else if (mode === 'child-worker') {
  // Terminates the worker that owns the device as soon as its dispatch is queued.
  const w = new Worker(new URL(import.meta.url), { workerData: { variant, K: Number(K), M: Number(M) } });
  w.on('message', () => w.terminate());
  w.on('exit', () => console.log('worker terminated; process survived'));
} else {
  const env = { ...process.env, VK_ICD_FILENAMES: ICD };
  const run = (args) => {
    const r = spawnSync(process.execPath, [new URL(import.meta.url).pathname, ...args], { env, encoding: 'utf8', timeout: 120_000 });
    const line = (r.stdout.trim().split('\n').pop() || '').slice(0, 60);
    return `${r.status ?? r.signal} ${line}`;
  };
  for (const v of Object.keys(BODIES)) for (const k of [64, 256, 1024, 4096]) console.log(`${v.padEnd(10)} K=${String(k).padEnd(5)} M=512: exit ${run(['child', v, String(k), '512'])}`);
  for (const v of ['plain', 'dot4']) for (const k of [64, 256, 1024]) console.log(`worker torn down mid-dispatch, ${v.padEnd(5)} K=${String(k).padEnd(5)}: exit ${run(['child-worker', v, String(k), '1024'])}`);
}
