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
}

type Env = Record<string, string | undefined>;

/** Imports a module by a computed name, so bundlers for the browser leave Node-only modules out. */
function importByName<T>(name: string): Promise<T> {
  return import(name) as Promise<T>;
}

/**
 * Opens a WebGPU device: navigator.gpu in browsers; in Node, Dawn (the `webgpu` package) with its
 * default adapter, else SwiftShader's Vulkan driver through VK_ICD_FILENAMES (read by Dawn when an
 * instance is created, so a second instance is made). Returns why not when no adapter exists.
 */
export async function openDevice(): Promise<OpenedDevice | { reason: string }> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) {
    const adapter = await nav.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { reason: 'navigator.gpu offers no adapter' };
    return open(nav.gpu, adapter, "the browser's adapter");
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
  const preset = env.VK_ICD_FILENAMES;
  let gpu = dawn.create(DAWN_FLAGS);
  let adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (adapter) return open(gpu, adapter, preset ? `Dawn's adapter with VK_ICD_FILENAMES=${preset} from the environment` : "Dawn's hardware adapter");
  if (preset !== undefined) return { reason: `Dawn found no adapter with VK_ICD_FILENAMES=${preset}` };
  const { existsSync } = await importByName<typeof import('node:fs')>('node:fs');
  if (!existsSync(SWIFTSHADER_ICD)) {
    return { reason: `Dawn found no hardware adapter, and SwiftShader's Vulkan driver (${SWIFTSHADER_ICD}, from Debian's chromium package) is not installed` };
  }
  env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
  gpu = dawn.create(DAWN_FLAGS);
  adapter = await gpu.requestAdapter();
  if (!adapter) return { reason: `Dawn found no hardware adapter, nor one through SwiftShader's Vulkan driver (${SWIFTSHADER_ICD})` };
  return open(gpu, adapter, `no hardware adapter was found, so SwiftShader's Vulkan driver (${SWIFTSHADER_ICD}, a CPU emulation) is used`);
}

async function open(gpu: GPU, adapter: GPUAdapter, why: string): Promise<OpenedDevice> {
  const requiredFeatures = FEATURES.filter((f) => adapter.features.has(f));
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMITS) requiredLimits[k] = adapter.limits[k];
  const device = await adapter.requestDevice({ label: 'sinter', requiredFeatures, requiredLimits });
  const { vendor, architecture, description } = adapter.info;
  const limits = Object.fromEntries(LIMITS.map((k) => [k, device.limits[k]])) as unknown as WebGpuLimits;
  const caps: WebGpuCaps = {
    f16: device.features.has('shader-f16'),
    subgroups: device.features.has('subgroups'),
    subgroupMinSize: adapter.info.subgroupMinSize ?? 4,
    limits,
    vendor,
    architecture,
  };
  const name = [vendor, architecture].filter(Boolean).join(' ') || 'an unnamed adapter';
  const adapterName = description ? `${name} (${description})` : name;
  return { device, caps, adapter: adapterName, gpu, line: `sinter: WebGPU on ${adapterName}: ${why}; optional features: ${requiredFeatures.join(', ') || 'none'}` };
}
