import { rand } from '../tensor/creation.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { InitOptions } from './layers.js';

// PyTorch's default initialisations (internal to the layers; torch.nn.init's names in comments).

/** U(−bound, bound): kaiming_uniform_ with a = √5 for linear and conv layers gives bound = 1/√fan_in. */
export function uniform(shape: number[], bound: number, opts: InitOptions): Tensor {
  return tidy(() => rand(shape, opts).mul(2 * bound).sub(bound));
}

/** xavier_uniform_: U(±√(6 / (fan_in + fan_out))) for a [fan_out, fan_in] weight. */
export function xavierUniform(shape: [number, number], opts: InitOptions): Tensor {
  return uniform(shape, Math.sqrt(6 / (shape[0] + shape[1])), opts);
}
