// The package's library surface, for embedding the pipeline in another Node program. The CLI
// (src/cli.ts) is built from these same pieces.
export { parseConfig, type ExporterConfig } from './config.js';
export { startDaemon, type RunningDaemon } from './daemon.js';
export { ConfigError } from './errors.js';
export { normalize, type NormalizeOptions } from './events/normalize.js';
export { SectionTracker } from './events/tracker.js';
export type * from './events/types.js';
export { Pipeline } from './pipeline.js';
export { unpickle, UnpickleError } from './reporter/unpickle.js';
export { FrameReader, detectHeader, encodeFrame, type HeaderFormat } from './reporter/framing.js';
export { pickle } from './reporter/pickle-writer.js';
export { VERSION } from './version.js';
