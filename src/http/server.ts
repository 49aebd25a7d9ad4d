// The HTTP face of the daemon: /metrics (Prometheus text or OpenMetrics, by Accept; gzip by
// Accept-Encoding), /healthz, /readyz.
// `createApp` is pure; `listen` binds it and returns the bound address and a close() that cannot hang.
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { Registry, type Metric, type RegistryContentType } from 'prom-client';
import type { Logger } from '../log.js';
import { ExpositionPiece, isSelfRendering } from '../telemetry/index.js';
import { Authenticator, requireAuth, type AuthOptions } from './auth.js';
import { gzipBody, plainBody, type Body } from './exposition-body.js';
import { clientCertificateProblem, httpsServerOptions, type TlsSettings } from './web-config.js';

export interface Readiness {
  ready: boolean;
  /** Why not ready; shown in the 503 body. */
  detail?: string;
}

export interface AppOptions {
  registry: Registry;
  /** Asked on every /readyz request. */
  ready: () => Readiness;
  logger: Logger;
  /** Require credentials on every path but `auth.openPaths`. Default: none required. */
  auth?: AuthOptions;
  /** Extra headers on every response (web config `http_server_config.headers`). Default: none. */
  responseHeaders?: Readonly<Record<string, string>>;
  /** More routes (e.g. NDJSON ingest), mounted at the root after authentication. Default: none. */
  routers?: readonly express.Router[];
}

export type ExpositionFormat = 'prometheus' | 'openmetrics';

const OPENMETRICS_VERSIONS = new Set([undefined, '1.0.0', '0.0.1']);
const PROMETHEUS_TEXT_VERSIONS = new Set([undefined, '0.0.4']);

/**
 * Picks the exposition format from an Accept header the way Prometheus's Go client does: the acceptable
 * entries in order of q (first listed wins a tie); OpenMetrics for `application/openmetrics-text` of a
 * version we can serve (Prometheus 2.x asks for 1.0.0 and 0.0.1 — same format), Prometheus text for
 * `text/plain` (0.0.4) and the text wildcards; Prometheus text when nothing matches, never 406.
 */
export function negotiateFormat(accept: string | undefined): ExpositionFormat {
  if (accept === undefined) return 'prometheus';
  const entries: { type: string; version: string | undefined; q: number; index: number }[] = [];
  accept.split(',').forEach((part, index) => {
    const [mediaType = '', ...params] = part.split(';').map((s) => s.trim());
    let q = 1;
    let version: string | undefined;
    for (const param of params) {
      const eq = param.indexOf('=');
      if (eq < 0) continue;
      const key = param.slice(0, eq).trim().toLowerCase();
      const value = param
        .slice(eq + 1)
        .trim()
        .replace(/^"(.*)"$/, '$1');
      if (key === 'q') q = Number(value);
      else if (key === 'version') version = value;
    }
    if (Number.isFinite(q) && q > 0) entries.push({ type: mediaType.toLowerCase(), version, q, index });
  });
  entries.sort((a, b) => b.q - a.q || a.index - b.index);
  for (const { type, version } of entries) {
    if (type === 'application/openmetrics-text' && OPENMETRICS_VERSIONS.has(version)) return 'openmetrics';
    if (type === 'text/plain' && PROMETHEUS_TEXT_VERSIONS.has(version)) return 'prometheus';
    if (type === 'text/*' || type === '*/*') return 'prometheus';
  }
  return 'prometheus';
}

export const CONTENT_TYPES: Record<ExpositionFormat, RegistryContentType> = {
  prometheus: Registry.PROMETHEUS_CONTENT_TYPE,
  openmetrics: Registry.OPENMETRICS_CONTENT_TYPE,
};

/**
 * Serializes `registry` in `format` without touching the registry's own state, in the registry's order and
 * byte for byte as prom-client would write it.
 *
 * Families that print themselves (telemetry/series.ts: the pyats_* section and job metrics, most of the series)
 * are written by string concatenation, synchronously, so no observation lands in the middle of one. The rest
 * (health, process and overflow metrics) go through a snapshot, because prom-client 15 picks the format from
 * registry-wide state: `setContentType()` then `metrics()`. That is wrong for a shared registry under
 * concurrent scrapes: `metrics()` awaits each metric's `get()` and reads the content type again afterwards, so
 * a scrape asking for the other format in between flips it mid-serialization; and in OpenMetrics mode
 * `metrics()` renames every counter object in place (`x_total` → `x`), so Prometheus-text scrapes afterwards
 * lose their `_total` suffix. Instead each scrape takes one snapshot of those metrics (their `get()`) and lets
 * a fresh, private Registry of the wanted content type format it, through read-only views of the snapshot.
 * Registry default labels are not applied (the exporter sets none).
 */
export async function renderMetrics(registry: Registry, format: ExpositionFormat): Promise<string> {
  let text = '';
  for (const piece of await renderPieces(registry, format)) text += piece.text;
  return text;
}

// prom-client's own framing: a blank line between Prometheus-text families; `# EOF` once, last.
const PROMETHEUS_SEPARATOR = new ExpositionPiece('\n\n');
const PROMETHEUS_END = new ExpositionPiece('\n');
const OPENMETRICS_SEPARATOR = new ExpositionPiece('\n');
const OPENMETRICS_END = new ExpositionPiece('\n# EOF\n');
/** The framing pieces: short and constant, compressed together with the text around them. */
const FRAMING: ReadonlySet<ExpositionPiece> = new Set([
  PROMETHEUS_SEPARATOR,
  PROMETHEUS_END,
  OPENMETRICS_SEPARATOR,
  OPENMETRICS_END,
]);

/**
 * renderMetrics' text in pieces, in order: the self-rendering families' own (the same objects while unchanged,
 * see ExpositionPiece), one made for this scrape per other metric, and the framing between them.
 */
export async function renderPieces(registry: Registry, format: ExpositionFormat): Promise<ExpositionPiece[]> {
  const openMetrics = format === 'openmetrics';
  const metrics: unknown[] = registry.getMetricsAsArray();
  const snapshotTexts = await renderSnapshots(metrics.filter((m) => !isSelfRendering(m)) as Metric[], format);
  const separator = openMetrics ? OPENMETRICS_SEPARATOR : PROMETHEUS_SEPARATOR;
  const pieces: ExpositionPiece[] = [];
  let next = 0;
  for (const metric of metrics) {
    if (pieces.length > 0) pieces.push(separator);
    if (isSelfRendering(metric)) {
      for (const piece of metric.renderPieces(openMetrics)) pieces.push(piece);
    } else {
      pieces.push(new ExpositionPiece(snapshotTexts[next++] ?? '', false));
    }
  }
  pieces.push(openMetrics ? OPENMETRICS_END : PROMETHEUS_END);
  return pieces;
}

/** Each metric's text (no trailing newline), from one snapshot of them all, in their order. */
async function renderSnapshots(metrics: Metric[], format: ExpositionFormat): Promise<string[]> {
  const snapshot = await Promise.all(metrics.map((metric) => metric.get()));
  const scratch = new Registry<RegistryContentType>();
  scratch.setContentType(CONTENT_TYPES[format]);
  const names: string[] = [];
  for (const family of snapshot) {
    // prom-client's typings say `type` is a numeric enum; at run time it is the string ('counter', ...).
    const type = String(family.type);
    const name =
      format === 'openmetrics' && type === 'counter' ? family.name.replace(/_total$/, '') : family.name;
    const values = (family.values as SnapshotValue[]).map(withExemplarCopy);
    const view = { name, help: family.help, type, get: () => Promise.resolve({ ...family, name, values }) };
    // Registry only reads name/type and calls get() on what it formats; a view is enough.
    scratch.registerMetric(view as unknown as Metric);
    names.push(name);
  }
  return Promise.all(names.map((name) => scratch.getSingleMetricAsString(name)));
}
/** A snapshot sample as prom-client builds it at run time; its typings leave out a bucket's `exemplar`. */
interface SnapshotValue {
  value: number;
  labels: Record<string, string | number | undefined>;
  exemplar?: { labelSet: Record<string, string | number>; value: number; timestamp?: number } | null;
}

/**
 * The snapshot holds the histogram's live exemplar objects, which later observations rewrite in place while
 * this scrape is still formatting; a copy keeps each exemplar as it was at the snapshot. Only OpenMetrics
 * prints them (`# {trace_id="…",span_id="…"} value timestamp`); Prometheus text has no syntax for them.
 */
function withExemplarCopy(sample: SnapshotValue): SnapshotValue {
  const exemplar = sample.exemplar;
  if (exemplar === undefined || exemplar === null) return sample;
  return { ...sample, exemplar: { ...exemplar, labelSet: { ...exemplar.labelSet } } };
}

const INDEX_HTML = `<!doctype html>
<html>
<head><meta charset="utf-8"><title>pyATS exporter</title></head>
<body>
<h1>pyATS exporter</h1>
<p><a href="metrics">Metrics</a></p>
</body>
</html>
`;

/** Below this a body is sent as it is: compressing it would save next to nothing. */
const GZIP_MIN_BYTES = 1024;

/**
 * The /metrics body, gzipped when the scraper accepts it, as Prometheus does: 2.4 MB of text for 22,000
 * series becomes about 120 kB, which a scrape across a network feels more than level 1 costs. Compressed on
 * the event loop: zlib's thread pool (async gzip) and express's `compression` middleware (16 kB chunks, each
 * a trip through the event loop) both added 10–12 ms to the p50 under ingest, waiting for a core and for the
 * event loop between ingest turns. Pieces unchanged since an earlier scrape are not encoded again
 * (exposition-body.ts).
 */
function encodeBody(req: express.Request, pieces: readonly ExpositionPiece[]): Body & { gzipped: boolean } {
  const plain = plainBody(pieces);
  if (
    req.method !== 'GET' ||
    plain.length < GZIP_MIN_BYTES ||
    req.acceptsEncodings('gzip', 'identity') !== 'gzip'
  ) {
    return { ...plain, gzipped: false };
  }
  return { ...gzipBody(plain, FRAMING), gzipped: true };
}

function methodNotAllowed(allow: string): express.RequestHandler {
  return (_req, res) => {
    res.status(405).set('Allow', allow).type('text/plain').send('method not allowed\n');
  };
}

export function createApp(opts: AppOptions): express.Express {
  const { registry, ready, logger } = opts;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  const extraHeaders = Object.entries(opts.responseHeaders ?? {});
  if (extraHeaders.length > 0) {
    app.use((_req, res, next) => {
      for (const [name, value] of extraHeaders) res.setHeader(name, value);
      next();
    });
  }
  // Before every route, so a future route is protected unless its path is explicitly open.
  if (opts.auth) app.use(requireAuth(new Authenticator(opts.auth), logger));
  for (const router of opts.routers ?? []) app.use(router);

  // Express answers HEAD with the GET handler, minus the body.
  app
    .route('/metrics')
    .get(async (req, res) => {
      const format = negotiateFormat(req.get('accept'));
      let body: Body & { gzipped: boolean };
      try {
        body = encodeBody(req, await renderPieces(registry, format));
      } catch (err) {
        logger.error({ err }, 'collecting metrics failed');
        res.status(500).type('text/plain').send('error collecting metrics\n');
        return;
      }
      // Set by hand and sent with end(): res.send() would re-serialize the Content-Type and reorder its
      // parameters; Vary because the body depends on Accept and Accept-Encoding.
      res.status(200);
      res.setHeader('Content-Type', CONTENT_TYPES[format]);
      if (body.gzipped) res.setHeader('Content-Encoding', 'gzip');
      res.setHeader('Content-Length', body.length);
      res.setHeader('Vary', 'Accept, Accept-Encoding');
      res.setHeader('Cache-Control', 'no-store');
      // One writev for all the chunks: no copy of the body into one buffer first.
      res.cork();
      for (const chunk of body.chunks) res.write(chunk);
      res.end();
      res.uncork();
    })
    .all(methodNotAllowed('GET, HEAD'));

  app
    .route('/healthz')
    .get((_req, res) => {
      res.status(200).type('text/plain').send('ok');
    })
    .all(methodNotAllowed('GET, HEAD'));

  app
    .route('/readyz')
    .get((_req, res) => {
      let state: Readiness;
      try {
        state = ready();
      } catch (err) {
        logger.error({ err }, 'readiness check failed');
        state = { ready: false, detail: 'readiness check failed' };
      }
      if (state.ready) {
        res.status(200).type('text/plain').send('ready');
      } else {
        res
          .status(503)
          .type('text/plain')
          .send(state.detail ? `not ready: ${state.detail}` : 'not ready');
      }
    })
    .all(methodNotAllowed('GET, HEAD'));

  app
    .route('/')
    .get((_req, res) => {
      res.status(200).type('html').send(INDEX_HTML);
    })
    .all(methodNotAllowed('GET, HEAD'));

  app.use((_req, res) => {
    res.status(404).type('text/plain').send('not found\n');
  });

  app.use((err: unknown, _req: express.Request, res: express.Response, next: express.NextFunction) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    const status = httpStatusOf(err);
    if (status >= 500) logger.error({ err }, 'request failed');
    res
      .status(status)
      .type('text/plain')
      .send(status >= 500 ? 'internal error\n' : 'bad request\n');
  });

  return app;
}

/** Express and its body/URI parsers mark client errors with `status`; anything else is ours. */
function httpStatusOf(err: unknown): number {
  if (typeof err === 'object' && err !== null && 'status' in err) {
    const status = (err as { status: unknown }).status;
    if (typeof status === 'number' && status >= 400 && status < 600) return status;
  }
  return 500;
}

export interface ListenOptions {
  host: string;
  /** 0 picks a free port; the bound one is in the result's `address`. */
  port: number;
  /** How long close() lets in-flight requests finish before cutting their connections. Default 1000. */
  closeGraceMs?: number;
  /** Receives server errors after start-up (e.g. EMFILE on accept), which would otherwise crash the process. */
  logger?: Logger;
  /** Serve HTTPS with these certificates (from the web config). Default: plain HTTP. */
  tls?: TlsSettings;
  timeouts?: HttpTimeouts;
}

export interface HttpTimeouts {
  /** To receive a request's headers; a client that never finishes them (slow loris) is cut. Default 10000. */
  headersMs?: number;
  /** To receive a whole request. Default 30000. */
  requestMs?: number;
  /** An idle keep-alive connection stays open this long; outlives a 1-minute scrape interval. Default 65000. */
  keepAliveMs?: number;
  /** Socket inactivity while serving, e.g. a client that stopped reading its response. Default 120000. */
  idleSocketMs?: number;
}

export interface ListeningServer {
  address: { host: string; port: number };
  protocol: 'http' | 'https';
  /** Stops accepting, closes idle keep-alive connections now and busy ones after the grace period. */
  close(): Promise<void>;
}

/** Binds `app`; rejects with the listen error itself (EADDRINUSE, ENOTFOUND, ERR_SOCKET_BAD_PORT, ...). */
export function listen(app: express.Express, opts: ListenOptions): Promise<ListeningServer> {
  const graceMs = opts.closeGraceMs ?? 1000;
  return new Promise((resolve, reject) => {
    const headersMs = opts.timeouts?.headersMs ?? 10_000;
    const serverOptions: http.ServerOptions = {
      headersTimeout: headersMs,
      requestTimeout: opts.timeouts?.requestMs ?? 30_000,
      keepAliveTimeout: opts.timeouts?.keepAliveMs ?? 65_000,
      // Node checks the two timeouts above only this often (30 s by default), which would let a slow-loris
      // connection live up to 30 s past headersTimeout.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersMs / 4))),
    };
    const { tls } = opts;
    const server = tls
      ? https.createServer({ ...serverOptions, ...httpsServerOptions(tls) }, app)
      : http.createServer(serverOptions, app);
    server.setTimeout(opts.timeouts?.idleSocketMs ?? 120_000);
    if (tls) {
      server.on('secureConnection', (socket) => {
        const problem = clientCertificateProblem(tls, socket);
        if (problem === undefined) return;
        opts.logger?.warn({ remote: socket.remoteAddress, problem }, 'TLS client rejected');
        socket.destroy();
      });
      server.on('tlsClientError', (err, socket) => {
        opts.logger?.debug({ err, remote: socket.remoteAddress }, 'TLS handshake failed');
        socket.destroy();
      });
    }
    const onStartError = (err: Error): void => reject(err);
    server.once('error', onStartError);
    server.once('listening', () => {
      server.off('error', onStartError);
      server.on('error', (err) => opts.logger?.error({ err }, 'HTTP server error'));
      const bound = server.address() as AddressInfo;
      let closing: Promise<void> | undefined;
      resolve({
        address: { host: bound.address, port: bound.port },
        protocol: tls ? 'https' : 'http',
        close: () => {
          closing ??= new Promise<void>((done, fail) => {
            const cutoff = setTimeout(() => server.closeAllConnections(), graceMs);
            // Unref: a pending cutoff must not keep the process alive on its own.
            cutoff.unref();
            server.close((err) => {
              clearTimeout(cutoff);
              if (err) fail(err);
              else done();
            });
            server.closeIdleConnections();
          });
          return closing;
        },
      });
    });
    server.listen(opts.port, opts.host);
  });
}
