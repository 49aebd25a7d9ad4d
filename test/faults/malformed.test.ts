// Malformed input end to end: a misbehaving CPython reporter (fault_reporter.py) sends broken frames, non-event
// pickles, bad fields, huge strings, deep nesting, prototype keys, invalid UTF-8 and duplicates to the real
// binary, and breaks the request protocol (refused subscriptions, a reply that is not None, a refused
// get_testsuite, bad chunk headers, messages in many chunks or over the limit); every rejection must be counted
// by reason and logged, the stream must go on where framing allows, a framing error must reset the connection
// and reconnect, and the exporter must never send what would kill a real reporter.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REJECT_REASONS } from '../../src/events/types.js';
import { parseMetrics, runExporter, sumOf } from '../helpers/exporter-process.js';
import { startOtlpReceiver, type DecodedSpan, type OtlpReceiver } from '../helpers/otlp-receiver.js';
import { promtoolFindings } from '../helpers/promtool.js';
import { startFaultReporter, type FaultManifest } from './fault-reporter.js';
import { TempDirs, byTrace, seqOf, until } from './support.js';

const MAX_ATTRIBUTE_LENGTH = 100;
// Small enough that the oversize message stays quick to send; the 3 MB event of the scenario fits.
const MAX_FRAME_BYTES = 8 * 1024 * 1024;
const FRAME_REASONS = ['decode_error', 'frame_too_large', 'truncated_frame', 'undetectable_header'];
const PROTOCOL_REASONS = ['subscribe_refused', 'attach_failed', 'bad_chunk_header', 'frame_too_large'];

let receiver: OtlpReceiver;
const dirs = new TempDirs();

beforeAll(async () => {
  receiver = await startOtlpReceiver();
});
afterAll(async () => {
  await receiver.close();
  dirs.removeAll();
});

function otlpEnv(serviceName: string): NodeJS.ProcessEnv {
  return {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_SERVICE_NAME: serviceName,
  };
}

function spansOf(service: string, jobId: string): DecodedSpan[] {
  return receiver.spans.filter(
    (s) => s.resource['service.name'] === service && s.attributes['pyats.job.id'] === jobId,
  );
}

function isWellFormed(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}

/** The exporter asked what pyATS's own clients ask, and never anything that would kill a real reporter. */
function checkRequests(manifest: FaultManifest): void {
  expect(manifest.requests.filter((r) => r.problem !== null)).toEqual([]);
  const names = new Set(manifest.requests.map((r) => r.name));
  for (const name of names) {
    expect(['subscribe_client', 'ping', 'register_client', 'get_testsuite', 'get_section']).toContain(name);
  }
  expect([...names]).toEqual(
    expect.arrayContaining(['subscribe_client', 'ping', 'register_client', 'get_testsuite']),
  );
}

/** Connections, resets and clean ends on /metrics exactly as the manifest's subscriptions ended. */
function checkConnections(samples: ReturnType<typeof parseMetrics>, manifest: FaultManifest): void {
  const ends = (reason: string): number => manifest.connections.filter((c) => c.disconnect === reason).length;
  expect(sumOf(samples, 'pyats_exporter_reporter_connections_total')).toBe(manifest.connections.length);
  expect(sumOf(samples, 'pyats_exporter_reporter_disconnects_total', { reason: 'reset' })).toBe(
    ends('reset'),
  );
  expect(sumOf(samples, 'pyats_exporter_reporter_disconnects_total', { reason: 'eof' })).toBe(ends('eof'));
}

describe('malformed reporter input', () => {
  it.each([false, true])(
    'counts and logs every rejection by reason, keeps or resets the connection as framing allows (decode thread: %s)',
    async (decodeThread) => {
      const socket = join(dirs.make(), 'reporter.sock');
      const service = `faults-malformed-${decodeThread}`;
      const exporter = await runExporter(
        [
          '--reporter-socket',
          socket,
          '--listen',
          '127.0.0.1:0',
          '--max-attribute-length',
          String(MAX_ATTRIBUTE_LENGTH),
          '--max-frame-bytes',
          String(MAX_FRAME_BYTES),
          '--log-level',
          'info',
          ...(decodeThread ? ['--decode-thread'] : []),
        ],
        otlpEnv(service),
      );
      const reporter = await startFaultReporter({
        socket,
        scenario: 'malformed',
        maxFrameBytes: MAX_FRAME_BYTES,
      });
      try {
        await reporter.done;
        const manifest = await reporter.manifest();
        const text = await until('the last job on /metrics', async () => {
          const t = await exporter.scrape();
          return sumOf(parseMetrics(t), 'pyats_job_runs_total', { job: 'recovered_job' }) === 1
            ? t
            : undefined;
        });
        const samples = parseMetrics(text);

        // Every bad input counted under its reason, nothing else: as a rejected event, or (for a descriptive
        // field such as a time or a name) as a dropped field of an event that was kept.
        const reasons = new Set([...REJECT_REASONS, ...FRAME_REASONS, ...Object.keys(manifest.rejected)]);
        for (const reason of reasons) {
          const rejected = sumOf(samples, 'pyats_exporter_events_rejected_total', { reason });
          const dropped = sumOf(samples, 'pyats_exporter_event_fields_dropped_total', { reason });
          expect(rejected + dropped, reason).toBe(manifest.rejected[reason] ?? 0);
        }
        // Bad times cost the field, not the section.
        expect(
          sumOf(samples, 'pyats_exporter_event_fields_dropped_total', { reason: 'bad_time' }),
        ).toBeGreaterThan(0);
        // The scenario exercises every reason there is.
        expect(Object.keys(manifest.rejected).sort()).toEqual([...REJECT_REASONS, ...FRAME_REASONS].sort());

        // ... and each reason named in a log line.
        for (const reason of Object.keys(manifest.rejected)) {
          const logged = exporter.logs.some((l) => l['reason'] === reason || l['code'] === reason);
          expect(logged, `a log line for ${reason}`).toBe(true);
        }

        // Decode errors kept the connection; the oversize message and the unframeable bytes reset it, the cut
        // frame ended with the stream: four connections, each job's sections delivered.
        expect(manifest.connections.map((c) => c.disconnect)).toEqual(['reset', 'eof', 'reset', 'eof']);
        checkConnections(samples, manifest);
        checkRequests(manifest);
        expect(sumOf(samples, 'pyats_job_runs_total', { job: 'faulty_job', result: 'failed' })).toBe(1);
        expect(sumOf(samples, 'pyats_job_runs_total', { job: 'after_reset', result: 'passed' })).toBe(1);
        expect(sumOf(samples, 'pyats_job_runs_total', { job: 'recovered_job', result: 'passed' })).toBe(1);
        expect(sumOf(samples, 'pyats_sections_abandoned_total')).toBe(0);
        expect(await promtoolFindings(text)).toEqual([]);

        for (const job of manifest.jobs) {
          const spans = await until(`spans of ${job.job_id}`, () => {
            const found = spansOf(service, job.job_id);
            return found.length >= job.sections.length ? found : undefined;
          });
          expect(byTrace(spans).size, `one trace for ${job.job_id}`).toBe(1);
          const bySeq = new Map<number, DecodedSpan[]>();
          for (const span of spans) bySeq.set(seqOf(span), [...(bySeq.get(seqOf(span)) ?? []), span]);
          for (const section of job.sections) {
            const found = bySeq.get(section.seq_num) ?? [];
            expect(found, `${job.job_id} seq ${section.seq_num}`).toHaveLength(1);
            const span = found[0] as DecodedSpan;
            expect(span.attributes['pyats.section.type']).toBe(section.type);
            expect(span.attributes['pyats.section.incomplete']).toBeUndefined();
            for (const value of Object.values(span.attributes)) {
              if (typeof value === 'string') {
                expect(value.length).toBeLessThanOrEqual(MAX_ATTRIBUTE_LENGTH);
                expect(isWellFormed(value)).toBe(true);
              }
            }
          }
          // Only sections whose events were rejected may be missing from the manifest's list; never extras of
          // the good ones (duplicates, repeated stops).
          for (const [seq, found] of bySeq) expect(found, `${job.job_id} seq ${seq}`).toHaveLength(1);
        }

        const faulty = spansOf(service, 'faulty_job');
        const bySeq = new Map(faulty.map((s) => [seqOf(s), s]));
        const named = (id: string): DecodedSpan =>
          faulty.find((s) => s.attributes['pyats.section.id'] === id) as DecodedSpan;
        const root = faulty.find((s) => s.parentSpanId === '') as DecodedSpan;
        expect(root.attributes['pyats.section.type']).toBe('TestSuite');
        // The step whose testcase's events were all rejected: still exported, re-parented to the root, flagged.
        const orphan = named('orphan_step');
        expect(orphan.attributes['pyats.section.orphan']).toBe(true);
        expect(orphan.parentSpanId).toBe(root.spanId);
        expect(bySeq.has(Number(orphan.attributes['pyats.section.parent_seq_num']))).toBe(false);
        // Every other span's parent is in the trace.
        for (const span of faulty) {
          if (span === root || span === orphan) continue;
          expect(span.attributes['pyats.section.orphan']).toBeUndefined();
          expect(faulty.some((p) => p.spanId === span.parentSpanId)).toBe(true);
        }
        // Huge strings cut to --max-attribute-length; prototype keys and nesting in unknown keys are inert.
        expect(named('huge_name').attributes['pyats.section.name']).toBe('n'.repeat(MAX_ATTRIBUTE_LENGTH));
        expect(named('huge_name').attributes['pyats.section.logfile']).toBe('L'.repeat(MAX_ATTRIBUTE_LENGTH));
        expect(named('proto_keys').attributes['pyats.section.result']).toBe('passed');
        expect(named('nested_extra')).toBeDefined();
        // Invalid UTF-8 (raw bytes, and CPython's surrogatepass for a lone surrogate) arrives as U+FFFD.
        expect(named('bad\ufffd\ufffdutf8\ufffd')).toBeDefined();
        expect(named('lone_\ufffd\ufffd\ufffd_surrogate')).toBeDefined();
        expect(named('repeated').attributes['pyats.section.result']).toBe('passed');
        const early = named('stop_before_start');
        expect(early.attributes['pyats.section.incomplete']).toBeUndefined();
        expect(Number(early.endTimeUnixNano - early.startTimeUnixNano)).toBe(1e9);
      } finally {
        await reporter.kill();
        const { code } = await exporter.stop();
        expect(code).toBe(0);
      }
    },
  );

  it('counts each break of the request protocol, resets where framing is lost and exports every good job', async () => {
    const socket = join(dirs.make(), 'reporter.sock');
    const service = 'faults-protocol';
    const exporter = await runExporter(
      [
        '--reporter-socket',
        socket,
        '--listen',
        '127.0.0.1:0',
        '--max-attribute-length',
        String(MAX_ATTRIBUTE_LENGTH),
        '--max-frame-bytes',
        String(MAX_FRAME_BYTES),
      ],
      otlpEnv(service),
    );
    const reporter = await startFaultReporter({
      socket,
      scenario: 'protocol',
      maxFrameBytes: MAX_FRAME_BYTES,
    });
    try {
      await reporter.done;
      const manifest = await reporter.manifest();
      const text = await until('the last job on /metrics', async () => {
        const t = await exporter.scrape();
        return sumOf(parseMetrics(t), 'pyats_job_runs_total', { job: 'protocol_done' }) === 1 ? t : undefined;
      });
      const samples = parseMetrics(text);
      expect(Object.keys(manifest.rejected).sort()).toEqual([...PROTOCOL_REASONS].sort());
      for (const reason of new Set([...REJECT_REASONS, ...FRAME_REASONS, ...PROTOCOL_REASONS])) {
        expect(sumOf(samples, 'pyats_exporter_events_rejected_total', { reason }), reason).toBe(
          manifest.rejected[reason] ?? 0,
        );
      }
      for (const reason of ['subscribe_refused', 'bad_chunk_header', 'frame_too_large']) {
        expect(
          exporter.logs.some((l) => l['code'] === reason || l['reason'] === reason),
          `a log line for ${reason}`,
        ).toBe(true);
      }
      // The refusals name what the reporter said.
      const details = exporter.logs.map((l) => String(l['detail']));
      expect(details).toContain(
        'reporter refused subscribe_client: ExistingClientError: This socket already subscribed',
      );
      expect(
        details.some((d) => d.startsWith('reporter answered subscribe_client with "pong", not None')),
      ).toBe(true);
      checkConnections(samples, manifest);
      checkRequests(manifest);

      for (const job of manifest.jobs) {
        expect(sumOf(samples, 'pyats_job_runs_total', { job: job.job_id }), job.job_id).toBe(1);
        const spans = await until(`spans of ${job.job_id}`, () => {
          const found = spansOf(service, job.job_id);
          return found.length >= job.sections.length ? found : undefined;
        });
        expect(spans.map(seqOf).sort((a, b) => a - b)).toEqual(
          job.sections.map((x) => x.seq_num).sort((a, b) => a - b),
        );
        expect(byTrace(spans).size).toBe(1);
      }
      // The stop event of over 64 KiB came in two chunks: its reason cut to --max-attribute-length.
      const long = spansOf(service, 'chunky_job').find(
        (s) => s.attributes['pyats.section.id'] === 'tc_long_reason',
      );
      expect(long?.attributes['pyats.section.result']).toBe('failed');
      expect(String(long?.attributes['pyats.section.result.reason'])).toHaveLength(MAX_ATTRIBUTE_LENGTH);
      expect(sumOf(samples, 'pyats_sections_abandoned_total')).toBe(0);
    } finally {
      await reporter.kill();
      expect((await exporter.stop()).code).toBe(0);
    }
  });

  it('is idempotent when every frame comes twice and the whole job is replayed', async () => {
    const socket = join(dirs.make(), 'reporter.sock');
    const service = 'faults-duplicates';
    // A reporter framing as pyATS 20.2 did, little-endian: the exporter's requests must be framed alike.
    // --max-frame-bytes below 64 MiB: the 4-byte reply None (04 00 00 00 80 04 4e 2e) is also a plausible
    // 64 MiB big-endian frame, which the default limit leaves undecided until 64 MiB have arrived.
    const exporter = await runExporter(
      [
        '--reporter-socket',
        socket,
        '--listen',
        '127.0.0.1:0',
        '--frame-format',
        '4le',
        '--max-frame-bytes',
        String(MAX_FRAME_BYTES),
      ],
      otlpEnv(service),
    );
    const reporter = await startFaultReporter({ socket, scenario: 'duplicates', frame: '4le' });
    try {
      await reporter.done;
      const manifest = await reporter.manifest();
      const job = manifest.jobs[0];
      expect(job).toBeDefined();
      if (!job) return;
      await until('the stream to end', async () => {
        const t = parseMetrics(await exporter.scrape());
        return sumOf(t, 'pyats_exporter_reporter_disconnects_total') === 1 ? true : undefined;
      });
      const spans = await until('spans', () => {
        const found = spansOf(service, 'dup_job');
        return found.length >= job.sections.length ? found : undefined;
      });
      // Give a late duplicate the time to show up before counting.
      await new Promise((r) => setTimeout(r, 500));
      expect(spansOf(service, 'dup_job')).toHaveLength(job.sections.length);
      expect(new Set(spans.map(seqOf))).toEqual(new Set(job.sections.map((s) => s.seq_num)));
      expect(byTrace(spans).size).toBe(1);
      const samples = parseMetrics(await exporter.scrape());
      expect(sumOf(samples, 'pyats_job_runs_total', { job: 'dup_job' })).toBe(1);
      expect(sumOf(samples, 'pyats_section_results_total', { job: 'dup_job' })).toBe(job.sections.length);
      expect(sumOf(samples, 'pyats_testcase_results_total', { job: 'dup_job', result: 'failed' })).toBe(1);
      expect(sumOf(samples, 'pyats_sections_abandoned_total')).toBe(0);
      expect(sumOf(samples, 'pyats_exporter_events_rejected_total')).toBe(0);
    } finally {
      await reporter.kill();
      expect((await exporter.stop()).code).toBe(0);
    }
  });
});
