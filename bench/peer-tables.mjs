// The README's benchmark tables, made from a recorded peer-harness run (bench/results/*-peers*.json, written by
// `npm run bench:peers` and copied there), so every figure the README quotes comes from a committed run.
// Usage: node bench/peer-tables.mjs [results.json]   (default: the newest recorded full run) — prints markdown.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** A recorded run: `file` if given, else the newest full run in bench/results (file names start with their date). */
export function latestRun(file) {
  if (file) return { file, run: JSON.parse(readFileSync(file, 'utf8')) };
  const dir = path.join(here, 'results');
  const newest = readdirSync(dir).filter((f) => /peers-full\.json$/.test(f)).sort().at(-1);
  if (!newest) throw new Error(`no recorded full peer run in ${dir}`);
  return { file: path.join('bench', 'results', newest), run: JSON.parse(readFileSync(path.join(dir, newest), 'utf8')) };
}

const GROUPS = {
  webgpu: { title: 'WebGPU (all on the same Dawn adapter)', peers: ['sinter-webgpu', 'sinter-webgpu-eager', 'jax-webgpu', 'tfjs-webgpu'] },
  cpu: { title: 'CPU (WebAssembly; sinter-cpu and ort-web-wasm at 2 threads, -1t at one, as tfjs-wasm and jax-wasm run in Node; ort-node is native C++ for scale)', peers: ['sinter-cpu', 'sinter-cpu-1t', 'sinter-cpu-eager', 'tfjs-wasm', 'ort-web-wasm', 'ort-web-wasm-1t', 'jax-wasm', 'ort-node'] },
};

/** One table per device group: header (workload, then peers) and rows of median ms (null where a peer has no figure). */
export function peerTables(run) {
  const workloads = Object.keys(run.workloads ?? {}).length ? Object.keys(run.workloads) : [...new Set(Object.values(run.peers).flatMap((p) => Object.keys(p.workloads ?? {})))];
  const label = (w) => run.workloads?.[w]?.label ?? w;
  return Object.fromEntries(Object.entries(GROUPS).map(([key, g]) => {
    const peers = g.peers.filter((p) => run.peers[p]);
    const rows = workloads.map((w) => [label(w), ...peers.map((p) => run.peers[p].workloads?.[w]?.median_ms ?? null)]);
    return [key, { title: g.title, header: ['workload', ...peers], rows }];
  }));
}

const fmt = (ms) => (ms === null ? '—' : ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3));

export function markdown(table) {
  return [`| ${table.header.join(' | ')} |`, `| --- |${' ---: |'.repeat(table.header.length - 1)}`, ...table.rows.map(([w, ...ms]) => `| ${w} | ${ms.map(fmt).join(' | ')} |`)].join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { file, run } = latestRun(process.argv[2]);
  const m = run.machine;
  console.log(`Recorded run \`${file}\`, ${run.startedAt} (${run.quick ? 'quick' : 'full'}): ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, Node ${m.node}; median ms per run (upload inputs, compute, read back).\n`);
  for (const t of Object.values(peerTables(run))) console.log(`${t.title}:\n\n${markdown(t)}\n`);
}
