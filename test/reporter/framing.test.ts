import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FRAME_FORMATS,
  FrameError,
  FrameFormatError,
  FrameReader,
  MAX_CHUNK_BYTES,
  detectFormat,
  encodeFrame,
  parseFrameFormat,
  type FrameFormat,
} from '../../src/reporter/framing.js';

const MiB = 1024 * 1024;
/** Bytes in front of a (single-chunk) frame's payload. */
function widthOf(format: FrameFormat): number {
  return format === 'chunked' ? 3 : format.startsWith('8') ? 8 : 4;
}

/** A pickle-shaped payload: PROTO, a protocol number, filler, STOP. */
function payload(length: number, protocol = 4, fill = 0x41): Uint8Array {
  const out = new Uint8Array(length).fill(fill);
  out[0] = 0x80;
  out[1] = protocol;
  out[length - 1] = 0x2e;
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

describe('frame formats', () => {
  it('parses the five formats', () => {
    for (const name of ['chunked', '4be', '4le', '8be', '8le']) expect(parseFrameFormat(name)).toBe(name);
  });

  it('rejects anything else with the bad value', () => {
    for (const bad of ['auto', '4BE', '16le', '', ' 4be', '4', 'Chunked']) {
      expect(() => parseFrameFormat(bad)).toThrow(FrameFormatError);
      expect(codeOf(() => parseFrameFormat(bad))).toBe('bad_frame_format');
    }
    expect(() => parseFrameFormat('2be')).toThrow(/"2be"/);
  });

  it('encodes the size in the given width and byte order', () => {
    const p = Uint8Array.from([0x80, 4, 0x2e]);
    expect(Array.from(encodeFrame(p, '4be'))).toEqual([0, 0, 0, 3, 0x80, 4, 0x2e]);
    expect(Array.from(encodeFrame(p, '4le'))).toEqual([3, 0, 0, 0, 0x80, 4, 0x2e]);
    expect(Array.from(encodeFrame(p, '8be'))).toEqual([0, 0, 0, 0, 0, 0, 0, 3, 0x80, 4, 0x2e]);
    expect(Array.from(encodeFrame(p, '8le'))).toEqual([3, 0, 0, 0, 0, 0, 0, 0, 0x80, 4, 0x2e]);
    // pyATS 23.2: struct.pack('>?H', more_follows, length) per chunk.
    expect(Array.from(encodeFrame(p, 'chunked'))).toEqual([0, 0, 3, 0x80, 4, 0x2e]);
  });

  it('splits a chunked message into chunks of at most 65,535 bytes, the last one flagged', () => {
    const exact = encodeFrame(payload(MAX_CHUNK_BYTES), 'chunked');
    expect(Array.from(exact.subarray(0, 3))).toEqual([0, 0xff, 0xff]);
    expect(exact.length).toBe(MAX_CHUNK_BYTES + 3);
    const over = encodeFrame(payload(MAX_CHUNK_BYTES * 2 + 10), 'chunked');
    expect(Array.from(over.subarray(0, 3))).toEqual([1, 0xff, 0xff]);
    expect(Array.from(over.subarray(65538, 65541))).toEqual([1, 0xff, 0xff]);
    expect(Array.from(over.subarray(131076, 131079))).toEqual([0, 0, 10]);
    expect(over.length).toBe(MAX_CHUNK_BYTES * 2 + 10 + 9);
    expect(Array.from(encodeFrame(new Uint8Array(0), 'chunked'))).toEqual([0, 0, 0]);
  });
});

describe('detectFormat', () => {
  it('detects each format from the first frame', () => {
    for (const format of FRAME_FORMATS) {
      for (const protocol of [2, 3, 4, 5]) {
        const frame = encodeFrame(payload(40, protocol), format);
        expect(detectFormat(frame, MiB)).toEqual(format);
        // The size and the two PROTO bytes are enough.
        expect(detectFormat(frame.subarray(0, widthOf(format) + 2), MiB)).toEqual(format);
      }
    }
  });

  it('detects the smallest possible frame of every format without waiting for more', () => {
    for (const format of FRAME_FORMATS) {
      expect(detectFormat(encodeFrame(payload(3), format), MiB)).toEqual(format);
    }
  });

  it('asks for more bytes while a header is incomplete', () => {
    const frame = encodeFrame(payload(40), '8le');
    expect(detectFormat(new Uint8Array(0), MiB)).toBe('need_more');
    for (let n = 1; n < 10; n++) expect(detectFormat(frame.subarray(0, n), MiB)).toBe('need_more');
    const small = encodeFrame(payload(20), '4be');
    expect(detectFormat(small.subarray(0, 5), MiB)).toBe('need_more');
  });

  it('gives up when no format can match', () => {
    const text = new TextEncoder();
    expect(detectFormat(text.encode('GET / HTTP/1.1\r\n'), MiB)).toBeUndefined();
    // A protocol 0 pickle, unframed.
    expect(detectFormat(text.encode('(dp0\nVevent\np1\n'), MiB)).toBeUndefined();
    // Protocol 1 and 6 are not what a reporter sends.
    expect(detectFormat(encodeFrame(payload(20, 1), '4be'), MiB)).toBeUndefined();
    expect(detectFormat(encodeFrame(payload(20, 6), '4le'), MiB)).toBeUndefined();
    // Sizes below 3 or above the limit.
    expect(detectFormat(Uint8Array.from([0, 0, 0, 2, 0x80, 4, 0x2e]), MiB)).toBeUndefined();
    expect(detectFormat(encodeFrame(payload(2000), '4be'), 1000)).toBeUndefined();
    // Rules a candidate out from a partial size: the leading bytes already exceed the limit.
    expect(detectFormat(Uint8Array.from([0x7f, 0x7f, 0x7f]), MiB)).toBeUndefined();
  });

  describe('when two formats are plausible (4be size 256 reads as 4le size 65536)', () => {
    const ambiguousBe = encodeFrame(payload(256), '4be');
    expect(Array.from(ambiguousBe.subarray(0, 4))).toEqual([0, 0, 1, 0]);

    it('waits while the bytes cannot decide', () => {
      expect(detectFormat(ambiguousBe, MiB)).toBe('need_more');
      expect(detectFormat(ambiguousBe.subarray(0, 100), MiB)).toBe('need_more');
    });

    it('without the ambiguity (a lower limit) decides at once', () => {
      expect(detectFormat(ambiguousBe, 65535)).toEqual('4be');
    });

    it('prefers the format whose complete frame ends with STOP', () => {
      // Enough 4be frames that the 4le reading's frame is complete too; its last byte is filler.
      const frames = concat([
        ambiguousBe,
        ...Array.from({ length: 260 }, () => encodeFrame(payload(300), '4be')),
      ]);
      expect(frames.length).toBeGreaterThan(65540);
      expect(detectFormat(frames, MiB)).toEqual('4be');
    });

    it('drops the shorter reading as soon as its frame does not end with STOP', () => {
      const le = encodeFrame(payload(65536), '4le');
      expect(Array.from(le.subarray(0, 4))).toEqual([0, 0, 1, 0]);
      expect(detectFormat(le.subarray(0, 259), MiB)).toBe('need_more');
      expect(detectFormat(le.subarray(0, 260), MiB)).toEqual('4le');
    });

    it('drops a reading whose next frame header does not line up', () => {
      const p = payload(65536);
      p[255] = 0x2e; // the 4be reading's frame ends with STOP by coincidence ...
      const le = encodeFrame(p, '4le');
      expect(detectFormat(le.subarray(0, 260), MiB)).toBe('need_more');
      // ... but the 4be reading's next size starts with 'A' (0x41......), far over the limit.
      expect(detectFormat(le.subarray(0, 261), MiB)).toEqual('4le');
    });
  });
});

describe('FrameReader', () => {
  it('returns every frame of a chunk that holds many', () => {
    const payloads = Array.from({ length: 50 }, (_, i) => payload(3 + i));
    const reader = new FrameReader({ format: '4be', maxFrameBytes: MiB });
    const frames = reader.push(concat(payloads.map((p) => encodeFrame(p, '4be'))));
    expect(frames).toEqual(payloads);
    expect(reader.bufferedBytes).toBe(0);
  });

  it('reassembles frames pushed one byte at a time', () => {
    for (const format of FRAME_FORMATS) {
      const payloads = [payload(5), payload(300), payload(3)];
      const stream = concat(payloads.map((p) => encodeFrame(p, format)));
      const reader = new FrameReader({ format: 'auto', maxFrameBytes: MiB });
      const got: Uint8Array[] = [];
      const completedAt: number[] = [];
      for (let i = 0; i < stream.length; i++) {
        for (const frame of reader.push(stream.subarray(i, i + 1))) {
          got.push(frame);
          completedAt.push(i + 1);
        }
      }
      expect(got).toEqual(payloads);
      expect(reader.detected).toEqual(format);
      const w = widthOf(format);
      expect(completedAt).toEqual([w + 5, 2 * w + 305, stream.length]);
    }
  });

  it('counts buffered bytes of a partial frame, header included', () => {
    const reader = new FrameReader({ format: '8le', maxFrameBytes: MiB });
    const frame = encodeFrame(payload(100), '8le');
    expect(reader.push(frame.subarray(0, 50))).toEqual([]);
    expect(reader.bufferedBytes).toBe(50);
    expect(reader.push(frame.subarray(50))).toHaveLength(1);
    expect(reader.bufferedBytes).toBe(0);
  });

  it('uses a forced header without detecting, even for a frame that is not a pickle', () => {
    const reader = new FrameReader({ format: '4le', maxFrameBytes: MiB });
    expect(reader.detected).toEqual('4le');
    const odd = Uint8Array.from([1, 2]);
    expect(reader.push(concat([encodeFrame(odd, '4le'), encodeFrame(new Uint8Array(0), '4le')]))).toEqual([
      odd,
      new Uint8Array(0),
    ]);
  });

  it('returns a payload inside one pushed chunk as a view of it', () => {
    const reader = new FrameReader({ format: '4be', maxFrameBytes: MiB });
    const chunk = encodeFrame(payload(10), '4be');
    const [frame] = reader.push(chunk);
    expect(frame?.buffer).toBe(chunk.buffer);
  });

  it('refuses a frame over the limit, and keeps refusing until reset', () => {
    const reader = new FrameReader({ format: '4be', maxFrameBytes: 1000 });
    expect(reader.push(encodeFrame(payload(1000), '4be'))).toHaveLength(1);
    const big = encodeFrame(payload(1001), '4be');
    expect(codeOf(() => reader.push(big.subarray(0, 4)))).toBe('frame_too_large');
    expect(() => reader.push(encodeFrame(payload(10), '4be'))).toThrow(FrameError);
    reader.reset();
    expect(reader.bufferedBytes).toBe(0);
    expect(reader.push(encodeFrame(payload(10), '4be'))).toEqual([payload(10)]);
  });

  it('hands over the frames completed before a bad header with the error', () => {
    const reader = new FrameReader({ format: '4be', maxFrameBytes: 1000 });
    const chunk = concat([encodeFrame(payload(10), '4be'), encodeFrame(payload(2000), '4be')]);
    let caught: FrameError | undefined;
    try {
      reader.push(chunk);
    } catch (err) {
      caught = err as FrameError;
    }
    expect(caught?.code).toBe('frame_too_large');
    expect(caught?.frames).toEqual([payload(10)]);
    expect(codeOf(() => reader.push(payload(3)))).toBe('frame_too_large');
  });

  it('compares 8-byte sizes beyond 2^53 exactly', () => {
    const reader = new FrameReader({ format: '8be', maxFrameBytes: MiB });
    expect(codeOf(() => reader.push(new Uint8Array(8).fill(0xff)))).toBe('frame_too_large');
  });

  it('reports an oversize first frame as too large, not as an unknown header', () => {
    const reader = new FrameReader({ format: 'auto', maxFrameBytes: 1000 });
    expect(codeOf(() => reader.push(encodeFrame(payload(5000), '8le').subarray(0, 20)))).toBe(
      'frame_too_large',
    );
  });

  it('refuses a stream no format fits', () => {
    const reader = new FrameReader({ format: 'auto', maxFrameBytes: MiB });
    const err = (() => {
      try {
        reader.push(new TextEncoder().encode('GET / HTTP/1.1\r\n'));
      } catch (e) {
        return e as FrameError;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(FrameError);
    expect(err?.code).toBe('undetectable_header');
    expect(err?.message).toContain('474554202f');
  });

  it('detects again after reset', () => {
    const reader = new FrameReader({ format: 'auto', maxFrameBytes: MiB });
    expect(reader.push(encodeFrame(payload(10), '4be'))).toEqual([payload(10)]);
    expect(reader.detected).toEqual('4be');
    reader.reset();
    expect(reader.detected).toBeUndefined();
    expect(reader.push(encodeFrame(payload(12), '8le'))).toEqual([payload(12)]);
    expect(reader.detected).toEqual('8le');
  });

  it('gives up once an ambiguity outlasts the largest possible frame', () => {
    // 4be frames laid out so that the 4le reading (size 65536) also ends each of its frames on a STOP
    // followed by another plausible header: both readings stay consistent, so no amount of data decides.
    const ambiguous = encodeFrame(payload(256), '4be');
    const filler = Array.from({ length: 255 }, () => encodeFrame(payload(252), '4be'));
    const stream = concat([ambiguous, ...filler, ambiguous, ambiguous]);
    const reader = new FrameReader({ format: 'auto', maxFrameBytes: 65536 });
    expect(reader.push(stream.subarray(0, 65546))).toEqual([]);
    expect(reader.bufferedBytes).toBe(65546);
    expect(codeOf(() => reader.push(stream.subarray(65546, 65547)))).toBe('undetectable_header');
  });
});

describe('FrameReader, chunked (pyATS 23.2)', () => {
  // pickle.dumps(None, 4) as the 23.2 reporter frames it: its reply to subscribe_client.
  const NONE_REPLY = Uint8Array.from([0, 0, 4, 0x80, 4, 0x4e, 0x2e]);

  it('detects the reply to subscribe_client, and tells it from the legacy 4-byte prefix', () => {
    expect(detectFormat(NONE_REPLY, MiB)).toBe('chunked');
    expect(detectFormat(Uint8Array.from([0, 0, 0, 4, 0x80, 4, 0x4e, 0x2e]), MiB)).toBe('4be');
    const reader = new FrameReader({ format: 'auto', maxFrameBytes: MiB });
    expect(reader.push(NONE_REPLY)).toEqual([NONE_REPLY.subarray(3)]);
    expect(reader.detected).toBe('chunked');
  });

  it('settles a legacy 4be reply at once when the first message is bounded (a reply), even with a 64 MiB limit', () => {
    const legacyNone = Uint8Array.from([0, 0, 0, 4, 0x80, 4, 0x4e, 0x2e]);
    // Unbounded, the same bytes also read as a 4le frame of exactly 64 MiB: undecidable until 64 MiB arrive.
    expect(detectFormat(legacyNone, 64 * MiB)).toBe('need_more');
    const reader = new FrameReader({
      format: 'auto',
      maxFrameBytes: 64 * MiB,
      maxFirstFrameBytes: 64 * 1024,
    });
    expect(reader.push(legacyNone)).toEqual([legacyNone.subarray(4)]);
    expect(reader.detected).toBe('4be');
    // Later messages may still be as large as maxFrameBytes.
    expect(reader.push(encodeFrame(payload(MiB), '4be'))).toHaveLength(1);
  });

  it('joins the chunks of a message, pushed at once or byte by byte', () => {
    const big = payload(MAX_CHUNK_BYTES * 3 + 17);
    const stream = concat([
      encodeFrame(payload(5), 'chunked'),
      encodeFrame(big, 'chunked'),
      encodeFrame(payload(7), 'chunked'),
    ]);
    expect(new FrameReader({ format: 'auto', maxFrameBytes: MiB }).push(stream)).toEqual([
      payload(5),
      big,
      payload(7),
    ]);
    const reader = new FrameReader({ format: 'auto', maxFrameBytes: MiB });
    const got: Uint8Array[] = [];
    for (let i = 0; i < stream.length; i += 997) got.push(...reader.push(stream.subarray(i, i + 997)));
    expect(got).toEqual([payload(5), big, payload(7)]);
    expect(reader.bufferedBytes).toBe(0);
  });

  it('counts the chunks already read as buffered', () => {
    const reader = new FrameReader({ format: 'chunked', maxFrameBytes: MiB });
    const frame = encodeFrame(payload(70_000), 'chunked');
    expect(reader.push(frame.subarray(0, 66_000))).toEqual([]);
    expect(reader.bufferedBytes).toBe(66_000);
  });

  it('bounds the whole message, not each chunk, by maxFrameBytes', () => {
    const reader = new FrameReader({ format: 'auto', maxFrameBytes: 100_000 });
    expect(reader.push(encodeFrame(payload(100_000), 'chunked'))).toHaveLength(1);
    const over = encodeFrame(payload(100_001), 'chunked');
    // Refused at the second chunk's header, before its bytes are buffered.
    expect(reader.push(over.subarray(0, 65_538))).toEqual([]);
    expect(codeOf(() => reader.push(over.subarray(65_538, 65_541)))).toBe('frame_too_large');
  });

  it('refuses a more-follows byte that is neither 0 nor 1', () => {
    const reader = new FrameReader({ format: 'auto', maxFrameBytes: MiB });
    expect(reader.push(NONE_REPLY)).toHaveLength(1);
    let caught: FrameError | undefined;
    try {
      reader.push(concat([encodeFrame(payload(9), 'chunked'), Uint8Array.from([2, 0, 3, 0x80, 4, 0x2e])]));
    } catch (err) {
      caught = err as FrameError;
    }
    expect(caught?.code).toBe('bad_chunk_header');
    expect(caught?.frames).toEqual([payload(9)]);
  });
});

describe('FrameReader (property)', () => {
  const pickleLike = fc
    .tuple(fc.integer({ min: 2, max: 5 }), fc.uint8Array({ maxLength: 300 }))
    .map(([protocol, body]) => concat([Uint8Array.from([0x80, protocol]), body, Uint8Array.from([0x2e])]));
  const format = fc.constantFrom(...FRAME_FORMATS);
  const chunkSizes = fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 20 });

  function readBack(reader: FrameReader, stream: Uint8Array, sizes: number[]): Uint8Array[] {
    const got: Uint8Array[] = [];
    for (let offset = 0, i = 0; offset < stream.length; i++) {
      const size = sizes[i % sizes.length] ?? 1;
      got.push(...reader.push(stream.subarray(offset, offset + size)));
      offset += size;
    }
    return got;
  }

  /** As a socket reading into one reused buffer: each read overwrites the last; frames are used at once. */
  function readThroughOneBuffer(reader: FrameReader, stream: Uint8Array, sizes: number[], detach: boolean) {
    const buffer = new Uint8Array(Math.max(...sizes));
    const got: Uint8Array[] = [];
    for (let offset = 0, i = 0; offset < stream.length; i++) {
      const size = Math.min(sizes[i % sizes.length] ?? 1, stream.length - offset);
      buffer.fill(0xee);
      buffer.set(stream.subarray(offset, offset + size));
      for (const frame of reader.push(buffer.subarray(0, size))) got.push(frame.slice());
      if (detach) reader.detach();
      offset += size;
    }
    return got;
  }

  it('reads back any payloads, in any format, split anywhere (forced header), also through one reused buffer', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 400 }), { maxLength: 30 }),
        format,
        chunkSizes,
        (ps, f, sizes) => {
          const stream = concat(ps.map((p) => encodeFrame(p, f)));
          const reader = new FrameReader({ format: f, maxFrameBytes: 400 });
          expect(readBack(reader, stream, sizes)).toEqual(ps);
          expect(reader.bufferedBytes).toBe(0);
          // As the subscriber reads: one buffer overwritten by every read, the reader detached after each.
          const reused = new FrameReader({ format: f, maxFrameBytes: 400 });
          expect(readThroughOneBuffer(reused, stream, sizes, true)).toEqual(ps);
          expect(reused.bufferedBytes).toBe(0);
        },
      ),
    );
  });

  it('keeps the parts of a chunked message and a partial frame through buffer reuse only when detached', () => {
    const big = payload(MAX_CHUNK_BYTES * 2 + 100, 4, 0x42);
    const stream = concat([encodeFrame(payload(300), 'chunked'), encodeFrame(big, 'chunked')]);
    const sizes = [250, 40_000];
    const detached = new FrameReader({ format: 'chunked', maxFrameBytes: MiB });
    expect(readThroughOneBuffer(detached, stream, sizes, true)).toEqual([payload(300), big]);
    // The same reads without detach see the overwritten bytes: the test would catch a detach that kept none.
    const aliased = new FrameReader({ format: 'chunked', maxFrameBytes: MiB });
    expect(readThroughOneBuffer(aliased, stream, sizes, false)).not.toEqual([payload(300), big]);
  });

  it('reads back any pickle-shaped payloads, in any format, split anywhere (detected header)', () => {
    fc.assert(
      fc.property(
        fc.array(pickleLike, { minLength: 1, maxLength: 30 }),
        format,
        chunkSizes,
        (ps, f, sizes) => {
          const stream = concat(ps.map((p) => encodeFrame(p, f)));
          // Below 65536 no size reads plausibly in two formats for these payload lengths.
          const reader = new FrameReader({ format: 'auto', maxFrameBytes: 65535 });
          expect(readBack(reader, stream, sizes)).toEqual(ps);
          expect(reader.detected).toEqual(f);
          expect(reader.bufferedBytes).toBe(0);
        },
      ),
    );
  });

  it('never returns a wrong frame, even when detection stays ambiguous', () => {
    const mostly256 = fc.oneof(pickleLike, fc.constant(payload(256)));
    fc.assert(
      fc.property(
        fc.array(mostly256, { minLength: 1, maxLength: 30 }),
        format,
        chunkSizes,
        (ps, f, sizes) => {
          const stream = concat(ps.map((p) => encodeFrame(p, f)));
          const reader = new FrameReader({ format: 'auto', maxFrameBytes: MiB });
          const got = readBack(reader, stream, sizes);
          expect(got).toEqual(ps.slice(0, got.length));
          if (got.length < ps.length) expect(reader.detected).toBeUndefined();
        },
      ),
    );
  });
});
