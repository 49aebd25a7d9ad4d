// Which build the benchmark measures: ./dist by default, or the directory in BENCH_DIST (`run.mjs --dist DIR`),
// so a change can be compared against a baseline build in the same way.
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const DIST = process.env.BENCH_DIST || fileURLToPath(new URL('../../dist/', import.meta.url));

export function distModule(path) {
  return import(pathToFileURL(join(DIST, path)).href);
}
