// The cardinality guard: caps the distinct values of the free-form labels (job, task, testcase, type) per
// metric, maps the rest to `__other__`, counts every overflow, and keeps the label-children caches as small
// as the series they stand for. Policy for values that stop being used: see `LabelLimits.idleTtlMs`.
import { Counter, type Registry } from 'prom-client';
import { ConfigError } from '../errors.js';

/** Labels whose values come from the job's own data (ids, names, the wire's `type`), so are unbounded. */
export const GUARDED_LABELS = ['job', 'task', 'testcase', 'type'] as const;
export type GuardedLabel = (typeof GUARDED_LABELS)[number];

/** The one value every label value past the cap is reported as. */
export const OTHER_LABEL_VALUE = '__other__';

export const DEFAULT_MAX_LABEL_VALUES = 1000;

export interface LabelLimits {
  /** Distinct values of each guarded label per metric; later new values become `__other__`. Default: 1000. */
  maxValues?: number;
  /** Per-label override of `maxValues`, e.g. `{ testcase: 5000 }`. */
  perLabel?: Partial<Record<GuardedLabel, number>>;
  /**
   * Milliseconds after which a value no record has used is released, together with every series carrying
   * it, so its slot can be taken by a new value. 0 (default): values are kept for the life of the process,
   * because dropping a series resets its counters and makes a `*_last_result` alert resolve on its own.
   */
  idleTtlMs?: number;
}

/** Refuses limits that cannot work, with the bad value in the message (start-up only). */
export function validateLabelLimits(limits: LabelLimits): void {
  const bad = (what: string): never => {
    throw new ConfigError('INVALID_LABEL_LIMIT', what);
  };
  const checkCap = (name: string, value: number | undefined): void => {
    if (value !== undefined && !(Number.isSafeInteger(value) && value >= 1)) {
      bad(`${name} must be a whole number of at least 1: ${String(value)}`);
    }
  };
  checkCap('maxValues', limits.maxValues);
  for (const [label, value] of Object.entries(limits.perLabel ?? {})) {
    if (!(GUARDED_LABELS as readonly string[]).includes(label)) {
      bad(`no limit can be set for label "${label}"; guarded labels: ${GUARDED_LABELS.join(', ')}`);
    }
    checkCap(`the limit of label "${label}"`, value);
  }
  const ttl = limits.idleTtlMs;
  if (ttl !== undefined && !(Number.isFinite(ttl) && ttl >= 0)) {
    bad(`idleTtlMs must be 0 or a positive number of milliseconds: ${String(ttl)}`);
  }
}

export function isGuardedLabel(label: string): label is GuardedLabel {
  return (GUARDED_LABELS as readonly string[]).includes(label);
}

/** The admitted values of one label of one metric, each with the time it was last used. */
export class LabelValueLimiter {
  private readonly lastUsed = new Map<string, number>();

  constructor(
    readonly metric: string,
    readonly label: GuardedLabel,
    readonly max: number,
    private readonly overflowed: () => void,
  ) {}

  /** `value` itself while it has (or can take) a slot; `__other__` once the cap is reached. */
  admit(value: string, now: number): string {
    if (this.lastUsed.has(value)) {
      this.lastUsed.set(value, now);
      return value;
    }
    // A job that really names something `__other__` joins the overflow series instead of taking a slot.
    if (value === OTHER_LABEL_VALUE) return value;
    if (this.lastUsed.size < this.max) {
      this.lastUsed.set(value, now);
      return value;
    }
    this.overflowed();
    return OTHER_LABEL_VALUE;
  }

  /** What `admit` would answer for a value already seen, without taking a slot or counting an overflow. */
  lookup(value: string): string {
    return this.lastUsed.has(value) ? value : OTHER_LABEL_VALUE;
  }

  /** Frees the slot of a value whose series are gone. */
  release(value: string): void {
    this.lastUsed.delete(value);
  }

  /** Releases and returns the values last used before `cutoff`. */
  takeIdle(cutoff: number): Set<string> {
    const idle = new Set<string>();
    for (const [value, used] of this.lastUsed) {
      if (used < cutoff) idle.add(value);
    }
    for (const value of idle) this.lastUsed.delete(value);
    return idle;
  }

  get size(): number {
    return this.lastUsed.size;
  }
}

type Level3<C> = Map<string, C>;
type Level2<C> = Map<string, Level3<C>>;
type Level1<C> = Map<string, Level2<C>>;

/**
 * The label children of one metric by their guarded values, in nested Maps (one level per label, `''` past
 * the last), so the per-record path builds no key string, and the cache never holds more children than there
 * are series.
 */
export class GuardedChildren<C> {
  private readonly root = new Map<string, Level1<C>>();
  private count = 0;
  private readonly limiters: readonly (LabelValueLimiter | undefined)[];
  private readonly l0: LabelValueLimiter | undefined;
  private readonly l1: LabelValueLimiter | undefined;
  private readonly l2: LabelValueLimiter | undefined;
  private readonly l3: LabelValueLimiter | undefined;

  constructor(
    private readonly guard: CardinalityGuard,
    readonly metric: string,
    private readonly labelNames: readonly string[],
    private readonly create: (values: readonly string[]) => C,
    private readonly remove: (values: readonly string[], child: C) => void,
  ) {
    if (labelNames.length > 4) throw new Error(`${metric}: at most four cached labels are supported`);
    this.limiters = labelNames.map((name) =>
      isGuardedLabel(name) ? guard.limiter(metric, name) : undefined,
    );
    [this.l0, this.l1, this.l2, this.l3] = this.limiters;
  }

  /** The child for these label values (in `labelNames` order), guarded values mapped first. */
  get(a: string, b = '', c = '', d = ''): C {
    // A child found under the values as given means each of them holds a slot (or is `__other__` itself):
    // admitting them again would change nothing and count no overflow, unless idle values expire, when their
    // last use must be noted.
    const hit = this.root.get(a)?.get(b)?.get(c)?.get(d);
    if (hit !== undefined) {
      if (this.guard.expires) this.admit(a, b, c, d);
      return hit;
    }
    return this.admit(a, b, c, d);
  }

  private admit(a: string, b: string, c: string, d: string): C {
    const now = this.guard.admitTime();
    if (this.l0 !== undefined) a = this.l0.admit(a, now);
    if (this.l1 !== undefined) b = this.l1.admit(b, now);
    if (this.l2 !== undefined) c = this.l2.admit(c, now);
    if (this.l3 !== undefined) d = this.l3.admit(d, now);
    let m1 = this.root.get(a);
    if (m1 === undefined) this.root.set(a, (m1 = new Map()));
    let m2 = m1.get(b);
    if (m2 === undefined) m1.set(b, (m2 = new Map()));
    let m3 = m2.get(c);
    if (m3 === undefined) m2.set(c, (m3 = new Map()));
    let child = m3.get(d);
    if (child === undefined) {
      child = this.create([a, b, c, d].slice(0, this.labelNames.length));
      m3.set(d, child);
      this.count += 1;
    }
    return child;
  }

  /** Drops the series of values the limiters have released as idle. */
  sweepIdle(cutoff: number): void {
    const released = this.limiters.map((limiter) => limiter?.takeIdle(cutoff));
    if (!released.some((set) => set !== undefined && set.size > 0)) return;
    const gone = (i: number, value: string): boolean => released[i]?.has(value) === true;
    const width = this.labelNames.length;
    // Deleting the entry being visited is safe in a Map iteration; emptied levels are pruned on the way up.
    for (const [a, m1] of this.root) {
      for (const [b, m2] of m1) {
        for (const [c, m3] of m2) {
          for (const [d, child] of m3) {
            if (gone(0, a) || gone(1, b) || gone(2, c) || gone(3, d)) {
              this.remove([a, b, c, d].slice(0, width), child);
              m3.delete(d);
              this.count -= 1;
            }
          }
          if (m3.size === 0) m2.delete(c);
        }
        if (m2.size === 0) m1.delete(b);
      }
      if (m1.size === 0) this.root.delete(a);
    }
  }

  get size(): number {
    return this.count;
  }
}

export interface CardinalityGuardOptions {
  /** Where `pyats_exporter_label_overflow_total` is registered. */
  registry: Registry;
  limits?: LabelLimits;
  /** Create every (metric, label) overflow series at 0 up front, so `increase()` sees the first overflow. Default: true. */
  precreateOverflowSeries?: boolean;
  /** Clock for `idleTtlMs`, epoch ms. Default: Date.now. */
  now?: () => number;
}

export interface LabelStats {
  metric: string;
  label: GuardedLabel;
  /** Distinct values admitted now. */
  values: number;
  max: number;
}

/** The limits and limiters of one MetricsSink, and the overflow counter they report to. */
export class CardinalityGuard {
  /** True when values idle for `idleTtlMs` are released, so every use must be time-stamped. */
  readonly expires: boolean;
  private readonly overflowTotal: Counter<'metric' | 'label'>;
  /** Overflows counted since the last collection, per overflow series, in the order they first happened. */
  private readonly pendingOverflows = new Map<{ metric: string; label: GuardedLabel }, number>();
  private readonly limiters: LabelValueLimiter[] = [];
  private readonly caches: GuardedChildren<unknown>[] = [];
  private readonly maxValues: number;
  private readonly perLabel: Partial<Record<GuardedLabel, number>>;
  private readonly idleTtlMs: number;
  private readonly precreate: boolean;
  private readonly now: () => number;
  private lastSweep: number | undefined;

  constructor(options: CardinalityGuardOptions) {
    const limits = options.limits ?? {};
    validateLabelLimits(limits);
    this.maxValues = limits.maxValues ?? DEFAULT_MAX_LABEL_VALUES;
    this.perLabel = { ...limits.perLabel };
    this.idleTtlMs = limits.idleTtlMs ?? 0;
    this.expires = this.idleTtlMs > 0;
    this.precreate = options.precreateOverflowSeries ?? true;
    this.now = options.now ?? Date.now;
    const pending = this.pendingOverflows;
    this.overflowTotal = new Counter({
      name: 'pyats_exporter_label_overflow_total',
      help: 'Label values reported as __other__ because their metric already had the maximum distinct values of that label.',
      labelNames: ['metric', 'label'],
      registers: [options.registry],
      // A flood of new values overflows on every record: counted in a Map, handed to prom-client when read.
      collect() {
        for (const [labels, count] of pending) this.inc(labels, count);
        pending.clear();
      },
    });
  }

  /** A new limiter for `label` of `metric`, reporting its overflows to the counter. */
  limiter(metric: string, label: GuardedLabel): LabelValueLimiter {
    const labels = { metric, label };
    if (this.precreate) this.overflowTotal.inc(labels, 0);
    const pending = this.pendingOverflows;
    const limiter = new LabelValueLimiter(metric, label, this.perLabel[label] ?? this.maxValues, () =>
      pending.set(labels, (pending.get(labels) ?? 0) + 1),
    );
    this.limiters.push(limiter);
    return limiter;
  }

  /** A guarded child cache for `metric`; `create` makes the series of a value tuple, `remove` deletes them. */
  children<C>(
    metric: string,
    labelNames: readonly string[],
    create: (values: readonly string[]) => C,
    remove: (values: readonly string[], child: C) => void,
  ): GuardedChildren<C> {
    const cache = new GuardedChildren(this, metric, labelNames, create, remove);
    this.caches.push(cache as GuardedChildren<unknown>);
    return cache;
  }

  /** The time stamped on admitted values: 0 when nothing ever expires, so the hot path skips the clock. */
  admitTime(): number {
    return this.idleTtlMs > 0 ? this.now() : 0;
  }

  /**
   * Releases values idle for longer than `idleTtlMs` and removes their series. Cheap to call on every
   * record: it does the work at most once per tenth of the TTL.
   */
  sweep(): void {
    if (this.idleTtlMs <= 0) return;
    const now = this.now();
    if (this.lastSweep !== undefined && now - this.lastSweep < this.idleTtlMs / 10) return;
    this.lastSweep = now;
    const cutoff = now - this.idleTtlMs;
    for (const cache of this.caches) cache.sweepIdle(cutoff);
  }

  stats(): LabelStats[] {
    return this.limiters.map((l) => ({ metric: l.metric, label: l.label, values: l.size, max: l.max }));
  }

  /** Cached label children per metric. */
  childCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const cache of this.caches) counts[cache.metric] = (counts[cache.metric] ?? 0) + cache.size;
    return counts;
  }
}
