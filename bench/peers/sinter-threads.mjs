// sinter's CPU peer at a stated thread count, for the peer harness (bench/peers/run.mjs copies this file next to the
// harness's peers/sinter.mjs and registers it): variant 'cpu' runs at one thread per core, 'cpu-1t' at one thread.
// The thread count goes in through SINTER_CPU_THREADS, which the library reads as it loads (before sinter.mjs imports
// it), and is reported in the harness's threads column beside the other peers' counts.
import os from 'node:os';
import { createPeer as createSinterPeer } from './sinter.mjs';

export async function createPeer(variant) {
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  const threads = variant === 'cpu-1t' ? 1 : cores;
  process.env.SINTER_CPU_THREADS = String(threads);
  const peer = await createSinterPeer('cpu');
  return { ...peer, info: { ...peer.info, threads } };
}
