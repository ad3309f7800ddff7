import type { Metafile } from 'esbuild';

/** Why a bundle is not fit for browsers: a Node or Dawn module bundled in, or an import left for the page to resolve. */
export function browserProblems(metafile: Metafile, text: string): string[];
/** Bundles src/index.ts for browsers into `outfile`; throws listing the problems if Node modules got in. Returns the bundle's text. */
export function bundleBrowser(outfile?: string): Promise<string>;
