import type { JitReport, ReportFormat } from './jit.js';

/** Node's util.inspect hook (what console.log prints), named without importing node:util so browsers load this too. */
export const INSPECT = Symbol.for('nodejs.util.inspect.custom');

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 ** 2).toFixed(1)} MiB`;
}

function count(n: number): string {
  if (n < 1e3) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(1)}K`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)}M`;
  return `${(n / 1e9).toFixed(2)}G`;
}

function ms(v: number | null | undefined): string {
  return v === null || v === undefined ? '–' : v < 1 ? `${(v * 1000).toFixed(0)} µs` : `${v.toFixed(2)} ms`;
}

/** Columns padded to their widest cell; the first two left-aligned, numbers right-aligned. */
function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, j) => Math.max(...rows.map((r) => r[j]!.length)));
  return rows.map((r) => r.map((cell, j) => (j < 2 ? cell.padEnd(widths[j]!) : cell.padStart(widths[j]!))).join('  ').trimEnd());
}

/**
 * A jit report as a short table: one row per kernel (its ops, bytes read and written, FLOPs, and the
 * time of the last `profile()` call where there is one), totals, then compile, cold and warm times.
 */
export function formatReport(r: JitReport, format: ReportFormat = {}): string {
  const timed = r.kernels.some((k) => k.gpuMs !== undefined || k.cpuMs !== undefined);
  const head = ['#', 'kernel (ops fused)', 'ops', 'read', 'written', 'FLOPs', ...(timed ? ['time'] : [])];
  const rows = r.kernels.map((k, i) => [
    String(i), k.ops.join('+'), String(k.ops.length), bytes(k.bytesRead), bytes(k.bytesWritten), count(k.flops),
    ...(timed ? [ms(k.gpuMs ?? k.cpuMs)] : []),
  ]);
  const sum = (f: (k: JitReport['kernels'][number]) => number) => r.kernels.reduce((a, k) => a + f(k), 0);
  rows.push([
    '', 'total', String(sum((k) => k.ops.length)), bytes(sum((k) => k.bytesRead)), bytes(sum((k) => k.bytesWritten)), count(sum((k) => k.flops)),
    ...(timed ? [ms(sum((k) => k.gpuMs ?? k.cpuMs ?? 0))] : []),
  ]);
  const lines = [`jit plan on ${r.device} (fusion '${r.strategy}'): ${r.kernels.length} kernel${r.kernels.length === 1 ? '' : 's'}`, ...table([head, ...rows])];
  const warm = r.warm ? `warm ${ms(r.warm.medianMs)} median of ${r.warm.count} (mean ${ms(r.warm.meanMs)}, min ${ms(r.warm.minMs)}, max ${ms(r.warm.maxMs)})` : 'warm –';
  lines.push(`compile ${ms(r.compileMs)}, cold ${ms(r.coldMs)}, ${warm}${r.device === 'webgpu' ? ' until the GPU finished' : ''}`);
  if (r.profiledMs !== null) lines.push(`last profile() ${ms(r.profiledMs)}`);
  if (r.device === 'webgpu') lines.push(`calls in flight ${r.inFlight.now} (at most ${r.inFlight.peak} at once)`);
  lines.push(`intermediates ${bytes(r.peakBytes)} planned (${bytes(r.unplannedBytes)} with one buffer each)`);
  if (format.source) {
    r.kernels.forEach((k, i) => {
      lines.push('', `// kernel ${i}: ${k.ops.join('+')}`, k.source ?? '// (built-in kernel)');
    });
  }
  return lines.join('\n');
}
