// Quantisation benchmark (`npm run build` first; reads dist/): a small CNN and an MLP at f32, int8 static
// (x86 qconfig, calibrated on 8 seeded batches), int8 dynamic and int4/int8 weight-only, each under jit on
// the CPU and WebGPU: warm latency, model bytes and accuracy against f32 (sn.quant.compare on 4 other
// batches). Prints markdown with the date and machine. Timings on a shared machine are noisy; SwiftShader
// emulates integer dot products, so WebGPU int8 there says nothing about a GPU.
// Usage: node bench/quant.mjs [--devices cpu,webgpu] [--runs N]
import os from 'node:os';
import * as sn from '../dist/index.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : dflt; };
const devices = opt('devices', 'cpu,webgpu').split(',');
const runs = Number(opt('runs', 10));

const models = {
  cnn: { input: [4, 3, 32, 32], make: (device) => { sn.manualSeed(1); return new sn.nn.Sequential(
    new sn.nn.Conv2d(3, 16, 3, { padding: 1 }), new sn.nn.BatchNorm2d(16), new sn.nn.ReLU(), new sn.nn.MaxPool2d(2),
    new sn.nn.Conv2d(16, 32, 3, { padding: 1 }), new sn.nn.ReLU(), new sn.nn.MaxPool2d(2),
    new sn.nn.Flatten(), new sn.nn.Linear(32 * 8 * 8, 10)).to(device).eval(); } },
  mlp: { input: [8, 256], make: (device) => { sn.manualSeed(2); return new sn.nn.Sequential(
    new sn.nn.Linear(256, 512), new sn.nn.ReLU(), new sn.nn.Linear(512, 512), new sn.nn.ReLU(), new sn.nn.Linear(512, 10)).to(device).eval(); } },
};

const modes = {
  f32: async (m) => m,
  'int8 static': async (m, device, shape) => {
    sn.quant.prepare(m, { qconfig: sn.quant.getDefaultQconfig('x86') });
    for (let i = 0; i < 8; i++) m.forward(sn.randn(shape, { seed: 100 + i, device })).dispose();
    await sn.quant.synchronize(m);
    return sn.quant.convert(m);
  },
  'int8 dynamic': async (m) => sn.quant.quantizeDynamic(m),
  'int8 weights': async (m) => sn.quant.quantizeWeights(m, { bits: 8, blockSize: 32 }),
  'int4 weights': async (m) => sn.quant.quantizeWeights(m, { bits: 4, blockSize: 32 }),
};

async function latency(f, x) {
  for (let i = 0; i < 2; i++) f(x).dispose();
  await sn.synchronize(x.device);
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) f(x).dispose();
  await sn.synchronize(x.device);
  return (performance.now() - t0) / runs;
}

console.log(`# Quantisation benchmark, ${new Date().toISOString().slice(0, 10)}, ${os.cpus()[0]?.model} ×${os.cpus().length}, load ${os.loadavg()[0].toFixed(1)}`);
for (const device of devices) {
  await sn.init({ device, quiet: true });
  console.log(`\n## ${device}${device === 'webgpu' ? ` (${sn.adapterInfo()?.description ?? 'adapter'})` : ''}\n`);
  console.log('| model | mode | ms/batch (jit) | bytes | × f32 | cosine | SQNR dB | top-1 agree |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const [name, spec] of Object.entries(models)) {
    const reference = spec.make(device);
    const test = Array.from({ length: 4 }, (_, i) => sn.randn(spec.input, { seed: 200 + i, device }));
    const refBytes = sn.quant.modelBytes(reference);
    for (const [mode, build] of Object.entries(modes)) {
      let m;
      try {
        m = await build(spec.make(device), device, spec.input);
      } catch (e) {
        console.log(`| ${name} | ${mode} | – (${e.message.split('\n')[0]}) |`);
        continue;
      }
      const f = sn.jit((x) => m.forward(x));
      const ms = await latency(f, test[0]);
      const r = await sn.quant.compare(reference, m, test);
      const o = r.outputs[0];
      const bytes = sn.quant.modelBytes(m);
      console.log(`| ${name} | ${mode} | ${ms.toFixed(2)} | ${bytes} | ${(bytes / refBytes).toFixed(2)} | ${o.cosine.toFixed(5)} | ${Number.isFinite(o.sqnrDb) ? o.sqnrDb.toFixed(1) : '∞'} | ${o.top1Agreement === null ? '–' : `${(100 * o.top1Agreement).toFixed(0)}%`} |`);
    }
  }
}
process.exit(0);
