import type fc from 'fast-check';
export interface FuzzCase {
  name: string;
  bytes: Uint8Array;
  inputs: unknown[];
}
export interface Mutation {
  kind: string;
  caseIndex: number;
  draws: number[];
  flips: number;
}
export interface ModelCodec {
  decode(bytes: Uint8Array): object;
  encode(model: object): Uint8Array;
}
/** What the fuzzer needs of the sinter module: `import * as sinter from 'sinter'` (or the sources) fits. */
export interface FuzzLib {
  loadOnnx(source: Uint8Array, options: { device: 'cpu' | 'webgpu' }): Promise<unknown>;
  readOnnxTensor(bytes: Uint8Array): unknown;
  SinterError: abstract new (...args: never[]) => Error;
}
/** The conformance cases whose models are mutated. */
export const FUZZ_CASES: string[];
export function loadFuzzCase(lib: FuzzLib, name: string): Promise<FuzzCase>;
export function modelCodec(schema: unknown): ModelCodec;
export const mutationArb: fc.Arbitrary<Mutation>;
export function mutate(codec: ModelCodec, bytes: Uint8Array, mutation: Mutation): Uint8Array;
/** Loads and runs one mutated model: 'error' (a SinterError) or 'ran'; any other exception is rethrown. */
export function fuzzOne(lib: FuzzLib, fuzzCase: FuzzCase, bytes: Uint8Array, device: 'cpu' | 'webgpu', describe: string): Promise<'error' | 'ran'>;
