import { SinterError } from '../../errors.js';
import type { GraphProto, ModelProto, TensorProto } from './proto.js';

// Where a model's bytes and its external data come from: bytes given by the caller, a file path or file: URL (read
// with node:fs in Node), or an http(s)/blob/data URL (fetched, with progress, in the browser and in Node).

/** Bytes, or where to get them: a file path (Node), a file: URL (Node) or an http(s), blob: or data: URL. */
export type ByteSource = Uint8Array | ArrayBuffer | string | URL;

/** Called as a download or file read advances: bytes so far, and the total when the server says (else undefined). */
export type ProgressCallback = (progress: { url: string; loaded: number; total: number | undefined }) => void;

const FETCHED = /^(https?|blob|data):/i;

function isNode(): boolean {
  return typeof process !== 'undefined' && typeof process.versions?.node === 'string';
}

/** A module imported by name at run time, so browser bundles never reference node: builtins. */
async function nodeModule<T>(name: string): Promise<T> {
  return (await import(/* @vite-ignore */ name)) as T;
}

/** The location of a source as a URL string or a path (undefined for bytes): what relative external files resolve against. */
export function locationOf(source: ByteSource): string | undefined {
  if (source instanceof URL) return source.href;
  return typeof source === 'string' ? source : undefined;
}

/** The bytes of `source`; URLs are fetched and paths and file: URLs read from disk in Node, both reporting progress. */
export async function readSource(source: ByteSource, what: string, onProgress?: ProgressCallback): Promise<Uint8Array> {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (!(source instanceof URL) && typeof source !== 'string') {
    throw new SinterError('loadOnnx', `${what} must be bytes (Uint8Array or ArrayBuffer), a file path or a URL, got ${source === null ? 'null' : typeof source}`);
  }
  const text = source instanceof URL ? source.href : source;
  if (FETCHED.test(text) || !isNode()) return fetchBytes(new URL(text, globalThis.location?.href).href, what, onProgress);
  const path = text.startsWith('file:') ? (await nodeModule<typeof import('node:url')>('node:url')).fileURLToPath(text) : text;
  const fs = await nodeModule<typeof import('node:fs/promises')>('node:fs/promises');
  try {
    return await readFileWithProgress(fs, path, onProgress);
  } catch (e) {
    throw new SinterError('loadOnnx', `cannot read ${what} from '${path}': ${(e as Error).message}`);
  }
}

/** Reads a local file into one buffer of its size in 4 MiB chunks, reporting progress after each (as fetches do). */
async function readFileWithProgress(fs: typeof import('node:fs/promises'), path: string, onProgress?: ProgressCallback): Promise<Uint8Array> {
  const file = await fs.open(path, 'r');
  try {
    const total = (await file.stat()).size;
    const bytes = new Uint8Array(total);
    let loaded = 0;
    while (loaded < total) {
      const { bytesRead } = await file.read(bytes, loaded, Math.min(CHUNK_BYTES, total - loaded), loaded);
      if (bytesRead === 0) throw new Error(`the file ended after ${loaded} of ${total} bytes`);
      loaded += bytesRead;
      onProgress?.({ url: path, loaded, total });
    }
    if (total === 0) onProgress?.({ url: path, loaded: 0, total: 0 });
    return bytes;
  } finally {
    await file.close();
  }
}

const CHUNK_BYTES = 4 << 20;

/** Fetches a URL into one buffer, reporting progress per chunk; sized from Content-Length when the server sends it. */
async function fetchBytes(url: string, what: string, onProgress?: ProgressCallback): Promise<Uint8Array> {
  let response: Response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new SinterError('loadOnnx', `cannot fetch ${what} from ${url}: ${(e as Error).message}`);
  }
  if (!response.ok) throw new SinterError('loadOnnx', `cannot fetch ${what} from ${url}: HTTP ${response.status} ${response.statusText}`);
  const header = Number(response.headers.get('content-length'));
  const total = Number.isFinite(header) && header > 0 ? header : undefined;
  if (!response.body) {
    const bytes = new Uint8Array(await response.arrayBuffer());
    onProgress?.({ url, loaded: bytes.length, total: bytes.length });
    return bytes;
  }
  // Chunks are written into one buffer of the announced size (grown if the server sent more), so no second copy is made.
  let buffer = new Uint8Array(total ?? 1 << 20), loaded = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (loaded + value.length > buffer.length) {
      const grown = new Uint8Array(Math.max(buffer.length * 2, loaded + value.length));
      grown.set(buffer.subarray(0, loaded));
      buffer = grown;
    }
    buffer.set(value, loaded);
    loaded += value.length;
    onProgress?.({ url, loaded, total });
  }
  return loaded === buffer.length ? buffer : buffer.subarray(0, loaded);
}

/** Every TensorProto of the model (initializers and tensor attributes, in subgraphs too). */
function* tensorsOf(g: GraphProto): Generator<TensorProto> {
  yield* g.initializer;
  for (const node of g.node) {
    for (const a of node.attribute) {
      if (a.t) yield a.t;
      yield* a.tensors;
      if (a.g) yield* tensorsOf(a.g);
      for (const sub of a.graphs) yield* tensorsOf(sub);
    }
  }
}

/** Resolves `location` (relative, as ONNX stores it) against the model's own URL or path. */
function besideModel(model: string, location: string): string {
  if (FETCHED.test(model) || model.startsWith('file:') || !isNode()) return new URL(location, new URL(model, globalThis.location?.href)).href;
  const slash = Math.max(model.lastIndexOf('/'), model.lastIndexOf('\\'));
  return slash < 0 ? location : `${model.slice(0, slash + 1)}${location}`;
}

/**
 * Points every tensor whose data lives in an external file at its bytes (a view, not a copy): each file comes from
 * `given[location]` (bytes, a path or a URL), or else from beside the model (`modelLocation`).
 */
export async function resolveExternalData(
  model: ModelProto, modelLocation: string | undefined, given: Readonly<Record<string, ByteSource>>, onProgress?: ProgressCallback,
): Promise<void> {
  if (!model.graph) return;
  const files = new Map<string, Promise<Uint8Array>>();
  const external = [...tensorsOf(model.graph)].filter((t) => t.dataLocation === 1 || t.externalData.length > 0);
  for (const t of external) {
    const name = `tensor '${t.name ?? ''}'`;
    const entry = (key: string) => t.externalData.find((e) => e.key === key)?.value;
    const location = entry('location');
    if (!location) throw new SinterError('loadOnnx', `${name} keeps its data in an external file but names no location`);
    if (!(location in given)) {
      if (location.startsWith('/') || /^[a-z]+:/i.test(location) || location.split(/[\\/]/).includes('..')) {
        throw new SinterError('loadOnnx', `${name}'s external data location '${location}' must be a file beside the model (a relative path without '..')`);
      }
      if (modelLocation === undefined) {
        throw new SinterError('loadOnnx', `${name} keeps its data in '${location}': pass its bytes or URL as loadOnnx(bytes, { externalData: { '${location}': … } }), or load the model from its path or URL so the file is found beside it`);
      }
    }
    if (!files.has(location)) files.set(location, readSource(given[location] ?? besideModel(modelLocation!, location), `external data '${location}'`, onProgress));
  }
  for (const t of external) {
    const location = t.externalData.find((e) => e.key === 'location')!.value!;
    const bytes = await files.get(location)!;
    const number = (key: string, fallback: number) => {
      const v = t.externalData.find((e) => e.key === key)?.value;
      const n = v === undefined ? fallback : Number(v);
      if (!Number.isSafeInteger(n) || n < 0) throw new SinterError('loadOnnx', `tensor '${t.name ?? ''}' has an invalid external data ${key} '${v}'`);
      return n;
    };
    const offset = number('offset', 0), length = number('length', bytes.length - offset);
    if (offset + length > bytes.length) {
      throw new SinterError('loadOnnx', `tensor '${t.name ?? ''}' claims bytes ${offset}–${offset + length} of '${location}', which holds ${bytes.length}`);
    }
    t.rawData = bytes.subarray(offset, offset + length);
    t.dataLocation = 0;
    t.externalData = [];
  }
}
