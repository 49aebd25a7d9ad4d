import type { Attributes, HrTime, Link, SpanContext, SpanStatus } from '@opentelemetry/api';
import { TraceState, type InstrumentationScope } from '@opentelemetry/core';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ReadableSpan, TimedEvent } from '@opentelemetry/sdk-trace-base';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { spanIdFor, traceIdFor } from '../../src/events/ids.js';
import type { FinishedSection, JobInfo } from '../../src/events/types.js';
import { encodeTraceRequest, MAX_CACHED_KEYS } from '../../src/telemetry/otlp-encoder.js';
import { previousRunLink, sectionToSpan } from '../../src/telemetry/spans.js';
import { decodeExportTraceServiceRequest } from '../helpers/otlp-receiver.js';
import { plainSpanCopy } from '../helpers/spans.js';

/** What the library writes for `spans`, as a Buffer for comparison. */
function reference(spans: ReadableSpan[]): Buffer {
  return Buffer.from(ProtobufTraceSerializer.serializeRequest(spans) ?? new Uint8Array(0));
}

function encoded(spans: ReadableSpan[]): Buffer {
  return Buffer.from(encodeTraceRequest(spans));
}

/** The number of bytes of the varint at `offset`. */
function varintWidth(bytes: Uint8Array, offset: number): number {
  let width = 1;
  while (((bytes[offset + width - 1] ?? 0) & 0x80) !== 0) width += 1;
  return width;
}

// ---- generated spans ---------------------------------------------------------------------------------------

const codeUnits = fc
  .array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 12 })
  .map((units) => String.fromCharCode(...units));

/** ASCII, any Unicode (astral included), raw UTF-16 (lone surrogates), and long runs past 127 / 16383 bytes. */
const text = fc.oneof(
  { weight: 4, arbitrary: fc.string() },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme' }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary' }) },
  { weight: 2, arbitrary: codeUnits },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom('a', 'é', '€', '😀', '\ud800', 'x\udc00'), fc.integer({ min: 40, max: 9000 }))
      .map(([unit, n]) => unit.repeat(n)),
  },
);

const key = fc.oneof(
  { weight: 5, arbitrary: text },
  { weight: 1, arbitrary: fc.constantFrom('0', '7', '42') },
);

const number = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.maxSafeInteger(),
  fc.constantFrom(
    2 ** 53,
    2 ** 60,
    -(2 ** 63),
    2 ** 63,
    -(2 ** 64),
    2 ** 32,
    -1,
    -0,
    0.5,
    NaN,
    Infinity,
    -Infinity,
  ),
);

const scalar = fc.oneof(text, fc.boolean(), number);

/** Every value the serializer has a branch for: scalars, arrays (with holes), bytes, key-value lists. */
const attributeValue = fc.oneof(
  { weight: 6, arbitrary: scalar },
  {
    weight: 1,
    arbitrary: fc.array(fc.oneof(scalar, fc.constant(null), fc.constant(undefined)), { maxLength: 4 }),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }) },
  { weight: 1, arbitrary: fc.dictionary(key, scalar, { maxKeys: 3 }) },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

// Values outside AttributeValue (bytes, kvlists, mixed arrays) on purpose: the serializer encodes them too.
const attributes = fc
  .dictionary(key, attributeValue, { maxKeys: 12 })
  .map((record) => record as unknown as Attributes);

const hexId = (bytes: number): fc.Arbitrary<string> =>
  fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString('hex'));

const hrTime: fc.Arbitrary<HrTime> = fc.tuple(
  fc.integer({ min: 0, max: 2 ** 35 }),
  fc.integer({ min: 0, max: 999_999_999 }),
);

const traceState = fc.option(fc.constantFrom('rojo=00f067aa0ba902b7', 'rojo=1,congo=t61rcWkgMzE'), {
  nil: undefined,
});

const spanContext: fc.Arbitrary<SpanContext> = fc
  .record({
    traceId: hexId(16),
    spanId: hexId(8),
    traceFlags: fc.constantFrom(0, 1, 0x83),
    isRemote: fc.option(fc.boolean(), { nil: undefined }),
    state: traceState,
  })
  .map(({ state, ...context }) =>
    state === undefined ? context : { ...context, traceState: new TraceState(state) },
  );

const event: fc.Arbitrary<TimedEvent> = fc.record(
  {
    name: text,
    time: hrTime,
    attributes,
    droppedAttributesCount: fc.nat(3),
  },
  { requiredKeys: ['name', 'time'] },
);

const link: fc.Arbitrary<Link> = fc.record(
  { context: spanContext, attributes, droppedAttributesCount: fc.nat(3) },
  { requiredKeys: ['context'] },
);

const status: fc.Arbitrary<SpanStatus> = fc.record(
  { code: fc.constantFrom(0, 1, 2), message: text },
  { requiredKeys: ['code'] },
);

interface SpanFields {
  context: SpanContext;
  parent: SpanContext | undefined;
  name: string;
  kind: number;
  startTime: HrTime;
  endTime: HrTime;
  attributes: Attributes;
  events: TimedEvent[];
  links: Link[];
  status: SpanStatus;
  dropped: [number, number, number];
  resource: number;
  scope: number;
}

const spanFields: fc.Arbitrary<SpanFields> = fc.record({
  context: spanContext,
  parent: fc.option(spanContext, { nil: undefined }),
  name: text,
  kind: fc.constantFrom(0, 1, 2, 3, 4),
  startTime: hrTime,
  endTime: hrTime,
  attributes,
  events: fc.array(event, { maxLength: 2 }),
  links: fc.array(link, { maxLength: 2 }),
  status,
  dropped: fc.tuple(fc.nat(200), fc.nat(3), fc.nat(3)),
  resource: fc.nat(2),
  scope: fc.nat(2),
});

const resourceSpec = fc.record({
  attributes: fc.dictionary(key, scalar, { maxKeys: 6 }),
  schemaUrl: fc.option(fc.constantFrom('https://opentelemetry.io/schemas/1.26.0'), { nil: undefined }),
});

const scopeSpec = fc.record(
  {
    name: text,
    version: text,
    schemaUrl: fc.constantFrom('https://opentelemetry.io/schemas/1.26.0', ''),
    attributes: fc.dictionary(key, scalar, { maxKeys: 3 }),
    droppedAttributesCount: fc.nat(2),
  },
  { requiredKeys: ['name'] },
);

/** A batch: spans spread over up to three resources and three scopes (shared objects, as the SDK has them). */
const batch = fc
  .record({
    resources: fc.array(resourceSpec, { minLength: 3, maxLength: 3 }),
    scopes: fc.array(scopeSpec, { minLength: 3, maxLength: 3 }),
    spans: fc.array(spanFields, { maxLength: 12 }),
  })
  .map(({ resources, scopes, spans }) => {
    const resourceObjects = resources.map((spec) =>
      resourceFromAttributes(
        spec.attributes,
        spec.schemaUrl === undefined ? {} : { schemaUrl: spec.schemaUrl },
      ),
    );
    return spans.map((fields) =>
      plainSpan(
        fields,
        resourceObjects[fields.resource] as Resource,
        scopes[fields.scope] as InstrumentationScope,
      ),
    );
  });

function plainSpan(fields: SpanFields, resource: Resource, scope: InstrumentationScope): ReadableSpan {
  return {
    name: fields.name,
    kind: fields.kind,
    spanContext: () => fields.context,
    parentSpanContext: fields.parent,
    startTime: fields.startTime,
    endTime: fields.endTime,
    status: fields.status,
    attributes: fields.attributes,
    links: fields.links,
    events: fields.events,
    duration: [0, 0],
    ended: true,
    resource,
    instrumentationScope: scope,
    droppedAttributesCount: fields.dropped[0],
    droppedEventsCount: fields.dropped[1],
    droppedLinksCount: fields.dropped[2],
  };
}

// ---- spans as the exporter makes them ----------------------------------------------------------------------

function job(jobId: string): JobInfo {
  const runId = `${jobId}@2024-05-01T12:00:00.000Z`;
  return { jobId, jobName: jobId, runId, traceId: traceIdFor(runId) };
}

function section(info: JobInfo, seqNum: number): FinishedSection {
  const startTime = Date.UTC(2024, 4, 1, 12, 0, 0) + seqNum * 10 + 0.123;
  return {
    job: info,
    seqNum,
    parentSeqNum: seqNum > 1 ? 1 : undefined,
    spanId: spanIdFor(info.runId, seqNum),
    parentSpanId: seqNum > 1 ? spanIdFor(info.runId, 1) : undefined,
    type: seqNum === 1 ? 'TestSuite' : seqNum % 3 === 0 ? 'Testcase' : 'Step',
    id: `section_${seqNum}`,
    name: seqNum % 5 === 0 ? `check peer ${seqNum} ✓` : undefined,
    task: 'Task-1',
    startTime,
    stopTime: startTime + 5.5,
    runtime: seqNum % 2 === 0 ? 0.0055 : 2,
    result: seqNum % 7 === 0 ? { value: 'failed', reason: 'neighbor down' } : { value: 'passed' },
    incomplete: false,
    orphan: false,
    started: true,
  };
}

const SCOPE = { name: 'pyats-exporter', version: '0.1.0' };

function jobSpans(jobs: number, perJob: number): ReadableSpan[] {
  const spans: ReadableSpan[] = [];
  for (let j = 0; j < jobs; j++) {
    const info = job(`job_${j}`);
    const resource = resourceFromAttributes({
      'service.name': 'pyats-exporter',
      'pyats.job.run_id': info.runId,
    });
    for (let seq = 1; seq <= perJob; seq++)
      spans.push(sectionToSpan(section(info, seq), resource, SCOPE, 4096));
  }
  // Interleave the jobs, as concurrent runs would finish sections.
  return spans.sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1]);
}

// ---- tests -------------------------------------------------------------------------------------------------

describe('encodeTraceRequest', () => {
  it('writes the same bytes as ProtobufTraceSerializer for generated spans', () => {
    fc.assert(
      fc.property(batch, (spans) => {
        expect(encoded(spans).equals(reference(spans))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('writes nothing for no spans, as the serializer does', () => {
    expect(encoded([])).toEqual(reference([]));
    expect(encoded([])).toHaveLength(0);
  });

  it('matches on a 512-span batch of three interleaved jobs, whose group lengths need 3-byte varints', () => {
    const spans = jobSpans(3, 171).slice(0, 512);
    const bytes = encoded(spans);
    expect(bytes.equals(reference(spans))).toBe(true);
    // ExportTraceServiceRequest.resource_spans: tag, then the ResourceSpans length (tens of KiB).
    expect(bytes[0]).toBe(0x0a);
    expect(varintWidth(bytes, 1)).toBe(3);
    expect(decodeExportTraceServiceRequest(bytes)).toHaveLength(512);
  });

  it('matches when a single group passes 2 MiB (4-byte varint) and the scratch buffer must grow', () => {
    const spans = jobSpans(1, 6000);
    const bytes = encoded(spans);
    expect(bytes.length).toBeGreaterThan(2 * 1024 * 1024);
    expect(varintWidth(bytes, 1)).toBe(4);
    expect(bytes.equals(reference(spans))).toBe(true);
  });

  it('matches for string values of 127, 128, 16383 and 16384 bytes', () => {
    const info = job('lengths');
    const resource = resourceFromAttributes({ 'service.name': 'x' });
    for (const length of [125, 126, 127, 128, 16_383, 16_384, 70_000]) {
      const long = {
        ...section(info, 2),
        id: 'i'.repeat(length),
        result: { value: 'failed' as const, reason: 'é'.repeat(length) },
      };
      const spans = [sectionToSpan(long, resource, SCOPE, 1_000_000)];
      expect(encoded(spans).equals(reference(spans)), `length ${length}`).toBe(true);
    }
  });

  it('matches for every value length around the one-byte length boundary, ASCII or not', () => {
    const info = job('boundary');
    const resource = resourceFromAttributes({ 'service.name': 'x' });
    for (let n = 0; n <= 140; n++) {
      const ascii = { ...section(info, 3), id: 'i'.repeat(n), task: 't'.repeat(140 - n) };
      const wide = { ...section(info, 3), id: `${'i'.repeat(n)}é`, name: `😀${'n'.repeat(n)}` };
      const spans = [ascii, wide].map((s) => sectionToSpan(s, resource, SCOPE, 1000));
      expect(encoded(spans).equals(reference(spans)), `length ${n}`).toBe(true);
      expect(encoded(spans.map(plainSpanCopy)).equals(reference(spans)), `generic, length ${n}`).toBe(true);
    }
  });

  it('matches for TestSuite spans linked to the previous run of their job, as SpanSink makes them', () => {
    const earlier = job('linked');
    const later = { ...job('linked'), runId: 'linked@2024-05-02T12:00:00.000Z', traceId: 'ab'.repeat(16) };
    const resource = resourceFromAttributes({ 'service.name': 'x' });
    const link = previousRunLink(
      {
        runId: earlier.runId,
        jobId: 'linked.2024May01_12:00:00.000000',
        context: { traceId: earlier.traceId, spanId: spanIdFor(earlier.runId, 1), traceFlags: 1 },
      },
      4096,
    );
    const spans = [
      sectionToSpan(section(later, 1), resource, SCOPE, 4096, [link]),
      sectionToSpan(section(later, 2), resource, SCOPE, 4096),
    ];
    const bytes = encoded(spans);
    expect(bytes.equals(reference(spans))).toBe(true);
    expect(encoded(spans.map(plainSpanCopy)).equals(reference(spans))).toBe(true);
    const [suite, step] = decodeExportTraceServiceRequest(bytes);
    expect(suite?.links).toEqual([
      {
        traceId: earlier.traceId,
        spanId: spanIdFor(earlier.runId, 1),
        traceState: '',
        flags: 0x101,
        attributes: {
          'pyats.link.kind': 'previous_run',
          'pyats.job.id': 'linked.2024May01_12:00:00.000000',
          'pyats.job.run_id': earlier.runId,
        },
      },
    ]);
    expect(step?.links).toEqual([]);
  });

  it('hands back a copy: a later request does not change an earlier result', () => {
    const first = jobSpans(1, 20);
    const firstBytes = encodeTraceRequest(first);
    const snapshot = Buffer.from(firstBytes);
    encodeTraceRequest(jobSpans(2, 40));
    expect(Buffer.from(firstBytes).equals(snapshot)).toBe(true);
  });

  it('stays correct past the key cache bound', () => {
    const many: Attributes = {};
    for (let i = 0; i < MAX_CACHED_KEYS + 500; i++) many[`key.${i}`] = i;
    const info = job('keys');
    const base = sectionToSpan(section(info, 1), resourceFromAttributes({}), SCOPE, 100);
    const span: ReadableSpan = {
      ...plainSpanCopy(base),
      attributes: many,
    };
    expect(encoded([span]).equals(reference([span]))).toBe(true);
    expect(encoded([span]).equals(reference([span]))).toBe(true);
  });

  it('is safe to call again from inside a span getter (the scratch buffer is not shared then)', () => {
    const info = job('nested');
    const resource = resourceFromAttributes({ 'service.name': 'x' });
    const inner = jobSpans(1, 30);
    const outer = plainSpanCopy(sectionToSpan(section(info, 2), resource, SCOPE, 100));
    let innerBytes: Buffer | undefined;
    const reentrant: ReadableSpan = {
      ...outer,
      get name(): string {
        innerBytes = encoded(inner);
        return 'outer';
      },
    };
    const expected = reference([{ ...outer, name: 'outer' }]);
    expect(encoded([reentrant]).equals(expected)).toBe(true);
    expect(innerBytes?.equals(reference(inner))).toBe(true);
  });
});
