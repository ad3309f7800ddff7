// Builds the browser bundle: one ESM file of the library for <script type="module">, with no Node
// module in it. Node loads Dawn by a computed dynamic import (src/backend/webgpu/adapter.ts), which a
// bundler leaves alone; this build fails if the 'webgpu' package or any Node module got in anyway.
// Usage: node scripts/bundle-browser.mjs [OUTFILE]   (default dist/sinter.browser.js)
import { build } from 'esbuild';
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Why a bundle is not fit for browsers: a Node or Dawn module bundled in, or an import left for the page to resolve. */
export function browserProblems(metafile, text) {
  const problems = [];
  for (const input of Object.keys(metafile.inputs)) {
    if (/(^|\/)node_modules\/webgpu\//.test(input)) problems.push(`bundles Dawn's Node binding (${input})`);
  }
  for (const out of Object.values(metafile.outputs)) {
    for (const imp of out.imports) problems.push(`imports '${imp.path}' (${imp.kind}), which a page cannot resolve`);
  }
  // Belt and braces on the text: a static or literal dynamic import of a Node module or of Dawn, or a require.
  const literal = /\bfrom\s*["'](node:[^"']+|webgpu)["']|\bimport\s*\(\s*["'`](node:[^"'`]+|webgpu)["'`]\s*\)|\brequire\s*\(\s*["'`][^"'`]+["'`]\s*\)/g;
  for (const m of text.matchAll(literal)) problems.push(`contains \`${m[0]}\``);
  return problems;
}

/** Bundles src/index.ts for browsers into `outfile`; throws listing the problems if Node modules got in. Returns the bundle's text. */
export async function bundleBrowser(outfile = path.join(root, 'dist', 'sinter.browser.js')) {
  const result = await build({
    entryPoints: [path.join(root, 'src', 'index.ts')],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    sourcemap: true,
    metafile: true,
    write: false,
    logLevel: 'silent',
  });
  const js = result.outputFiles.find((f) => f.path.endsWith('.js'));
  const problems = browserProblems(result.metafile, js.text);
  if (problems.length) throw new Error(`browser bundle ${path.relative(root, outfile)} is not fit for browsers:\n  ${problems.join('\n  ')}`);
  await mkdir(path.dirname(outfile), { recursive: true });
  for (const f of result.outputFiles) await writeFile(f.path, f.contents);
  return js.text;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const outfile = path.resolve(process.argv[2] ?? path.join(root, 'dist', 'sinter.browser.js'));
  const text = await bundleBrowser(outfile);
  console.log(`wrote ${path.relative(process.cwd(), outfile)} (${(text.length / 1024).toFixed(0)} KiB, no Node modules)`);
}
