// Metric families for the sink's hot metrics: each series is a plain object updated with `+=`, its label text
// escaped once when it is created, and each family prints its own exposition by string concatenation. They
// register into a prom-client Registry like prom-client's own metrics (name, help, type, aggregator, get, reset).
import type { Metric, Registry } from 'prom-client';

/** What a family's `get()` gives, in the shape prom-client's metrics give it (`getMetricsAsJSON`). */
export interface FamilySnapshot {
  name: string;
  help: string;
  type: FamilyType;
  aggregator: 'sum';
  values: SampleSnapshot[];
}

export interface SampleSnapshot {
  value: number;
  labels: Record<string, string | number>;
  /** Histograms: `<name>_bucket`, `<name>_sum` or `<name>_count`. */
  metricName?: string;
  /** Histogram buckets: the bucket's latest exemplar, or null; absent on `_sum` and `_count`. */
  exemplar?: ExemplarSnapshot | null;
}

export interface ExemplarSnapshot {
  labelSet: Record<string, string>;
  value: number;
  /** Seconds since the epoch, fractional. */
  timestamp: number;
}

export type FamilyType = 'counter' | 'gauge' | 'histogram';

/** Exemplar labels, e.g. `{ trace_id, span_id }`; OpenMetrics caps the whole set at 128 characters. */
export type ExemplarLabels = Readonly<Record<string, string>>;

/**
 * A run of exposition text that stays the same object while its text stays the same: a family hands out the
 * same piece for a block of series until one of them changes, so the HTTP layer can keep the piece's bytes and
 * their compressed form (http/server.ts) instead of making them again at every scrape.
 */
export class ExpositionPiece {
  constructor(
    readonly text: string,
    /** False for text made anew at every scrape (prom-client's metrics): not worth a cache of its own. */
    readonly durable = true,
  ) {}
}

/** A metric that writes its own exposition; `renderMetrics` prints these and snapshots the rest. */
export interface SelfRenderingMetric {
  readonly name: string;
  /**
   * The family in Prometheus text 0.0.4 or OpenMetrics 1.0.0, byte for byte as prom-client's Registry would
   * write it: `# HELP` and `# TYPE` lines then one line per sample, no trailing newline.
   */
  renderExposition(openMetrics: boolean): string;
  /** renderExposition's text in pieces (their texts joined are that text), unchanged pieces kept. */
  renderPieces(openMetrics: boolean): readonly ExpositionPiece[];
}

export function isSelfRendering(metric: unknown): metric is SelfRenderingMetric {
  return (
    typeof metric === 'object' &&
    metric !== null &&
    typeof (metric as Partial<SelfRenderingMetric>).renderPieces === 'function'
  );
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const NEEDS_ESCAPE = /[\\"\n]/;

/** Label-value escaping of both text formats: backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  if (!NEEDS_ESCAPE.test(value)) return value;
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

/** `# HELP` text escaping: backslash and line feed (a quote needs none there). */
function escapeHelp(help: string): string {
  return help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A sample value exactly as prom-client writes it (including its `Nan` spelling, which parsers accept). */
export function formatSampleValue(value: number): string {
  if (Number.isNaN(value)) return 'Nan';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return `${value}`;
}

/** `a="x",b="y"`, escaped; '' when there are no labels. */
function labelPairs(names: readonly string[], values: readonly string[]): string {
  let text = '';
  for (let i = 0; i < names.length; i++) {
    if (i > 0) text += ',';
    text += `${names[i]}="${escapeLabelValue(values[i] ?? '')}"`;
  }
  return text;
}

/**
 * `text` as one flat run of characters. Strings made by concatenation are ropes in V8, and a rope kept in a
 * series is walked again by every render that copies it into the scrape's text: rendering 12,800 series took
 * 4.2 ms with the pieces cached as ropes and 2.1 ms with them flat (`npm run bench`, 7.7 ms before either).
 * A copy through a Buffer is flat by construction; it is made once per series. Text that UTF-8 cannot carry
 * exactly (a lone surrogate) is kept as it is.
 */
function flat(text: string): string {
  if (text.length < 2 || !(text as string & { isWellFormed(): boolean }).isWellFormed()) return text;
  return Buffer.from(text, 'utf8').toString('utf8');
}

/** One string per value tuple; length prefixes make it injective whatever the values contain. */
function seriesKey(values: readonly string[]): string {
  let key = '';
  for (const value of values) key += `${value.length}:${value}`;
  return key;
}

export interface FamilyOptions {
  name: string;
  help: string;
  labelNames: readonly string[];
}

/** A block of a family's series and the text last rendered for it, with the state it was rendered from. */
interface Block<S> {
  series: S[];
  /** Per series, its stateOf as it was at the last render. */
  rendered: Float64Array;
  piece: ExpositionPiece | undefined;
}

/** A family's blocks in one exposition format, laid out from its series as `layout` numbered them. */
interface BlockCache<S> {
  layout: number;
  header: ExpositionPiece;
  blocks: Block<S>[];
}

function sameMembers<S>(a: readonly S[], b: readonly S[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

abstract class SeriesFamily<
  S extends { readonly labelValues: readonly string[] },
> implements SelfRenderingMetric {
  /**
   * Writable, as on prom-client's metrics: its Registry.metrics() renames counters in place for OpenMetrics.
   * The exposition uses the name given at construction, so such a rename cannot leak into later scrapes.
   */
  name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly aggregator = 'sum' as const;
  abstract readonly type: FamilyType;
  protected readonly baseName: string;
  protected readonly escapedHelp: string;
  protected readonly series = new Map<string, S>();
  /** Bumped whenever a series is added or removed: the blocks are laid out again from the series. */
  private layout = 0;
  /** Per format (Prometheus text, OpenMetrics), made at its first render. */
  private readonly caches: [BlockCache<S> | undefined, BlockCache<S> | undefined] = [undefined, undefined];
  /** Series per block: few enough that a scrape re-renders little of what did not change since the last. */
  protected abstract readonly blockSize: number;

  constructor(options: FamilyOptions) {
    if (!METRIC_NAME.test(options.name)) throw new Error(`invalid metric name: ${options.name}`);
    for (const label of options.labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith('__')) {
        throw new Error(`${options.name}: invalid label name: ${label}`);
      }
    }
    this.name = options.name;
    this.baseName = options.name;
    this.help = options.help;
    this.escapedHelp = escapeHelp(options.help);
    this.labelNames = [...options.labelNames];
  }

  /** Adds the family to `registry`, which then lists, serializes and resets it like its own metrics. */
  register(registry: Pick<Registry, 'registerMetric'>): this {
    // Registry calls only name, help, type, aggregator, get() and reset() on what it holds; this has them all.
    registry.registerMetric(this as unknown as Metric);
    return this;
  }

  /** The series of these label values (in `labelNames` order), created at zero if absent. Callers keep it. */
  child(values: readonly string[]): S {
    if (values.length !== this.labelNames.length) {
      throw new Error(`${this.baseName}: ${values.length} label values for ${this.labelNames.length} labels`);
    }
    const key = seriesKey(values);
    let series = this.series.get(key);
    if (series === undefined) {
      series = this.create([...values]);
      this.series.set(key, series);
      this.layout++;
    }
    return series;
  }

  /** Drops the series of these label values; a kept reference to it no longer shows in the exposition. */
  remove(values: readonly string[]): void {
    if (this.series.delete(seriesKey(values))) this.layout++;
  }

  renderExposition(openMetrics: boolean): string {
    let out = '';
    for (const piece of this.renderPieces(openMetrics)) out += piece.text;
    return out;
  }

  /**
   * The header, then one piece per block of `blockSize` series in insertion order. A block's piece is rendered
   * again only when one of its series' stateOf changed or the block's members did; otherwise the same object is
   * handed out, so what was made of it at the last scrape can be kept.
   */
  renderPieces(openMetrics: boolean): readonly ExpositionPiece[] {
    const cache = (this.caches[openMetrics ? 1 : 0] ??= {
      layout: -1,
      header: new ExpositionPiece(this.renderHeader(openMetrics)),
      blocks: [],
    });
    if (cache.layout !== this.layout) this.layOut(cache);
    const pieces: ExpositionPiece[] = [cache.header];
    for (const block of cache.blocks) {
      let changed = block.piece === undefined;
      for (let i = 0; !changed && i < block.series.length; i++) {
        // Object.is: a NaN gauge that stays NaN is unchanged.
        changed = !Object.is(this.stateOf(block.series[i]!), block.rendered[i]);
      }
      if (changed) {
        for (let i = 0; i < block.series.length; i++) block.rendered[i] = this.stateOf(block.series[i]!);
        block.piece = new ExpositionPiece(this.renderSeries(block.series, openMetrics));
      }
      pieces.push(block.piece!);
    }
    return pieces;
  }

  /** Cuts the series into blocks again, keeping every block whose members are the same as before. */
  private layOut(cache: BlockCache<S>): void {
    const all = [...this.series.values()];
    const blocks: Block<S>[] = [];
    for (let at = 0, b = 0; at < all.length; at += this.blockSize, b++) {
      const members = all.slice(at, at + this.blockSize);
      const old = cache.blocks[b];
      blocks.push(
        old !== undefined && sameMembers(old.series, members)
          ? old
          : {
              series: members,
              rendered: new Float64Array(members.length),
              piece: undefined,
            },
      );
    }
    cache.blocks = blocks;
    cache.layout = this.layout;
  }

  get size(): number {
    return this.series.size;
  }

  protected labelsOf(series: S): Record<string, string> {
    const labels: Record<string, string> = {};
    for (let i = 0; i < this.labelNames.length; i++) {
      labels[this.labelNames[i] ?? ''] = series.labelValues[i] ?? '';
    }
    return labels;
  }

  protected header(familyName: string): string {
    return `# HELP ${familyName} ${this.escapedHelp}\n# TYPE ${familyName} ${this.type}`;
  }

  protected abstract create(values: readonly string[]): S;
  /** `# HELP` and `# TYPE` of the family in this format. */
  protected abstract renderHeader(openMetrics: boolean): string;
  /** The lines of these series, each after a line feed. */
  protected abstract renderSeries(series: readonly S[], openMetrics: boolean): string;
  /** A number that changes whenever anything the series' lines are made from does. */
  protected abstract stateOf(series: S): number;
  abstract get(): Promise<FamilySnapshot>;
  /** Zeroes every series: unlike prom-client's reset the series stay, because callers hold them. */
  abstract reset(): void;
}

/** One series of a counter or a gauge. */
export class ScalarSeries {
  /** A counter's callers only add non-negative finite amounts; a gauge's set it freely. */
  value = 0;

  constructor(
    readonly labelValues: readonly string[],
    /** `{a="x",b="y"}` escaped, or '' without labels. */
    readonly labelText: string,
  ) {}
}

export interface ScalarFamilyOptions extends FamilyOptions {
  type: 'counter' | 'gauge';
}

export class ScalarFamily extends SeriesFamily<ScalarSeries> {
  readonly type: 'counter' | 'gauge';

  constructor(options: ScalarFamilyOptions) {
    super(options);
    this.type = options.type;
    this.sampleNames = [
      this.baseName,
      this.type === 'counter' ? flat(`${this.omCounterName()}_total`) : this.baseName,
    ];
  }

  protected create(values: readonly string[]): ScalarSeries {
    const pairs = labelPairs(this.labelNames, values);
    return new ScalarSeries(values, pairs === '' ? '' : flat(`{${pairs}}`));
  }

  protected readonly blockSize = 256;
  /** The sample name in Prometheus text and in OpenMetrics. */
  private readonly sampleNames: readonly [string, string];

  // OpenMetrics names the counter family without `_total` and every sample with it.
  private omCounterName(): string {
    return this.baseName.replace(/_total$/, '');
  }

  protected renderHeader(openMetrics: boolean): string {
    return this.header(openMetrics && this.type === 'counter' ? this.omCounterName() : this.baseName);
  }

  protected renderSeries(series: readonly ScalarSeries[], openMetrics: boolean): string {
    const sampleName = this.sampleNames[openMetrics ? 1 : 0];
    let out = '';
    for (const s of series) out += `\n${sampleName}${s.labelText} ${formatSampleValue(s.value)}`;
    return out;
  }

  protected stateOf(series: ScalarSeries): number {
    return series.value;
  }

  get(): Promise<FamilySnapshot> {
    const values: SampleSnapshot[] = [];
    for (const s of this.series.values()) values.push({ value: s.value, labels: this.labelsOf(s) });
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      values,
      aggregator: this.aggregator,
    });
  }

  reset(): void {
    for (const s of this.series.values()) s.value = 0;
  }
}

/** The latest observation of one bucket that came with exemplar labels. */
interface BucketExemplar {
  labelSet: ExemplarLabels;
  value: number;
  timestamp: number;
  /** Its exposition suffix, made at the first scrape that shows it: most exemplars outlive many scrapes. */
  text: string | undefined;
}

/** One series of a histogram. */
export class HistogramSeries {
  /** Observations per bucket, not cumulative, in `upperBounds` order; the `+Inf` bucket is `count`. */
  readonly bucketCounts: Float64Array;
  sum = 0;
  count = 0;
  /** Latest exemplar per bucket, the last slot for `+Inf`; undefined when the family keeps none. */
  readonly exemplars: (BucketExemplar | undefined)[] | undefined;

  /** The end of each bucket line's labels: `,a="x",b="y"} ` (prom-client writes `le` first), or `} `. */
  readonly bucketTail: string;
  /** `{a="x",b="y"}` for the _sum and _count lines, or ''. */
  readonly braced: string;

  constructor(
    readonly labelValues: readonly string[],
    /** `a="x",b="y"` escaped, or '' without labels. */
    labelPairs: string,
    private readonly upperBounds: Float64Array,
    keepExemplars: boolean,
  ) {
    this.bucketTail = labelPairs === '' ? '} ' : flat(`,${labelPairs}} `);
    this.braced = labelPairs === '' ? '' : flat(`{${labelPairs}}`);
    this.bucketCounts = new Float64Array(upperBounds.length);
    this.exemplars = keepExemplars
      ? new Array<BucketExemplar | undefined>(upperBounds.length + 1)
      : undefined;
  }

  /**
   * Counts `value` (finite: callers check) in the first bucket whose bound is ≥ it. `exemplar` replaces that
   * bucket's exemplar when the family keeps them; prom-client stamps it with the observation time in seconds.
   */
  observe(value: number, exemplar?: ExemplarLabels): void {
    const bounds = this.upperBounds;
    const n = bounds.length;
    let i = 0;
    while (i < n && value > (bounds[i] as number)) i++;
    if (i < n) (this.bucketCounts[i] as number) += 1;
    this.sum += value;
    this.count += 1;
    if (exemplar !== undefined && this.exemplars !== undefined) {
      const slot = this.exemplars[i];
      const timestamp = Date.now() / 1000;
      if (slot === undefined) this.exemplars[i] = { labelSet: exemplar, value, timestamp, text: undefined };
      else {
        slot.labelSet = exemplar;
        slot.value = value;
        slot.timestamp = timestamp;
        slot.text = undefined;
      }
    }
  }
}

export interface HistogramFamilyOptions extends FamilyOptions {
  /** Upper bounds, strictly increasing; `+Inf` is implied. */
  buckets: readonly number[];
  /** Keep the latest exemplar of each bucket, shown in OpenMetrics only. Default: false. */
  exemplars?: boolean;
}

export class HistogramFamily extends SeriesFamily<HistogramSeries> {
  readonly type = 'histogram' as const;
  readonly upperBounds: Float64Array;
  private readonly keepExemplars: boolean;
  /** `\n<name>_bucket{le="<bound>"` per bucket, then the `+Inf` one. */
  private readonly bucketHeads: readonly string[];
  private readonly sumHead: string;
  private readonly countHead: string;

  constructor(options: HistogramFamilyOptions) {
    super(options);
    if (options.labelNames.includes('le')) throw new Error(`${options.name}: le is a reserved label`);
    this.upperBounds = Float64Array.from(options.buckets);
    this.keepExemplars = options.exemplars ?? false;
    this.bucketHeads = [...options.buckets.map((b) => `${b}`), '+Inf'].map((le) =>
      flat(`\n${options.name}_bucket{le="${le}"`),
    );
    this.sumHead = flat(`\n${options.name}_sum`);
    this.countHead = flat(`\n${options.name}_count`);
  }

  protected create(values: readonly string[]): HistogramSeries {
    return new HistogramSeries(
      values,
      labelPairs(this.labelNames, values),
      this.upperBounds,
      this.keepExemplars,
    );
  }

  // 23 lines per series with the default buckets: about as many lines per block as a scalar family's.
  protected readonly blockSize = 16;

  protected renderHeader(): string {
    return this.header(this.baseName);
  }

  // Every observation (its buckets, sum and exemplar) moves `count`, and so does `reset`, unless the count was
  // already 0 and with it every bucket and the sum.
  protected stateOf(series: HistogramSeries): number {
    return series.count;
  }

  protected renderSeries(series: readonly HistogramSeries[], openMetrics: boolean): string {
    const heads = this.bucketHeads;
    const n = this.upperBounds.length;
    let out = '';
    for (const s of series) {
      const bucketTail = s.bucketTail;
      const exemplars = openMetrics ? s.exemplars : undefined;
      let cumulative = 0;
      for (let i = 0; i <= n; i++) {
        cumulative = i < n ? cumulative + (s.bucketCounts[i] as number) : s.count;
        out += `${heads[i] as string}${bucketTail}${cumulative}`;
        const exemplar = exemplars?.[i];
        if (exemplar !== undefined) out += exemplar.text ??= exemplarSuffix(exemplar);
      }
      out += `${this.sumHead}${s.braced} ${formatSampleValue(s.sum)}${this.countHead}${s.braced} ${s.count}`;
    }
    return out;
  }

  get(): Promise<FamilySnapshot> {
    const name = this.name;
    const n = this.upperBounds.length;
    const values: SampleSnapshot[] = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      for (let i = 0; i <= n; i++) {
        cumulative = i < n ? cumulative + (s.bucketCounts[i] as number) : s.count;
        const exemplar = s.exemplars?.[i];
        values.push({
          value: cumulative,
          metricName: `${name}_bucket`,
          exemplar:
            exemplar !== undefined
              ? { labelSet: { ...exemplar.labelSet }, value: exemplar.value, timestamp: exemplar.timestamp }
              : // prom-client's quirk, kept so snapshots compare equal: an exemplar-keeping histogram's +Inf
                // bucket has `undefined` until its first exemplar, every other bucket `null`.
                i === n && this.keepExemplars
                ? undefined
                : null,
          labels: { le: i < n ? (this.upperBounds[i] as number) : '+Inf', ...this.labelsOf(s) },
        });
      }
      values.push({ value: s.sum, metricName: `${name}_sum`, exemplar: undefined, labels: this.labelsOf(s) });
      values.push({
        value: s.count,
        metricName: `${name}_count`,
        exemplar: undefined,
        labels: this.labelsOf(s),
      });
    }
    return Promise.resolve({ name, help: this.help, type: 'histogram', values, aggregator: this.aggregator });
  }

  reset(): void {
    for (const s of this.series.values()) {
      s.bucketCounts.fill(0);
      s.sum = 0;
      s.count = 0;
      s.exemplars?.fill(undefined);
    }
  }
}

/** ` # {trace_id="…",span_id="…"} <value> <timestamp>`, as prom-client writes an exemplar. */
function exemplarSuffix(exemplar: BucketExemplar): string {
  let labels = '';
  for (const [key, value] of Object.entries(exemplar.labelSet)) {
    if (labels !== '') labels += ',';
    labels += `${key}="${escapeLabelValue(value)}"`;
  }
  return ` # {${labels}} ${formatSampleValue(exemplar.value)} ${exemplar.timestamp}`;
}
