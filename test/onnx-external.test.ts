import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { TYPE, info, model, node, values } from './onnx-builder.js';

// Models whose tensors live in a side file (model.onnx + model.onnx_data, as exporters write above 2 GB): read from
// bytes given in `externalData`, from beside the model's path or file: URL in Node, and fetched beside its http URL
// (a local server stands in for the browser's origin) with progress reported.

/** y = x·2 + b with W and b in 'model.onnx_data' (b after 16 bytes of padding, as the ONNX writer aligns). */
function externalModel(): { bytes: Uint8Array; data: Uint8Array } {
  const data = new Uint8Array(16 + 8 + 16);
  new Float32Array(data.buffer, 0, 2).set([2, 2]);
  new Float32Array(data.buffer, 16, 2).set([10, 20]);
  const ext = (offset: number, length: number) => [{ key: 'location', value: 'model.onnx_data' }, { key: 'offset', value: String(offset) }, { key: 'length', value: String(length) }];
  const bytes = model({
    nodes: [node('Mul', ['x', 'w'], ['xw']), node('Add', ['xw', 'b'], ['y'])],
    inputs: [info('x', 'float32', [2])],
    outputs: [info('y', 'float32', [2])],
    initializers: [
      { name: 'w', dims: [2], dataType: TYPE.float32, dataLocation: 1, externalData: ext(0, 8) },
      { name: 'b', dims: [2], dataType: TYPE.float32, dataLocation: 1, externalData: ext(16, 8) },
    ],
  });
  return { bytes, data };
}

async function check(m: sn.OnnxModel): Promise<void> {
  const { y } = await m.run({ x: sn.tensor([1, 2]) });
  expect(await values(y!)).toEqual([12, 24]);
  m.dispose();
}

describe('ONNX external data', () => {
  it('reads tensors from bytes given in externalData', async () => {
    const { bytes, data } = externalModel();
    await check(await sn.loadOnnx(bytes, { externalData: { 'model.onnx_data': data } }));
  });

  it('reads model.onnx_data beside the model from a path, a file: URL object and a file: URL string', async () => {
    const { bytes, data } = externalModel();
    const dir = await mkdtemp(path.join(tmpdir(), 'sinter-external-'));
    const file = path.join(dir, 'model.onnx');
    await writeFile(file, bytes);
    await writeFile(path.join(dir, 'model.onnx_data'), data);
    const seen: { url: string; loaded: number; total: number | undefined }[] = [];
    await check(await sn.loadOnnx(file, { onProgress: (p) => seen.push(p) }));
    // Local files report progress as downloads do: per chunk, ending at the file's size.
    const dataFile = path.join(dir, 'model.onnx_data');
    expect(seen.filter((p) => p.url === file).at(-1)).toEqual({ url: file, loaded: bytes.length, total: bytes.length });
    expect(seen.filter((p) => p.url === dataFile).at(-1)).toEqual({ url: dataFile, loaded: data.length, total: data.length });
    await check(await sn.loadOnnx(pathToFileURL(file)));
    await check(await sn.loadOnnx(pathToFileURL(file).href));
  });

  it('fetches an http URL and its external data beside it, reporting progress', async () => {
    const { bytes, data } = externalModel();
    const files: Record<string, Uint8Array> = { '/models/model.onnx': bytes, '/models/model.onnx_data': data };
    const server = createServer((req, res) => {
      const body = files[req.url ?? ''];
      if (!body) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-length': body.length }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/models`;
      const seen: { url: string; loaded: number; total: number | undefined }[] = [];
      await check(await sn.loadOnnx(`${base}/model.onnx`, { onProgress: (p) => seen.push(p) }));
      const last = (url: string) => seen.filter((p) => p.url === url).at(-1);
      expect(last(`${base}/model.onnx`)).toEqual({ url: `${base}/model.onnx`, loaded: bytes.length, total: bytes.length });
      expect(last(`${base}/model.onnx_data`)).toEqual({ url: `${base}/model.onnx_data`, loaded: data.length, total: data.length });
      await expect(sn.loadOnnx(`${base}/missing.onnx`)).rejects.toThrow(`loadOnnx: cannot fetch the model from ${base}/missing.onnx: HTTP 404`);
    } finally {
      server.close();
    }
  });
});
