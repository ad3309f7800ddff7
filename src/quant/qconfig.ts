import { SinterError } from '../errors.js';
import { HistogramObserver, MinMaxObserver, type ObserverFactory, PerChannelMinMaxObserver, withArgs } from './observer.js';

/** Observer factories for a layer's activations (its output) and its weight, as PyTorch's QConfig. */
export interface QConfig {
  readonly activation: ObserverFactory;
  readonly weight: ObserverFactory;
}

export type QuantBackend = 'x86' | 'fbgemm' | 'qnnpack';

/**
 * PyTorch's `get_default_qconfig`: x86/fbgemm observe activations with a histogram over a reduced
 * (7-bit) quint8 range and weights per channel, symmetric qint8; qnnpack uses the full quint8 range
 * for activations and per-tensor symmetric qint8 weights.
 */
export function getDefaultQconfig(backend: QuantBackend = 'x86'): QConfig {
  switch (backend) {
    case 'x86':
    case 'fbgemm':
      return {
        activation: withArgs(HistogramObserver, { dtype: 'quint8', reduceRange: true }),
        weight: withArgs(PerChannelMinMaxObserver, { dtype: 'qint8', qscheme: 'perChannelSymmetric' }),
      };
    case 'qnnpack':
      return {
        activation: withArgs(HistogramObserver, { dtype: 'quint8', reduceRange: false }),
        weight: withArgs(MinMaxObserver, { dtype: 'qint8', qscheme: 'perTensorSymmetric' }),
      };
    default:
      throw new SinterError('getDefaultQconfig', `unknown backend ${JSON.stringify(backend)}; expected 'x86', 'fbgemm' or 'qnnpack'`);
  }
}
