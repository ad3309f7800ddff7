import type { Server } from 'node:http';
/** Writes the web demo (bundle, page, sample image, models) into `outdir` (default dist/web) and returns it. */
export function buildWebDemo(outdir?: string): Promise<string>;
/** Serves `dir` on 127.0.0.1:`port` (0: any free port). */
export function serveWebDemo(dir: string, port?: number): Promise<{ server: Server; url: string }>;
