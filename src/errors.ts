/** Every error the library throws on bad input: the message starts with the op's name. */
export class SinterError extends Error {
  constructor(
    readonly op: string,
    detail: string,
  ) {
    super(`${op}: ${detail}`);
    this.name = 'SinterError';
  }
}

/** Throws a SinterError for `op` unless `cond` holds. */
export function check(cond: unknown, op: string, detail: string | (() => string)): asserts cond {
  if (!cond) throw new SinterError(op, typeof detail === 'string' ? detail : detail());
}

/** `[2, 3]` → "[2, 3]", for messages. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
