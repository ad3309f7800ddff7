// The small CNN of bench/jit.mjs (3×32×32 → three conv+BN+ReLU blocks → global pool → linear 10, eval
// mode, seeded weights) as a serving module: `load(sn, { device })` returns its jitted forward, the
// batch function a DynamicBatcher or a WorkerPool replica runs. Every process builds identical weights.
export const INPUT_SHAPE = [3, 32, 32];

export function smallCnn(sn, device) {
  // Drawn on the CPU, so every device and process gets the same weights.
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

export default async function load(sn, { device }) {
  const model = smallCnn(sn, device);
  return sn.jit((x) => model.forward(x));
}
