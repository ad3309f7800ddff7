export type CaseStatus = 'PASS' | 'FAIL' | 'UNSUPPORTED';
export interface CaseResult {
  name: string;
  status: CaseStatus;
  reason: string;
}
/** What the runner needs of the sinter module: `import * as sinter from 'sinter'` (or the sources) fits. */
export interface ConformanceLib {
  loadOnnx(source: Uint8Array, options: { device: 'cpu' | 'webgpu' }): Promise<unknown>;
  readOnnxTensor(bytes: Uint8Array): unknown;
  OnnxUnsupportedError: abstract new (...args: never[]) => Error;
}
export const CASES_DIR: string;
export const BASELINE_FILE: string;
export const RTOL: number;
export const ATOL: number;
/** Every case folder name, sorted. */
export function listCases(dir?: string): Promise<string[]>;
/** Runs one case on `device`: PASS, FAIL (with why) or UNSUPPORTED (with the unsupported ops or types). */
export function runCase(lib: ConformanceLib, caseName: string, device: 'cpu' | 'webgpu', options?: { dir?: string; jit?: boolean }): Promise<Omit<CaseResult, 'name'>>;
/** Runs every case (or those whose name contains `filter`) on each device. */
export function runConformance(
  lib: ConformanceLib,
  options?: { devices?: ('cpu' | 'webgpu')[]; filter?: string; jit?: boolean; onResult?: (device: string, result: CaseResult) => void },
): Promise<Record<string, CaseResult[]>>;
/** "N passed, M failed, K unsupported". */
export function summary(results: readonly CaseResult[]): string;
