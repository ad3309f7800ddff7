import { tidyWith } from './memory.js';
import { isTensor } from './tensor.js';

/**
 * Runs `fn` and disposes every tensor it created, except those in its return value
 * (a tensor, or arrays/objects/Maps of them). `fn` must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  return tidyWith(fn, isTensor);
}
