// What the unpickler's speed work must not change: one decoder state reused from call to call (no memo or
// container leaks between calls), the short-string cache (collisions, non-ASCII, every length around its
// limit), and the depth bound now checked by a walk only when a pickle could be too deep or cyclic.
import { describe, expect, it } from 'vitest';
import type { PyDict, PyValue } from '../../src/python/pyvalues.js';
import { unpickle, UnpickleError } from '../../src/python/unpickle.js';

const te = new TextEncoder();

function bytes(...parts: (string | Uint8Array | number[])[]): Uint8Array {
  const chunks = parts.map((p) =>
    typeof p === 'string' ? Uint8Array.from(p, (c) => c.charCodeAt(0)) : Uint8Array.from(p),
  );
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** A protocol-4 string opcode (SHORT_BINUNICODE up to 255 bytes, else BINUNICODE) followed by MEMOIZE. */
function str(text: string): Uint8Array {
  const utf8 = te.encode(text);
  const head =
    utf8.length < 256
      ? [0x8c, utf8.length]
      : [0x58, utf8.length & 0xff, (utf8.length >> 8) & 0xff, (utf8.length >> 16) & 0xff, 0];
  return bytes(head, utf8, [0x94]);
}

/** `[s0, s1, ...]` as protocol 4 writes it: EMPTY_LIST MEMOIZE MARK items APPENDS STOP. */
function listOf(texts: string[]): Uint8Array {
  return bytes('\x80\x04]\x94(', ...texts.map(str), 'e.');
}

function codeOf(data: Uint8Array, options?: Parameters<typeof unpickle>[1]): string {
  try {
    unpickle(data, options);
  } catch (err) {
    if (err instanceof UnpickleError) return err.code;
    throw err;
  }
  return 'ok';
}

describe('decoder state reused between calls', () => {
  it('returns fresh containers every call', () => {
    // {'xref': {'file': 'a.py', 'line': 7}, 'name': 'x'}
    const event = bytes(
      '\x80\x04}\x94(',
      str('xref'),
      '}\x94(',
      str('file'),
      str('a.py'),
      str('line'),
      'K\x07u',
      str('name'),
      str('x'),
      'u.',
    );
    const first = unpickle(event) as PyDict;
    const second = unpickle(event) as PyDict;
    expect(second).toEqual(first);
    expect(second).not.toBe(first);
    expect(second['xref']).not.toBe(first['xref']);
    (first['xref'] as PyDict)['line'] = 8;
    expect((second['xref'] as PyDict)['line']).toBe(7);
  });

  it('forgets the memo and the stack of a previous call, failed or not', () => {
    expect(unpickle(bytes('\x80\x04', str('kept'), '.'))).toBe('kept');
    expect(codeOf(bytes('\x80\x04h\x00.'))).toBe('bad_memo');
    // Fails half-way with values on the stack and in the memo...
    expect(codeOf(bytes('\x80\x04', str('left'), str('over'), '\x8c\x09trunc'))).toBe('truncated');
    // ...none of which the next call can see.
    expect(codeOf(bytes('\x80\x04h\x01.'))).toBe('bad_memo');
    expect(codeOf(bytes('\x80\x04.'))).toBe('stack_underflow');
    expect(unpickle(bytes('\x80\x04N.'))).toBeNull();
  });

  it('keeps explicit memo indices (BINPUT) apart from MEMOIZE', () => {
    // 'a' stored at 5 by BINPUT, then 'b' MEMOIZEd (at index 1: one entry so far), both fetched back.
    const data = bytes('\x80\x04(\x8c\x01aq\x05\x8c\x01b\x94h\x05h\x01l.');
    expect(unpickle(data)).toEqual(['a', 'b', 'a', 'b']);
  });
});

describe('short-string cache', () => {
  it('decodes ASCII strings of every length around the cached limit, twice', () => {
    const texts = Array.from({ length: 80 }, (_, n) =>
      'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(3).slice(0, n),
    );
    const data = listOf(texts);
    expect(unpickle(data)).toEqual(texts);
    expect(unpickle(data)).toEqual(texts);
  });

  it('never confuses strings that share the bytes it samples', () => {
    // Same length, first, middle and last three bytes; different elsewhere: the same cache slot.
    const a = 'verify_bgp_0012';
    const b = 'vERIFY_bgp_0012';
    const c = 'verify_bGP_0012';
    const data = listOf([a, b, a, c, b, c, a]);
    expect(unpickle(data)).toEqual([a, b, a, c, b, c, a]);
    expect(unpickle(listOf([c, a, b]))).toEqual([c, a, b]);
  });

  it('decodes non-ASCII and invalid UTF-8 as before', () => {
    const texts = ['é', 'café', 'Ünïcödé-name', '日本語', '😀 step', 'x'.repeat(40) + 'é'];
    expect(unpickle(listOf(texts))).toEqual(texts);
    // A lone surrogate as CPython writes it (surrogatepass) becomes U+FFFD per bad byte.
    expect(unpickle(bytes('\x80\x04\x8c\x04a\xed\xa0\x80\x94.'))).toBe('a\uFFFD\uFFFD\uFFFD');
    // An ASCII string equal to a cached one but for one byte >= 0x80 is not taken from the cache.
    expect(unpickle(listOf(['abc1', 'abc\u00e9']))).toEqual(['abc1', 'abcé']);
  });
});

describe('depth bound', () => {
  it('rejects a list that contains itself through DUP', () => {
    expect(codeOf(bytes('\x80\x02]2a.'))).toBe('too_deep');
  });

  it('accepts many containers side by side however low maxDepth is, as long as the nesting fits', () => {
    const dicts = bytes('\x80\x02](', '}'.repeat(500), 'e.');
    expect((unpickle(dicts) as PyValue[]).length).toBe(500);
    expect((unpickle(dicts, { maxDepth: 2 }) as PyValue[]).length).toBe(500);
    expect(codeOf(dicts, { maxDepth: 1 })).toBe('too_deep');
  });

  it('checks nesting built from shared values (a DAG through the memo) exactly', () => {
    // L1 = [L0, L0] with L0 = [] fetched from the memo: depth 2, shared, not cyclic.
    const dag = bytes('\x80\x02]q\x00h\x00h\x00\x86.');
    expect(unpickle(dag)).toEqual([[], []]);
    expect(codeOf(dag, { maxDepth: 1 })).toBe('too_deep');
  });
});
