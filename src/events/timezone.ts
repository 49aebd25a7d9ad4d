// Turns a naive wall-clock time (what pyATS sends when its datetimes carry no tzinfo) into epoch ms,
// for the zone of the machine that ran the job (`--timezone`).
import { ConfigError } from '../errors.js';

const FIXED_OFFSET = /^(?:UTC|GMT|Z)?([+-])(\d{1,2})(?::?(\d{2}))?$/i;

export interface Zone {
  /** The zone as configured, for messages. */
  readonly name: string;
  /** Offset from UTC in ms at the given wall-clock time (read as if it were UTC). */
  offsetAtWallClock(wallClockAsUtcMs: number): number;
  /** Offset from UTC in ms at a real instant. */
  offsetAtInstant(epochMs: number): number;
}

/** The exporter host's own zone, used when `--timezone` is not given. */
export function localZoneName(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

/**
 * `UTC`, a fixed offset (`+05:30`, `UTC-3`), or an IANA name (`Europe/Paris`). Throws ConfigError for
 * anything else, so a typo fails at start-up rather than skewing every span.
 */
export function resolveZone(name: string): Zone {
  const trimmed = name.trim();
  if (/^(UTC|GMT|Z|Etc\/UTC)$/i.test(trimmed)) return fixedZone(trimmed, 0);
  const fixed = FIXED_OFFSET.exec(trimmed);
  if (fixed) {
    const hours = Number(fixed[2]);
    const minutes = Number(fixed[3] ?? '0');
    if (hours > 23 || minutes > 59) throw new ConfigError('bad_timezone', `invalid UTC offset "${name}"`);
    return fixedZone(trimmed, (fixed[1] === '-' ? -1 : 1) * (hours * 60 + minutes) * 60_000);
  }
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone: trimmed,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  } catch {
    throw new ConfigError(
      'bad_timezone',
      `unknown time zone "${name}" (use an IANA name or an offset like +02:00)`,
    );
  }
  return ianaZone(trimmed, format);
}

function fixedZone(name: string, offsetMs: number): Zone {
  return { name, offsetAtWallClock: () => offsetMs, offsetAtInstant: () => offsetMs };
}

function ianaZone(name: string, format: Intl.DateTimeFormat): Zone {
  // Offsets change at most a few times a year; cache per UTC hour so the hot path skips Intl.
  const cache = new Map<number, number>();
  const offsetAtInstant = (epochMs: number): number => {
    const hour = Math.floor(epochMs / 3_600_000);
    const cached = cache.get(hour);
    if (cached !== undefined) return cached;
    const parts: Record<string, number> = {};
    for (const part of format.formatToParts(new Date(hour * 3_600_000))) {
      if (part.type !== 'literal') parts[part.type] = Number(part.value);
    }
    const asUtc = Date.UTC(
      parts.year ?? 1970,
      (parts.month ?? 1) - 1,
      parts.day ?? 1,
      parts.hour ?? 0,
      parts.minute ?? 0,
      parts.second ?? 0,
    );
    const offset = asUtc - hour * 3_600_000;
    if (cache.size > 10_000) cache.clear();
    cache.set(hour, offset);
    return offset;
  };
  return {
    name,
    offsetAtInstant,
    // Two passes settle the offset around DST transitions (the instant depends on the offset we seek).
    offsetAtWallClock(wall: number): number {
      const first = offsetAtInstant(wall);
      const second = offsetAtInstant(wall - first);
      return second;
    },
  };
}
