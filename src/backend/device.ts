import { SinterError } from '../errors.js';
import { type DeviceName, type DeviceOption, getBackend, hasBackend, registerBackend } from './backend.js';
import { cpuBackend } from './cpu.js';
import { openDevice } from './webgpu/adapter.js';
import { WebGpuBackend } from './webgpu/backend.js';

registerBackend(cpuBackend);

let defaultDevice: DeviceName = 'cpu';
/** Why the last `'auto'` or `'webgpu'` request found no adapter. */
let noAdapter: string | null = null;

export interface InitOptions {
  /** `'auto'` (default): WebGPU when an adapter exists, else the CPU. An explicit `'webgpu'` that cannot be met throws. */
  device?: DeviceOption;
  /** Don't print the line saying which adapter was chosen and why. */
  quiet?: boolean;
}

/** The WebGPU backend, opening the device on first use (again after a loss); null with `noAdapter` set when there is none. */
async function webgpu(quiet: boolean): Promise<WebGpuBackend | null> {
  if (hasBackend('webgpu')) {
    const b = getBackend('webgpu') as WebGpuBackend;
    if (!b.isLost) return b;
  }
  const opened = await openDevice();
  if ('reason' in opened) {
    noAdapter = opened.reason;
    return null;
  }
  const b = new WebGpuBackend(opened);
  registerBackend(b);
  if (!quiet) console.info(b.line);
  return b;
}

/**
 * Chooses the default device for new tensors and returns it. WebGPU is opened on first request
 * (navigator.gpu, or Dawn in Node with SwiftShader as the fallback), printing one line that names
 * the adapter and why it was chosen.
 */
export async function init(options: InitOptions = {}): Promise<DeviceName> {
  const want = options.device ?? 'auto';
  if (want !== 'auto' && want !== 'cpu' && want !== 'webgpu') {
    throw new SinterError('init', `unknown device ${JSON.stringify(want)}; expected 'auto', 'cpu' or 'webgpu'`);
  }
  if (want === 'cpu') return (defaultDevice = 'cpu');
  const gpu = await webgpu(options.quiet ?? false);
  if (gpu) return (defaultDevice = 'webgpu');
  if (want === 'webgpu') throw new SinterError('init', `device 'webgpu' was requested but no WebGPU adapter is available: ${noAdapter}`);
  if (!options.quiet) console.info(`sinter: no WebGPU adapter (${noAdapter}); using the CPU`);
  return (defaultDevice = 'cpu');
}

/**
 * Waits until every op queued on `device` (default: the default device) has run, as
 * torch.cuda.synchronize: for timing GPU work without reading results back.
 */
export function synchronize(device?: DeviceName): Promise<void> {
  return getBackend(resolveDevice('synchronize', device)).synchronize();
}

export function getDefaultDevice(): DeviceName {
  return defaultDevice;
}

export interface AdapterInfo {
  /** "google swiftshader (SwiftShader driver 5.0.0)". */
  adapter: string;
  /** The line `init` printed: the adapter, why it was chosen, the optional features in use. */
  line: string;
  features: { shaderF16: boolean; subgroups: boolean };
}

/** The WebGPU adapter in use, or null before `init` opened one. */
export function adapterInfo(): AdapterInfo | null {
  if (!hasBackend('webgpu')) return null;
  const b = getBackend('webgpu') as WebGpuBackend;
  return { adapter: b.adapter, line: b.line, features: { shaderF16: b.caps.f16, subgroups: b.caps.subgroups } };
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
