/** A map holding at most `capacity` entries, evicting the least recently used, with hit/miss/eviction counts. */
export class BoundedCache<K, V> {
  private readonly entries = new Map<K, V>();
  private hits = 0;
  private misses = 0;
  private evictions = 0;

  constructor(readonly capacity: number) {}

  get(key: K): V | undefined {
    const v = this.entries.get(key);
    if (v === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    // Re-inserting moves the entry to the back: Map iterates in insertion order, oldest first.
    this.entries.delete(key);
    this.entries.set(key, v);
    return v;
  }

  set(key: K, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.capacity) {
      this.entries.delete(this.entries.keys().next().value as K);
      this.evictions++;
    }
  }

  stats(): { size: number; hits: number; misses: number; evictions: number } {
    return { size: this.entries.size, hits: this.hits, misses: this.misses, evictions: this.evictions };
  }
}
