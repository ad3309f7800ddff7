import { type CacheStats, LruCache } from '../../lru.js';
import { reportCaches } from '../../tensor/memory.js';

/** Generated functions the CPU keeps by default (see `setCacheLimits`). */
export const DEFAULT_GENERATED_CACHE_SIZE = 512;

/**
 * The CPU's generated JavaScript kernels (elementwise maps, reduction prologues) by source key: an
 * LRU of `capacity` functions. Per-call values (scalars) are arguments of the functions, not text
 * in them, so one function serves every value.
 */
export class GeneratedCache {
  private readonly fns: LruCache<string, unknown>;

  constructor(capacity = DEFAULT_GENERATED_CACHE_SIZE) {
    this.fns = new LruCache(capacity);
  }

  /** The function for `key`, generating it from `source()` (a JS function expression using helpers `H`) on a miss. */
  get<F>(key: string, source: () => string, helpers: object): F {
    const hit = this.fns.get(key);
    if (hit) return hit as F;
    const fn = new Function('H', `return ${source()};`)(helpers) as F;
    this.fns.set(key, fn);
    return fn;
  }

  /** Sets the capacity, dropping the least recently used functions beyond it. */
  resize(capacity: number): void {
    this.fns.resize(capacity);
  }

  stats(): CacheStats {
    return this.fns.stats();
  }
}

/** The one cache every generated CPU kernel goes through; `memory().devices.cpu.pipelines` reports it. */
export const generatedKernels = new GeneratedCache();
reportCaches('cpu', () => ({ pipelines: generatedKernels.stats() }));
