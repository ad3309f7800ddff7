import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { soak } from '../bench/soak.mjs';
import { WITH_WEBGPU } from './helpers.js';

// The short version of bench/soak.mjs (10,000 calls there): eager and jitted calls with a scalar that
// changes every call and three shapes; after warm-up, live tensors, storages, pooled bytes, compiled
// pipelines and jit plans stay exactly where they were.

describe('soak', () => {
  for (const device of WITH_WEBGPU) {
    it(`360 eager and jitted calls with varying scalars stay flat after warm-up on ${device}`, async () => {
      const { grew, base, last } = await soak(sn, { device, calls: 360, every: 60 });
      expect(grew).toEqual([]);
      expect(last.jitRetraces).toBeGreaterThan(40); // the scalar argument really changed the signature
      if (device === 'webgpu') expect(base.pipelines).toBeLessThan(20);
    });
  }
});
