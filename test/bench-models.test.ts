import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { INPUT_SHAPE, smallCnn } from '../bench/models/small-cnn.mjs';
import { WITH_WEBGPU } from './helpers.js';

// bench/models/small-cnn.mjs is the one small CNN of the benchmarks, the charts and the serving example: importing it
// runs nothing, and every build of it (any device, any process) holds the same seeded weights.
describe('bench/models/small-cnn.mjs', () => {
  it('the serving example re-exports the same definition', async () => {
    // @ts-expect-error: the serving example's module has no type declarations
    const serving = await import('../examples/serve/models/small-cnn.mjs');
    expect(serving.smallCnn).toBe(smallCnn);
    expect(serving.INPUT_SHAPE).toBe(INPUT_SHAPE);
  });

  it.each(WITH_WEBGPU)('builds identical weights on %s, in eval mode, with a 10-way output', async (device) => {
    const a = smallCnn(sn, device), b = smallCnn(sn, 'cpu');
    expect(a.training).toBe(false);
    const sa = a.stateDict(), sb = b.stateDict();
    expect(Object.keys(sa).sort()).toEqual(Object.keys(sb).sort());
    for (const [k, t] of Object.entries(sa)) expect(Array.from(await t.data()), k).toEqual(Array.from(await sb[k]!.data()));
    // BN statistics are not the defaults (0 and 1), so folding them into the convs changes the result.
    expect(Array.from(await sa['1.running_mean']!.data()).some((v) => v !== 0)).toBe(true);
    const x = sn.randn([2, ...INPUT_SHAPE], { seed: 3, device });
    const y = a.forward(x);
    expect(y.shape).toEqual([2, 10]);
    for (const t of [x, y]) t.dispose();
    a.dispose();
    b.dispose();
  });
});
