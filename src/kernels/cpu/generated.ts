import { reportCaches } from '../../tensor/memory.js';

/** How a cache of compiled kernels served its lookups (the shape `memory()` reports for WebGPU pipelines too). */
export interface GeneratedStats {
  /** Functions held now. */
  entries: number;
  /** The most held: beyond it the least recently used is dropped. */
  capacity: number;
  hits: number;
  /** Lookups that generated a function (`new Function`). */
  misses: number;
  evictions: number;
}

/** Generated functions the CPU keeps by default (see `setCacheLimits`). */
export const DEFAULT_GENERATED_CACHE_SIZE = 512;

/**
 * The CPU's generated JavaScript kernels (elementwise maps, reduction prologues) by source key: an
 * LRU of `capacity` functions. Per-call values (scalars) are arguments of the functions, not text
 * in them, so one function serves every value.
 */
export class GeneratedCache {
  private readonly entries = new Map<string, unknown>();
  private hits = 0;
  private misses = 0;
  private evictions = 0;

  constructor(private capacity = DEFAULT_GENERATED_CACHE_SIZE) {}

  /** The function for `key`, generating it from `source()` (a JS function expression using helpers `H`) on a miss. */
  get<F>(key: string, source: () => string, helpers: object): F {
    const hit = this.entries.get(key);
    if (hit) {
      this.hits++;
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit as F;
    }
    this.misses++;
    const fn = new Function('H', `return ${source()};`)(helpers) as F;
    this.entries.set(key, fn);
    this.evict();
    return fn;
  }

  /** Sets the capacity, dropping the least recently used functions beyond it. */
  resize(capacity: number): void {
    this.capacity = capacity;
    this.evict();
  }

  stats(): GeneratedStats {
    return { entries: this.entries.size, capacity: this.capacity, hits: this.hits, misses: this.misses, evictions: this.evictions };
  }

  private evict(): void {
    for (const key of this.entries.keys()) {
      if (this.entries.size <= this.capacity) return;
      this.entries.delete(key);
      this.evictions++;
    }
  }
}

/** The one cache every generated CPU kernel goes through; `memory().devices.cpu.pipelines` reports it. */
export const generatedKernels = new GeneratedCache();
reportCaches('cpu', () => ({ pipelines: generatedKernels.stats() }));
