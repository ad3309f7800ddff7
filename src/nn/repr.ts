// Numbers and tuples written as Python writes them, for module reprs that read like PyTorch's.

/** A float as Python's repr writes it: 1e-05, 0.1, 1.0. */
export function pyFloat(v: number): string {
  if (Number.isInteger(v) && Math.abs(v) < 1e16) return `${v}.0`;
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-4 || a >= 1e16)) {
    const [m, e] = v.toExponential().split('e') as [string, string];
    const sign = e.startsWith('-') ? '-' : '+';
    const digits = e.replace(/^[+-]/, '').padStart(2, '0');
    return `${m}e${sign}${digits}`;
  }
  return String(v);
}

/**
 * A size as PyTorch prints it: a tuple `(3, 3)`, or a bare number where PyTorch keeps one (pooling's
 * kernel_size=2). `n` expands a single number to an n-tuple (as conv layers store their sizes).
 */
export function pyTuple(v: number | null | readonly (number | null)[], n?: number): string {
  if (v === null) return 'None';
  if (typeof v === 'number') return n === undefined ? String(v) : pyTuple(Array.from({ length: n }, () => v));
  const items = v.map((x) => (x === null ? 'None' : String(x)));
  return items.length === 1 ? `(${items[0]},)` : `(${items.join(', ')})`;
}

/** PyTorch's spelling of a boolean in reprs. */
export function pyBool(b: boolean): string {
  return b ? 'True' : 'False';
}
