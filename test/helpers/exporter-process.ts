// Runs the real `pyats-exporter` binary (dist/cli.js, built by the global setup) as a child process and
// exposes what a user would see: its HTTP address, its JSON log lines, its exit code and timing.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export interface ExporterProcess {
  proc: ChildProcess;
  /** Base URL of the HTTP server, e.g. http://127.0.0.1:41234. */
  url: string;
  logs: LogLine[];
  stdout(): string;
  /** GET /metrics as Prometheus text. */
  scrape(): Promise<string>;
  /** Resolves when a log line matches. */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Sends the signal and resolves with the exit code and how long the exit took. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; ms: number }>;
}

/**
 * Exporters still running when their test file ends: a test that timed out never reached its own stop(),
 * and its exporter must not outlive the run (it would hold ports and CPU for the next files).
 */
const running = new Set<ChildProcess>();
afterAll(() => {
  for (const proc of running) proc.kill('SIGKILL');
  running.clear();
});

export function runExporter(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ExporterProcess> {
  const proc = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env['PATH'], OTEL_TRACES_EXPORTER: 'none', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  const logs: LogLine[] = [];
  let stdout = '';
  let stderrRest = '';
  const waiters: Array<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderrRest += chunk;
    const lines = stderrRest.split('\n');
    stderrRest = lines.pop() ?? '';
    for (const text of lines) {
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        line = { level: 50, msg: text };
      }
      logs.push(line);
      for (const waiter of [...waiters]) {
        if (waiter.match(line)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));

  const waitForLog = (match: (l: LogLine) => boolean, timeoutMs = 15_000): Promise<LogLine> => {
    const seen = logs.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new Error(
            `no matching log line in ${timeoutMs} ms; logs:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`,
          ),
        );
      }, timeoutMs);
      waiters.push({
        match,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(
          new Error(
            `exporter exited (${String(code)}) before the log line; logs:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`,
          ),
        );
      });
    });
  };

  return waitForLog((l) => l.msg === 'http server listening').then((line) => {
    const url = String(line['url']);
    return {
      proc,
      url,
      logs,
      stdout: () => stdout,
      waitForLog,
      scrape: async () => {
        const response = await fetch(`${url}/metrics`);
        if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
        return response.text();
      },
      stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
        const started = Date.now();
        if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
        const code = await exited;
        return { code, ms: Date.now() - started };
      },
    };
  });
}

/** Runs the CLI to completion (for flag errors, --help) and returns its exit code and output. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env['PATH'], ...env } });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    proc.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    proc.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Minimal Prometheus text-format reader: sample name + labels → value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] as string] = (l[2] as string)
        .replace(/\\n/g, '\n')
        .replace(/\\"/g, '"')
        .replace(/\\\\/g, '\\');
    }
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

/** Sum of the samples of one metric whose labels include `where`. */
export function sumOf(samples: Sample[], name: string, where: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((total, s) => total + s.value, 0);
}
