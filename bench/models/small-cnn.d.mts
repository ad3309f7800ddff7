/** The input of one sample: [3, 32, 32]. */
export const INPUT_SHAPE: number[];
/** The small CNN (three conv + BN + ReLU blocks → global pool → linear 10) on `device`, seeded weights, eval mode. */
export function smallCnn(sn: typeof import('../../src/index.js'), device?: 'cpu' | 'webgpu'): import('../../src/index.js').nn.Sequential;
