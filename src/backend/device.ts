import { SinterError } from '../errors.js';
import { type DeviceName, type DeviceOption, getBackend, hasBackend, registerBackend } from './backend.js';
import { cpuBackend } from './cpu.js';
import { reportCaches } from '../tensor/memory.js';
import { openDevice } from './webgpu/adapter.js';
import { WebGpuBackend } from './webgpu/backend.js';
import { DEFAULT_PIPELINE_CACHE_SIZE } from './webgpu/pipelines.js';
import { DEFAULT_MAX_IDLE_BYTES } from './webgpu/pool.js';

registerBackend(cpuBackend);

let defaultDevice: DeviceName = 'cpu';
/** Why the last `'auto'` or `'webgpu'` request found no adapter, and whether a software one was passed over. */
let noAdapter: string | null = null;
let passedOverSoftware = false;

export interface InitOptions {
  /**
   * `'auto'` (default): WebGPU on a hardware adapter, else the CPU (a software adapter such as
   * SwiftShader is slower than the CPU backend). An explicit `'webgpu'` takes any adapter, and throws when none exists.
   */
  device?: DeviceOption;
  /** Don't print the line saying which adapter was chosen and why. */
  quiet?: boolean;
}

/** Cache limits set by `setCacheLimits`, applied to every WebGPU device opened (again after a loss). */
const limits = { pipelines: DEFAULT_PIPELINE_CACHE_SIZE, idleBytes: DEFAULT_MAX_IDLE_BYTES };

function applyLimits(b: WebGpuBackend): void {
  b.pipelines.resize(limits.pipelines);
  b.pool.maxIdleBytes = limits.idleBytes;
  b.pool.trim(limits.idleBytes);
}

/**
 * The WebGPU backend, opening the device on first use (again after a loss); null with `noAdapter`
 * set when there is none, or when the only one is a software adapter and `software` is false.
 */
async function webgpu(quiet: boolean, software: boolean): Promise<WebGpuBackend | null> {
  if (hasBackend('webgpu')) {
    const b = getBackend('webgpu') as WebGpuBackend;
    await b.settle();
    if (!b.isLost) {
      if (software || !b.software) return b;
      noAdapter = `the open adapter (${b.adapter}) is a software one, slower than the CPU backend`;
      passedOverSoftware = true;
      return null;
    }
  }
  const opened = await openDevice({ software });
  if ('reason' in opened) {
    noAdapter = opened.reason;
    passedOverSoftware = opened.software === true;
    return null;
  }
  const b = new WebGpuBackend(opened);
  applyLimits(b);
  registerBackend(b);
  reportCaches('webgpu', () => ({ pool: b.pool.stats(), pipelines: b.pipelines.stats() }));
  if (!quiet) console.info(b.line);
  return b;
}

/**
 * Chooses the default device for new tensors and returns it, printing one line that says which
 * and why. `'auto'` takes WebGPU on a hardware adapter, else the CPU: a software adapter
 * (SwiftShader, or one that calls itself a CPU/fallback adapter) is slower than the CPU backend, so
 * it is used only when asked for with `{ device: 'webgpu' }`. WebGPU is opened on first request
 * (navigator.gpu, or Dawn in Node with SwiftShader as the fallback), and again after a device loss.
 */
export async function init(options: InitOptions = {}): Promise<DeviceName> {
  const want = options.device ?? 'auto';
  if (want !== 'auto' && want !== 'cpu' && want !== 'webgpu') {
    throw new SinterError('init', `unknown device ${JSON.stringify(want)}; expected 'auto', 'cpu' or 'webgpu'`);
  }
  if (want === 'cpu') return (defaultDevice = 'cpu');
  const gpu = await webgpu(options.quiet ?? false, want === 'webgpu');
  if (gpu) return (defaultDevice = 'webgpu');
  if (want === 'webgpu') throw new SinterError('init', `device 'webgpu' was requested but no WebGPU adapter is available: ${noAdapter}`);
  if (!options.quiet) console.info(`sinter: using the CPU: ${noAdapter}${passedOverSoftware ? " (`init({ device: 'webgpu' })` uses it anyway)" : ''}`);
  return (defaultDevice = 'cpu');
}

export interface CacheLimits {
  /** Compiled WGSL pipelines kept per device (an LRU; default 512). Compiled plans keep their own. */
  pipelines?: number;
  /** Bytes of freed GPU buffers kept for reuse per device (default 1 GiB); the longest idle go first. */
  idleBytes?: number;
}

/** Bounds the WebGPU pipeline cache and the idle bytes of its buffer pool, now and for devices opened later. */
export function setCacheLimits(options: CacheLimits): void {
  for (const [k, v] of Object.entries(options)) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw new SinterError('setCacheLimits', `${k} must be a non-negative integer, got ${v}`);
  }
  limits.pipelines = options.pipelines ?? limits.pipelines;
  limits.idleBytes = options.idleBytes ?? limits.idleBytes;
  if (hasBackend('webgpu')) applyLimits(getBackend('webgpu') as WebGpuBackend);
}

/**
 * Frees the GPU buffers the pool keeps for reuse (as torch.cuda.empty_cache): memory held by live
 * tensors stays. `memory().devices.webgpu.reservedBytes` then counts only buffers in use.
 */
export function emptyCache(): void {
  if (hasBackend('webgpu')) (getBackend('webgpu') as WebGpuBackend).pool.clear();
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
