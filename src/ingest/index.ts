// The other sources: NDJSON over a Unix socket and HTTP (from the Python bridge), the capture file, and the
// replay of finished jobs (results.json, archives, captures).
export { IngestSocketServer, IngestSocketError } from './socket.js';
export { createHttpIngest } from './http.js';
export { type IngestRefusal } from './ndjson.js';
export { CaptureError, CaptureWriter, CapturingTracker } from './capture.js';
export { ReplayClock, ReplayError, createProgressReporter, replayFiles } from './replay.js';
