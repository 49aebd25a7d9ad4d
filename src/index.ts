// The package's library surface, for embedding the pipeline in another Node program. The CLI
// (src/cli.ts) is built from these same pieces.
export { parseConfig, type ExporterConfig } from './config.js';
export { startDaemon, type RunningDaemon } from './daemon.js';
export { ConfigError } from './errors.js';
export { normalize, SectionTracker, type NormalizeOptions } from './events/index.js';
export type * from './events/types.js';
export { Pipeline } from './pipeline.js';
export { pickle, unpickle, UnpickleError } from './python/index.js';
export { FrameReader, detectFormat, encodeFrame, type FrameFormat } from './reporter/index.js';
export { VERSION } from './version.js';
