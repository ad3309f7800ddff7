import { check } from '../errors.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { cat } from '../ops/movement.js';
import { dropout } from '../ops/functional.js';
import { type RnnWeights, gru, lstm, rnn } from '../ops/rnn.js';
import { narrow, squeeze, unsqueeze } from '../ops/views.js';
import { uniform } from './init.js';
import type { InitOptions } from './layers.js';
import { Module } from './module.js';
import { pyBool, pyFloat } from './repr.js';

// nn.LSTM, nn.GRU and nn.RNN (inference) on the functional lstm/gru/rnn of src/ops/rnn.ts, with
// PyTorch's parameter names (weight_ih_l0, bias_hh_l1_reverse, …) so their state dicts load.

export interface RecurrentOptions extends InitOptions {
  numLayers?: number;
  bias?: boolean;
  batchFirst?: boolean;
  /** Dropout on the outputs of every layer but the last, in training mode (default 0). */
  dropout?: number;
  bidirectional?: boolean;
}

type Kind = 'LSTM' | 'GRU' | 'RNN';
const GATES: Record<Kind, number> = { LSTM: 4, GRU: 3, RNN: 1 };

abstract class RecurrentBase extends Module {
  readonly numLayers: number;
  readonly bias: boolean;
  readonly batchFirst: boolean;
  readonly dropout: number;
  readonly bidirectional: boolean;
  constructor(private readonly kind: Kind, readonly inputSize: number, readonly hiddenSize: number, opts: RecurrentOptions) {
    super();
    this.numLayers = opts.numLayers ?? 1;
    this.bias = opts.bias ?? true;
    this.batchFirst = opts.batchFirst ?? false;
    this.dropout = opts.dropout ?? 0;
    this.bidirectional = opts.bidirectional ?? false;
    check(Number.isInteger(inputSize) && inputSize > 0 && Number.isInteger(hiddenSize) && hiddenSize > 0, kind, () => `inputSize and hiddenSize must be positive integers, got ${inputSize} and ${hiddenSize}`);
    check(Number.isInteger(this.numLayers) && this.numLayers >= 1, kind, () => `numLayers must be a positive integer, got ${this.numLayers}`);
    const g = GATES[kind] * hiddenSize, bound = 1 / Math.sqrt(hiddenSize);
    const init = { device: opts.device, dtype: opts.dtype, generator: opts.generator, seed: opts.seed };
    for (let l = 0; l < this.numLayers; l++) {
      for (const suffix of this.bidirectional ? ['', '_reverse'] : ['']) {
        const inSize = l === 0 ? inputSize : hiddenSize * this.directions;
        const name = (w: string) => `${w}_l${l}${suffix}`;
        this.registerParameter(name('weight_ih'), uniform([g, inSize], bound, init));
        this.registerParameter(name('weight_hh'), uniform([g, hiddenSize], bound, init));
        if (this.bias) {
          this.registerParameter(name('bias_ih'), uniform([g], bound, init));
          this.registerParameter(name('bias_hh'), uniform([g], bound, init));
        }
      }
    }
  }
  get directions(): number {
    return this.bidirectional ? 2 : 1;
  }
  /** The weights of layer l, one set per direction. */
  protected layerWeights(l: number): RnnWeights[] {
    const p = this as unknown as Record<string, Tensor | undefined>;
    return (this.bidirectional ? ['', '_reverse'] : ['']).map((s) => ({
      wIh: p[`weight_ih_l${l}${s}`]!, wHh: p[`weight_hh_l${l}${s}`]!, bIh: p[`bias_ih_l${l}${s}`] ?? null, bHh: p[`bias_hh_l${l}${s}`] ?? null,
    }));
  }
  /**
   * Runs the layers: `step(l, x, states)` runs layer l on x with the initial states of that layer
   * ([D, N, H] slices of the given ones) and returns its output and final states.
   */
  protected runLayers(input: Tensor, states: (Tensor | null | undefined)[], step: (l: number, x: Tensor, init: (Tensor | null)[]) => { output: Tensor; finals: Tensor[] }): [Tensor, Tensor[]] {
    const op = this.kind;
    check(input.ndim === 2 || input.ndim === 3, op, () => `expects input [L, N, ${this.inputSize}] (batch first when so built) or unbatched [L, ${this.inputSize}], got ${input.describe()}`);
    const batched = input.ndim === 3, D = this.directions;
    return tidy(() => {
      let x = batched ? input : unsqueeze(input, this.batchFirst ? 0 : 1);
      const init = states.map((s) => (s ? (batched ? s : unsqueeze(s, 1)) : null));
      for (const s of init) {
        if (s) check(s.ndim === 3 && s.shape[0] === D * this.numLayers && s.shape[2] === this.hiddenSize, op, () => `initial states must be [${D * this.numLayers}, N, ${this.hiddenSize}] (or unbatched [${D * this.numLayers}, ${this.hiddenSize}]), got ${s.describe()}`);
      }
      const finals: Tensor[][] = states.map(() => []);
      for (let l = 0; l < this.numLayers; l++) {
        const r = step(l, x, init.map((s) => (s ? narrow(s, 0, l * D, D) : null)));
        x = this.training && this.dropout > 0 && l < this.numLayers - 1 ? dropout(r.output, { p: this.dropout }) : r.output;
        r.finals.forEach((f, i) => finals[i]!.push(f));
      }
      const out = batched ? x : squeeze(x, this.batchFirst ? 0 : 1);
      return [out, finals.map((f) => (batched ? cat(f, 0) : squeeze(cat(f, 0), 1)))] as [Tensor, Tensor[]];
    });
  }
  override extraRepr(): string {
    const parts = [`${this.inputSize}, ${this.hiddenSize}`];
    if (this.numLayers !== 1) parts.push(`num_layers=${this.numLayers}`);
    if (!this.bias) parts.push('bias=False');
    if (this.batchFirst) parts.push('batch_first=True');
    if (this.dropout) parts.push(`dropout=${pyFloat(this.dropout)}`);
    if (this.bidirectional) parts.push(`bidirectional=${pyBool(true)}`);
    return parts.join(', ');
  }
}

/** torch.nn.LSTM (inference): forward(input, [h0, c0]?) → [output, [hN, cN]]. */
export class LSTM extends RecurrentBase {
  constructor(inputSize: number, hiddenSize: number, opts: RecurrentOptions = {}) {
    super('LSTM', inputSize, hiddenSize, opts);
  }
  forward(input: Tensor, hx?: [Tensor, Tensor] | null): [Tensor, [Tensor, Tensor]] {
    const [out, [h, c]] = this.runLayers(input, [hx?.[0], hx?.[1]], (l, x, [h0, c0]) => {
      const r = lstm(x, this.layerWeights(l), { batchFirst: this.batchFirst, h0, c0 });
      return { output: r.output, finals: [r.h, r.c] };
    });
    return [out, [h!, c!]];
  }
}

/** torch.nn.GRU (inference): forward(input, h0?) → [output, hN]. */
export class GRU extends RecurrentBase {
  constructor(inputSize: number, hiddenSize: number, opts: RecurrentOptions = {}) {
    super('GRU', inputSize, hiddenSize, opts);
  }
  forward(input: Tensor, hx?: Tensor | null): [Tensor, Tensor] {
    const [out, [h]] = this.runLayers(input, [hx], (l, x, [h0]) => {
      const r = gru(x, this.layerWeights(l), { batchFirst: this.batchFirst, h0 });
      return { output: r.output, finals: [r.h] };
    });
    return [out, h!];
  }
}

/** torch.nn.RNN (inference; nonlinearity 'tanh' or 'relu'): forward(input, h0?) → [output, hN]. */
export class RNN extends RecurrentBase {
  readonly nonlinearity: 'tanh' | 'relu';
  constructor(inputSize: number, hiddenSize: number, opts: RecurrentOptions & { nonlinearity?: 'tanh' | 'relu' } = {}) {
    super('RNN', inputSize, hiddenSize, opts);
    this.nonlinearity = opts.nonlinearity ?? 'tanh';
  }
  forward(input: Tensor, hx?: Tensor | null): [Tensor, Tensor] {
    const [out, [h]] = this.runLayers(input, [hx], (l, x, [h0]) => {
      const r = rnn(x, this.layerWeights(l), { batchFirst: this.batchFirst, h0, nonlinearity: this.nonlinearity });
      return { output: r.output, finals: [r.h] };
    });
    return [out, h!];
  }
}
