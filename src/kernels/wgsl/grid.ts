import { SinterError } from '../../errors.js';
import type { WebGpuCaps } from './kernel.js';

/** The entry point's parameters that `grid().index` refers to. */
export const GRID_PARAMS = '@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u';

/**
 * Workgroups for `invocations` threads in workgroups of `size` (x only): x up to the device's
 * per-dimension limit, the rest in y. `index` is the WGSL u32 expression of the flat invocation
 * index, from `GRID_PARAMS`; it can exceed `invocations - 1` in the last row, so guard it.
 */
export function grid(op: string, invocations: number, size: number, caps: WebGpuCaps): { workgroups: number[]; index: string } {
  const groups = Math.ceil(invocations / size);
  const max = caps.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return { workgroups: [groups], index: 'gid.x' };
  const x = max, y = Math.ceil(groups / x);
  if (y > max) throw new SinterError(op, `${invocations} invocations need more than ${max}×${max} workgroups of ${size}, the device's limit`);
  return { workgroups: [x, y], index: `(gid.x + gid.y * nwg.x * ${size}u)` };
}

/** The largest 1-D workgroup size up to `want` that the device allows. */
export function workgroupSize(want: number, caps: WebGpuCaps): number {
  return Math.min(want, caps.limits.maxComputeInvocationsPerWorkgroup, caps.limits.maxComputeWorkgroupSizeX);
}
