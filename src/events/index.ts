// The events stage of the pipeline (DESIGN §2): the typed records, the normalizer that makes them from raw
// event dicts, the tracker that pairs them into sections with deterministic ids, and the sink fan-out.
export * from './types.js';
export { normalize, toEpochMs, type NormalizeOptions } from './normalize.js';
export { SectionTracker, type TrackerOptions, type TrackerRejectReason } from './tracker.js';
export { SinkFanout } from './fanout.js';
export { verdictOf, worstResult } from './results.js';
export { ciContext, parseEnvTxt, parseTraceParent, type CiContext, type TraceParent } from './ci.js';
export { localZoneName, resolveZone, type Zone } from './timezone.js';
