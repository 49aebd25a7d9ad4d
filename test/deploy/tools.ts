// Real Prometheus-side tools and servers for the deploy tests: promtool, amtool, and Prometheus / Alertmanager
// processes on free ports. In CI a missing binary fails the test; elsewhere the test is skipped.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { it } from 'vitest';

export const PROMETHEUS = '/usr/bin/prometheus';
export const ALERTMANAGER = '/usr/bin/prometheus-alertmanager';
export const AMTOOL = '/usr/bin/amtool';
export const HAVE_PROMETHEUS = existsSync(PROMETHEUS);
export const HAVE_ALERTMANAGER = existsSync(ALERTMANAGER) && existsSync(AMTOOL);
const IN_CI = Boolean(process.env['CI']);
export const itPrometheus = HAVE_PROMETHEUS || IN_CI ? it : it.skip;
export const itAlertmanager = HAVE_ALERTMANAGER || IN_CI ? it : it.skip;

export interface ToolResult {
  code: number | null;
  output: string;
}

/** Runs a command to completion; stdout and stderr together in `output`. */
export function runTool(
  command: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

/** A TCP port nobody listens on right now (bound and released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface ServerProcess {
  url: string;
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts a Prometheus-style server and resolves once GET `${url}/-/ready` answers 200. Rejects with the
 * server's output when it exits or is not ready in time.
 */
export async function startServer(
  command: string,
  args: string[],
  url: string,
  timeoutMs = 30_000,
): Promise<ServerProcess> {
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    // A binary that cannot start (ENOENT) emits 'error' and never 'exit'.
    child.once('error', (err) => {
      spawnError = err;
      resolve();
    });
  });
  const stop = async (): Promise<void> => {
    if (spawnError === undefined && child.exitCode === null && child.signalCode === null)
      child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  };

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (spawnError !== undefined || child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${command} exited before it was ready: ${spawnError?.message ?? ''}\n${output}`);
    }
    try {
      const response = await fetch(`${url}/-/ready`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${command} not ready after ${timeoutMs} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, output: () => output, stop };
}
