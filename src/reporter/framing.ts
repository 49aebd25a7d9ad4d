// Size-prefixed frames of the pyATS reporter socket: header formats, detection of the undocumented
// prefix (DESIGN §1) and an incremental reader. Pure: bytes in, frame payloads out; no I/O here.

/** Width and byte order of the size prefix in front of every pickled message. */
export type HeaderFormat = { width: 4 | 8; endian: 'big' | 'little' };

/** Every format the reporter might use, in the order `detectHeader` tries them. */
export const HEADER_FORMATS: readonly HeaderFormat[] = [
  { width: 4, endian: 'big' },
  { width: 4, endian: 'little' },
  { width: 8, endian: 'big' },
  { width: 8, endian: 'little' },
];

const HEADER_FORMAT_NAMES = ['4be', '4le', '8be', '8le'] as const;

/** A header format string (CLI / config) that is not one of `4be`, `4le`, `8be`, `8le`. */
export class HeaderFormatError extends Error {
  readonly code = 'bad_header_format';

  constructor(readonly value: string) {
    super(`bad header format ${JSON.stringify(value)}: expected one of ${HEADER_FORMAT_NAMES.join(', ')}`);
    this.name = 'HeaderFormatError';
  }
}

export type FrameErrorCode = 'frame_too_large' | 'undetectable_header';

/** The byte stream cannot be framed; the connection must be reset (and the reader with it). */
export class FrameError extends Error {
  constructor(
    readonly code: FrameErrorCode,
    message: string,
    /** Payloads completed by the same push before the bad header; deliver them before giving up. */
    readonly frames: Uint8Array[] = [],
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Parses `4be`, `4le`, `8be` or `8le` (`auto` is the caller's business). */
export function parseHeaderFormat(s: string): HeaderFormat {
  const match = /^([48])(be|le)$/.exec(s);
  if (!match) throw new HeaderFormatError(s);
  return { width: match[1] === '8' ? 8 : 4, endian: match[2] === 'le' ? 'little' : 'big' };
}

export function formatHeader(h: HeaderFormat): string {
  return `${h.width}${h.endian === 'big' ? 'be' : 'le'}`;
}

/** Prefixes `payload` with its size in format `h`. */
export function encodeFrame(payload: Uint8Array, h: HeaderFormat): Uint8Array {
  const out = new Uint8Array(h.width + payload.length);
  const view = new DataView(out.buffer);
  const little = h.endian === 'little';
  if (h.width === 4) {
    if (payload.length > 0xffffffff)
      throw new RangeError(`payload of ${payload.length} bytes needs an 8-byte header`);
    view.setUint32(0, payload.length, little);
  } else {
    view.setBigUint64(0, BigInt(payload.length), little);
  }
  out.set(payload, h.width);
  return out;
}

// pickle protocol >= 2 always opens with PROTO (0x80) and the protocol number, and ends with STOP ('.').
const PICKLE_PROTO = 0x80;
const PICKLE_STOP = 0x2e;
const MIN_PROTOCOL = 2;
const MAX_PROTOCOL = 5;
const MIN_FRAME_BYTES = 3;
// How many frames past the first one an ambiguous candidate is checked against; bounds the work per push.
const CHAIN_CHECK_FRAMES = 16;

type HeaderVerdict = { kind: 'invalid' } | { kind: 'pending' } | { kind: 'plausible'; size: number };

/**
 * Judges the frame header at `offset` in format `h` with whatever bytes are buffered: `invalid` as soon as
 * a known byte rules it out (a partial size is a lower bound), `pending` while a needed byte is missing.
 */
function judgeHeader(buf: Uint8Array, offset: number, h: HeaderFormat, maxFrameBytes: number): HeaderVerdict {
  let lowerBound = 0n;
  let complete = true;
  for (let i = 0; i < h.width; i++) {
    const byte = buf[offset + i];
    if (byte === undefined) {
      complete = false;
      continue;
    }
    const significance = h.endian === 'big' ? h.width - 1 - i : i;
    lowerBound |= BigInt(byte) << BigInt(8 * significance);
  }
  if (lowerBound > BigInt(maxFrameBytes)) return { kind: 'invalid' };
  if (complete && lowerBound < BigInt(MIN_FRAME_BYTES)) return { kind: 'invalid' };
  const proto = buf[offset + h.width];
  const version = buf[offset + h.width + 1];
  if (proto !== undefined && proto !== PICKLE_PROTO) return { kind: 'invalid' };
  if (version !== undefined && (version < MIN_PROTOCOL || version > MAX_PROTOCOL)) return { kind: 'invalid' };
  if (!complete || proto === undefined || version === undefined) return { kind: 'pending' };
  return { kind: 'plausible', size: Number(lowerBound) };
}

/**
 * For a candidate whose first header is plausible: false when a buffered frame of its chain does not end
 * with STOP or a following header is implausible, true otherwise (including "not enough bytes to tell").
 */
function chainIsConsistent(
  buf: Uint8Array,
  h: HeaderFormat,
  firstSize: number,
  maxFrameBytes: number,
): boolean {
  let end = h.width + firstSize;
  if (end > buf.length) return true;
  if (buf[end - 1] !== PICKLE_STOP) return false;
  for (let n = 0; n < CHAIN_CHECK_FRAMES && end < buf.length; n++) {
    const next = judgeHeader(buf, end, h, maxFrameBytes);
    if (next.kind === 'invalid') return false;
    if (next.kind === 'pending') return true;
    const nextEnd = end + h.width + next.size;
    if (nextEnd > buf.length) return true;
    if (buf[nextEnd - 1] !== PICKLE_STOP) return false;
    end = nextEnd;
  }
  return true;
}

/**
 * Finds the size-prefix format from the first bytes of a connection (DESIGN §1): the one format whose size
 * is plausible (3..maxFrameBytes) and is followed by a pickle PROTO opcode. When several are plausible,
 * those whose fully buffered frame does not end with STOP (or whose next frames do not line up) drop out.
 * Returns `'need_more'` while the buffered bytes cannot decide, `undefined` when no format can match.
 */
export function detectHeader(buf: Uint8Array, maxFrameBytes: number): HeaderFormat | 'need_more' | undefined {
  const judged = HEADER_FORMATS.map((format) => ({
    format,
    verdict: judgeHeader(buf, 0, format, maxFrameBytes),
  }));
  const alive = judged.filter((c) => c.verdict.kind !== 'invalid');
  if (alive.length === 0) return undefined;
  const remaining =
    alive.length === 1
      ? alive
      : alive.filter(
          (c) =>
            c.verdict.kind !== 'plausible' || chainIsConsistent(buf, c.format, c.verdict.size, maxFrameBytes),
        );
  const [only, ...others] = remaining;
  if (only === undefined) return undefined;
  if (others.length > 0 || only.verdict.kind !== 'plausible') return 'need_more';
  return only.format;
}

export interface FrameReaderOptions {
  /** A fixed format, or `'auto'` to detect it from the first frame. */
  header: HeaderFormat | 'auto';
  /** Frames announcing more payload bytes than this are refused with `frame_too_large`. */
  maxFrameBytes: number;
}

const MAX_HEADER_WIDTH = 8;
const COMPACT_AFTER_CHUNKS = 1024;

/**
 * Turns a byte stream into frame payloads. Returned payloads may alias the pushed chunks (a subarray when a
 * payload lies within one chunk), so callers must not modify a chunk after pushing it; payloads spanning
 * chunks are fresh copies. Each byte is copied at most twice (once while detecting, once into a payload).
 */
export class FrameReader {
  private format: HeaderFormat | undefined;
  // Bytes seen before the header format is known, in one buffer grown by doubling.
  private staging = new Uint8Array(0);
  private stagingLength = 0;
  // Bytes after detection: a queue of chunks; `chunkIndex`/`chunkOffset` mark the first unread byte.
  private chunks: Uint8Array[] = [];
  private chunkIndex = 0;
  private chunkOffset = 0;
  private queuedBytes = 0;
  // Payload size of the frame whose header has been consumed but whose payload is not complete yet.
  private pendingSize: number | undefined;
  private failure: FrameError | undefined;
  // The size prefix being read, kept for the error message.
  private readonly header = new Uint8Array(MAX_HEADER_WIDTH);

  constructor(private readonly options: FrameReaderOptions) {
    this.format = options.header === 'auto' ? undefined : options.header;
  }

  /** The format in use: the forced one, or the detected one (undefined until detection succeeds). */
  get detected(): HeaderFormat | undefined {
    return this.format;
  }

  /** Bytes received that are not part of a returned payload yet (a partial frame, headers included). */
  get bufferedBytes(): number {
    const header = this.pendingSize !== undefined && this.format ? this.format.width : 0;
    return this.stagingLength + this.queuedBytes + header;
  }

  /** Forgets buffered bytes, the failure and (with `header: 'auto'`) the detected format. */
  reset(): void {
    this.format = this.options.header === 'auto' ? undefined : this.options.header;
    this.staging = new Uint8Array(0);
    this.stagingLength = 0;
    this.chunks = [];
    this.chunkIndex = 0;
    this.chunkOffset = 0;
    this.queuedBytes = 0;
    this.pendingSize = undefined;
    this.failure = undefined;
  }

  /**
   * Adds bytes; returns the payloads of the frames completed by them. Throws `FrameError` (sticky until
   * reset; its `frames` holds the payloads this push completed before the bad header).
   */
  push(data: Uint8Array): Uint8Array[] {
    if (this.failure) throw this.failure;
    if (data.length === 0) return [];
    // A plain view of a Buffer: its payload subarrays are then plain Uint8Arrays, cheaper to make (no species
    // lookup) and what the unpickler wants.
    const chunk =
      data.constructor === Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (this.format === undefined) {
      this.stage(chunk);
      const format = this.detect();
      if (format === undefined) return [];
      this.format = format;
      this.enqueue(this.staging.subarray(0, this.stagingLength));
      this.staging = new Uint8Array(0);
      this.stagingLength = 0;
    } else {
      this.enqueue(chunk);
    }
    return this.drain(this.format);
  }

  private fail(code: FrameErrorCode, message: string): never {
    this.failure = new FrameError(code, message);
    throw this.failure;
  }

  private stage(chunk: Uint8Array): void {
    const needed = this.stagingLength + chunk.length;
    if (needed > this.staging.length) {
      const grown = new Uint8Array(Math.max(needed, this.staging.length * 2, 64));
      grown.set(this.staging.subarray(0, this.stagingLength));
      this.staging = grown;
    }
    this.staging.set(chunk, this.stagingLength);
    this.stagingLength = needed;
  }

  private detect(): HeaderFormat | undefined {
    const { maxFrameBytes } = this.options;
    const view = this.staging.subarray(0, this.stagingLength);
    const result = detectHeader(view, maxFrameBytes);
    if (result === 'need_more') {
      // Past this every candidate's first frame is complete, so more bytes cannot settle it.
      if (this.stagingLength > MAX_HEADER_WIDTH + maxFrameBytes + 2) {
        this.fail('undetectable_header', `header format still ambiguous after ${this.stagingLength} bytes`);
      }
      return undefined;
    }
    if (result !== undefined) return result;
    // Would a format fit if the limit were lifted? Then the stream is fine but the frame is refused.
    if (typeof detectHeader(view, Number.MAX_SAFE_INTEGER) === 'object') {
      this.fail('frame_too_large', `first frame announces more than maxFrameBytes (${maxFrameBytes}) bytes`);
    }
    const head = Array.from(view.subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join('');
    this.fail('undetectable_header', `no size-prefix format fits the first bytes (${head})`);
  }

  private enqueue(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.queuedBytes += chunk.length;
  }

  private drain(format: HeaderFormat): Uint8Array[] {
    const frames: Uint8Array[] = [];
    try {
      for (;;) {
        if (this.pendingSize === undefined) {
          if (this.queuedBytes < format.width) break;
          this.pendingSize = this.readSize(format);
        }
        if (this.queuedBytes < this.pendingSize) break;
        frames.push(this.take(this.pendingSize));
        this.pendingSize = undefined;
      }
    } catch (err) {
      if (err instanceof FrameError && frames.length > 0) throw new FrameError(err.code, err.message, frames);
      throw err;
    }
    this.compact();
    return frames;
  }

  private readSize(format: HeaderFormat): number {
    // Byte by byte from the queue: no subarray or DataView per frame. The sum is exact below 2^53, and any
    // larger size is refused below anyway.
    const header = this.header;
    let size = 0;
    for (let i = 0; i < format.width; i++) {
      const chunk = this.chunks[this.chunkIndex]!;
      const byte = chunk[this.chunkOffset]!;
      this.advance(chunk, 1);
      header[i] = byte;
      size = format.endian === 'big' ? size * 256 + byte : size + byte * 2 ** (8 * i);
    }
    this.queuedBytes -= format.width;
    if (size > this.options.maxFrameBytes) {
      let exact = 0n;
      for (let i = 0; i < format.width; i++) {
        exact = (exact << 8n) | BigInt(header[format.endian === 'big' ? i : format.width - 1 - i]!);
      }
      this.fail(
        'frame_too_large',
        `frame announces ${exact} bytes, more than maxFrameBytes (${this.options.maxFrameBytes})`,
      );
    }
    return size;
  }

  /** Removes `n` queued bytes (n <= queuedBytes): a subarray when they lie in one chunk, else a copy. */
  private take(n: number): Uint8Array {
    this.queuedBytes -= n;
    const first = this.chunks[this.chunkIndex];
    if (n === 0 || first === undefined) return new Uint8Array(0);
    if (first.length - this.chunkOffset >= n) {
      const out = first.subarray(this.chunkOffset, this.chunkOffset + n);
      this.advance(first, n);
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[this.chunkIndex];
      if (chunk === undefined) throw new Error('FrameReader: queue shorter than its byte count');
      const count = Math.min(n - filled, chunk.length - this.chunkOffset);
      out.set(chunk.subarray(this.chunkOffset, this.chunkOffset + count), filled);
      filled += count;
      this.advance(chunk, count);
    }
    return out;
  }

  private advance(chunk: Uint8Array, count: number): void {
    this.chunkOffset += count;
    if (this.chunkOffset === chunk.length) {
      this.chunkIndex++;
      this.chunkOffset = 0;
    }
  }

  // Drops consumed chunks without an O(n) shift per frame.
  private compact(): void {
    if (this.chunkIndex === this.chunks.length) {
      this.chunks = [];
      this.chunkIndex = 0;
    } else if (this.chunkIndex > COMPACT_AFTER_CHUNKS && this.chunkIndex * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.chunkIndex);
      this.chunkIndex = 0;
    }
  }
}
