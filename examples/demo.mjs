// A small conv net's forward pass: prints the device used, the prediction and the time.
// Run with `npm run demo` (builds first), or `node examples/demo.mjs` after `npm run build`.
import * as sn from 'sinter';

const device = await sn.init(); // 'auto': WebGPU when an adapter exists, else the CPU
console.log(`device: ${device}`);

// Weights drawn from a seeded generator, scaled like PyTorch's default init; tidy frees the temporaries.
const g = new sn.Generator(0);
const param = (shape, fanIn) => sn.rand(shape, { generator: g }).sub(0.5).mul(2 / Math.sqrt(fanIn));
const convBlock = (cin, cout) => ({
  weight: param([cout, cin, 3, 3], cin * 9),
  bias: param([cout], cin * 9),
  mean: param([cout], 1).mul(0.1),
  var: sn.rand([cout], { generator: g }).add(0.5),
  gamma: sn.rand([cout], { generator: g }).add(0.5),
  beta: param([cout], 1).mul(0.1),
});
const { blocks, fc } = sn.tidy(() => ({
  blocks: [convBlock(3, 16), convBlock(16, 32), convBlock(32, 64)],
  fc: { weight: param([10, 64], 64), bias: param([10], 64) },
}));

function forward(x) {
  return sn.tidy(() => {
    for (const [i, b] of blocks.entries()) {
      x = sn.conv2d(x, b.weight, b.bias, { padding: 1, stride: i === 0 ? 1 : 2 });
      x = sn.relu(sn.batchNorm(x, b.mean, b.var, b.gamma, b.beta));
    }
    x = sn.adaptiveAvgPool2d(x, 1).flatten(1);
    return sn.softmax(sn.linear(x, fc.weight, fc.bias), -1);
  });
}

const input = sn.randn([1, 3, 32, 32], { seed: 42 });
const times = [];
let probs;
for (let run = 0; run < 6; run++) {
  const t0 = performance.now();
  probs?.dispose();
  probs = forward(input);
  const p = await probs.data(); // waits for the result
  times.push(performance.now() - t0);
  if (run === 0) console.log(`class probabilities: [${Array.from(p, (v) => v.toFixed(3)).join(', ')}]`);
}
const top = await sn.argmax(probs, -1).item();
const first = times[0];
const warm = times.slice(1).sort((a, b) => a - b);
console.log(`predicted class ${top}`);
console.log(`forward pass on ${device}: ${warm[Math.floor(warm.length / 2)].toFixed(2)} ms (median of ${warm.length} warm runs; first run ${first.toFixed(2)} ms)`);
console.log(`memory: ${JSON.stringify(sn.memory())}`);
