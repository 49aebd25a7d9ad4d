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

/** One string per label tuple; length prefixes make it injective whatever the values contain. */
function tupleKey(a: string, b: string, c: string, d: string): string {
  return `${a.length}:${a}${b.length}:${b}${c.length}:${c}${d.length}:${d}`;
}

interface Entry<C> {
  child: C;
  labels: Record<string, string>;
  /** Label values after the guard, in `labelNames` order. */
  values: readonly string[];
}

/**
 * The label children of one metric, cached by their guarded value tuple, so the per-record path neither
 * builds label objects nor re-validates them, and the cache never holds more entries than there are series.
 */
export class GuardedChildren<C> {
  private readonly entries = new Map<string, Entry<C>>();
  private readonly limiters: readonly (LabelValueLimiter | undefined)[];

  constructor(
    private readonly guard: CardinalityGuard,
    readonly metric: string,
    private readonly labelNames: readonly string[],
    private readonly create: (labels: Record<string, string>) => C,
    private readonly remove: (labels: Record<string, string>) => void,
  ) {
    if (labelNames.length > 4) throw new Error(`${metric}: at most four cached labels are supported`);
    this.limiters = labelNames.map((name) =>
      isGuardedLabel(name) ? guard.limiter(metric, name) : undefined,
    );
  }

  /** The child for these label values (in `labelNames` order), guarded values mapped first. */
  get(a: string, b = '', c = '', d = ''): C {
    const now = this.guard.admitTime();
    const [l0, l1, l2, l3] = this.limiters;
    if (l0 !== undefined) a = l0.admit(a, now);
    if (l1 !== undefined) b = l1.admit(b, now);
    if (l2 !== undefined) c = l2.admit(c, now);
    if (l3 !== undefined) d = l3.admit(d, now);
    const key = tupleKey(a, b, c, d);
    let entry = this.entries.get(key);
    if (entry === undefined) {
      const values = [a, b, c, d].slice(0, this.labelNames.length);
      const labels: Record<string, string> = {};
      this.labelNames.forEach((name, i) => (labels[name] = values[i] ?? ''));
      entry = { child: this.create(labels), labels, values };
      this.entries.set(key, entry);
    }
    return entry.child;
  }

  /** Drops the series of values the limiters have released as idle. */
  sweepIdle(cutoff: number): void {
    const released = this.limiters.map((limiter) => limiter?.takeIdle(cutoff));
    if (!released.some((set) => set !== undefined && set.size > 0)) return;
    for (const [key, entry] of this.entries) {
      if (entry.values.some((value, i) => released[i]?.has(value) === true)) {
        this.remove(entry.labels);
        this.entries.delete(key);
      }
    }
  }

  get size(): number {
    return this.entries.size;
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
  private readonly overflowTotal: Counter<'metric' | 'label'>;
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
    this.precreate = options.precreateOverflowSeries ?? true;
    this.now = options.now ?? Date.now;
    this.overflowTotal = new Counter({
      name: 'pyats_exporter_label_overflow_total',
      help: 'Label values reported as __other__ because their metric already had the maximum distinct values of that label.',
      labelNames: ['metric', 'label'],
      registers: [options.registry],
    });
  }

  /** A new limiter for `label` of `metric`, reporting its overflows to the counter. */
  limiter(metric: string, label: GuardedLabel): LabelValueLimiter {
    const child = this.overflowTotal.labels(metric, label);
    if (this.precreate) child.inc(0);
    const limiter = new LabelValueLimiter(metric, label, this.perLabel[label] ?? this.maxValues, () =>
      child.inc(),
    );
    this.limiters.push(limiter);
    return limiter;
  }

  /** A guarded child cache for `metric`; `remove` deletes the series of one cached child. */
  children<C>(
    metric: string,
    labelNames: readonly string[],
    create: (labels: Record<string, string>) => C,
    remove: (labels: Record<string, string>) => void,
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
