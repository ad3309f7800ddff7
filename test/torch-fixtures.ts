// Loading the PyTorch fixtures of test/fixtures/torch/ (written by generate.py there).
import { readFileSync } from 'node:fs';
import * as sn from '../src/index.js';
import type { DeviceName, Tensor } from '../src/index.js';
import { expectClose } from './helpers.js';
import { ref } from './reference/core.js';

export function fixture(name: string, device: DeviceName): Record<string, Tensor> {
  return sn.loadSafetensors(readFileSync(new URL(`./fixtures/torch/${name}.safetensors`, import.meta.url)), { device }).tensors;
}

/** Equal to PyTorch's float32 result within `atol` (default 2e-5) and 1e-4 relative. */
export async function expectTensor(t: Tensor, want: Tensor, atol = 2e-5): Promise<void> {
  await expectClose(t, ref(want.shape, await want.data()), { tol: { atol, rtol: 1e-4 } });
}
