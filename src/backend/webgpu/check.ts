import type { SinterError } from '../../errors.js';

/**
 * What the GPU says about a kernel later than it is queued: whether it compiled and its dispatch
 * was valid, or what its device-side checks found. A storage lists the checks its contents depend
 * on (its own kernel's and, through the inputs, those of the kernels before it) until they pass.
 */
export class Check {
  /** Set when the check failed. */
  error: SinterError | null = null;
  settled = false;
  /** Resolves when the verdict is in (never rejects). */
  readonly done: Promise<void>;

  constructor(verdict: Promise<SinterError | null>) {
    this.done = verdict.then((e) => {
      this.error = e;
      this.settled = true;
    });
  }
}
