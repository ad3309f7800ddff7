// sn.quant: quantisation (PyTorch's torch.ao.quantization names in camelCase). The tensor-level
// functions (quantizePerTensor, quantizePerChannel, dequantize) are also top-level, as in PyTorch.
export { QuantizedTensor, QDTYPES, QRANGE, isQuantized, quantizePerTensor, quantizePerChannel, dequantize } from './qtensor.js';
export type { QDType, QScheme, QParams, QParamValues } from './qtensor.js';
export {
  ObserverBase, MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver, MovingAveragePerChannelMinMaxObserver, HistogramObserver,
  FLOAT32_EPS, withArgs,
} from './observer.js';
export type { Observer, ObserverFactory, ObserverOptions } from './observer.js';
export { getDefaultQconfig } from './qconfig.js';
export type { QConfig, QuantBackend } from './qconfig.js';
export * as functional from './functional.js';
export type { QOutputOptions, QConv2dOptions } from './functional.js';
export { DynamicQuantizedLinear, quantizeDynamic } from './dynamic.js';
export type { QuantizeDynamicOptions } from './dynamic.js';
export { WeightOnlyLinear, quantizeWeights, quantizeBlockwise } from './weights.js';
export type { QuantizeWeightsOptions } from './weights.js';
export { prepare, calibrate, convert, synchronize, sensitivity, fuseConvBn, ObservedLayer, QuantizedLayer } from './static.js';
export type { PrepareOptions, CalibrateOptions, LayerSensitivity } from './static.js';
export { floatGraphBytes, layerSqnr } from './graph.js';
export type { GraphQuantizeOptions, QuantTarget, QConfigMapping, GraphPrepareOptions, PreparedGraph, QuantizedGraph, GraphLayer, GraphLayerSensitivity, ConvertOptions, LayerComparison, LayerKind } from './graph.js';
export { compare, modelBytes } from './compare.js';
export type { CompareReport, OutputComparison, Comparable } from './compare.js';
