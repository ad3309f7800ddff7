// sinter beside the peers, through the shared harness (../shared/peers, whose peers/sinter.mjs drives
// this library's public API from dist/index.js). The harness writes its results and installs its
// peers next to itself, and shared/ is read-only, so it runs from a copy in the system's temp folder
// (the peers' `npm ci` happens once there). Build first (`npm run bench:peers` does).
// Usage: node bench/peers/run.mjs [harness options]   (default: the workloads and peers below, --quick)
import { execFileSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const harness = path.resolve(root, '../shared/peers');
const work = path.join(os.tmpdir(), 'sinter-peer-bench');
const dist = path.join(root, 'dist', 'index.js');
if (!existsSync(path.join(harness, 'run.mjs'))) throw new Error(`no peer harness at ${harness}`);
if (!existsSync(dist)) throw new Error(`${dist} is missing: run \`npm run build\` first`);

// Refresh the harness's files; keep the installed peers and the generated models.
const skip = new Set(['node_modules', 'out', 'models', 'tmp', 'results.json', 'results.md']);
cpSync(harness, work, { recursive: true, filter: (src) => src === harness || !skip.has(path.relative(harness, src).split(path.sep)[0]) });
// The copy keeps shared/'s read-only modes; npm and the harness write there.
execFileSync('chmod', ['-R', 'u+w', work]);
// sinter's CPU peer at stated thread counts (bench/peers/sinter-threads.mjs): sinter-cpu at one thread per core (as
// ort-web-wasm), sinter-cpu-1t at one (as tfjs-wasm and jax-wasm, which run one thread in Node, and ort-web-wasm-1t).
cpSync(path.join(root, 'bench/peers/sinter-threads.mjs'), path.join(work, 'peers/sinter-threads.mjs'));
appendFileSync(path.join(work, 'lib/peers.mjs'), `
// Added by sinter's bench/peers/run.mjs: sinter's CPU peer with its thread count set and reported.
Object.assign(PEERS.find((p) => p.id === 'sinter-cpu'), { module: 'peers/sinter-threads.mjs', variant: 'cpu' });
PEERS.push({ id: 'sinter-cpu-1t', module: 'peers/sinter-threads.mjs', variant: 'cpu-1t', gpu: false, default: false });
`);
if (!existsSync(path.join(work, 'node_modules'))) {
  execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: work, stdio: 'inherit' });
}

// sinter under jit(fn) and called eagerly (-eager), on each device; on the CPU at all cores and at one thread (-1t).
const PEERS = ['sinter-webgpu', 'sinter-webgpu-eager', 'sinter-cpu', 'sinter-cpu-1t', 'sinter-cpu-eager', 'jax-webgpu', 'tfjs-webgpu', 'ort-node', 'tfjs-wasm', 'ort-web-wasm', 'ort-web-wasm-1t', 'jax-wasm', 'tfjs-cpu'];
const WORKLOADS = ['matmul_256', 'matmul_512', 'matmul_1024', 'conv2d', 'eltwise', 'softmax', 'layernorm'];
const args = process.argv.length > 2 ? process.argv.slice(2) : ['--quick', '--peers', PEERS.join(','), '--workloads', WORKLOADS.join(',')];
console.log(`running the peer harness from ${work}: SINTER_DIST=${dist} node run.mjs ${args.join(' ')}`);
execFileSync(process.execPath, ['run.mjs', ...args], { cwd: work, stdio: 'inherit', env: { ...process.env, SINTER_DIST: dist } });
console.log(`results: ${path.join(work, 'results.md')}`);
