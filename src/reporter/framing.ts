// Message framing of the pyATS reporter socket: the formats, detection of the one a connection speaks
// (DESIGN §1) and an incremental reader. Pure: bytes in, message payloads out; no I/O here.
//
// pyATS 23.2 (observed on a real reporter, ../shared/real-pyats) sends every message in chunks: each chunk
// is `struct.pack('>?H', more_follows, length)` (a bool byte, a big-endian uint16 of at most 65,535) and
// that many bytes; the message is the chunks up to the one whose more_follows is False. pyATS 20.2 sent
// one 4-byte big-endian size (`>I`) per message. The 4le/8be/8le variants are kept for servers that differ;
// none is ever assumed without the bytes saying so.

/** `chunked` (pyATS 23.x), or a single size prefix of 4 or 8 bytes in either byte order. */
export type FrameFormat = 'chunked' | '4be' | '4le' | '8be' | '8le';

/** Every format, in the order `detectFormat` tries them. */
export const FRAME_FORMATS: readonly FrameFormat[] = ['chunked', '4be', '4le', '8be', '8le'];

/** Bytes of one chunk's payload at most (the uint16 of the chunk header). */
export const MAX_CHUNK_BYTES = 0xffff;
const CHUNK_HEADER_BYTES = 3;

/** A format string (CLI / config) that is not one of FRAME_FORMATS. */
export class FrameFormatError extends Error {
  readonly code = 'bad_frame_format';

  constructor(readonly value: string) {
    super(`bad frame format ${JSON.stringify(value)}: expected one of ${FRAME_FORMATS.join(', ')}`);
    this.name = 'FrameFormatError';
  }
}

export type FrameErrorCode = 'frame_too_large' | 'undetectable_header' | 'bad_chunk_header';

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

export function parseFrameFormat(s: string): FrameFormat {
  if (!(FRAME_FORMATS as readonly string[]).includes(s)) throw new FrameFormatError(s);
  return s as FrameFormat;
}

/** Bytes in front of each (chunk or message) payload. */
function headerWidth(format: FrameFormat): number {
  return format === 'chunked' ? CHUNK_HEADER_BYTES : format[0] === '8' ? 8 : 4;
}

function isLittleEndian(format: FrameFormat): boolean {
  return format.endsWith('le');
}

/** Frames `payload` as one message in `format`: chunks of at most 65,535 bytes, or one size prefix. */
export function encodeFrame(payload: Uint8Array, format: FrameFormat): Uint8Array {
  if (format === 'chunked') {
    const chunks = Math.max(1, Math.ceil(payload.length / MAX_CHUNK_BYTES));
    const out = new Uint8Array(payload.length + chunks * CHUNK_HEADER_BYTES);
    const view = new DataView(out.buffer);
    let at = 0;
    for (let i = 0; i < chunks; i++) {
      const part = payload.subarray(i * MAX_CHUNK_BYTES, (i + 1) * MAX_CHUNK_BYTES);
      out[at] = i < chunks - 1 ? 1 : 0;
      view.setUint16(at + 1, part.length, false);
      out.set(part, at + CHUNK_HEADER_BYTES);
      at += CHUNK_HEADER_BYTES + part.length;
    }
    return out;
  }
  const width = headerWidth(format);
  const out = new Uint8Array(width + payload.length);
  const view = new DataView(out.buffer);
  const little = isLittleEndian(format);
  if (width === 4) {
    if (payload.length > 0xffffffff)
      throw new RangeError(`payload of ${payload.length} bytes needs an 8-byte header`);
    view.setUint32(0, payload.length, little);
  } else {
    view.setBigUint64(0, BigInt(payload.length), little);
  }
  out.set(payload, width);
  return out;
}

// pickle protocol >= 2 always opens with PROTO (0x80) and the protocol number, and ends with STOP ('.').
const PICKLE_PROTO = 0x80;
const PICKLE_STOP = 0x2e;
const MIN_PROTOCOL = 2;
const MAX_PROTOCOL = 5;
const MIN_PICKLE_BYTES = 3;
// How many frames past the first one an ambiguous candidate is checked against; bounds the work per push.
const CHAIN_CHECK_FRAMES = 16;

/**
 * A header as far as the buffered bytes tell: `invalid` as soon as a known byte rules it out (a partial
 * size is a lower bound), `pending` while a needed byte is missing. `size` is the payload after the header
 * (the chunk's, for `chunked`); `last` is false for a chunk whose message goes on.
 */
type HeaderVerdict =
  { kind: 'invalid' } | { kind: 'pending' } | { kind: 'plausible'; size: number; last: boolean };

/** Reads the size bytes of a length-prefixed header at `offset`, as far as they are buffered. */
function judgeSize(
  buf: Uint8Array,
  offset: number,
  format: FrameFormat,
): { lowerBound: bigint; complete: boolean } {
  const width = headerWidth(format);
  const little = isLittleEndian(format);
  let lowerBound = 0n;
  let complete = true;
  for (let i = 0; i < width; i++) {
    const byte = buf[offset + i];
    if (byte === undefined) {
      complete = false;
      continue;
    }
    const significance = little ? i : width - 1 - i;
    lowerBound |= BigInt(byte) << BigInt(8 * significance);
  }
  return { lowerBound, complete };
}

/** Judges the header at `offset` of a message's first frame (whose payload must open a pickle). */
function judgeHeader(
  buf: Uint8Array,
  offset: number,
  format: FrameFormat,
  maxFrameBytes: number,
): HeaderVerdict {
  let size: bigint;
  let complete: boolean;
  let last = true;
  if (format === 'chunked') {
    const more = buf[offset];
    if (more !== undefined && more > 1) return { kind: 'invalid' };
    last = more !== 1;
    const high = buf[offset + 1];
    const low = buf[offset + 2];
    size = BigInt(((high ?? 0) << 8) | (low ?? 0));
    complete = more !== undefined && high !== undefined && low !== undefined;
    // A message ends with STOP, so a last chunk holds at least a whole small pickle; a chunk that is not the
    // last is full in pyATS, but a shorter one is still well-formed.
    if (complete && size < BigInt(last ? MIN_PICKLE_BYTES : 2)) return { kind: 'invalid' };
  } else {
    ({ lowerBound: size, complete } = judgeSize(buf, offset, format));
    if (size > BigInt(maxFrameBytes)) return { kind: 'invalid' };
    if (complete && size < BigInt(MIN_PICKLE_BYTES)) return { kind: 'invalid' };
  }
  const start = offset + headerWidth(format);
  const proto = buf[start];
  const version = buf[start + 1];
  if (proto !== undefined && proto !== PICKLE_PROTO) return { kind: 'invalid' };
  if (version !== undefined && (version < MIN_PROTOCOL || version > MAX_PROTOCOL)) return { kind: 'invalid' };
  if (!complete || proto === undefined || version === undefined) return { kind: 'pending' };
  return { kind: 'plausible', size: Number(size), last };
}

/**
 * For a candidate whose first header is plausible: false when a buffered message of its chain does not end
 * with STOP or a following header is implausible, true otherwise (including "not enough bytes to tell").
 * Chunked messages of several chunks are followed only to their first chunk's end: their continuation
 * chunks open with arbitrary bytes.
 */
function chainIsConsistent(
  buf: Uint8Array,
  format: FrameFormat,
  first: { size: number; last: boolean },
  maxFrameBytes: number,
): boolean {
  const width = headerWidth(format);
  let end = width + first.size;
  if (!first.last || end > buf.length) return true;
  if (buf[end - 1] !== PICKLE_STOP) return false;
  for (let n = 0; n < CHAIN_CHECK_FRAMES && end < buf.length; n++) {
    const next = judgeHeader(buf, end, format, maxFrameBytes);
    if (next.kind === 'invalid') return false;
    if (next.kind === 'pending' || !next.last) return true;
    const nextEnd = end + width + next.size;
    if (nextEnd > buf.length) return true;
    if (buf[nextEnd - 1] !== PICKLE_STOP) return false;
    end = nextEnd;
  }
  return true;
}

/**
 * Finds the format from the first bytes of a connection (DESIGN §1): the one whose header is plausible and
 * is followed by a pickle PROTO opcode. `chunked` and the 4-byte big-endian prefix never both fit (the
 * byte after the header is PROTO for one and the protocol number for the other); when several length
 * prefixes do, those whose fully buffered message does not end with STOP (or whose next headers do not line
 * up) drop out. Returns `'need_more'` while the buffered bytes cannot decide, `undefined` when none fits.
 */
export function detectFormat(buf: Uint8Array, maxFrameBytes: number): FrameFormat | 'need_more' | undefined {
  const judged = FRAME_FORMATS.map((format) => ({
    format,
    verdict: judgeHeader(buf, 0, format, maxFrameBytes),
  }));
  const alive = judged.filter((c) => c.verdict.kind !== 'invalid');
  if (alive.length === 0) return undefined;
  const remaining =
    alive.length === 1
      ? alive
      : alive.filter(
          (c) => c.verdict.kind !== 'plausible' || chainIsConsistent(buf, c.format, c.verdict, maxFrameBytes),
        );
  const [only, ...others] = remaining;
  if (only === undefined) return undefined;
  if (others.length > 0 || only.verdict.kind !== 'plausible') return 'need_more';
  return only.format;
}

export interface FrameReaderOptions {
  /** A fixed format, or `'auto'` to detect it from the first message. */
  format: FrameFormat | 'auto';
  /** Messages of more payload bytes than this (all chunks together) are refused with `frame_too_large`. */
  maxFrameBytes: number;
  /**
   * The most the first message can hold, for detection only: a connection's first message is the reply to
   * a request (`None`, `'pong'`), never large. Without it a 4-byte big-endian `None` reply
   * (`00 00 00 04 80 04 4e 2e`) also reads as a plausible 64 MiB little-endian frame under the default
   * `maxFrameBytes`, and detection would wait for 64 MiB that never come. Default `maxFrameBytes`.
   */
  maxFirstFrameBytes?: number;
}

const MAX_HEADER_WIDTH = 8;
const COMPACT_AFTER_CHUNKS = 1024;

/**
 * Turns a byte stream into message payloads. Returned payloads may alias the pushed chunks (a subarray when
 * a payload lies within one pushed chunk and one frame chunk), so callers must not modify a chunk after
 * pushing it, unless they are done with those payloads and call `detach()` first; other payloads are fresh
 * copies.
 */
export class FrameReader {
  private format: FrameFormat | undefined;
  // Bytes seen before the format is known, in one buffer grown by doubling.
  private staging = new Uint8Array(0);
  private stagingLength = 0;
  // Bytes after detection: a queue of chunks; `chunkIndex`/`chunkOffset` mark the first unread byte.
  private chunks: Uint8Array[] = [];
  private chunkIndex = 0;
  private chunkOffset = 0;
  private queuedBytes = 0;
  // Payload size of the frame whose header has been consumed but whose payload is not complete yet.
  private pendingSize: number | undefined;
  // `chunked`: whether the pending chunk is the message's last, and the earlier chunks of the message.
  private pendingLast = true;
  private parts: Uint8Array[] = [];
  private partsBytes = 0;
  private failure: FrameError | undefined;
  // Copies made by detach(): each byte of a long message is copied once, not at every push.
  private owned = new WeakSet<Uint8Array>();
  // The size prefix being read, kept for the error message.
  private readonly header = new Uint8Array(MAX_HEADER_WIDTH);

  constructor(private readonly options: FrameReaderOptions) {
    this.format = options.format === 'auto' ? undefined : options.format;
  }

  /** The format in use: the forced one, or the detected one (undefined until detection succeeds). */
  get detected(): FrameFormat | undefined {
    return this.format;
  }

  /** Bytes received that are not part of a returned payload yet (a partial message, headers included). */
  get bufferedBytes(): number {
    const header = this.pendingSize !== undefined && this.format ? headerWidth(this.format) : 0;
    const partsWithHeaders = this.partsBytes + this.parts.length * CHUNK_HEADER_BYTES;
    return this.stagingLength + this.queuedBytes + header + partsWithHeaders;
  }

  /** Forgets buffered bytes, the failure and (with `format: 'auto'`) the detected format. */
  reset(): void {
    this.format = this.options.format === 'auto' ? undefined : this.options.format;
    this.staging = new Uint8Array(0);
    this.stagingLength = 0;
    this.chunks = [];
    this.chunkIndex = 0;
    this.chunkOffset = 0;
    this.queuedBytes = 0;
    this.pendingSize = undefined;
    this.pendingLast = true;
    this.parts = [];
    this.partsBytes = 0;
    this.failure = undefined;
  }

  /**
   * Adds bytes; returns the payloads of the messages completed by them. Throws `FrameError` (sticky until
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

  private detect(): FrameFormat | undefined {
    const maxFrameBytes = Math.min(this.options.maxFrameBytes, this.options.maxFirstFrameBytes ?? Infinity);
    const view = this.staging.subarray(0, this.stagingLength);
    const result = detectFormat(view, maxFrameBytes);
    if (result === 'need_more') {
      // Past this every candidate's first frame is complete, so more bytes cannot settle it.
      if (this.stagingLength > MAX_HEADER_WIDTH + maxFrameBytes + 2) {
        this.fail('undetectable_header', `frame format still ambiguous after ${this.stagingLength} bytes`);
      }
      return undefined;
    }
    if (result !== undefined) return result;
    // Would a format fit if the limit were lifted? Then the stream is fine but the frame is refused.
    if (typeof detectFormat(view, Number.MAX_SAFE_INTEGER) === 'string') {
      this.fail('frame_too_large', `first frame announces more than maxFrameBytes (${maxFrameBytes}) bytes`);
    }
    const head = Array.from(view.subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join('');
    this.fail(
      'undetectable_header',
      `no frame format (${FRAME_FORMATS.join(', ')}) fits the first bytes (${head})`,
    );
  }

  /**
   * Copies whatever the reader still holds of pushed chunks (the start of an incomplete message), so the caller
   * may overwrite the chunk it last pushed: a socket read into one reused buffer pushes that buffer each time.
   */
  detach(): void {
    for (let i = this.chunkIndex; i < this.chunks.length; i++) {
      const chunk = this.chunks[i]!;
      if (this.owned.has(chunk)) continue;
      const copy = chunk.slice(i === this.chunkIndex ? this.chunkOffset : 0);
      this.owned.add(copy);
      this.chunks[i] = copy;
      if (i === this.chunkIndex) this.chunkOffset = 0;
    }
    for (let i = 0; i < this.parts.length; i++) {
      const part = this.parts[i]!;
      if (this.owned.has(part)) continue;
      const copy = part.slice();
      this.owned.add(copy);
      this.parts[i] = copy;
    }
  }

  private enqueue(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.queuedBytes += chunk.length;
  }

  private drain(format: FrameFormat): Uint8Array[] {
    const frames: Uint8Array[] = [];
    const width = headerWidth(format);
    try {
      for (;;) {
        if (this.pendingSize === undefined) {
          if (this.queuedBytes < width) break;
          this.pendingSize = format === 'chunked' ? this.readChunkHeader() : this.readSize(format, width);
        }
        if (this.queuedBytes < this.pendingSize) break;
        const payload = this.take(this.pendingSize);
        this.pendingSize = undefined;
        if (format !== 'chunked') {
          frames.push(payload);
        } else if (!this.pendingLast) {
          this.parts.push(payload);
          this.partsBytes += payload.length;
        } else if (this.parts.length === 0) {
          frames.push(payload);
        } else {
          frames.push(this.joinParts(payload));
        }
      }
    } catch (err) {
      if (err instanceof FrameError && frames.length > 0) throw new FrameError(err.code, err.message, frames);
      throw err;
    }
    this.compact();
    return frames;
  }

  private joinParts(last: Uint8Array): Uint8Array {
    const out = new Uint8Array(this.partsBytes + last.length);
    let at = 0;
    for (const part of this.parts) {
      out.set(part, at);
      at += part.length;
    }
    out.set(last, at);
    this.parts = [];
    this.partsBytes = 0;
    return out;
  }

  private readByte(): number {
    const chunk = this.chunks[this.chunkIndex]!;
    const byte = chunk[this.chunkOffset]!;
    this.advance(chunk, 1);
    return byte;
  }

  /** `>?H`: the more-follows flag (0 or 1; anything else is not this framing) and the chunk's size. */
  private readChunkHeader(): number {
    const more = this.readByte();
    const size = this.readByte() * 256 + this.readByte();
    this.queuedBytes -= CHUNK_HEADER_BYTES;
    if (more > 1) {
      this.fail('bad_chunk_header', `chunk header's more-follows byte is ${more}, not 0 or 1`);
    }
    this.pendingLast = more === 0;
    if (this.partsBytes + size > this.options.maxFrameBytes) {
      this.fail(
        'frame_too_large',
        `message of more than ${this.partsBytes + size} bytes, more than maxFrameBytes (${this.options.maxFrameBytes})`,
      );
    }
    return size;
  }

  private readSize(format: FrameFormat, width: number): number {
    // Byte by byte from the queue: no subarray or DataView per frame. The sum is exact below 2^53, and any
    // larger size is refused below anyway.
    const header = this.header;
    const little = isLittleEndian(format);
    let size = 0;
    for (let i = 0; i < width; i++) {
      const byte = this.readByte();
      header[i] = byte;
      size = little ? size + byte * 2 ** (8 * i) : size * 256 + byte;
    }
    this.queuedBytes -= width;
    if (size > this.options.maxFrameBytes) {
      let exact = 0n;
      for (let i = 0; i < width; i++) {
        exact = (exact << 8n) | BigInt(header[little ? width - 1 - i : i]!);
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
