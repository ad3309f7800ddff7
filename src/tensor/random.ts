/**
 * Seeded random numbers, generated on the host so every backend sees identical values.
 * xoshiro128** seeded through splitmix32: small, fast, and well studied.
 */
export class Generator {
  private s = new Uint32Array(4);

  constructor(seed = 67280421310721) {
    this.manualSeed(seed);
  }

  /** Resets the stream; the same seed always gives the same numbers. */
  manualSeed(seed: number): this {
    let z = (Math.trunc(seed) ^ Math.trunc(seed / 2 ** 32)) >>> 0;
    for (let i = 0; i < 4; i++) {
      z = (z + 0x9e3779b9) >>> 0;
      let t = z;
      t = Math.imul(t ^ (t >>> 16), 0x85ebca6b) >>> 0;
      t = Math.imul(t ^ (t >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (t ^ (t >>> 16)) >>> 0;
    }
    return this;
  }

  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 24 random bits: exactly representable in float32. */
  uniform(): number {
    return (this.nextUint32() >>> 8) / 16777216;
  }

  /** Standard normal (Box–Muller on two uniforms; the second is drawn in (0, 1] to avoid log 0). */
  normal(): number {
    const u1 = 1 - this.uniform();
    const u2 = this.uniform();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Uniform integer in [low, high). */
  integer(low: number, high: number): number {
    return low + Math.floor((this.nextUint32() / 4294967296) * (high - low));
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The generator used when a call gives no seed; reset it with `manualSeed`. */
export const defaultGenerator = new Generator();

/** Seeds the default generator, as torch.manual_seed does. */
export function manualSeed(seed: number): void {
  defaultGenerator.manualSeed(seed);
}
