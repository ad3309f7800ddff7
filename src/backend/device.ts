import { SinterError } from '../errors.js';
import { type DeviceName, type DeviceOption, hasBackend, registerBackend } from './backend.js';
import { cpuBackend } from './cpu.js';

registerBackend(cpuBackend);

let defaultDevice: DeviceName = 'cpu';

export interface InitOptions {
  /** `'auto'` (default): WebGPU when an adapter exists, else the CPU. An explicit `'webgpu'` that cannot be met throws. */
  device?: DeviceOption;
}

/** Chooses the default device for new tensors; returns the device chosen. */
export async function init(options: InitOptions = {}): Promise<DeviceName> {
  const want = options.device ?? 'auto';
  if (want !== 'auto' && want !== 'cpu' && want !== 'webgpu') {
    throw new SinterError('init', `unknown device ${JSON.stringify(want)}; expected 'auto', 'cpu' or 'webgpu'`);
  }
  if (want === 'webgpu' && !hasBackend('webgpu')) {
    throw new SinterError('init', "device 'webgpu' was requested but this build has no WebGPU backend; use 'cpu' or 'auto'");
  }
  defaultDevice = want === 'auto' ? (hasBackend('webgpu') ? 'webgpu' : 'cpu') : want;
  return defaultDevice;
}

export function getDefaultDevice(): DeviceName {
  return defaultDevice;
}

/** The device a creation call should use; `'auto'` and undefined mean the default device. */
export function resolveDevice(op: string, device: DeviceOption | undefined): DeviceName {
  if (device === undefined || device === 'auto') return defaultDevice;
  if (device !== 'cpu' && device !== 'webgpu') {
    throw new SinterError(op, `unknown device ${JSON.stringify(device)}; expected 'auto', 'cpu' or 'webgpu'`);
  }
  if (!hasBackend(device)) throw new SinterError(op, `device '${device}' is not initialised: call \`await init({ device: '${device}' })\` first`);
  return device;
}
