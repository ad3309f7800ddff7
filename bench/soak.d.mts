/** One sample of what the process holds on a device (pool and pipeline figures are null on the CPU). */
export interface SoakSample {
  calls: number;
  tensors: number;
  storages: number;
  bytes: number;
  reservedBytes: number | null;
  idleBytes: number | null;
  pipelines: number | null;
  compiled: number | null;
  jitPlans: number;
  jitRetraces: number;
}
/** Runs eager and jitted calls on `device`, sampling every `every` calls; `grew` lists the figures not flat after warm-up. */
export function soak(
  sn: typeof import('../src/index.js'),
  options: { device: 'cpu' | 'webgpu'; calls?: number; every?: number; log?: (s: SoakSample) => void },
): Promise<{ samples: SoakSample[]; base: SoakSample; last: SoakSample; grew: string[]; checksum: number }>;
