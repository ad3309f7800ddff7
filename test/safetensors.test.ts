import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { propertyConfig } from '../src/testing/index.js';

// safetensors files whose headers lie: every one is a SinterError naming the tensor and what is wrong, raised
// before anything is allocated; honest files round-trip.

/** A safetensors file from a header object (or raw header text) and a data section. */
function file(header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  const head = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + head.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(head.length), true);
  out.set(head, 8);
  out.set(data, 8 + head.length);
  return out;
}

const f32 = (shape: number[], begin: number, end: number) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

describe('loadSafetensors with headers that lie', () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ['shorter than the length prefix', new Uint8Array(5), /shorter than the 8-byte header length/],
    ['a header length of 2^63', file({}, new Uint8Array(0), 2n ** 63n), /header claims .* bytes but only 2 follow/],
    ['a header that is not JSON', file('{"a": '), /header is not JSON/],
    ['a header that is an array', file([1, 2]), /must be a JSON object, got an array/],
    ['an entry that is not an object', file({ w: 7 }), /tensor 'w' has the header entry 7, which is not an object/],
    ['an unknown dtype', file({ w: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /tensor 'w' has dtype F8_E4M3, which sinter cannot load/],
    ['a negative dim', file({ w: f32([-1, 4], 0, 16) }, new Uint8Array(16)), /tensor 'w' has an invalid shape \[-1,4\]/],
    ['offsets past the end', file({ w: f32([4], 0, 16) }, new Uint8Array(8)), /data_offsets \[0, 16\], which do not hold its 16 bytes within the 8-byte data section/],
    ['a size that disagrees with the shape', file({ w: f32([3], 0, 16) }, new Uint8Array(16)), /do not hold its 12 bytes/],
    ['begin after end', file({ w: f32([0], 8, 4) }, new Uint8Array(8)), /data_offsets \[8, 4\]/],
    ['non-integer offsets', file({ w: f32([1], 0.5, 4.5) }, new Uint8Array(8)), /invalid data_offsets \[0.5,4.5\]/],
    ['offsets missing', file({ w: { dtype: 'F32', shape: [1] } }), /invalid data_offsets undefined/],
    ['dims claiming 10^12 elements', file({ w: f32([1e6, 1e6], 0, 4e12) }, new Uint8Array(8)), /data_offsets \[0, 4000000000000\]/],
    ['overlapping ranges', file({ a: f32([2], 0, 8), b: f32([2], 4, 12) }, new Uint8Array(12)), /tensors 'a' \(bytes 0–8\) and 'b' \(bytes 4–12\) overlap/],
    ['metadata that is not strings', file({ __metadata__: { format: 3 } }), /__metadata__ must map strings to strings/],
  ];
  it.each(cases)('%s', (_, bytes, message) => {
    const err = (() => {
      try {
        sn.loadSafetensors(bytes);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(sn.SinterError);
    expect((err as Error).message).toMatch(/^loadSafetensors: /);
    expect((err as Error).message).toMatch(message);
  });

  it('an honest file round-trips, including an empty tensor and adjacent ranges', async () => {
    const bytes = await sn.saveSafetensors({ a: sn.tensor([1, 2, 3]), b: sn.zeros([0, 2]), c: sn.tensor([[7, 8]], { dtype: 'int32' }) }, { format: 'pt' });
    const { tensors, metadata } = sn.loadSafetensors(bytes);
    expect(metadata).toEqual({ format: 'pt' });
    expect(Array.from(await tensors.a!.data())).toEqual([1, 2, 3]);
    expect(tensors.b!.shape).toEqual([0, 2]);
    expect(Array.from(await tensors.c!.data())).toEqual([7, 8]);
  });

  it('random truncations and byte flips of a valid file give a SinterError or tensors, never another error', async () => {
    const good = await sn.saveSafetensors({ weight: sn.arange(12).reshape([3, 4]), bias: sn.tensor([1, 2, 3], { dtype: 'int32' }) });
    fc.assert(fc.property(fc.nat(good.length), fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 1, max: 255 })), { maxLength: 6 }), (cut, flips) => {
      const bytes = good.slice(0, cut === good.length ? undefined : cut);
      for (const [at, bits] of flips) if (at < bytes.length) bytes[at]! ^= bits;
      try {
        const { tensors } = sn.loadSafetensors(bytes);
        Object.values(tensors).forEach((t) => t.dispose());
      } catch (e) {
        if (!(e instanceof sn.SinterError)) throw e;
      }
    }), propertyConfig({ numRuns: 300 }));
  });
});
