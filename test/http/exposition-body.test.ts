// The /metrics body from exposition pieces: gzip assembled from separately compressed pieces must be one valid
// gzip member (checked by zlib and by GNU gzip, an inflater of its own), and kept pieces must not be encoded
// again.
import { spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gzipBody, plainBody } from '../../src/http/exposition-body.js';
import { ExpositionPiece } from '../../src/telemetry/series.js';

const concat = (chunks: Buffer[]): Buffer => Buffer.concat(chunks);
const textOf = (pieces: readonly ExpositionPiece[]): string => pieces.map((p) => p.text).join('');

const pieceArb = fc.record({
  text: fc.oneof(
    fc.string({ maxLength: 300 }),
    fc.string({ unit: 'binary', maxLength: 50 }),
    fc.constant(''),
  ),
  durable: fc.boolean(),
});

describe('plainBody and gzipBody', () => {
  it('give the pieces joined, as text and as gzip, for any mix of kept, fresh and joinable pieces', () => {
    const separator = new ExpositionPiece('\n\n');
    fc.assert(
      fc.property(fc.array(fc.oneof(pieceArb, fc.constant(undefined)), { maxLength: 40 }), (specs) => {
        const pieces = specs.map((spec) =>
          spec === undefined ? separator : new ExpositionPiece(spec.text, spec.durable),
        );
        const text = textOf(pieces);
        const plain = plainBody(pieces);
        expect(concat(plain.chunks).toString('utf8')).toBe(Buffer.from(text, 'utf8').toString('utf8'));
        expect(plain.length).toBe(Buffer.byteLength(text, 'utf8'));
        const gzip = gzipBody(plain, new Set([separator]));
        const bytes = concat(gzip.chunks);
        expect(bytes.length).toBe(gzip.length);
        expect(gunzipSync(bytes).equals(concat(plain.chunks))).toBe(true);
      }),
    );
  });

  it('compresses a kept piece once, and the reused bytes still make a valid body in another order', () => {
    const kept = Array.from(
      { length: 5 },
      (_, i) => new ExpositionPiece(`\nx_total{k="s${i}"} ${i}`.repeat(200)),
    );
    const first = gzipBody(plainBody(kept), new Set());
    const again = gzipBody(plainBody([...kept].reverse()), new Set());
    // Header, then one compressed chunk per piece, then the end block and the trailer.
    expect(again.chunks.slice(1, 6)).toEqual([...first.chunks.slice(1, 6)].reverse());
    for (let i = 0; i < 5; i++) expect(again.chunks[5 - i]).toBe(first.chunks[1 + i]);
    expect(gunzipSync(concat(again.chunks)).toString()).toBe(textOf([...kept].reverse()));
  });

  it('compresses the fresh pieces and the joinable ones between them in one go', () => {
    const separator = new ExpositionPiece('\n\n');
    const pieces = [
      new ExpositionPiece('# HELP a A.\n# TYPE a gauge\na 1', false),
      separator,
      new ExpositionPiece('# HELP b B.\n# TYPE b gauge\nb 2', false),
      separator,
      new ExpositionPiece('\nkept 3'),
    ];
    const body = gzipBody(plainBody(pieces), new Set([separator]));
    // Header, the run of four, the kept piece, the end block, the trailer.
    expect(body.chunks).toHaveLength(5);
    expect(gunzipSync(concat(body.chunks)).toString()).toBe(textOf(pieces));
  });

  it('is read by GNU gzip, whose inflater is not zlib', () => {
    const pieces = Array.from({ length: 50 }, (_, i) =>
      i % 3 === 0
        ? new ExpositionPiece(`\nfresh_${i} ${Math.random()}`, false)
        : new ExpositionPiece(`\npyats_testcase_last_result{job="nightly",testcase="tc_${i}"} 1`.repeat(40)),
    );
    const result = spawnSync('gzip', ['-dc'], {
      input: concat(gzipBody(plainBody(pieces), new Set()).chunks),
    });
    expect(result.status).toBe(0);
    expect(result.stdout.toString()).toBe(textOf(pieces));
  });
});
