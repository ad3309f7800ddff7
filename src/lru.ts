/** How a bounded cache served its lookups (`memory()` reports the WebGPU pipelines' and the CPU's generated kernels'). */
export interface CacheStats {
  /** Entries held now. */
  entries: number;
  /** The most held: beyond it the least recently used is dropped. */
  capacity: number;
  hits: number;
  /** Lookups that found nothing (the caller then made the entry: compiled a pipeline, generated a function). */
  misses: number;
  evictions: number;
}

/** A map of at most `capacity` entries that drops the least recently used, counting hits, misses and evictions. */
export class LruCache<K, V> {
  /** Least recently used first: a Map iterates in insertion order, and a hit is re-inserted at the back. */
  private readonly entries = new Map<K, V>();
  private hits = 0;
  private misses = 0;
  private evictions = 0;

  constructor(private capacity: number) {}

  /** The entry for `key`, now the most recently used; counts a hit or a miss. */
  get(key: K): V | undefined {
    const v = this.entries.get(key);
    if (v === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.entries.delete(key);
    this.entries.set(key, v);
    return v;
  }

  /** Whether `key` is held; counts nothing and keeps the order. */
  has(key: K): boolean {
    return this.entries.has(key);
  }

  /** Holds `value` as the most recently used, dropping the least recently used beyond the capacity. */
  set(key: K, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    this.evict();
  }

  /** Sets the capacity, dropping the least recently used entries beyond it. */
  resize(capacity: number): void {
    this.capacity = capacity;
    this.evict();
  }

  stats(): CacheStats {
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
