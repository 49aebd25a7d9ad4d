// Small shared pieces of the fault tests: polling, temp dirs, span lookups and percentiles.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DecodedSpan } from '../helpers/otlp-receiver.js';

/** Polls `probe` every 50 ms until it returns something other than undefined. */
export async function until<T>(
  what: string | (() => string),
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Temp dirs removed by `removeAll()` (call it in afterAll/afterEach). */
export class TempDirs {
  private readonly dirs: string[] = [];

  make(prefix = 'pyats-fault-'): string {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    this.dirs.push(dir);
    return dir;
  }

  removeAll(): void {
    for (const dir of this.dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  }
}

export function seqOf(span: DecodedSpan): number {
  return Number(span.attributes['pyats.section.seq_num']);
}

/** Spans grouped by trace id. */
export function byTrace(spans: DecodedSpan[]): Map<string, DecodedSpan[]> {
  const traces = new Map<string, DecodedSpan[]>();
  for (const span of spans) {
    const list = traces.get(span.traceId);
    if (list) list.push(span);
    else traces.set(span.traceId, [span]);
  }
  return traces;
}

/** The p-th percentile (0..100) by nearest rank. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] ?? NaN;
}

/**
 * A TCP forwarder in front of a real server that can be taken down (its port closed, open connections cut,
 * so clients see ECONNREFUSED / ECONNRESET exactly as with a dead backend) and brought back on the same port.
 */
export interface SwitchableProxy {
  port: number;
  url: string;
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

export async function startSwitchableProxy(targetPort: number): Promise<SwitchableProxy> {
  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    track(client);
    track(upstream);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const listen = (port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
  const port = await listen(0);
  let listening = true;
  const down = async (): Promise<void> => {
    if (!listening) return;
    listening = false;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  };
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    down,
    up: async () => {
      if (listening) return;
      await listen(port);
      listening = true;
    },
    close: down,
  };
}
