/** Greedy CTC decoding of [steps, classes] probabilities: argmax per step, repeats collapsed, blanks (0) dropped. */
export function ctcGreedy(probs: ArrayLike<number>, steps: number, classes: number): number[];
/** Levenshtein distance of two id sequences. */
export function editDistance(a: readonly number[], b: readonly number[]): number;
/** IoU of the masks p > threshold (default 0.3). */
export function maskIou(a: ArrayLike<number>, b: ArrayLike<number>, threshold?: number): number;
export function median(values: readonly number[]): number;
/** A model's metric on evaluation pages (float outputs `ref`, int8 outputs `got`) and whether issue 10's floor is met. */
export function judge(name: 'cls' | 'det' | 'rec', shape: readonly number[], ref: ArrayLike<number>[], got: ArrayLike<number>[]): { text: string; pass: boolean; score: number };
/** Runs `fn` on each input and returns its first output's values. */
export function runAll<T>(fn: (x: T) => unknown, inputs: readonly T[]): Promise<Float32Array[]>;
/** Seeded pages of real text for a model's input (normalised NCHW float32, one per seed), drawn by headless Chromium. */
export function textPages(spec: { name: string; shape: readonly number[]; mean: readonly number[]; std: readonly number[] }, seeds: readonly number[]): Promise<Float32Array[]>;
