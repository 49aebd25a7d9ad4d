// The span sink: each FinishedSection becomes one ReadableSpan made from the record (ids and times are the
// record's, not a Tracer's; fields built on first read) and handed to a SpanProcessor, one trace per job run.
// A run's TestSuite span links to the TestSuite span of the job's previous run (a rerun, the next nightly).
import {
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Attributes,
  type HrTime,
  type Link,
  type SpanContext,
  type SpanStatus,
} from '@opentelemetry/api';
import type { InstrumentationScope } from '@opentelemetry/core';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanProcessor, TimedEvent } from '@opentelemetry/sdk-trace-base';
import {
  ATTR_CODE_FILE_PATH,
  ATTR_CODE_LINE_NUMBER,
  ATTR_EXCEPTION_MESSAGE,
  ATTR_EXCEPTION_TYPE,
} from '@opentelemetry/semantic-conventions';
import {
  verdictOf,
  type FinishedSection,
  type JobInfo,
  type JobSummary,
  type SectionSink,
  type StartedSection,
} from '../events/index.js';
import { WRITE_ATTRIBUTES, type AttributeSink, type DirectAttributes } from './otlp-encoder.js';

// test.* is still "development" in semconv 1.45 and only exported from the `incubating` entry, which
// OpenTelemetry asks users to copy from rather than import (it may change in any minor release).
// test/telemetry/spans.test.ts checks these against the installed package.
export const ATTR_TEST_CASE_NAME = 'test.case.name';
export const ATTR_TEST_CASE_RESULT_STATUS = 'test.case.result.status';
export const ATTR_TEST_SUITE_NAME = 'test.suite.name';
export const ATTR_TEST_SUITE_RUN_STATUS = 'test.suite.run.status';
// cicd.* is "development" in semconv 1.45 too (incubating entry only); checked against the package likewise.
export const ATTR_CICD_PIPELINE_NAME = 'cicd.pipeline.name';
export const ATTR_CICD_PIPELINE_RUN_ID = 'cicd.pipeline.run.id';
export const ATTR_CICD_PIPELINE_TASK_RUN_URL_FULL = 'cicd.pipeline.task.run.url.full';

export const INSTRUMENTATION_SCOPE_NAME = 'pyats-exporter';

/** Link attribute saying why a span links to another; the only kind so far is the job's previous run. */
export const ATTR_LINK_KIND = 'pyats.link.kind';
export const LINK_KIND_PREVIOUS_RUN = 'previous_run';
/** Job names whose last run the sink remembers for links; the least recently finished is forgotten first. */
export const DEFAULT_MAX_LINKED_JOBS = 10_000;
export const ABANDONED_STATUS_MESSAGE = 'abandoned: job ended before the section stopped';

/** Section types that are test cases in the semconv sense (test.case.*). */
const TESTCASE_TYPES = new Set(['Testcase', 'CommonSetup', 'CommonCleanup']);

const NO_LINKS: Link[] = [];
const NO_EVENTS: TimedEvent[] = [];
const ZERO_DURATION: HrTime = [0, 0];

export interface SpanSinkOptions {
  processor: SpanProcessor;
  /** Base resource from the tracing options: service.name, OTEL_RESOURCE_ATTRIBUTES, telemetry.sdk.*. */
  resource: Resource;
  /** String attribute values (and the status message) are cut to this many UTF-16 units. */
  maxAttributeLength: number;
  /** The exporter's version, reported as the instrumentation scope version. */
  scopeVersion: string;
  /** Job names whose last run is remembered to link the next run to. Default: DEFAULT_MAX_LINKED_JOBS. */
  maxLinkedJobs?: number;
}

/**
 * Epoch milliseconds (fractional) to HrTime, rounded to the microsecond: pyATS times have microsecond
 * resolution, and a double of epoch ms carries it with ~0.25 µs to spare, so rounding recovers it exactly.
 */
export function epochMsToHrTime(ms: number): HrTime {
  const wholeMs = Math.floor(ms);
  const micros = Math.round((ms - wholeMs) * 1000);
  let seconds = Math.floor(wholeMs / 1000);
  let nanos = (wholeMs - seconds * 1000) * 1_000_000 + micros * 1000;
  if (nanos >= 1_000_000_000) {
    seconds += 1;
    nanos -= 1_000_000_000;
  }
  return [seconds, nanos];
}

function hrTimeDuration(start: HrTime, end: HrTime): HrTime {
  let seconds = end[0] - start[0];
  let nanos = end[1] - start[1];
  if (nanos < 0) {
    seconds -= 1;
    nanos += 1_000_000_000;
  }
  return seconds < 0 ? ZERO_DURATION : [seconds, nanos];
}

/** Cuts `value` to `max` UTF-16 units without splitting a surrogate pair. */
export function truncateAttribute(value: string, max: number): string {
  if (value.length <= max) return value;
  let end = Math.max(0, Math.floor(max));
  const last = value.charCodeAt(end - 1);
  if (end > 0 && last >= 0xd800 && last <= 0xdbff) end -= 1;
  return value.slice(0, end);
}

/** `${type} ${name ?? id ?? seqNum}`, e.g. `Testcase test_bgp`. */
export function spanName(section: FinishedSection): string {
  return `${section.type} ${section.name ?? section.id ?? section.seqNum}`;
}

function isErrorResult(section: FinishedSection): boolean {
  const value = section.result.value;
  return section.incomplete || value === 'failed' || value === 'errored' || value === 'aborted';
}

/** ERROR exactly for failed / errored / aborted and abandoned sections (DESIGN §3). */
export function spanStatus(section: FinishedSection, maxAttributeLength: number): SpanStatus {
  // Everything else stays UNSET rather than OK: the spec reserves OK for an explicit final verdict that
  // overrides anything downstream, and skipped / blocked are not a verdict of success.
  if (!isErrorResult(section)) return { code: SpanStatusCode.UNSET };
  const message = section.incomplete ? ABANDONED_STATUS_MESSAGE : section.result.reason;
  return message === undefined
    ? { code: SpanStatusCode.ERROR }
    : { code: SpanStatusCode.ERROR, message: truncateAttribute(message, maxAttributeLength) };
}

function testCaseStatus(section: FinishedSection): string | undefined {
  // skipped / blocked: the convention has no value for them; pyats.section.result has the exact one.
  return section.incomplete ? 'fail' : verdictOf(section.result.value);
}

function testSuiteRunStatus(section: FinishedSection): string {
  if (section.incomplete) return 'aborted';
  switch (section.result.value) {
    case 'passed':
    case 'passx':
      return 'success';
    case 'failed':
    case 'errored':
      return 'failure';
    case 'aborted':
      return 'aborted';
    case 'skipped':
    case 'blocked':
      return 'skipped';
  }
}

/**
 * Hands the span attributes of a section (DESIGN §3) to `sink`, in order; string values cut to `maxLength`.
 * Their one definition: `sectionAttributes` builds the object from it, the OTLP encoder writes bytes from it.
 */
export function writeSectionAttributes(
  section: FinishedSection,
  maxLength: number,
  sink: AttributeSink,
): void {
  sink.string('pyats.section.type', truncateAttribute(section.type, maxLength));
  sink.number('pyats.section.seq_num', section.seqNum);
  sink.string('pyats.section.result', section.result.value);
  sink.string('pyats.section.task', truncateAttribute(section.task, maxLength));
  sink.number('pyats.section.runtime', section.runtime);
  sink.string('pyats.job.id', truncateAttribute(section.job.jobId, maxLength));
  sink.string('pyats.job.name', truncateAttribute(section.job.jobName, maxLength));
  sink.string('pyats.job.run_id', truncateAttribute(section.job.runId, maxLength));
  if (section.id !== undefined) sink.string('pyats.section.id', truncateAttribute(section.id, maxLength));
  if (section.fullid !== undefined)
    sink.string('pyats.section.fullid', truncateAttribute(section.fullid, maxLength));
  if (section.name !== undefined)
    sink.string('pyats.section.name', truncateAttribute(section.name, maxLength));
  if (section.parentSeqNum !== undefined) sink.number('pyats.section.parent_seq_num', section.parentSeqNum);
  if (section.result.reason !== undefined)
    sink.string('pyats.section.result.reason', truncateAttribute(section.result.reason, maxLength));
  if (section.logfile !== undefined)
    sink.string('pyats.section.logfile', truncateAttribute(section.logfile, maxLength));
  if (section.incomplete) sink.boolean('pyats.section.incomplete', true);
  if (section.orphan) sink.boolean('pyats.section.orphan', true);
  if (section.xref?.file !== undefined)
    sink.string(ATTR_CODE_FILE_PATH, truncateAttribute(section.xref.file, maxLength));
  if (section.xref?.line !== undefined) sink.number(ATTR_CODE_LINE_NUMBER, section.xref.line);

  if (TESTCASE_TYPES.has(section.type)) {
    const caseName = section.id ?? section.name;
    if (caseName !== undefined) sink.string(ATTR_TEST_CASE_NAME, truncateAttribute(caseName, maxLength));
    const status = testCaseStatus(section);
    if (status !== undefined) sink.string(ATTR_TEST_CASE_RESULT_STATUS, status);
  } else if (section.type === 'TestSuite' || section.type === 'Task') {
    const suiteName = section.type === 'TestSuite' ? section.job.jobName : (section.id ?? section.task);
    sink.string(ATTR_TEST_SUITE_NAME, truncateAttribute(suiteName, maxLength));
    sink.string(ATTR_TEST_SUITE_RUN_STATUS, testSuiteRunStatus(section));
  }
  const ci = section.job.ci;
  if (ci !== undefined && section.type === 'TestSuite') {
    if (ci.pipelineName !== undefined)
      sink.string(ATTR_CICD_PIPELINE_NAME, truncateAttribute(ci.pipelineName, maxLength));
    if (ci.runId !== undefined)
      sink.string(ATTR_CICD_PIPELINE_RUN_ID, truncateAttribute(ci.runId, maxLength));
    if (ci.taskRunUrl !== undefined)
      sink.string(ATTR_CICD_PIPELINE_TASK_RUN_URL_FULL, truncateAttribute(ci.taskRunUrl, maxLength));
  }
}

/** Collects what writeSectionAttributes hands over into an Attributes object. */
class AttributesBuilder implements AttributeSink {
  readonly attributes: Attributes = {};

  string(key: string, value: string): void {
    this.attributes[key] = value;
  }

  number(key: string, value: number): void {
    this.attributes[key] = value;
  }

  boolean(key: string, value: boolean): void {
    this.attributes[key] = value;
  }
}

/** The span attributes of a section (DESIGN §3); string values cut to `maxLength`. */
export function sectionAttributes(section: FinishedSection, maxLength: number): Attributes {
  const builder = new AttributesBuilder();
  writeSectionAttributes(section, maxLength, builder);
  return builder.attributes;
}

/** Span event attribute holding a section's log lines (the tail of its slice of the job's log). */
export const ATTR_SECTION_LOG = 'pyats.section.log';
/** Name of the event carrying the log lines of a section that did not fail (`--section-logs all`). */
export const SECTION_LOG_EVENT = 'pyats.section.log';

/**
 * The span's events: its log excerpt, when it has one, as an OpenTelemetry `exception` event for a failed,
 * errored or aborted section (type the result, message its reason) and as `pyats.section.log` otherwise.
 * The excerpt is bounded by `--section-log-max-bytes`, not by the attribute length.
 */
export function sectionEvents(section: FinishedSection, maxAttributeLength: number): TimedEvent[] {
  const log = section.logExcerpt;
  if (log === undefined) return NO_EVENTS;
  const time = epochMsToHrTime(section.stopTime);
  const value = section.result.value;
  if (value !== 'failed' && value !== 'errored' && value !== 'aborted') {
    return [
      { name: SECTION_LOG_EVENT, time, attributes: { [ATTR_SECTION_LOG]: log }, droppedAttributesCount: 0 },
    ];
  }
  const message = truncateAttribute(section.result.reason ?? `${section.type} ${value}`, maxAttributeLength);
  return [
    {
      name: 'exception',
      time,
      attributes: {
        [ATTR_EXCEPTION_TYPE]: `pyats.${value}`,
        [ATTR_EXCEPTION_MESSAGE]: message,
        [ATTR_SECTION_LOG]: log,
      },
      droppedAttributesCount: 0,
    },
  ];
}

function sampledContext(traceId: string, spanId: string): SpanContext {
  return { traceId, spanId, traceFlags: TraceFlags.SAMPLED, isRemote: false };
}

/**
 * A finished span that keeps its FinishedSection and builds each ReadableSpan field on first read (then keeps
 * it): the OTLP encoder writes the attributes straight from the record, so on that path the Attributes object
 * is never built. Immutable, as the record is never changed after the tracker emits it.
 */
export class SectionSpan implements ReadableSpan, DirectAttributes {
  readonly kind = SpanKind.INTERNAL;
  readonly ended = true;
  readonly droppedAttributesCount = 0;
  readonly droppedEventsCount = 0;
  readonly droppedLinksCount = 0;
  private builtContext: SpanContext | undefined = undefined;
  private builtParentContext: SpanContext | undefined = undefined;
  private builtName: string | undefined = undefined;
  private builtStartTime: HrTime | undefined = undefined;
  private builtEndTime: HrTime | undefined = undefined;
  private builtDuration: HrTime | undefined = undefined;
  private builtStatus: SpanStatus | undefined = undefined;
  private builtAttributes: Attributes | undefined = undefined;
  private builtEvents: TimedEvent[] | undefined = undefined;

  constructor(
    readonly section: FinishedSection,
    readonly resource: Resource,
    readonly instrumentationScope: InstrumentationScope,
    private readonly maxAttributeLength: number,
    readonly links: Link[] = NO_LINKS,
  ) {}

  spanContext(): SpanContext {
    return (this.builtContext ??= sampledContext(this.section.job.traceId, this.section.spanId));
  }

  get parentSpanContext(): SpanContext | undefined {
    const parentSpanId = this.section.parentSpanId;
    if (parentSpanId === undefined) return undefined;
    return (this.builtParentContext ??= sampledContext(this.section.job.traceId, parentSpanId));
  }

  get name(): string {
    return (this.builtName ??= spanName(this.section));
  }

  get startTime(): HrTime {
    return (this.builtStartTime ??= epochMsToHrTime(this.section.startTime));
  }

  get endTime(): HrTime {
    return (this.builtEndTime ??= epochMsToHrTime(this.section.stopTime));
  }

  get duration(): HrTime {
    return (this.builtDuration ??= hrTimeDuration(this.startTime, this.endTime));
  }

  get status(): SpanStatus {
    return (this.builtStatus ??= spanStatus(this.section, this.maxAttributeLength));
  }

  get events(): TimedEvent[] {
    return (this.builtEvents ??= sectionEvents(this.section, this.maxAttributeLength));
  }

  get attributes(): Attributes {
    return (this.builtAttributes ??= sectionAttributes(this.section, this.maxAttributeLength));
  }

  [WRITE_ATTRIBUTES](sink: AttributeSink): void {
    writeSectionAttributes(this.section, this.maxAttributeLength, sink);
  }
}

/** Builds the ReadableSpan for one section (pure; exported for tests and replay tools). */
export function sectionToSpan(
  section: FinishedSection,
  resource: Resource,
  scope: InstrumentationScope,
  maxAttributeLength: number,
  links?: Link[],
): ReadableSpan {
  return new SectionSpan(section, resource, scope, maxAttributeLength, links);
}

/** A finished run's TestSuite span, as the next run of the job links to it. */
export interface PreviousRun {
  runId: string;
  jobId: string;
  context: SpanContext;
}

/** The link from a run's TestSuite span to the job's previous run; its attributes say why and which run. */
export function previousRunLink(previous: PreviousRun, maxAttributeLength: number): Link {
  return {
    context: previous.context,
    attributes: {
      [ATTR_LINK_KIND]: LINK_KIND_PREVIOUS_RUN,
      'pyats.job.id': truncateAttribute(previous.jobId, maxAttributeLength),
      'pyats.job.run_id': truncateAttribute(previous.runId, maxAttributeLength),
    },
  };
}

/**
 * Turns finished sections into spans on `processor`. Resource per job run: base + pyats.job.id/name/run_id.
 * Remembers the TestSuite span of each job's last finished run (by job name, at most `maxLinkedJobs` names)
 * and links the next run's TestSuite span to it.
 */
export class SpanSink implements SectionSink {
  private readonly resources = new Map<string, Resource>();
  private readonly scope: InstrumentationScope;
  /** Job name → its last finished run's root, in the order they finished (oldest first). */
  private readonly lastRuns = new Map<string, PreviousRun>();
  private readonly maxLinkedJobs: number;

  constructor(private readonly options: SpanSinkOptions) {
    this.scope = { name: INSTRUMENTATION_SCOPE_NAME, version: options.scopeVersion };
    this.maxLinkedJobs = options.maxLinkedJobs ?? DEFAULT_MAX_LINKED_JOBS;
  }

  sectionStarted(_section: StartedSection): void {}

  sectionFinished(section: FinishedSection): void {
    const links =
      section.type === 'TestSuite' && section.parentSeqNum === undefined ? this.linkRun(section) : undefined;
    const span = sectionToSpan(
      section,
      this.resourceFor(section.job),
      this.scope,
      this.options.maxAttributeLength,
      links,
    );
    this.options.processor.onEnd(span);
  }

  /**
   * The link to the job's previous run, if one was seen, and this run remembered in its place. A run of an
   * unknown job (the exporter attached after its TestSuite started) is neither linked nor remembered: all such
   * runs share the name `unknown`.
   */
  private linkRun(section: FinishedSection): Link[] | undefined {
    const job = section.job;
    if (job.jobId === 'unknown') return undefined;
    const previous = this.lastRuns.get(job.jobName);
    // The same run again (its suite reported twice, a replay of a live run) links to nothing new.
    if (previous?.runId === job.runId) return undefined;
    this.lastRuns.delete(job.jobName);
    this.lastRuns.set(job.jobName, {
      runId: job.runId,
      jobId: job.jobId,
      context: sampledContext(job.traceId, section.spanId),
    });
    if (this.lastRuns.size > this.maxLinkedJobs) {
      const oldest = this.lastRuns.keys().next();
      if (oldest.done !== true) this.lastRuns.delete(oldest.value);
    }
    return previous === undefined ? undefined : [previousRunLink(previous, this.options.maxAttributeLength)];
  }

  jobFinished(summary: JobSummary): void {
    this.forgetRun(summary.job.runId);
  }

  /** The run ended: its Resource is not needed again (the span thread calls this for jobFinished). */
  forgetRun(runId: string): void {
    this.resources.delete(runId);
  }

  forceFlush(): Promise<void> {
    return this.options.processor.forceFlush();
  }

  shutdown(): Promise<void> {
    this.resources.clear();
    this.lastRuns.clear();
    return this.options.processor.shutdown();
  }

  // One Resource object per run: the OTLP serializers group a batch's spans by resource identity, so a
  // shared object gives one ResourceSpans per job instead of one per span.
  private resourceFor(job: JobInfo): Resource {
    let resource = this.resources.get(job.runId);
    if (resource === undefined) {
      resource = this.options.resource.merge(
        resourceFromAttributes({
          'pyats.job.id': job.jobId,
          'pyats.job.name': job.jobName,
          'pyats.job.run_id': job.runId,
        }),
      );
      this.resources.set(job.runId, resource);
    }
    return resource;
  }
}
