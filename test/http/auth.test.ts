// Basic auth (bcrypt) and bearer tokens: the Authenticator's decisions and cache, and the real HTTP server on
// 127.0.0.1:0 answering 401 with WWW-Authenticate and nothing else.
import http from 'node:http';
import bcrypt from 'bcryptjs';
import { Gauge, Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { Authenticator, PROBE_PATHS, isBcryptHash, type AuthOptions } from '../../src/http/auth.js';
import { createApp, listen, type ListeningServer } from '../../src/http/server.js';
import { ConfigError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { request as httpRequest, type Reply } from '../helpers/http.js';

// Written by Go's x/crypto/bcrypt (exporter-toolkit's own fixture): the password is "fakepassword".
const GO_HASH = '$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi';
const ALICE_HASH = bcrypt.hashSync('alice-secret', 4);
const TOKEN = 'tok-0123456789abcdef';

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

/** bcryptjs's compare, counting calls. */
function countingCompare(): { compare: (p: string, h: string) => Promise<boolean>; calls: () => number } {
  let calls = 0;
  return {
    compare: (password, hash) => {
      calls += 1;
      return bcrypt.compare(password, hash);
    },
    calls: () => calls,
  };
}

describe('isBcryptHash', () => {
  it('accepts $2a$, $2b$ and $2y$ hashes and nothing else', () => {
    expect(isBcryptHash(GO_HASH)).toBe(true);
    expect(isBcryptHash(ALICE_HASH)).toBe(true);
    expect(isBcryptHash(ALICE_HASH.replace('$2b$', '$2a$'))).toBe(true);
    expect(isBcryptHash('alice-secret')).toBe(false);
    expect(isBcryptHash('{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=')).toBe(false);
    expect(isBcryptHash(`${GO_HASH}x`)).toBe(false);
  });
});

describe('Authenticator', () => {
  it('refuses to be built with no credentials, or with a password that is not a hash', () => {
    expect(() => new Authenticator({})).toThrow(ConfigError);
    expect(() => new Authenticator({ basicAuthUsers: { alice: 'plain' } })).toThrow(
      /alice.*not a bcrypt hash/,
    );
    expect(() => new Authenticator({ bearerTokens: [''] })).toThrow(ConfigError);
  });

  it('checks basic auth against bcrypt hashes, including one written by Go', async () => {
    const auth = new Authenticator({ basicAuthUsers: { alice: ALICE_HASH, prom: GO_HASH } });
    expect(await auth.verify(basic('alice', 'alice-secret'))).toBe('ok');
    expect(await auth.verify(basic('prom', 'fakepassword'))).toBe('ok');
    expect(await auth.verify(basic('alice', 'wrong'))).toBe('rejected');
    expect(await auth.verify(basic('prom', 'alice-secret'))).toBe('rejected');
    // alice's password under a user that does not exist (bcrypt runs against alice's hash, result ignored).
    expect(await auth.verify(basic('mallory', 'alice-secret'))).toBe('rejected');
    expect(await auth.verify(undefined)).toBe('missing');
    expect(await auth.verify('   ')).toBe('missing');
    expect(await auth.verify('Basic')).toBe('rejected');
    expect(await auth.verify(`Basic ${Buffer.from('no-colon').toString('base64')}`)).toBe('rejected');
    expect(await auth.verify(`Bearer ${TOKEN}`)).toBe('rejected');
    expect(await auth.verify(`Digest username="alice"`)).toBe('rejected');
    expect(await auth.verify(basic('alice', 'alice-secret').replace('Basic', 'bAsIc'))).toBe('ok');
  });

  it('checks bearer tokens, any of several', async () => {
    const auth = new Authenticator({ bearerTokens: [TOKEN, 'second-token'] });
    expect(await auth.verify(`Bearer ${TOKEN}`)).toBe('ok');
    expect(await auth.verify('Bearer second-token')).toBe('ok');
    expect(await auth.verify(`Bearer ${TOKEN}x`)).toBe('rejected');
    expect(await auth.verify(`Bearer ${TOKEN.slice(0, -1)}`)).toBe('rejected');
    expect(await auth.verify('Bearer ')).toBe('rejected');
    expect(await auth.verify(basic('alice', TOKEN))).toBe('rejected');
  });

  it('runs bcrypt once for a credential presented again and again, success or failure', async () => {
    const counter = countingCompare();
    const auth = new Authenticator({ basicAuthUsers: { alice: ALICE_HASH }, compare: counter.compare });
    for (let i = 0; i < 5; i++) expect(await auth.verify(basic('alice', 'alice-secret'))).toBe('ok');
    expect(counter.calls()).toBe(1);
    for (let i = 0; i < 5; i++) expect(await auth.verify(basic('alice', 'wrong'))).toBe('rejected');
    expect(counter.calls()).toBe(2);
    for (let i = 0; i < 3; i++) expect(await auth.verify(basic('bob', 'alice-secret'))).toBe('rejected');
    expect(counter.calls()).toBe(3);
  });

  it('shares one bcrypt run among concurrent checks of the same credential', async () => {
    const counter = countingCompare();
    const auth = new Authenticator({ basicAuthUsers: { alice: ALICE_HASH }, compare: counter.compare });
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, () => auth.verify(basic('alice', 'alice-secret'))),
    );
    expect(outcomes.every((o) => o === 'ok')).toBe(true);
    expect(counter.calls()).toBe(1);
  });

  it('keeps a verified credential cached through a flood of wrong passwords', async () => {
    const counter = countingCompare();
    const auth = new Authenticator({ basicAuthUsers: { alice: ALICE_HASH }, compare: counter.compare });
    expect(await auth.verify(basic('alice', 'alice-secret'))).toBe('ok');
    for (let i = 0; i < 400; i += 40) {
      await Promise.all(Array.from({ length: 40 }, (_, j) => auth.verify(basic('alice', `guess-${i + j}`))));
    }
    const before = counter.calls();
    expect(await auth.verify(basic('alice', 'alice-secret'))).toBe('ok');
    expect(counter.calls()).toBe(before);
  });

  it('answers busy instead of queueing bcrypt without bound, and cached credentials still pass', async () => {
    const release: (() => void)[] = [];
    let blocking = false;
    const auth = new Authenticator({
      basicAuthUsers: { alice: ALICE_HASH },
      maxPendingVerifications: 2,
      compare: async (password, hash) => {
        if (blocking) await new Promise<void>((done) => release.push(done));
        return bcrypt.compare(password, hash);
      },
    });
    expect(await auth.verify(basic('alice', 'alice-secret'))).toBe('ok');
    blocking = true;
    const first = auth.verify(basic('alice', 'guess-1'));
    const second = auth.verify(basic('alice', 'guess-2'));
    expect(await auth.verify(basic('alice', 'guess-3'))).toBe('busy');
    expect(await auth.verify(basic('alice', 'alice-secret'))).toBe('ok');
    // bcrypt runs one at a time: the second waits for the first.
    while (release.length === 0) await new Promise((r) => setImmediate(r));
    release.shift()?.();
    expect(await first).toBe('rejected');
    while (release.length === 0) await new Promise((r) => setImmediate(r));
    release.shift()?.();
    expect(await second).toBe('rejected');
    blocking = false;
    expect(await auth.verify(basic('alice', 'guess-3'))).toBe('rejected');
  });

  it('lists one challenge per configured scheme', () => {
    expect(new Authenticator({ basicAuthUsers: { alice: ALICE_HASH } }).challenges()).toEqual([
      'Basic realm="pyats-exporter", charset="UTF-8"',
    ]);
    expect(new Authenticator({ bearerTokens: [TOKEN], realm: 'lab' }).challenges()).toEqual([
      'Bearer realm="lab"',
    ]);
  });
});

function request(port: number, path: string, headers: http.OutgoingHttpHeaders = {}, method = 'GET') {
  return httpRequest(port, path, { method, headers });
}

function registryWithSecret(): Registry {
  const registry = new Registry();
  const gauge = new Gauge({
    name: 'lab_secret_info',
    help: 'Something only scrapers may see.',
    registers: [registry],
    labelNames: ['device'],
  });
  gauge.set({ device: 'core-router-1' }, 1);
  return registry;
}

describe('HTTP server with authentication', () => {
  let server: ListeningServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  async function start(auth: AuthOptions, responseHeaders?: Record<string, string>): Promise<number> {
    const app = createApp({
      registry: registryWithSecret(),
      ready: () => ({ ready: false, detail: 'warming up' }),
      logger: silentLogger(),
      auth,
      ...(responseHeaders ? { responseHeaders } : {}),
    });
    server = await listen(app, { host: '127.0.0.1', port: 0 });
    return server.address.port;
  }

  function expectUnauthorized(reply: Reply, challenges: string[]): void {
    expect(reply.status).toBe(401);
    expect(reply.body).toBe('Unauthorized\n');
    expect(reply.body).not.toContain('lab_secret');
    const sent = reply.rawHeaders.filter(
      (_, i) => i % 2 === 0 && reply.rawHeaders[i]?.toLowerCase() === 'www-authenticate',
    );
    expect(sent).toHaveLength(challenges.length);
    const values = reply.rawHeaders.filter(
      (_, i) => i % 2 === 1 && reply.rawHeaders[i - 1]?.toLowerCase() === 'www-authenticate',
    );
    expect(values).toEqual(challenges);
    // Beyond the challenge only what HTTP itself needs: no hint of what the protected route would have sent.
    const hopByHop = new Set(['connection', 'keep-alive', 'date']);
    expect(
      Object.keys(reply.headers)
        .filter((h) => !hopByHop.has(h))
        .sort(),
    ).toEqual(['cache-control', 'content-length', 'content-type', 'www-authenticate']);
  }

  it('serves /metrics for a good bcrypt password and 401 for a missing, wrong or unknown one', async () => {
    const port = await start({
      basicAuthUsers: { alice: ALICE_HASH, prom: GO_HASH },
      openPaths: PROBE_PATHS,
    });
    const challenge = ['Basic realm="pyats-exporter", charset="UTF-8"'];
    expectUnauthorized(await request(port, '/metrics'), challenge);
    expectUnauthorized(await request(port, '/metrics', { authorization: basic('alice', 'nope') }), challenge);
    expectUnauthorized(
      await request(port, '/metrics', { authorization: basic('eve', 'alice-secret') }),
      challenge,
    );
    expectUnauthorized(await request(port, '/metrics', { authorization: `Bearer ${TOKEN}` }), challenge);

    const ok = await request(port, '/metrics', { authorization: basic('alice', 'alice-secret') });
    expect(ok.status).toBe(200);
    expect(ok.body).toContain('lab_secret_info{device="core-router-1"} 1');
    const go = await request(port, '/metrics', { authorization: basic('prom', 'fakepassword') });
    expect(go.status).toBe(200);
  });

  it('serves /metrics for a good bearer token and 401 otherwise; both schemes when both are configured', async () => {
    const port = await start({
      basicAuthUsers: { alice: ALICE_HASH },
      bearerTokens: [TOKEN],
      openPaths: PROBE_PATHS,
    });
    const challenges = ['Basic realm="pyats-exporter", charset="UTF-8"', 'Bearer realm="pyats-exporter"'];
    expectUnauthorized(await request(port, '/metrics', { authorization: 'Bearer wrong-token' }), challenges);
    expectUnauthorized(
      await request(port, '/metrics', { authorization: `Bearer ${TOKEN} ` + 'x' }),
      challenges,
    );
    expectUnauthorized(await request(port, '/metrics'), challenges);
    expect((await request(port, '/metrics', { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
    expect((await request(port, '/metrics', { authorization: basic('alice', 'alice-secret') })).status).toBe(
      200,
    );
  });

  it('protects every path but the open probes, including unknown paths and other methods', async () => {
    const port = await start({ bearerTokens: [TOKEN], openPaths: PROBE_PATHS });
    const challenge = ['Bearer realm="pyats-exporter"'];
    expect((await request(port, '/healthz')).status).toBe(200);
    expect((await request(port, '/readyz')).status).toBe(503);
    for (const path of [
      '/',
      '/metrics',
      '/no-such-page',
      '/api/v1/anything',
      '/healthz/../metrics',
      '/metrics?x=/healthz',
    ]) {
      expectUnauthorized(await request(port, path), challenge);
    }
    expectUnauthorized(await request(port, '/metrics', {}, 'POST'), challenge);
    const head = await request(port, '/metrics', {}, 'HEAD');
    expect(head.status).toBe(401);
    expect(head.body).toBe('');
    const authorized = { authorization: `Bearer ${TOKEN}` };
    expect((await request(port, '/metrics', authorized, 'POST')).status).toBe(405);
    expect((await request(port, '/no-such-page', authorized)).status).toBe(404);
  });

  it('protects the probes too when no path is open', async () => {
    const port = await start({ bearerTokens: [TOKEN] });
    expect((await request(port, '/healthz')).status).toBe(401);
    expect((await request(port, '/readyz')).status).toBe(401);
    expect((await request(port, '/healthz', { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
  });

  it('adds the configured security headers to every response, 401 included', async () => {
    const port = await start(
      { bearerTokens: [TOKEN], openPaths: PROBE_PATHS },
      { 'X-Frame-Options': 'deny' },
    );
    const denied = await request(port, '/metrics');
    expect(denied.status).toBe(401);
    expect(denied.headers['x-frame-options']).toBe('deny');
    expect((await request(port, '/healthz')).headers['x-frame-options']).toBe('deny');
  });
});
