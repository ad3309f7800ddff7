// The small CNN the benchmarks, the charts and the serving example share: 3×32×32 → [conv3×3 32 + BN + ReLU] →
// [conv3×3 64 stride 2 + BN + ReLU] → [conv3×3 128 stride 2 + BN + ReLU] → global average pool → linear 10, in eval
// mode. Convs have no bias (BN follows); BN running statistics and affine parameters are random so folding has work
// to do. Weights are seeded and drawn on the CPU, so every device and process gets the same model. Importing this
// module runs nothing: `sn` is passed in (a worker thread passes its own instance of the library).
export const INPUT_SHAPE = [3, 32, 32];

/** The small CNN on `device` (default 'cpu'), in eval mode. */
export function smallCnn(sn, device = 'cpu') {
  const g = new sn.Generator(0);
  const opts = { generator: g, device: 'cpu' };
  const layers = [];
  const state = {};
  [[3, 32, 1], [32, 64, 2], [64, 128, 2]].forEach(([cin, cout, stride], i) => {
    layers.push(new sn.nn.Conv2d(cin, cout, 3, { stride, padding: 1, bias: false, ...opts }), new sn.nn.BatchNorm2d(cout, { device: 'cpu' }), new sn.nn.ReLU());
    const bn = 3 * i + 1;
    state[`${bn}.weight`] = sn.tidy(() => sn.rand([cout], opts).add(0.5));
    state[`${bn}.bias`] = sn.tidy(() => sn.randn([cout], opts).mul(0.1));
    state[`${bn}.running_mean`] = sn.tidy(() => sn.randn([cout], opts).mul(0.1));
    state[`${bn}.running_var`] = sn.tidy(() => sn.rand([cout], opts).add(0.5));
  });
  const model = new sn.nn.Sequential(...layers, new sn.nn.AdaptiveAvgPool2d(1), new sn.nn.Flatten(), new sn.nn.Linear(128, 10, opts));
  model.loadStateDict(state, { strict: false });
  return model.to(device).eval();
}
