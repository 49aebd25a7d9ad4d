// Deterministic trace, span and run ids (DESIGN §2): the same job run always maps to the same ids, so a
// child can be linked before its parent starts and a backfill of a job reproduces the spans it sent live.
import { hash } from 'node:crypto';

const ZERO_TRACE_ID = '00000000000000000000000000000000';
const ZERO_SPAN_ID = '0000000000000000';

// Different prefixes keep a trace id from ever equalling the first half of some span id's hash input.
const TRACE_DOMAIN = 'pyats-exporter/trace\0';
const SPAN_DOMAIN = 'pyats-exporter/span\0';

/** 32 lowercase hex chars from sha256 of the run id; never all zero (an invalid W3C trace id). */
export function traceIdFor(runId: string): string {
  const id = hash('sha256', TRACE_DOMAIN + runId, 'hex').slice(0, 32);
  // All-zero ids are invalid and would be dropped by every backend; 2^-128 odds, but cheap to rule out.
  return id === ZERO_TRACE_ID ? '00000000000000000000000000000001' : id;
}

/** 16 lowercase hex chars from sha256 of (run id, seq_num); never all zero. */
export function spanIdFor(runId: string, seqNum: number): string {
  // One-shot hash (Node >= 20.12) of the same bytes a createHash().update() chain would see: the same ids,
  // about five times cheaper, and this runs once per section.
  const id = hash('sha256', `${SPAN_DOMAIN}${runId}\0${seqNum}`, 'hex').slice(0, 16);
  return id === ZERO_SPAN_ID ? '0000000000000001' : id;
}

// Date can represent ±8.64e15 ms around the epoch; toISOString throws outside it.
const MAX_DATE_MS = 8.64e15;

/**
 * The run id of a job: `${jobId}@${ISO time of the suite start}` (e.g. `bgp_job@2024-05-01T12:00:00.123Z`)
 * when the TestSuite's start time is known, else `${jobId}@${fallback}` (the caller picks a fallback that is
 * unique per run, e.g. the time the exporter first saw the job or the reporter socket path plus that time).
 */
export function runIdFor(jobId: string, suiteStartMs: number | undefined, fallback: string): string {
  if (suiteStartMs !== undefined && Number.isFinite(suiteStartMs) && Math.abs(suiteStartMs) <= MAX_DATE_MS) {
    return `${jobId}@${new Date(suiteStartMs).toISOString()}`;
  }
  return `${jobId}@${fallback}`;
}
