import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FrameError,
  FrameReader,
  HEADER_FORMATS,
  HeaderFormatError,
  detectHeader,
  encodeFrame,
  formatHeader,
  parseHeaderFormat,
} from '../../src/reporter/framing.js';

const MiB = 1024 * 1024;
const h = parseHeaderFormat;

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

describe('header formats', () => {
  it('parses and formats the four formats', () => {
    for (const name of ['4be', '4le', '8be', '8le']) expect(formatHeader(parseHeaderFormat(name))).toBe(name);
    expect(parseHeaderFormat('8le')).toEqual({ width: 8, endian: 'little' });
    expect(parseHeaderFormat('4be')).toEqual({ width: 4, endian: 'big' });
  });

  it('rejects anything else with the bad value', () => {
    for (const bad of ['auto', '4BE', '16le', '', ' 4be', '4']) {
      expect(() => parseHeaderFormat(bad)).toThrow(HeaderFormatError);
      expect(codeOf(() => parseHeaderFormat(bad))).toBe('bad_header_format');
    }
    expect(() => parseHeaderFormat('2be')).toThrow(/"2be"/);
  });

  it('encodes the size in the given width and byte order', () => {
    const p = Uint8Array.from([0x80, 4, 0x2e]);
    expect(Array.from(encodeFrame(p, h('4be')))).toEqual([0, 0, 0, 3, 0x80, 4, 0x2e]);
    expect(Array.from(encodeFrame(p, h('4le')))).toEqual([3, 0, 0, 0, 0x80, 4, 0x2e]);
    expect(Array.from(encodeFrame(p, h('8be')))).toEqual([0, 0, 0, 0, 0, 0, 0, 3, 0x80, 4, 0x2e]);
    expect(Array.from(encodeFrame(p, h('8le')))).toEqual([3, 0, 0, 0, 0, 0, 0, 0, 0x80, 4, 0x2e]);
  });
});

describe('detectHeader', () => {
  it('detects each of the four formats from the first frame', () => {
    for (const format of HEADER_FORMATS) {
      for (const protocol of [2, 3, 4, 5]) {
        const frame = encodeFrame(payload(40, protocol), format);
        expect(detectHeader(frame, MiB)).toEqual(format);
        // The size and the two PROTO bytes are enough.
        expect(detectHeader(frame.subarray(0, format.width + 2), MiB)).toEqual(format);
      }
    }
  });

  it('detects the smallest possible frame of every format without waiting for more', () => {
    for (const format of HEADER_FORMATS) {
      expect(detectHeader(encodeFrame(payload(3), format), MiB)).toEqual(format);
    }
  });

  it('asks for more bytes while a header is incomplete', () => {
    const frame = encodeFrame(payload(40), h('8le'));
    expect(detectHeader(new Uint8Array(0), MiB)).toBe('need_more');
    for (let n = 1; n < 10; n++) expect(detectHeader(frame.subarray(0, n), MiB)).toBe('need_more');
    const small = encodeFrame(payload(20), h('4be'));
    expect(detectHeader(small.subarray(0, 5), MiB)).toBe('need_more');
  });

  it('gives up when no format can match', () => {
    const text = new TextEncoder();
    expect(detectHeader(text.encode('GET / HTTP/1.1\r\n'), MiB)).toBeUndefined();
    // A protocol 0 pickle, unframed.
    expect(detectHeader(text.encode('(dp0\nVevent\np1\n'), MiB)).toBeUndefined();
    // Protocol 1 and 6 are not what a reporter sends.
    expect(detectHeader(encodeFrame(payload(20, 1), h('4be')), MiB)).toBeUndefined();
    expect(detectHeader(encodeFrame(payload(20, 6), h('4le')), MiB)).toBeUndefined();
    // Sizes below 3 or above the limit.
    expect(detectHeader(Uint8Array.from([0, 0, 0, 2, 0x80, 4, 0x2e]), MiB)).toBeUndefined();
    expect(detectHeader(encodeFrame(payload(2000), h('4be')), 1000)).toBeUndefined();
    // Rules a candidate out from a partial size: the leading bytes already exceed the limit.
    expect(detectHeader(Uint8Array.from([0x7f, 0x7f, 0x7f]), MiB)).toBeUndefined();
  });

  describe('when two formats are plausible (4be size 256 reads as 4le size 65536)', () => {
    const ambiguousBe = encodeFrame(payload(256), h('4be'));
    expect(Array.from(ambiguousBe.subarray(0, 4))).toEqual([0, 0, 1, 0]);

    it('waits while the bytes cannot decide', () => {
      expect(detectHeader(ambiguousBe, MiB)).toBe('need_more');
      expect(detectHeader(ambiguousBe.subarray(0, 100), MiB)).toBe('need_more');
    });

    it('without the ambiguity (a lower limit) decides at once', () => {
      expect(detectHeader(ambiguousBe, 65535)).toEqual(h('4be'));
    });

    it('prefers the format whose complete frame ends with STOP', () => {
      // Enough 4be frames that the 4le reading's frame is complete too; its last byte is filler.
      const frames = concat([
        ambiguousBe,
        ...Array.from({ length: 260 }, () => encodeFrame(payload(300), h('4be'))),
      ]);
      expect(frames.length).toBeGreaterThan(65540);
      expect(detectHeader(frames, MiB)).toEqual(h('4be'));
    });

    it('drops the shorter reading as soon as its frame does not end with STOP', () => {
      const le = encodeFrame(payload(65536), h('4le'));
      expect(Array.from(le.subarray(0, 4))).toEqual([0, 0, 1, 0]);
      expect(detectHeader(le.subarray(0, 259), MiB)).toBe('need_more');
      expect(detectHeader(le.subarray(0, 260), MiB)).toEqual(h('4le'));
    });

    it('drops a reading whose next frame header does not line up', () => {
      const p = payload(65536);
      p[255] = 0x2e; // the 4be reading's frame ends with STOP by coincidence ...
      const le = encodeFrame(p, h('4le'));
      expect(detectHeader(le.subarray(0, 260), MiB)).toBe('need_more');
      // ... but the 4be reading's next size starts with 'A' (0x41......), far over the limit.
      expect(detectHeader(le.subarray(0, 261), MiB)).toEqual(h('4le'));
    });
  });
});

describe('FrameReader', () => {
  it('returns every frame of a chunk that holds many', () => {
    const payloads = Array.from({ length: 50 }, (_, i) => payload(3 + i));
    const reader = new FrameReader({ header: h('4be'), maxFrameBytes: MiB });
    const frames = reader.push(concat(payloads.map((p) => encodeFrame(p, h('4be')))));
    expect(frames).toEqual(payloads);
    expect(reader.bufferedBytes).toBe(0);
  });

  it('reassembles frames pushed one byte at a time', () => {
    for (const format of HEADER_FORMATS) {
      const payloads = [payload(5), payload(300), payload(3)];
      const stream = concat(payloads.map((p) => encodeFrame(p, format)));
      const reader = new FrameReader({ header: 'auto', maxFrameBytes: MiB });
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
      const w = format.width;
      expect(completedAt).toEqual([w + 5, 2 * w + 305, stream.length]);
    }
  });

  it('counts buffered bytes of a partial frame, header included', () => {
    const reader = new FrameReader({ header: h('8le'), maxFrameBytes: MiB });
    const frame = encodeFrame(payload(100), h('8le'));
    expect(reader.push(frame.subarray(0, 50))).toEqual([]);
    expect(reader.bufferedBytes).toBe(50);
    expect(reader.push(frame.subarray(50))).toHaveLength(1);
    expect(reader.bufferedBytes).toBe(0);
  });

  it('uses a forced header without detecting, even for a frame that is not a pickle', () => {
    const reader = new FrameReader({ header: h('4le'), maxFrameBytes: MiB });
    expect(reader.detected).toEqual(h('4le'));
    const odd = Uint8Array.from([1, 2]);
    expect(
      reader.push(concat([encodeFrame(odd, h('4le')), encodeFrame(new Uint8Array(0), h('4le'))])),
    ).toEqual([odd, new Uint8Array(0)]);
  });

  it('returns a payload inside one pushed chunk as a view of it', () => {
    const reader = new FrameReader({ header: h('4be'), maxFrameBytes: MiB });
    const chunk = encodeFrame(payload(10), h('4be'));
    const [frame] = reader.push(chunk);
    expect(frame?.buffer).toBe(chunk.buffer);
  });

  it('refuses a frame over the limit, and keeps refusing until reset', () => {
    const reader = new FrameReader({ header: h('4be'), maxFrameBytes: 1000 });
    expect(reader.push(encodeFrame(payload(1000), h('4be')))).toHaveLength(1);
    const big = encodeFrame(payload(1001), h('4be'));
    expect(codeOf(() => reader.push(big.subarray(0, 4)))).toBe('frame_too_large');
    expect(() => reader.push(encodeFrame(payload(10), h('4be')))).toThrow(FrameError);
    reader.reset();
    expect(reader.bufferedBytes).toBe(0);
    expect(reader.push(encodeFrame(payload(10), h('4be')))).toEqual([payload(10)]);
  });

  it('hands over the frames completed before a bad header with the error', () => {
    const reader = new FrameReader({ header: h('4be'), maxFrameBytes: 1000 });
    const chunk = concat([encodeFrame(payload(10), h('4be')), encodeFrame(payload(2000), h('4be'))]);
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
    const reader = new FrameReader({ header: h('8be'), maxFrameBytes: MiB });
    expect(codeOf(() => reader.push(new Uint8Array(8).fill(0xff)))).toBe('frame_too_large');
  });

  it('reports an oversize first frame as too large, not as an unknown header', () => {
    const reader = new FrameReader({ header: 'auto', maxFrameBytes: 1000 });
    expect(codeOf(() => reader.push(encodeFrame(payload(5000), h('8le')).subarray(0, 20)))).toBe(
      'frame_too_large',
    );
  });

  it('refuses a stream no format fits', () => {
    const reader = new FrameReader({ header: 'auto', maxFrameBytes: MiB });
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
    const reader = new FrameReader({ header: 'auto', maxFrameBytes: MiB });
    expect(reader.push(encodeFrame(payload(10), h('4be')))).toEqual([payload(10)]);
    expect(reader.detected).toEqual(h('4be'));
    reader.reset();
    expect(reader.detected).toBeUndefined();
    expect(reader.push(encodeFrame(payload(12), h('8le')))).toEqual([payload(12)]);
    expect(reader.detected).toEqual(h('8le'));
  });

  it('gives up once an ambiguity outlasts the largest possible frame', () => {
    // 4be frames laid out so that the 4le reading (size 65536) also ends each of its frames on a STOP
    // followed by another plausible header: both readings stay consistent, so no amount of data decides.
    const ambiguous = encodeFrame(payload(256), h('4be'));
    const filler = Array.from({ length: 255 }, () => encodeFrame(payload(252), h('4be')));
    const stream = concat([ambiguous, ...filler, ambiguous, ambiguous]);
    const reader = new FrameReader({ header: 'auto', maxFrameBytes: 65536 });
    expect(reader.push(stream.subarray(0, 65546))).toEqual([]);
    expect(reader.bufferedBytes).toBe(65546);
    expect(codeOf(() => reader.push(stream.subarray(65546, 65547)))).toBe('undetectable_header');
  });
});

describe('FrameReader (property)', () => {
  const pickleLike = fc
    .tuple(fc.integer({ min: 2, max: 5 }), fc.uint8Array({ maxLength: 300 }))
    .map(([protocol, body]) => concat([Uint8Array.from([0x80, protocol]), body, Uint8Array.from([0x2e])]));
  const format = fc.constantFrom(...HEADER_FORMATS);
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

  it('reads back any payloads, in any format, split anywhere (forced header)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 400 }), { maxLength: 30 }),
        format,
        chunkSizes,
        (ps, f, sizes) => {
          const stream = concat(ps.map((p) => encodeFrame(p, f)));
          const reader = new FrameReader({ header: f, maxFrameBytes: 400 });
          expect(readBack(reader, stream, sizes)).toEqual(ps);
          expect(reader.bufferedBytes).toBe(0);
        },
      ),
    );
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
          const reader = new FrameReader({ header: 'auto', maxFrameBytes: 65535 });
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
          const reader = new FrameReader({ header: 'auto', maxFrameBytes: MiB });
          const got = readBack(reader, stream, sizes);
          expect(got).toEqual(ps.slice(0, got.length));
          if (got.length < ps.length) expect(reader.detected).toBeUndefined();
        },
      ),
    );
  });
});
