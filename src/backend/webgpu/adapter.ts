/// <reference types="@webgpu/types" />
import type { WebGpuCaps, WebGpuLimits } from '../../kernels/wgsl/kernel.js';

/** SwiftShader's Vulkan driver, as Debian's chromium package installs it: the fallback where no GPU exists. */
export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/**
 * Dawn's instance flags in Node: timestamps at full resolution. By default Dawn rounds them down to
 * multiples of 2^16 ns (65.5 µs; a browser's defence against timing attacks, pointless in a local
 * process), too coarse for `profile()` to time small kernels. Browsers set their own policy.
 */
const DAWN_FLAGS = ['disable-dawn-features=timestamp_quantization'];

/** Optional features used when the adapter has them. */
const FEATURES: GPUFeatureName[] = ['shader-f16', 'timestamp-query', 'subgroups'];
/** Limits requested at the adapter's maximum, since kernels size their tiles and bindings by them. */
const LIMITS = [
  'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY', 'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize', 'maxBufferSize',
] as const;

export interface OpenedDevice {
  device: GPUDevice;
  caps: WebGpuCaps;
  /** e.g. "google swiftshader (SwiftShader driver 5.0.0)". */
  adapter: string;
  /** One line: the adapter, why it was chosen, the features in use. */
  line: string;
  /** Dawn's instance: held while the device is in use. */
  gpu: GPU;
  /** A software adapter (SwiftShader, lavapipe, a fallback adapter): slower than the CPU backend. */
  software: boolean;
}

type Env = Record<string, string | undefined>;

/** Whether `openDevice` set VK_ICD_FILENAMES to SwiftShader's driver (after finding no hardware adapter). */
let swiftShaderChosen = false;

/** Imports a module by a computed name, so bundlers for the browser leave Node-only modules out. */
function importByName<T>(name: string): Promise<T> {
  return import(name) as Promise<T>;
}

/**
 * Vulkan drivers on Linux reach the GPU through these device nodes (DRM render nodes, NVIDIA's
 * proprietary driver, WSL's /dev/dxg, AMD's compute node): without any, no hardware adapter can
 * exist, so probing for one only loads every installed driver (whose loader noise, e.g. lavapipe's
 * "Vulkan shaderUniform*ArrayDynamicIndexing required", users would see) to find nothing.
 */
const GPU_DEVICE_NODES = ['/dev/dri', '/dev/nvidiactl', '/dev/nvidia0', '/dev/dxg', '/dev/kfd'];

/** Whether an adapter is a software rasteriser (SwiftShader, lavapipe, WARP…), by what it says of itself. */
export function isSoftwareAdapter(adapter: GPUAdapter): boolean {
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean; type?: string };
  if (info.isFallbackAdapter || (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter) return true;
  if (info.type !== undefined && /cpu/i.test(info.type)) return true;
  return /swiftshader|lavapipe|llvmpipe|software|warp|\bcpu\b/i.test(`${info.vendor} ${info.architecture} ${info.device} ${info.description}`);
}

/**
 * Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid or not set" when loaded without
 * one (a headless or container session). Dawn reads nothing from it; a private empty directory
 * (mode 0700, as the XDG spec asks) satisfies them, so the line, harmless but alarming, is not printed.
 */
async function ensureRuntimeDir(env: Env): Promise<void> {
  if (env.XDG_RUNTIME_DIR) return;
  const { mkdtempSync } = await importByName<typeof import('node:fs')>('node:fs');
  const { tmpdir } = await importByName<typeof import('node:os')>('node:os');
  const { join } = await importByName<typeof import('node:path')>('node:path');
  env.XDG_RUNTIME_DIR = mkdtempSync(join(tmpdir(), 'sinter-xdg-'));
}

/** Whether a hardware adapter could exist: on Linux only with a GPU device node; elsewhere Dawn must be asked. */
async function mayHaveGpu(): Promise<boolean> {
  const platform = (globalThis as { process?: { platform?: string } }).process?.platform;
  if (platform !== 'linux') return true;
  const { existsSync } = await importByName<typeof import('node:fs')>('node:fs');
  return GPU_DEVICE_NODES.some((p) => existsSync(p));
}

/** Why no device was opened; `software` when a software adapter exists but was not wanted. */
export interface NoDevice {
  reason: string;
  software?: boolean;
}

export interface OpenOptions {
  /**
   * Whether a software adapter (SwiftShader, or one that says it is a CPU/fallback adapter) may be
   * opened. `init('auto')` passes false: such an adapter is slower than the CPU backend.
   */
  software: boolean;
}

/**
 * Opens a WebGPU device: navigator.gpu in browsers; in Node, Dawn (the `webgpu` package) with its
 * default adapter, else SwiftShader's Vulkan driver through VK_ICD_FILENAMES (read by Dawn when an
 * instance is created, so a second instance is made). Returns why not when no adapter exists, or
 * when the only one is a software adapter and `software` is false.
 */
export async function openDevice(options: OpenOptions): Promise<OpenedDevice | NoDevice> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) {
    const adapter = await nav.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { reason: 'navigator.gpu offers no adapter' };
    if (!options.software && isSoftwareAdapter(adapter)) return { reason: `the browser's only adapter (${adapterName(adapter)}) is a software one, slower than the CPU backend`, software: true };
    return openAdapter(nav.gpu, adapter, "the browser's adapter");
  }
  const env = (globalThis as { process?: { env?: Env } }).process?.env;
  if (!env) return { reason: 'this environment has neither navigator.gpu nor Node' };
  let dawn: typeof import('webgpu');
  try {
    dawn = await importByName<typeof import('webgpu')>('webgpu');
  } catch (e) {
    return { reason: `Dawn (the 'webgpu' package) could not be loaded: ${(e as Error).message}` };
  }
  if (typeof (globalThis as { GPUBufferUsage?: unknown }).GPUBufferUsage === 'undefined') Object.assign(globalThis, dawn.globals);
  await ensureRuntimeDir(env);
  // Once set here, the variable names SwiftShader because no hardware adapter was found before.
  const preset = swiftShaderChosen ? undefined : env.VK_ICD_FILENAMES;
  if (preset !== undefined || (!swiftShaderChosen && (await mayHaveGpu()))) {
    const gpu = dawn.create(DAWN_FLAGS);
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (adapter && !options.software && isSoftwareAdapter(adapter)) {
      return { reason: `Dawn's only adapter (${adapterName(adapter)}) is a software one, slower than the CPU backend`, software: true };
    }
    if (adapter) return openAdapter(gpu, adapter, preset ? `Dawn's adapter with VK_ICD_FILENAMES=${preset} from the environment` : "Dawn's hardware adapter");
    if (preset !== undefined) return { reason: `Dawn found no adapter with VK_ICD_FILENAMES=${preset}` };
  }
  const none = 'no hardware adapter was found';
  if (!options.software) return { reason: `${none}, and a software one (SwiftShader) would be slower than the CPU backend`, software: true };
  const { existsSync } = await importByName<typeof import('node:fs')>('node:fs');
  if (!existsSync(SWIFTSHADER_ICD)) {
    return { reason: `${none}, and SwiftShader's Vulkan driver (${SWIFTSHADER_ICD}, from Debian's chromium package) is not installed` };
  }
  // Set for the process: Dawn reads it when the instance is created, and later instances need it too.
  env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
  swiftShaderChosen = true;
  const gpu = dawn.create(DAWN_FLAGS);
  const adapter = await gpu.requestAdapter();
  if (!adapter) return { reason: `${none}, nor one through SwiftShader's Vulkan driver (${SWIFTSHADER_ICD})` };
  return openAdapter(gpu, adapter, `${none}, so SwiftShader's Vulkan driver (${SWIFTSHADER_ICD}, a CPU emulation) is used as requested`);
}

/** "google swiftshader (SwiftShader driver 5.0.0)". */
function adapterName(adapter: GPUAdapter): string {
  const { vendor, architecture, description } = adapter.info;
  const name = [vendor, architecture].filter(Boolean).join(' ') || 'an unnamed adapter';
  return description ? `${name} (${description})` : name;
}

/**
 * Opens a device on `adapter` of `gpu` with the optional features it has and its maximum limits;
 * `why` says why this adapter (for the one-line report). `openDevice` chooses the adapter; tests pass
 * one of their own (Dawn's null backend, which validates every kernel with shader-f16).
 */
export async function openAdapter(gpu: GPU, adapter: GPUAdapter, why: string): Promise<OpenedDevice> {
  const requiredFeatures = FEATURES.filter((f) => adapter.features.has(f));
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMITS) requiredLimits[k] = adapter.limits[k];
  const device = await adapter.requestDevice({ label: 'sinter', requiredFeatures, requiredLimits });
  const { vendor, architecture } = adapter.info;
  const limits = Object.fromEntries(LIMITS.map((k) => [k, device.limits[k]])) as unknown as WebGpuLimits;
  const caps: WebGpuCaps = {
    f16: device.features.has('shader-f16'),
    subgroups: device.features.has('subgroups'),
    packedDot4: gpu.wgslLanguageFeatures?.has('packed_4x8_integer_dot_product') ?? false,
    subgroupMinSize: adapter.info.subgroupMinSize ?? 4,
    limits,
    vendor,
    architecture,
  };
  const name = adapterName(adapter);
  return { device, caps, adapter: name, gpu, software: isSoftwareAdapter(adapter), line: `sinter: WebGPU on ${name}: ${why}; optional features: ${requiredFeatures.join(', ') || 'none'}` };
}
