// The web config file (exporter-toolkit's format + the pyats_exporter extension): parsing, loading of
// certificates and tokens, and the real server on 127.0.0.1:0 serving HTTPS, with and without client
// certificates. Certificates are made at test time with openssl into a temp dir.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import bcrypt from 'bcryptjs';
import { Gauge, Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { PROBE_PATHS } from '../../src/http/auth.js';
import { createApp, listen, type ListeningServer } from '../../src/http/server.js';
import { loadWebConfig, parseWebConfig, type WebConfig } from '../../src/http/web-config.js';
import { silentLogger } from '../../src/log.js';

const OPENSSL = '/usr/bin/openssl';
const HAVE_OPENSSL = existsSync(OPENSSL);
// In CI a missing openssl is a broken environment: run (and fail) rather than skip.
const describeTls = HAVE_OPENSSL || process.env['CI'] ? describe : describe.skip;

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('parseWebConfig', () => {
  it('reads an empty file as: plain HTTP, no authentication', () => {
    expect(parseWebConfig('', '/etc/web.yml')).toEqual({
      file: '/etc/web.yml',
      basicAuthUsers: {},
      probesRequireAuth: false,
      responseHeaders: {},
    });
  });

  it('reads every supported key, resolving paths against the file directory', () => {
    const text = [
      'tls_server_config:',
      '  cert_file: tls/server.crt',
      '  key_file: /abs/server.key',
      '  client_auth_type: RequireAndVerifyClientCert',
      '  client_ca_file: ca.crt',
      '  min_version: TLS13',
      '  max_version: TLS13',
      '  prefer_server_cipher_suites: false',
      'http_server_config:',
      '  http2: true',
      '  headers:',
      '    x-frame-options: deny',
      'basic_auth_users:',
      '  prometheus: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi',
      'pyats_exporter:',
      '  bearer_token_file: token',
      '  probes_require_auth: true',
    ].join('\n');
    expect(parseWebConfig(text, '/etc/pyats/web.yml')).toEqual({
      file: '/etc/pyats/web.yml',
      tls: {
        certFile: '/etc/pyats/tls/server.crt',
        keyFile: '/abs/server.key',
        clientAuth: 'RequireAndVerifyClientCert',
        clientCaFile: '/etc/pyats/ca.crt',
        minVersion: 'TLSv1.3',
        maxVersion: 'TLSv1.3',
        honorCipherOrder: false,
      },
      basicAuthUsers: { prometheus: '$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi' },
      bearerTokenFile: '/etc/pyats/token',
      probesRequireAuth: true,
      responseHeaders: { 'X-Frame-Options': 'deny' },
    });
  });

  it('defaults like exporter-toolkit: no client certificates, TLS 1.2 and up', () => {
    const parsed = parseWebConfig('tls_server_config: {cert_file: a.crt, key_file: a.key}', '/w/web.yml');
    expect(parsed.tls).toEqual({
      certFile: '/w/a.crt',
      keyFile: '/w/a.key',
      clientAuth: 'NoClientCert',
      minVersion: 'TLSv1.2',
      honorCipherOrder: true,
    });
  });

  it.each([
    ['tls_server_confg: {}', 'unknown key "tls_server_confg"'],
    [
      'tls_server_config: {cert_file: a, key_file: b, certfile: c}',
      'unknown key "tls_server_config.certfile"',
    ],
    ['pyats_exporter: {bearer_token: abc}', 'unknown key "pyats_exporter.bearer_token"'],
    ['http_server_config: {http3: true}', 'unknown key "http_server_config.http3"'],
  ])('refuses an unknown key, naming it and the file: %s', (text, message) => {
    const error = configError(() => parseWebConfig(text, '/etc/web.yml'));
    expect(error.code).toBe('bad_web_config');
    expect(error.message).toContain('/etc/web.yml');
    expect(error.message).toContain(message);
  });

  it.each([
    [
      'tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_AES_128_GCM_SHA256]}',
      'cipher_suites',
    ],
    ['tls_server_config: {cert_file: a, key_file: b, client_allowed_sans: [x]}', 'client_allowed_sans'],
  ])('refuses exporter-toolkit options it does not implement instead of ignoring them: %s', (text, key) => {
    expect(configError(() => parseWebConfig(text, 'w.yml')).message).toMatch(
      new RegExp(`${key} is an exporter-toolkit option pyats-exporter does not support`),
    );
  });

  it.each([
    ['tls_server_config: {key_file: b}', /tls_server_config\.cert_file/],
    [
      'tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireClientCert}',
      /client_auth_type/,
    ],
    ['tls_server_config: {cert_file: a, key_file: b, min_version: TLS14}', /min_version/],
    [
      'tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}',
      /below min_version/,
    ],
    [
      'tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAndVerifyClientCert}',
      /needs client_ca_file/,
    ],
    [
      'tls_server_config: {cert_file: a, key_file: b, client_ca_file: ca}',
      /client_auth_type is NoClientCert/,
    ],
    ['basic_auth_users: {alice: hunter2}', /basic_auth_users\.alice: not a bcrypt hash/],
    ['basic_auth_users: [alice]', /basic_auth_users/],
    ['http_server_config: {headers: {Server: nginx}}', /"Server" cannot be set/],
    ['pyats_exporter: {probes_require_auth: "yes"}', /probes_require_auth/],
    ['[1, 2]', /top level/],
    ['a: [unclosed', /not valid YAML/],
  ])('refuses a bad value: %s', (text, message) => {
    expect(configError(() => parseWebConfig(text, 'w.yml')).message).toMatch(message);
  });
});

/** A CA, a server certificate for localhost/127.0.0.1, a client certificate from the CA and a stranger's. */
interface Pki {
  dir: string;
  path: (name: string) => string;
  read: (name: string) => Promise<Buffer>;
}

async function makePki(): Promise<Pki> {
  const dir = await mkdtemp(join(tmpdir(), 'pyats-web-config-'));
  const run = promisify(execFile);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const at = (name: string): string => join(dir, name);
  const selfSigned = (name: string, subject: string, extra: string[] = []): Promise<unknown> =>
    run(OPENSSL, [
      'req',
      '-x509',
      ...ec,
      '-days',
      '1',
      '-subj',
      subject,
      ...extra,
      '-keyout',
      at(`${name}.key`),
      '-out',
      at(`${name}.crt`),
    ]);
  await Promise.all([
    selfSigned('ca', '/CN=pyats test CA'),
    selfSigned('server', '/CN=localhost', ['-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1']),
    selfSigned('stranger', '/CN=stranger'),
    run(OPENSSL, [
      'req',
      ...ec,
      '-subj',
      '/CN=prometheus',
      '-keyout',
      at('client.key'),
      '-out',
      at('client.csr'),
    ]),
  ]);
  await run(OPENSSL, [
    'x509',
    '-req',
    '-in',
    at('client.csr'),
    '-CA',
    at('ca.crt'),
    '-CAkey',
    at('ca.key'),
    '-days',
    '1',
    '-out',
    at('client.crt'),
  ]);
  return { dir, path: at, read: (name) => readFile(at(name)) };
}

describeTls('loadWebConfig', () => {
  let pki: Pki;
  beforeAll(async () => {
    pki = await makePki();
  });
  afterAll(async () => {
    await rm(pki.dir, { recursive: true, force: true });
  });

  async function writeConfig(name: string, text: string): Promise<string> {
    const file = pki.path(name);
    await writeFile(file, text);
    return file;
  }

  it('reads certificates, CA and tokens relative to the config file', async () => {
    await writeFile(pki.path('tokens'), '\n  first-token  \r\nsecond-token\n\n');
    const file = await writeConfig(
      'full.yml',
      [
        'tls_server_config:',
        '  cert_file: server.crt',
        '  key_file: server.key',
        '  client_auth_type: VerifyClientCertIfGiven',
        '  client_ca_file: ca.crt',
        'basic_auth_users:',
        '  prom: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi',
        'pyats_exporter:',
        '  bearer_token_file: tokens',
      ].join('\n'),
    );
    const config = loadWebConfig(file);
    expect(config.tls?.cert.equals(await pki.read('server.crt'))).toBe(true);
    expect(config.tls?.key.equals(await pki.read('server.key'))).toBe(true);
    expect(config.tls?.clientCa?.equals(await pki.read('ca.crt'))).toBe(true);
    expect(config.tls?.clientAuth).toBe('VerifyClientCertIfGiven');
    expect(config.auth).toEqual({
      basicAuthUsers: { prom: '$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi' },
      bearerTokens: ['first-token', 'second-token'],
      openPaths: PROBE_PATHS,
    });
  });

  it('has no auth section when no user or token is configured', async () => {
    const file = await writeConfig(
      'tls-only.yml',
      'tls_server_config: {cert_file: server.crt, key_file: server.key}\n',
    );
    const config = loadWebConfig(file);
    expect(config.auth).toBeUndefined();
    expect(config.tls).toBeDefined();
  });

  it('refuses an unreadable file, cert, key, CA or token file, naming it', async () => {
    const missing = pki.path('nope.yml');
    expect(configError(() => loadWebConfig(missing)).message).toContain(missing);
    const cases: [string, RegExp][] = [
      [
        'tls_server_config: {cert_file: absent.crt, key_file: server.key}',
        /cert_file: cannot read .*absent\.crt/,
      ],
      [
        'tls_server_config: {cert_file: server.crt, key_file: absent.key}',
        /key_file: cannot read .*absent\.key/,
      ],
      [
        'tls_server_config: {cert_file: server.crt, key_file: server.key, client_auth_type: RequestClientCert, client_ca_file: absent-ca.crt}',
        /client_ca_file: cannot read .*absent-ca\.crt/,
      ],
      ['pyats_exporter: {bearer_token_file: absent-token}', /bearer_token_file: cannot read .*absent-token/],
    ];
    for (const [text, message] of cases) {
      const file = await writeConfig('bad.yml', text);
      const error = configError(() => loadWebConfig(file));
      expect(error.code).toBe('bad_web_config');
      expect(error.message).toContain(file);
      expect(error.message).toMatch(message);
    }
  });

  it('refuses a key that does not belong to the certificate, a non-certificate, and an empty token file', async () => {
    await writeFile(pki.path('empty-token'), '\n \n');
    await writeFile(pki.path('garbage.crt'), 'not a certificate\n');
    const cases: [string, RegExp][] = [
      [
        'tls_server_config: {cert_file: server.crt, key_file: stranger.key}',
        /cannot use cert_file\/key_file/,
      ],
      [
        'tls_server_config: {cert_file: garbage.crt, key_file: server.key}',
        /garbage\.crt: not a PEM certificate/,
      ],
      ['pyats_exporter: {bearer_token_file: empty-token}', /empty-token is empty/],
    ];
    for (const [text, message] of cases) {
      const file = await writeConfig('bad.yml', text);
      expect(configError(() => loadWebConfig(file)).message).toMatch(message);
    }
  });
});

interface TlsReply {
  status: number;
  body: string;
}

function httpsGet(port: number, path: string, options: https.RequestOptions = {}): Promise<TlsReply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path, servername: 'localhost', agent: false, ...options },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The TLS layer turned the client away: a handshake alert, or the connection dropped right after it. */
async function expectRefused(reply: Promise<TlsReply>): Promise<void> {
  const error = await reply.then(
    (r): NodeJS.ErrnoException => new Error(`expected a refused connection, got HTTP ${r.status}`),
    (err: NodeJS.ErrnoException) => err,
  );
  expect(error.code ?? error.message).toMatch(/^(ECONNRESET|EPIPE|EPROTO|ERR_SSL_\w+)$/);
}

describeTls('HTTPS from the web config', () => {
  let pki: Pki;
  let server: ListeningServer | undefined;
  let ca: Buffer;
  let client: { cert: Buffer; key: Buffer };
  let stranger: { cert: Buffer; key: Buffer };

  beforeAll(async () => {
    pki = await makePki();
    ca = await pki.read('server.crt');
    client = { cert: await pki.read('client.crt'), key: await pki.read('client.key') };
    stranger = { cert: await pki.read('stranger.crt'), key: await pki.read('stranger.key') };
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });
  afterAll(async () => {
    await rm(pki.dir, { recursive: true, force: true });
  });

  async function serve(yaml: string): Promise<number> {
    const file = pki.path('web.yml');
    await writeFile(file, yaml);
    const config: WebConfig = loadWebConfig(file);
    const registry = new Registry();
    new Gauge({ name: 'lab_up', help: 'A series to scrape.', registers: [registry] }).set(1);
    const app = createApp({
      registry,
      ready: () => ({ ready: true }),
      logger: silentLogger(),
      ...(config.auth ? { auth: config.auth } : {}),
    });
    server = await listen(app, { host: '127.0.0.1', port: 0, ...(config.tls ? { tls: config.tls } : {}) });
    return server.address.port;
  }

  const TLS = 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n';

  it('serves /metrics over HTTPS to a client that trusts the certificate; one that does not fails', async () => {
    const port = await serve(TLS);
    expect(server?.protocol).toBe('https');
    const reply = await httpsGet(port, '/metrics', { ca });
    expect(reply.status).toBe(200);
    expect(reply.body).toContain('lab_up 1');
    await expect(httpsGet(port, '/metrics')).rejects.toMatchObject({ code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  });

  it('does not answer plain HTTP on the HTTPS port', async () => {
    const port = await serve(TLS);
    const http = await import('node:http');
    const outcome = await new Promise<string>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString()));
        res.on('end', () => resolve(`status ${res.statusCode ?? 0}: ${body}`));
      });
      req.on('error', (err) => resolve(`error ${(err as NodeJS.ErrnoException).code ?? err.message}`));
      req.end();
    });
    expect(outcome).not.toContain('lab_up');
  });

  it('honours min_version', async () => {
    const port = await serve(`${TLS}  min_version: TLS13\n`);
    await expectRefused(httpsGet(port, '/metrics', { ca, maxVersion: 'TLSv1.2' }));
    expect((await httpsGet(port, '/metrics', { ca })).status).toBe(200);
  });

  it('RequireAndVerifyClientCert: only a certificate from client_ca_file gets in', async () => {
    const port = await serve(
      `${TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n`,
    );
    expect((await httpsGet(port, '/metrics', { ca, ...client })).status).toBe(200);
    await expectRefused(httpsGet(port, '/metrics', { ca }));
    await expectRefused(httpsGet(port, '/metrics', { ca, ...stranger }));
    // Probes are no exception at the TLS layer.
    await expectRefused(httpsGet(port, '/healthz', { ca }));
  });

  it('VerifyClientCertIfGiven: no certificate is fine, a certificate must verify', async () => {
    const port = await serve(`${TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n`);
    expect((await httpsGet(port, '/metrics', { ca })).status).toBe(200);
    expect((await httpsGet(port, '/metrics', { ca, ...client })).status).toBe(200);
    await expectRefused(httpsGet(port, '/metrics', { ca, ...stranger }));
  });

  it('RequireAnyClientCert: some certificate is needed, not a verified one', async () => {
    const port = await serve(`${TLS}  client_auth_type: RequireAnyClientCert\n`);
    expect((await httpsGet(port, '/metrics', { ca, ...stranger })).status).toBe(200);
    await expectRefused(httpsGet(port, '/metrics', { ca }));
  });

  it('combines TLS with basic auth: 401 without the password, metrics with it', async () => {
    const hash = bcrypt.hashSync('pw', 4);
    const port = await serve(`${TLS}basic_auth_users:\n  prom: "${hash}"\n`);
    const denied = await httpsGet(port, '/metrics', { ca });
    expect(denied.status).toBe(401);
    expect(denied.body).toBe('Unauthorized\n');
    const auth = `Basic ${Buffer.from('prom:pw').toString('base64')}`;
    const ok = await httpsGet(port, '/metrics', { ca, headers: { authorization: auth } });
    expect(ok.status).toBe(200);
    expect((await httpsGet(port, '/healthz', { ca })).status).toBe(200);
  });
});
