import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// Tensors dropped without dispose() are released once the garbage collector finds them (a
// FinalizationRegistry), exactly once, and disposed ones never again. Vitest's workers cannot force a
// collection, so this runs the built package in a child `node --expose-gc` (the suite's other
// child-process tests need `npm run build` too).

const SCRIPT = `
const sn = await import('sinter');
await sn.init({ device: 'webgpu', quiet: true });
const collect = async () => {
  for (let k = 0; k < 6; k++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 5)); }
};
// In a function of its own: a suspended async frame would keep its last locals alive.
async function churn(x) {
  // 200 eager iterations without dispose or tidy: every intermediate and result is dropped.
  for (let i = 0; i < 200; i++) {
    const y = x.mul(i + 0.5).add(1).relu();
    if (i % 50 === 0) await y.data();
  }
  // Jitted functions dropped without dispose(): their plans' intermediates and buffers go too.
  for (let i = 0; i < 5; i++) {
    const f = sn.jit((t) => t.mul(i).exp().sum(0).softmax(0), { fusion: 'none' });
    await f(x).data();
  }
  // Mixed: disposed tensors, views that outlive their disposed base, bases that outlive dropped views.
  for (let i = 0; i < 50; i++) {
    const a = x.add(i);
    const v = a.reshape([4096]);
    a.dispose();
    const b = x.mul(i);
    b.transpose(0, 1);
    if (i % 2) b.dispose();
    void v;
  }
}
const result = {};
for (const device of ['cpu', 'webgpu']) {
  const x = sn.randn([64, 64], { device });
  await collect();
  const base = sn.memory();
  await churn(x);
  await sn.synchronize(device);
  await collect();
  const after = sn.memory();
  const d = (m) => m.devices[device];
  result[device] = { tensors: after.tensors - base.tensors, storages: d(after).storages - d(base).storages, bytes: d(after).bytes - d(base).bytes };
  if (device === 'webgpu') result.pool = d(after).pool;
  x.dispose();
}
console.log(JSON.stringify(result));
`;

describe('release after garbage collection', () => {
  it('tensors and jitted functions dropped without dispose() release their storage after GC, on cpu and webgpu, never twice', () => {
    const run = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', SCRIPT], { encoding: 'utf8', timeout: 120_000 });
    expect(run.status, run.stderr).toBe(0);
    const r = JSON.parse(run.stdout.trim().split('\n').pop()!);
    for (const device of ['cpu', 'webgpu']) expect(r[device], device).toEqual({ tensors: 0, storages: 0, bytes: 0 });
    // The collected tensors' buffers came back to the pool for reuse, and the pool is consistent.
    expect(r.pool.idleBytes).toBeGreaterThan(200 * 64 * 64 * 4);
    expect(r.pool.idleBytes).toBeLessThanOrEqual(r.pool.reservedBytes);
  });
});
