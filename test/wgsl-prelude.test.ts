import { expect, it } from 'vitest';
import { withPrelude } from '../src/kernels/wgsl/prelude.js';

it('withPrelude keeps enable directives ahead of the helpers it adds (WGSL requires them first)', () => {
  const out = withPrelude('enable f16;\nenable subgroups;\n@group(0) @binding(0) var<storage, read> in0: array<f16>;\nfn f(x: f32) -> f32 { return sn_erf(x); }');
  const lines = out.split('\n').filter((l) => l.trim());
  expect(lines.slice(0, 2)).toEqual(['enable f16;', 'enable subgroups;']);
  expect(out.indexOf('fn sn_erf')).toBeGreaterThan(out.indexOf('enable subgroups;'));
  expect(out.match(/enable /g)).toHaveLength(2);
});
