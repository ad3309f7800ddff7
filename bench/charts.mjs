// Pictures of the benchmarks: the README's benchmark tables (the newest recorded peer run in bench/results) as SVG bar charts (vega-lite compiled to vega, rendered
// to SVG in Node), a chart measured now with sn.benchmark (median and IQR of the small CNN on the CPU, eager vs
// jit), and the small CNN's fused graph (the JIT's DOT rendered by @viz-js/viz). Every chart carries its date and
// machine. Writes bench/charts/*.svg (or into --out DIR). Usage (after npm run build):
// node bench/charts.mjs [--min-run-time SECONDS] [--out DIR]
import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { instance as vizInstance } from '@viz-js/viz';
import cliProgress from 'cli-progress';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import * as sn from 'sinter';
import { INPUT_SHAPE, smallCnn } from './models/small-cnn.mjs';
import { latestRun, peerTables } from './peer-tables.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: opts } = parseArgs({ options: { 'min-run-time': { type: 'string', default: '1' }, out: { type: 'string', default: path.join(here, 'charts') }, run: { type: 'string' } } });
const out = opts.out;

/** SVG text of a vega-lite spec. */
async function svgOf(spec) {
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}

const plain = (s) => s.replace(/[`*]/g, '');

/** A grouped bar chart (log scale: the libraries differ by orders of magnitude) of one table of a recorded peer run. */
async function tableChart(table, title, date, machine, source) {
  const data = [];
  for (const row of table.rows) {
    table.header.slice(1).forEach((lib, j) => {
      const ms = row[j + 1];
      if (ms !== null) data.push({ workload: plain(row[0]), library: lib, ms });
    });
  }
  return svgOf({
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, subtitle: [`median ms, lower is better (log scale) · ${date} · ${machine}`, `recorded run ${source} (npm run bench:peers)`] },
    data: { values: data },
    width: { step: 22 },
    height: 260,
    mark: { type: 'bar', tooltip: true },
    encoding: {
      x: { field: 'library', type: 'nominal', axis: null },
      y: { field: 'ms', type: 'quantitative', scale: { type: 'log', domainMin: 0.05 }, title: 'ms' },
      // Bars on a log scale need a positive baseline: below every figure, so no bar points down.
      y2: { datum: 0.05 },
      color: { field: 'library', type: 'nominal', legend: { orient: 'bottom', columns: 2 } },
      column: { field: 'workload', type: 'nominal', sort: null, header: { labelAngle: 0, labelLimit: 150 }, title: null },
    },
  });
}

const date = new Date().toISOString().slice(0, 10);
const cpu = os.cpus();
const machineNow = `${cpu[0]?.model.trim()} (${cpu.length} cores), ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, load ${os.loadavg()[0].toFixed(1)}`;
await sn.init({ device: 'cpu', quiet: true });

// 1. The README's tables: the newest recorded peer run (bench/results), as the README quotes it.
const { file: source, run } = latestRun(opts.run); // --run FILE: a recorded peer run (default: the newest full one)
const tables = peerTables(run);
const runMachine = `${run.machine.cpu}, ${run.machine.cores} cores, ${run.machine.memGiB} GiB, Node ${run.machine.node}; WebGPU on SwiftShader`;
const runDate = run.startedAt.slice(0, 10);
await writeFile(path.join(out, 'peers-webgpu.svg'), await tableChart(tables.webgpu, 'sinter beside the peers on WebGPU', runDate, runMachine, source));
await writeFile(path.join(out, 'peers-cpu.svg'), await tableChart(tables.cpu, 'sinter beside the peers on the CPU', runDate, runMachine, source));

// 1b. Serving: QPS and p99 of the newest recorded `bench/serve.mjs` run (its markdown table, committed in bench/results).
const serveFile = readdirSync(path.join(here, 'results')).filter((f) => /serve.*\.md$/.test(f)).sort().at(-1);
if (serveFile) {
  const text = readFileSync(path.join(here, 'results', serveFile), 'utf8');
  const serveRows = text.split('\n').filter((l) => /^\| \w+ \| [^|]+ \| (on|off) \| \d+ \|/.test(l)).map((l) => {
    const c = l.split('|').map((v) => v.trim());
    return { device: `${c[1]}, ${c[2]}`, batching: `batching ${c[3]}`, concurrency: Number(c[4]), qps: Number(c[6]), p99: Number(c[9]) };
  });
  const serveDate = serveFile.slice(0, 10);
  const facet = (field, title, log) => ({
    width: 170,
    height: 170,
    mark: { type: 'line', point: true, tooltip: true },
    encoding: {
      x: { field: 'concurrency', type: 'quantitative', scale: { type: 'log', base: 2 }, axis: { values: [1, 8, 32, 128] }, title: 'concurrent clients' },
      y: { field, type: 'quantitative', scale: log ? { type: 'log' } : {}, title },
      color: { field: 'batching', type: 'nominal', legend: { orient: 'bottom' } },
    },
  });
  await writeFile(path.join(out, 'serve-cnn.svg'), await svgOf({
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: 'Serving the small CNN over HTTP: dynamic batching off and on', subtitle: [`autocannon on 127.0.0.1, answered requests · ${serveDate} · recorded run bench/results/${serveFile} (npm run bench:serve)`] },
    data: { values: serveRows },
    vconcat: [
      // Each device on its own y scale: SwiftShader serves ~20× fewer requests than the CPU.
      { facet: { column: { field: 'device', type: 'nominal', title: null } }, spec: facet('qps', 'QPS (higher is better)', false), resolve: { scale: { y: 'independent' } } },
      { facet: { column: { field: 'device', type: 'nominal', title: null } }, spec: facet('p99', 'p99 ms (lower is better, log)', true), resolve: { scale: { y: 'independent' } } },
    ],
  }));
}

// 2. Measured now with sn.benchmark: the small CNN on the CPU, eager and under each fusion strategy.
const model = smallCnn(sn);
const x = sn.randn([1, ...INPUT_SHAPE], { seed: 2 });
const variants = [
  ['eager', (t) => sn.tidy(() => model.forward(t))],
  ...['none', 'elementwise', 'default'].map((fusion) => [`jit fusion '${fusion}'`, sn.jit((t) => model.forward(t), { fusion })]),
];
const bar = process.stderr.isTTY ? new cliProgress.SingleBar({ format: 'timing |{bar}| {value}/{total} {name}', stream: process.stderr, clearOnComplete: true }, cliProgress.Presets.shades_classic) : null;
bar?.start(variants.length, 0, { name: '' });
const measurements = [];
for (const [name, fn] of variants) {
  bar?.update({ name });
  const timer = new sn.benchmark.Timer({ stmt: async () => { const y = fn(x); await y.data(); y.dispose(); }, label: 'small CNN, batch 1, cpu', subLabel: name, description: 'forward + read back' });
  measurements.push(await timer.blockedAutorange({ minRunTime: Number(opts['min-run-time']) }));
  bar?.increment();
}
bar?.stop();
new sn.benchmark.Compare(measurements).print();
const rows = measurements.map((m) => ({ variant: m.subLabel, median: m.median * 1e3, p25: m.p25 * 1e3, p75: m.p75 * 1e3 }));
await writeFile(path.join(out, 'small-cnn-cpu.svg'), await svgOf({
  $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
  title: { text: 'Small CNN, batch 1, on the CPU: eager vs jit', subtitle: [`median ms with IQR (sn.benchmark blockedAutorange) · ${date}`, machineNow] },
  data: { values: rows },
  width: 420,
  height: 200,
  layer: [
    { mark: { type: 'bar', color: '#4c78a8' }, encoding: { y: { field: 'variant', type: 'nominal', sort: null, title: null }, x: { field: 'median', type: 'quantitative', title: 'ms (lower is better)' } } },
    { mark: { type: 'rule', strokeWidth: 2, color: '#222' }, encoding: { y: { field: 'variant', type: 'nominal', sort: null }, x: { field: 'p25', type: 'quantitative' }, x2: { field: 'p75' } } },
  ],
}));

// 3. The small CNN's fused graph: clusters are the kernels the JIT made.
const f = sn.jit((t) => model.forward(t));
f(x).dispose();
const viz = await vizInstance();
const dot = f.graph().toDot(f.report().groups);
const graphSvg = viz.renderString(dot, { format: 'svg' }).replace('<svg ', `<svg data-generated="${date}, ${machineNow.replace(/"/g, '')}" `);
await writeFile(path.join(out, 'small-cnn-graph.svg'), graphSvg);
await writeFile(path.join(out, 'small-cnn-graph.dot'), dot);
const shown = path.relative(process.cwd(), out).startsWith('..') ? out : path.relative(process.cwd(), out);
console.log(`wrote ${['peers-webgpu', 'peers-cpu', 'serve-cnn', 'small-cnn-cpu', 'small-cnn-graph'].map((n) => path.join(shown, `${n}.svg`)).join(', ')} (${date}; ${machineNow})`);
