// The bytes of a /metrics response, made from the exposition's pieces (telemetry/series.ts) with what the
// previous scrapes made of them kept: a piece that is the same object as before has the same text, so its
// UTF-8 bytes and its compressed form are reused. Between two scrapes most blocks of a large family have not
// changed (a job's testcases finish a few at a time), and encoding and compressing all of it again (2.4 MB for
// 22,000 series) was most of a scrape's time (docs/performance.md).
//
// gzip is assembled by hand from independently compressed pieces, as pigz does: each piece is raw deflate
// ending in a sync flush (byte-aligned, no reference to anything before it), so any sequence of them is one
// valid deflate stream; a final empty block, the CRC-32 and the length close the gzip member. zlib has no
// call that takes a precompressed part, hence the framing here.
import zlib from 'node:zlib';
import type { ExpositionPiece } from '../telemetry/index.js';

/** What the previous scrapes made of a durable piece; collected with the piece when a family drops it. */
interface Encoded {
  bytes: Buffer;
  deflated: Buffer | undefined;
}

const encoded = new WeakMap<ExpositionPiece, Encoded>();

// RFC 1952 header: magic, deflate, no flags, no mtime, no extra flags, OS 3 (Unix, as zlib writes on Linux).
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
/** A final, empty deflate block: what ends the stream after the pieces' sync-flushed ones. */
const DEFLATE_END = zlib.deflateRawSync(Buffer.alloc(0));
const DEFLATE_OPTIONS: zlib.ZlibOptions = {
  level: zlib.constants.Z_BEST_SPEED,
  finishFlush: zlib.constants.Z_SYNC_FLUSH,
};
// zlib.crc32 is Node ≥ 20.15; on older 20.x the whole body is compressed in one go, as before.
const crc32: ((data: Buffer, value?: number) => number) | undefined =
  typeof zlib.crc32 === 'function' ? zlib.crc32 : undefined;

export interface Body {
  /** Written in order; `length` bytes in all. */
  chunks: Buffer[];
  length: number;
}

/** A plainBody: its chunks are the pieces' bytes, one per piece, in the pieces' order. */
export interface PlainBody extends Body {
  readonly pieces: readonly ExpositionPiece[];
}

function encodedOf(piece: ExpositionPiece): Encoded {
  let entry = encoded.get(piece);
  if (entry === undefined) {
    entry = { bytes: Buffer.from(piece.text, 'utf8'), deflated: undefined };
    encoded.set(piece, entry);
  }
  return entry;
}

/** The body as the pieces' UTF-8 bytes, each durable piece's kept for the next scrape. */
export function plainBody(pieces: readonly ExpositionPiece[]): PlainBody {
  const chunks: Buffer[] = [];
  let length = 0;
  for (const piece of pieces) {
    const bytes = piece.durable ? encodedOf(piece).bytes : Buffer.from(piece.text, 'utf8');
    chunks.push(bytes);
    length += bytes.length;
  }
  return { pieces, chunks, length };
}

/**
 * `plain` gzipped (level 1). Durable pieces are compressed once and kept; pieces made for this scrape only
 * are compressed together with the short durable ones between them (`joinable`, the separators), so the few
 * hundred lines of prom-client's own metrics cost one deflate call per run rather than one per metric.
 */
export function gzipBody(plain: PlainBody, joinable: ReadonlySet<ExpositionPiece>): Body {
  if (crc32 === undefined) {
    const bytes = zlib.gzipSync(Buffer.concat(plain.chunks), {
      level: zlib.constants.Z_BEST_SPEED,
    });
    return { chunks: [bytes], length: bytes.length };
  }
  const chunks: Buffer[] = [GZIP_HEADER];
  let length = GZIP_HEADER.length;
  let crc = 0;
  let size = 0;
  let run: Buffer[] = [];
  const add = (bytes: Buffer, deflated: Buffer): void => {
    // Nothing to add; and zlib.crc32 of an empty buffer without memory (as zlib may leave one) gives 0, not `crc`.
    if (bytes.length === 0) return;
    crc = crc32(bytes, crc);
    size += bytes.length;
    chunks.push(deflated);
    length += deflated.length;
  };
  const endRun = (): void => {
    if (run.length === 0) return;
    const bytes = run.length === 1 ? run[0]! : Buffer.concat(run);
    add(bytes, zlib.deflateRawSync(bytes, DEFLATE_OPTIONS));
    run = [];
  };
  plain.pieces.forEach((piece, i) => {
    const bytes = plain.chunks[i]!;
    if (!piece.durable || (run.length > 0 && joinable.has(piece))) {
      run.push(bytes);
      return;
    }
    endRun();
    const entry = encodedOf(piece);
    add(bytes, (entry.deflated ??= zlib.deflateRawSync(bytes, DEFLATE_OPTIONS)));
  });
  endRun();
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc >>> 0, 0);
  trailer.writeUInt32LE(size % 0x100000000, 4);
  chunks.push(DEFLATE_END, trailer);
  length += DEFLATE_END.length + trailer.length;
  return { chunks, length };
}
