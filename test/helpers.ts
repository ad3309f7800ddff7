import { expect } from 'vitest';
import type { Tensor } from '../src/index.js';
import { TOLERANCES, type Tolerance, assertClose } from '../src/testing/index.js';
import type { DeviceName } from '../src/index.js';
import type { Ref } from './reference/core.js';
import { getBackend } from '../src/backend/backend.js';
import type { WebGpuCaps } from '../src/kernels/wgsl/kernel.js';

/** Every backend the suite runs on. */
export const DEVICES: DeviceName[] = ['cpu'];
/** The backends for ops that have WebGPU kernels (test/setup.ts opens WebGPU; without an adapter the run fails). */
export const WITH_WEBGPU: DeviceName[] = ['cpu', 'webgpu'];

/** Checks a tensor's shape, dtype and values against a float64 reference within its backend's tolerance for the dtype. */
export async function expectClose(t: Tensor, expected: Ref, opts: { dtype?: string; tol?: Partial<Tolerance>; what?: string } = {}): Promise<void> {
  expect(t.shape, `${opts.what ?? 'result'} shape`).toEqual(expected.shape);
  if (opts.dtype) expect(t.dtype, `${opts.what ?? 'result'} dtype`).toBe(opts.dtype);
  const tol = { ...TOLERANCES[t.device][t.dtype], ...opts.tol };
  assertClose(await t.data(), expected.data, { ...tol, shape: expected.shape, what: opts.what });
}

/** Runs `fn` with the WebGPU backend's caps changed, so this adapter runs the kernel variants another adapter gets. */
export async function withCaps(change: Partial<WebGpuCaps>, fn: () => Promise<void>): Promise<void> {
  const backend = getBackend('webgpu') as unknown as { caps: WebGpuCaps };
  const saved = backend.caps;
  backend.caps = { ...saved, ...change };
  try {
    await fn();
  } finally {
    backend.caps = saved;
  }
}

/** The caps each device is tested under: on webgpu also as a GPU (not SwiftShader) would be, with subgroups when this adapter has them. */
export function capsVariants(device: string): Partial<WebGpuCaps>[] {
  if (device !== 'webgpu') return [{}];
  const { subgroups } = (getBackend('webgpu') as unknown as { caps: WebGpuCaps }).caps;
  return [{}, { architecture: 'gpu', subgroups: false }, ...(subgroups ? [{ architecture: 'gpu', subgroups: true }] : [])];
}

/**
 * WebGPU's GEMM (matmul and convolutions) has three kernel shapes (src/kernels/wgsl/gemm.ts):
 * `tiled`, which GPUs get for products at least 32×32; `registers`, which they get for thinner ones;
 * and `quad`, the registers kernel with quads sharing loads, which SwiftShader gets. All run here, by
 * presenting the device as another adapter.
 */
export type GemmKernel = 'tiled' | 'registers' | 'quad';
export const GEMM_KERNELS: GemmKernel[] = ['tiled', 'registers', 'quad'];
export async function withGemmKernel(kind: GemmKernel, run: () => Promise<void>): Promise<void> {
  const as = { tiled: { architecture: 'a GPU' }, registers: { architecture: 'swiftshader', subgroups: false }, quad: { architecture: 'swiftshader' } };
  // (quad keeps the device's subgroups: without them SwiftShader gets registers too.)
  await withCaps(as[kind], run);
}

/** Signal-to-quantisation-noise ratio of `got` against `ref`, in dB: 10·log10(Σref² / Σ(ref − got)²). */
export function sqnr(ref: ArrayLike<number>, got: ArrayLike<number>): number {
  let s = 0, n = 0;
  for (let i = 0; i < ref.length; i++) {
    s += ref[i]! ** 2;
    n += (ref[i]! - got[i]!) ** 2;
  }
  return 10 * Math.log10(s / n);
}
