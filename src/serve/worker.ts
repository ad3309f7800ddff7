// One replica of a WorkerPool: loads the model (a module's factory or ONNX bytes) on its own sinter
// instance in this worker thread, then runs the batches the pool posts, one at a time and in order
// (the pool posts the next batch while one runs; it waits here until that one's result is posted).
import { parentPort, workerData } from 'node:worker_threads';
import * as sn from '../index.js';
import type { BatchFn } from './batcher.js';
import { type FromWorker, type ToWorker, type WorkerInit, fromWire, toWire } from './wire.js';

const init = workerData as WorkerInit;
const port = parentPort!;
const post = (m: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

async function load(): Promise<BatchFn<sn.serve.Sample, sn.TensorTree>> {
  const device = await sn.init({ device: init.device, quiet: true, threads: init.threads });
  if ('model' in init.source) return sn.loadOnnx(init.source.model, { device });
  const mod = (await import(init.source.module)) as { default?: unknown };
  if (typeof mod.default !== 'function') throw new sn.SinterError('WorkerPool', `${init.source.module} must export a default function (sn, { device, threads }) returning the batch function or model`);
  return (await mod.default(sn, { device, threads: init.threads })) as BatchFn<sn.serve.Sample, sn.TensorTree>;
}

try {
  const fn = await load();
  const device = sn.getDefaultDevice();
  const runBatch = async (m: Extract<ToWorker, { type: 'run' }>): Promise<void> => {
    try {
      const batch = fromWire(m.batch, device) as sn.serve.Sample;
      const owned: sn.Tensor[] = batch instanceof sn.Tensor ? [batch] : Object.values(batch);
      let out: sn.TensorTree;
      try {
        if (typeof fn === 'function') out = await fn(batch);
        else if (!(batch instanceof sn.Tensor)) out = await fn.run({ ...batch });
        else if (fn.inputs?.length === 1) out = await fn.run({ [fn.inputs[0]!.name]: batch });
        else throw new sn.SinterError('WorkerPool', `the model has ${fn.inputs?.length ?? 0} inputs: pass samples as objects of named tensors`);
      } finally {
        owned.forEach((t) => t.dispose());
      }
      const transfer: ArrayBuffer[] = [];
      const leaves: sn.Tensor[] = [];
      const collect = (t: unknown): void => {
        if (t instanceof sn.Tensor) leaves.push(t);
        else if (t && typeof t === 'object') Object.values(t).forEach(collect);
      };
      collect(out);
      try {
        post({ type: 'result', id: m.id, outputs: await toWire(out, transfer) }, transfer);
      } finally {
        new Set(leaves).forEach((t) => t.dispose());
      }
    } catch (e) {
      const err = e as Error;
      post({ type: 'error', id: m.id, name: err?.name ?? 'Error', message: err?.message ?? String(e) });
    }
  };
  // runBatch settles, never rejects: the chain runs every batch.
  let previous = Promise.resolve();
  port.on('message', (m: ToWorker) => {
    // Draining waits for the device too: the pool ends this thread next, and ending a thread whose Dawn
    // device still runs a dispatch aborts the whole process (bench/quant-swiftshader-probe.mjs).
    if (m.type === 'drain') previous = previous.then(() => sn.synchronize(device)).catch(() => {}).then(() => post({ type: 'drained' }));
    else previous = previous.then(() => runBatch(m));
  });
  post({ type: 'ready', device });
} catch (e) {
  post({ type: 'failed', message: (e as Error)?.message ?? String(e) });
}
