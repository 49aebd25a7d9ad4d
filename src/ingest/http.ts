// `POST /api/v1/events`: NDJSON (or a JSON array) of event dicts into the pipeline, with an optional bearer
// token and a body size limit; answers how many events were accepted and, per rejected line, why. A hello
// line's `env` (the job's CI variables) becomes the keyed stream's context, so the job joins the CI trace.
import { createHash, timingSafeEqual } from 'node:crypto';
import express from 'express';
import type { Logger } from '../log.js';
import {
  KeyedStreams,
  anonymousStreamId,
  clip,
  isValidStreamKey,
  parseJson,
  parseLine,
  toItem,
  type IngestItem,
  type IngestTarget,
} from './ndjson.js';

export const EVENTS_PATH = '/api/v1/events';
export const HTTP_SOURCE = 'ndjson_http';
/** Request header naming the job's stream; also accepted as the `stream` query parameter. */
export const STREAM_HEADER = 'x-pyats-stream';
/** Request header that ends the named stream after this body; also the `end` query parameter. */
export const STREAM_END_HEADER = 'x-pyats-stream-end';
export const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;
/** At most this many rejected lines are listed in a response; `rejected_total` has the full count. */
const MAX_REJECTED_LISTED = 100;

export interface HttpIngestOptions {
  /** The pipeline: its refusals (normalizer or tracker) are the reasons reported per line. */
  target: IngestTarget;
  /** Required as `Authorization: Bearer <token>` when set. */
  token?: string;
  /** Larger bodies (after gzip/deflate decoding) are refused with 413. */
  maxBodyBytes: number;
  /** A keyed stream with no request for this long is ended; 0 never ends one for idleness. */
  idleTimeoutMs: number;
  logger: Logger;
}

export interface RejectedLine {
  /** 1-based line of an NDJSON body. */
  line?: number;
  /** 0-based element of a JSON array body. */
  index?: number;
  reason: string;
  detail: string;
}

export interface IngestResponse {
  accepted: number;
  rejected: RejectedLine[];
  rejected_total: number;
  /** The stream key the events went to, or null for a one-request stream. */
  stream: string | null;
  /** The stream was ended by this request. */
  ended: boolean;
}

export interface HttpIngest {
  /** Serves `POST /api/v1/events`; mount it at the root of the app, before the 404 handler. */
  router: express.Router;
  /** Keyed streams currently open. */
  openStreams(): number;
  /** Stops the idle timers (call before `tracker.endAll()` at shutdown). */
  close(): void;
}

class IngestRequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function createHttpIngest(options: HttpIngestOptions): HttpIngest {
  const { target, logger } = options;
  const streams = new KeyedStreams({
    prefix: 'ndjson-http:key:',
    idleTimeoutMs: options.idleTimeoutMs,
    target,
    logger,
  });
  const expectedToken = options.token === undefined ? undefined : digest(options.token);

  const router = express.Router();
  const authorize: express.RequestHandler = (req, res, next) => {
    if (expectedToken === undefined) return next();
    const match = /^Bearer\s+(\S+)\s*$/i.exec(req.get('authorization') ?? '');
    // Hash both sides so the comparison takes the same time whatever the length of the guess.
    if (match?.[1] !== undefined && timingSafeEqual(digest(match[1]), expectedToken)) return next();
    res
      .status(401)
      .set('WWW-Authenticate', 'Bearer realm="pyats-exporter"')
      .json({ error: 'unauthorized', detail: 'a valid "Authorization: Bearer <token>" header is required' });
  };
  const readBody = express.raw({ type: () => true, limit: options.maxBodyBytes, inflate: true });

  router
    .route(EVENTS_PATH)
    .post(authorize, readBody, (req, res) => {
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      let items: { position: number; item: IngestItem }[];
      let positionKey: 'line' | 'index';
      let key: string | undefined;
      try {
        key = streamKeyOf(req);
        ({ items, positionKey } = parseBody(body.toString('utf8'), req.is('application/json') !== false));
      } catch (error) {
        if (error instanceof IngestRequestError) {
          res.status(error.status).json({ error: error.code, detail: error.message });
          return;
        }
        throw error;
      }
      const response = feed(items, positionKey, key, endRequested(req));
      res.status(200).json(response);
    })
    .all((_req, res) => {
      res.status(405).set('Allow', 'POST').json({ error: 'method_not_allowed', detail: 'use POST' });
    });

  router.use(EVENTS_PATH, ((err, _req, res, next) => {
    if (res.headersSent) return next(err);
    const status = statusOf(err);
    if (status === 413) {
      res.status(413).json({
        error: 'body_too_large',
        detail: `the body is over the limit of ${options.maxBodyBytes} bytes; send fewer events per request`,
      });
      return;
    }
    if (status >= 400 && status < 500) {
      res.status(status).json({ error: 'bad_request', detail: clip((err as Error).message ?? '', 200) });
      return;
    }
    next(err);
  }) as express.ErrorRequestHandler);

  /** Feeds a parsed body to the pipeline in order and builds the answer. */
  function feed(
    items: { position: number; item: IngestItem }[],
    positionKey: 'line' | 'index',
    headerKey: string | undefined,
    endAfter: boolean,
  ): IngestResponse {
    let key = headerKey;
    // The stream in use; undefined until needed and again after an `end` (later events start a new one).
    let current = key === undefined ? undefined : streams.touch(key);
    const streamId = (): string =>
      (current ??= key === undefined ? anonymousStreamId('ndjson-http:') : streams.touch(key));
    const endCurrent = (): void => {
      if (current === undefined) return;
      if (key !== undefined) streams.end(key);
      else target.endStream(current);
      current = undefined;
    };
    let accepted = 0;
    let rejectedTotal = 0;
    let seenEvent = false;
    const rejected: RejectedLine[] = [];
    const refuse = (position: number, reason: string, detail: string): void => {
      rejectedTotal += 1;
      if (rejected.length < MAX_REJECTED_LISTED) rejected.push({ [positionKey]: position, reason, detail });
    };

    for (const { position, item } of items) {
      if (item.kind === 'invalid') {
        target.reject(streamId(), HTTP_SOURCE, item.reason, item.detail);
        refuse(position, item.reason, item.detail);
      } else if (item.kind === 'control') {
        const control = item.control;
        if (control.kind === 'hello') {
          if (seenEvent || (key !== undefined && key !== control.stream)) {
            const detail = seenEvent
              ? 'hello must come before the first event'
              : `hello names stream "${clip(control.stream, 60)}" but the request names "${clip(key ?? '', 60)}"`;
            target.reject(streamId(), HTTP_SOURCE, 'bad_control', detail);
            refuse(position, 'bad_control', detail);
          } else {
            if (key === undefined) {
              key = control.stream;
              current = streams.touch(key);
            }
            if (control.envProblem !== undefined) {
              target.reject(streamId(), HTTP_SOURCE, 'bad_control', control.envProblem);
              refuse(position, 'bad_control', control.envProblem);
            } else if (control.ci !== undefined) {
              target.setStreamContext(streamId(), { ci: control.ci });
              logger.info(
                { stream: streamId(), ci: control.ci.system, trace_id: control.ci.parent?.traceId },
                'job runs in CI',
              );
            }
          }
        } else if (control.kind === 'end') {
          endCurrent();
        }
      } else {
        seenEvent = true;
        const id = streamId();
        const refusal = target.ingest(id, HTTP_SOURCE, item.value);
        if (refusal === undefined) accepted += 1;
        else refuse(position, refusal.reason, refusal.detail);
      }
    }

    // A request without a key is a stream of its own; a keyed one ends when asked.
    if (key === undefined || endAfter) endCurrent();
    return {
      accepted,
      rejected,
      rejected_total: rejectedTotal,
      stream: key ?? null,
      ended: current === undefined,
    };
  }

  return {
    router,
    openStreams: () => streams.size,
    close: () => streams.close(),
  };
}

function streamKeyOf(req: express.Request): string | undefined {
  const fromHeader = req.get(STREAM_HEADER);
  const fromQuery = typeof req.query['stream'] === 'string' ? req.query['stream'] : undefined;
  const key = fromHeader ?? fromQuery;
  if (key === undefined || key === '') return undefined;
  if (!isValidStreamKey(key)) {
    throw new IngestRequestError(
      400,
      'bad_stream_key',
      'the stream key must be 1 to 256 characters without control characters',
    );
  }
  return key;
}

function endRequested(req: express.Request): boolean {
  const value = req.get(STREAM_END_HEADER) ?? (typeof req.query['end'] === 'string' ? req.query['end'] : '');
  return /^(1|true|yes)$/i.test(value.trim());
}

/**
 * NDJSON, one item per non-blank line; or, when the body starts with `[`, a JSON array of items; or, under
 * `Content-Type: application/json`, one (possibly multi-line) JSON object.
 */
function parseBody(
  text: string,
  declaredJson: boolean,
): { items: { position: number; item: IngestItem }[]; positionKey: 'line' | 'index' } {
  const trimmed = text.trimStart();
  if (trimmed.startsWith('[')) {
    let value: unknown;
    try {
      value = parseJson(text);
    } catch (error) {
      throw new IngestRequestError(
        400,
        'bad_json',
        `the body is not a JSON array: ${(error as Error).message}`,
      );
    }
    if (!Array.isArray(value)) throw new IngestRequestError(400, 'bad_json', 'the body is not a JSON array');
    return {
      items: value.map((element, index) => ({ position: index, item: toItem(element) })),
      positionKey: 'index',
    };
  }
  if (declaredJson && trimmed.startsWith('{')) {
    try {
      return { items: [{ position: 1, item: toItem(parseJson(text)) }], positionKey: 'line' };
    } catch {
      // Not one JSON document: read it as NDJSON (clients often label NDJSON application/json).
    }
  }
  const items: { position: number; item: IngestItem }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const item = parseLine(lines[i] as string);
    if (item !== undefined) items.push({ position: i + 1, item });
  }
  return { items, positionKey: 'line' };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function statusOf(err: unknown): number {
  if (typeof err === 'object' && err !== null && 'status' in err) {
    const status = (err as { status: unknown }).status;
    if (typeof status === 'number') return status;
  }
  return 500;
}
