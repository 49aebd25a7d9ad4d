// The HTTP server under hostile or heavy use, really listening on 127.0.0.1:0: methods other than GET/HEAD,
// slow-loris clients cut by the header timeout while scrapes go on, and a bounded wrk run (Debian's wrk)
// against ~2000 series that must end with no socket error, no non-2xx and a server still answering.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import bcrypt from 'bcryptjs';
import { Gauge, Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuthOptions } from '../../src/http/auth.js';
import { createApp, listen, type HttpTimeouts, type ListeningServer } from '../../src/http/server.js';
import { silentLogger } from '../../src/log.js';
import { request as httpRequest, type Reply } from '../helpers/http.js';

const WRK = '/usr/bin/wrk';
// In CI a missing wrk is a broken environment: run (and fail) rather than skip.
const itWrk = existsSync(WRK) || process.env['CI'] ? it : it.skip;

function request(port: number, path: string, method = 'GET', headers: http.OutgoingHttpHeaders = {}) {
  return httpRequest(port, path, { method, headers });
}

/** 40 devices × 50 interfaces = 2000 series, the size of a busy lab's exposition. */
function bigRegistry(): Registry {
  const registry = new Registry();
  const gauge = new Gauge({
    name: 'lab_interface_up',
    help: 'Interface state.',
    labelNames: ['device', 'interface'],
    registers: [registry],
  });
  for (let d = 0; d < 40; d++) {
    for (let i = 0; i < 50; i++)
      gauge.set({ device: `router-${d}`, interface: `GigabitEthernet0/0/${i}` }, i % 2);
  }
  return registry;
}

/** A raw connection that sends `head` and then, every `dripMs`, one more header byte, forever. */
interface SlowClient {
  closed: Promise<string>;
  stop(): void;
}

function slowClient(port: number, head: string, dripMs?: number): SlowClient {
  const socket = net.connect(port, '127.0.0.1');
  let received = '';
  let drip: NodeJS.Timeout | undefined;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (received += chunk));
  socket.on('error', () => undefined);
  socket.on('connect', () => {
    socket.write(head);
    if (dripMs !== undefined) drip = setInterval(() => socket.write('a'), dripMs);
  });
  const closed = new Promise<string>((resolve) =>
    socket.on('close', () => {
      clearInterval(drip);
      resolve(received);
    }),
  );
  return {
    closed,
    stop: () => {
      clearInterval(drip);
      socket.destroy();
    },
  };
}

interface WrkResult {
  requests: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  non2xx: number;
  output: string;
}

/** wrk prints "Socket errors" and "Non-2xx or 3xx responses" lines only when there were any. */
function parseWrk(output: string): WrkResult {
  const requests = /(\d+) requests in /.exec(output);
  if (!requests) throw new Error(`no request count in wrk output:\n${output}`);
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  return {
    requests: Number(requests[1]),
    socketErrors: {
      connect: Number(errors?.[1] ?? 0),
      read: Number(errors?.[2] ?? 0),
      write: Number(errors?.[3] ?? 0),
      timeout: Number(errors?.[4] ?? 0),
    },
    non2xx: Number(non2xx?.[1] ?? 0),
    output,
  };
}

/** Runs wrk as a child process (asynchronously: the server under test shares this event loop). */
function runWrk(url: string, headers: string[] = []): Promise<WrkResult> {
  // --timeout 10s: wrk's 2 s default would count a slow response on a shared 2-core machine as an error; a
  // response that never comes still is one.
  const args = ['-t2', '-c32', '-d3s', '--timeout', '10s', ...headers.flatMap((h) => ['-H', h]), url];
  return new Promise((resolve, reject) => {
    execFile(WRK, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`wrk failed: ${err.message}\n${stdout}${stderr}`));
      else resolve(parseWrk(stdout));
    });
  });
}

describe('parseWrk', () => {
  it('reads the counts, with and without the error lines', () => {
    const clean = parseWrk(
      'Running 3s test @ http://127.0.0.1:1/metrics\n  2 threads and 32 connections\n  1234 requests in 3.00s, 120.34MB read\nRequests/sec:    411.33\n',
    );
    expect(clean).toMatchObject({
      requests: 1234,
      non2xx: 0,
      socketErrors: { connect: 0, read: 0, write: 0, timeout: 0 },
    });
    const bad = parseWrk(
      '  99 requests in 3.01s, 1.00MB read\n  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 5\n',
    );
    expect(bad).toMatchObject({
      requests: 99,
      non2xx: 5,
      socketErrors: { connect: 1, read: 2, write: 3, timeout: 4 },
    });
  });
});

describe('HTTP server hardening', () => {
  let server: ListeningServer | undefined;
  const clients: SlowClient[] = [];
  afterEach(async () => {
    for (const client of clients.splice(0)) client.stop();
    await server?.close();
    server = undefined;
  });

  async function start(options: { timeouts?: HttpTimeouts; auth?: AuthOptions } = {}): Promise<number> {
    const app = createApp({
      registry: bigRegistry(),
      ready: () => ({ ready: true }),
      logger: silentLogger(),
      ...(options.auth ? { auth: options.auth } : {}),
    });
    server = await listen(app, {
      host: '127.0.0.1',
      port: 0,
      ...(options.timeouts ? { timeouts: options.timeouts } : {}),
    });
    return server.address.port;
  }

  it('answers 405 with Allow: GET, HEAD to every other method on every read endpoint', async () => {
    const port = await start();
    for (const path of ['/metrics', '/healthz', '/readyz', '/']) {
      for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE']) {
        const reply = await request(port, path, method);
        expect({ path, method, status: reply.status, allow: reply.headers['allow'] }).toEqual({
          path,
          method,
          status: 405,
          allow: 'GET, HEAD',
        });
        expect(reply.body).not.toContain('lab_interface_up');
      }
      const head = await request(port, path, 'HEAD');
      expect(head.status).toBe(200);
      expect(head.body).toBe('');
    }
  });

  it('closes a CONNECT request without serving anything', async () => {
    const port = await start();
    const client = slowClient(port, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n');
    clients.push(client);
    expect(await client.closed).not.toContain('lab_interface_up');
  });

  it('cuts slow-loris connections at the header timeout while other scrapes are answered', async () => {
    const port = await start({ timeouts: { headersMs: 500, requestMs: 1000 } });
    const head = 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ';
    const stalled = Array.from({ length: 20 }, () => slowClient(port, head));
    // A client that keeps sending one byte at a time is never idle, yet still cut: the limit is on the total.
    const dripping = Array.from({ length: 5 }, () => slowClient(port, head, 50));
    clients.push(...stalled, ...dripping);

    for (let i = 0; i < 5; i++) {
      const reply = await request(port, '/metrics');
      expect(reply.status).toBe(200);
      expect(reply.body).toContain(
        'lab_interface_up{device="router-39",interface="GigabitEthernet0/0/49"} 1',
      );
    }
    const answers = await Promise.all([...stalled, ...dripping].map((client) => client.closed));
    for (const answer of answers) {
      expect(answer).not.toContain('lab_interface_up');
      // Node answers 408 before closing, when the socket is still writable.
      if (answer !== '') expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    }
    expect((await request(port, '/metrics')).status).toBe(200);
  });

  itWrk(
    'keeps answering /metrics (2000 series) under a bounded wrk run, then still answers',
    async () => {
      const port = await start();
      const during: Promise<Reply>[] = [];
      const sampler = setInterval(() => during.push(request(port, '/healthz')), 500);
      let result: WrkResult;
      try {
        result = await runWrk(`http://127.0.0.1:${port}/metrics`);
      } finally {
        clearInterval(sampler);
      }
      expect(result.requests, result.output).toBeGreaterThan(0);
      expect(result.socketErrors, result.output).toEqual({ connect: 0, read: 0, write: 0, timeout: 0 });
      expect(result.non2xx, result.output).toBe(0);
      for (const reply of await Promise.all(during)) expect(reply.status).toBe(200);

      const after = await request(port, '/metrics');
      expect(after.status).toBe(200);
      expect(after.body.split('\n').filter((line) => line.startsWith('lab_interface_up{'))).toHaveLength(
        2000,
      );
    },
    60_000,
  );

  itWrk(
    'serves a wrk run with basic auth from the verification cache, and 401s a wrong password under load',
    async () => {
      const port = await start({ auth: { basicAuthUsers: { prom: bcrypt.hashSync('scrape-pw', 10) } } });
      const good = `Authorization: Basic ${Buffer.from('prom:scrape-pw').toString('base64')}`;
      const result = await runWrk(`http://127.0.0.1:${port}/metrics`, [good]);
      expect(result.requests, result.output).toBeGreaterThan(0);
      expect(result.socketErrors, result.output).toEqual({ connect: 0, read: 0, write: 0, timeout: 0 });
      expect(result.non2xx, result.output).toBe(0);

      const bad = `Authorization: Basic ${Buffer.from('prom:wrong').toString('base64')}`;
      const rejected = await runWrk(`http://127.0.0.1:${port}/metrics`, [bad]);
      expect(rejected.socketErrors, rejected.output).toEqual({ connect: 0, read: 0, write: 0, timeout: 0 });
      expect(rejected.non2xx, rejected.output).toBe(rejected.requests);
      expect((await request(port, '/metrics', 'GET', { authorization: good.slice(15) })).status).toBe(200);
    },
    60_000,
  );
});
