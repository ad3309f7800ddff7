// Serving: dynamic batching of concurrent requests and model replicas in worker threads (sn.serve).
export { DynamicBatcher, QueueFullError, BatcherClosedError } from './batcher.js';
export type { Sample, BatchFn, BatchModel, BatchEvent, BatcherStats, DynamicBatcherOptions, PadOptions, RunOptions } from './batcher.js';
export type { Percentiles } from './stats.js';
export { WorkerPool } from './pool.js';
export type { WorkerPoolOptions, WorkerPoolStats } from './pool.js';
