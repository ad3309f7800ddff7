import { SinterError, fmtShape } from '../errors.js';
import { type DType, itemSize } from '../tensor/dtype.js';
import { type DeviceName, type DeviceOption, getBackend, hasBackend, registerBackend } from './backend.js';
import { cpuBackend, emptyCpuCache, setCpuIdleBytes, setCpuThreads, startCpuThreads } from './cpu.js';
import { reportCaches } from '../tensor/memory.js';
import { generatedKernels } from '../kernels/cpu/generated.js';
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
  /**
   * Threads for the CPU backend's WebAssembly GEMM/conv kernels, the calling one included (default: one per
   * core in Node; one in browsers). The same as `setCpuThreads(n)` or `SINTER_CPU_THREADS=n`.
   */
  threads?: number;
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
  if (options.threads !== undefined) setCpuThreads(options.threads);
  // The CPU's worker threads start here, not during the first calls a program may be timing.
  if (want === 'cpu') {
    await startCpuThreads();
    return (defaultDevice = 'cpu');
  }
  const gpu = await webgpu(options.quiet ?? false, want === 'webgpu');
  if (gpu) return (defaultDevice = 'webgpu');
  if (want === 'webgpu') throw new SinterError('init', `device 'webgpu' was requested but no WebGPU adapter is available: ${noAdapter}`);
  if (!options.quiet) console.info(`sinter: using the CPU: ${noAdapter}${passedOverSoftware ? " (`init({ device: 'webgpu' })` uses it anyway)" : ''}`);
  await startCpuThreads();
  return (defaultDevice = 'cpu');
}

export interface CacheLimits {
  /**
   * Compiled kernels kept per device, an LRU each (default 512): WGSL pipelines on WebGPU, generated
   * JavaScript functions on the CPU. Compiled plans keep their own.
   */
  pipelines?: number;
  /**
   * Bytes of freed GPU buffers kept for reuse per device (default 1 GiB), and of freed CPU storages in
   * the WebAssembly heap (default 256 MiB); the longest idle go first.
   */
  idleBytes?: number;
}

/** Bounds the WebGPU pipeline cache and the idle bytes of its buffer pool (now and for devices opened later) and of the CPU's heap. */
export function setCacheLimits(options: CacheLimits): void {
  for (const [k, v] of Object.entries(options)) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw new SinterError('setCacheLimits', `${k} must be a non-negative integer, got ${v}`);
  }
  limits.pipelines = options.pipelines ?? limits.pipelines;
  limits.idleBytes = options.idleBytes ?? limits.idleBytes;
  generatedKernels.resize(limits.pipelines);
  if (options.idleBytes !== undefined) setCpuIdleBytes(options.idleBytes);
  if (hasBackend('webgpu')) applyLimits(getBackend('webgpu') as WebGpuBackend);
}

/**
 * Frees the GPU buffers the pool keeps for reuse (as torch.cuda.empty_cache), and the CPU storages
 * and kernel scratch the WebAssembly heap keeps (its free space grows; a WebAssembly memory never
 * shrinks): memory held by live tensors stays. `memory().devices.<device>.reservedBytes` then counts
 * only what is in use.
 */
export function emptyCache(): void {
  if (hasBackend('webgpu')) (getBackend('webgpu') as WebGpuBackend).pool.clear();
  emptyCpuCache();
}

/** "3.64 GiB" for messages. */
function fmtBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes, u = 0;
  while (v >= 1024 && u < units.length - 1) (v /= 1024), u++;
  return u === 0 ? `${bytes} bytes` : `${bytes} bytes (${v.toFixed(2)} ${units[u]})`;
}

/** Elements one JavaScript typed array holds at most (V8 on 64-bit hosts: 2³²). */
const MAX_HOST_ELEMENTS = 2 ** 32;

/** This machine's memory, where the environment tells (Node; a container's limit when lower). */
function hostMemory(): number | null {
  const proc = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown; constrainedMemory?: () => number | undefined } }).process;
  const os = proc?.getBuiltinModule?.('node:os') as { totalmem(): number } | undefined;
  if (!os) return null;
  const constrained = proc!.constrainedMemory?.();
  return Math.min(os.totalmem(), constrained && constrained > 0 ? constrained : Infinity);
}

/**
 * Refuses, before anything is allocated or generated, a tensor of `shape` and `dtype` on `device`
 * that cannot exist there: more elements than one host array holds (creation builds values on the
 * host first, and the CPU keeps them there), more bytes than this machine has, or on WebGPU more
 * than one buffer may hold or bind. The SinterError names the op, the shape, the bytes and the limit.
 * Every creation function and every op's output allocation call it.
 */
export function checkAllocation(op: string, shape: readonly number[], dtype: DType, device: DeviceOption | undefined): void {
  let n = 1;
  for (const d of shape) n *= d;
  const bytes = n * itemSize(dtype);
  const what = () => `a ${dtype} tensor of shape ${fmtShape(shape)} needs ${fmtBytes(bytes)}`;
  if (n > MAX_HOST_ELEMENTS) throw new SinterError(op, `${what()}: more than the ${MAX_HOST_ELEMENTS} elements one JavaScript typed array holds`);
  const host = hostMemory();
  if (host !== null && bytes > host) throw new SinterError(op, `${what()}, more than this machine's ${fmtBytes(host)} of memory`);
  const name = resolveDevice(op, device);
  if (name !== 'webgpu') return;
  const b = getBackend('webgpu') as WebGpuBackend;
  const { maxBufferSize, maxStorageBufferBindingSize } = b.caps.limits;
  const limit = Math.min(maxBufferSize, maxStorageBufferBindingSize);
  if (Math.ceil(bytes / 4) * 4 > limit) throw new SinterError(op, `${what()}, more than the ${fmtBytes(limit)} one buffer may hold and bind on ${b.adapter} (maxBufferSize ${maxBufferSize}, maxStorageBufferBindingSize ${maxStorageBufferBindingSize})`);
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
