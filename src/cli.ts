#!/usr/bin/env node
// The `pyats-exporter` command: parse config (exit 2 on a bad one), run the daemon, and on SIGTERM /
// SIGINT stop it in order and exit 0. `demo` also starts the built-in simulated reporter; `replay`
// exports finished jobs from files.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HELP, parseConfig, type ExporterConfig } from './config.js';
import { startDaemon } from './daemon.js';
import { simulatedJob, startDemoReporter } from './demo/index.js';
import { ConfigError } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { runReplay } from './replay-command.js';
import { VERSION } from './version.js';

async function main(): Promise<number> {
  let config: ExporterConfig;
  try {
    const outcome = parseConfig(process.argv.slice(2), process.env);
    if (outcome.kind === 'help') {
      process.stdout.write(HELP);
      return 0;
    }
    if (outcome.kind === 'version') {
      process.stdout.write(`pyats-exporter ${VERSION}\n`);
      return 0;
    }
    config = outcome.config;
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`pyats-exporter: ${error.message}\n`);
      return 2;
    }
    throw error;
  }

  const logger = createLogger(config.logLevel);
  const signalled = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  if (config.command === 'replay') return runReplay(config, logger, signalled);
  const cleanups: Array<() => Promise<void> | void> = [];
  let demoFinished: Promise<void> | undefined;
  if (config.command === 'demo') {
    const dir = mkdtempSync(join(tmpdir(), 'pyats-exporter-demo-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'reporter.sock');
    const reporter = await startDemoReporter({
      path,
      // Each looped run gets its own seed, so results vary from run to run like a real lab's.
      events: (run) => simulatedJob({ seed: config.demo.seed + run, testcases: config.demo.testcases }),
      // Framed as pyATS 23.x frames (`>?H` chunks), the exporter's default.
      frameFormat: 'chunked',
      protocol: 4,
      eventDelayMs: config.demo.eventDelayMs,
      loop: config.demo.loop,
      logger: logger.child({ component: 'demo-reporter' }),
    });
    cleanups.unshift(() => reporter.close());
    config = { ...config, reporterSockets: [path, ...config.reporterSockets] };
    if (!config.demo.loop) demoFinished = reporter.finished;
    // The demo shows spans on the console unless an OTLP destination was configured.
    if (!process.env['OTEL_TRACES_EXPORTER'] && !hasOtlpEndpoint(process.env)) {
      config = { ...config, tracing: { ...config.tracing, exporter: 'console' } };
    }
    logger.info({ socket: path }, 'demo: simulated pyATS reporter started');
  }

  let daemon;
  try {
    daemon = await startDaemon(config, logger);
  } catch (error) {
    // Start-up failures (port in use, bad address) are configuration errors: say what and exit 2.
    process.stderr.write(`pyats-exporter: cannot start: ${(error as Error).message}\n`);
    await runCleanups(cleanups, logger);
    return 2;
  }

  const stopped = new Promise<string>((resolve) => {
    void signalled.then(resolve);
    if (demoFinished) void demoFinished.then(() => setTimeout(() => resolve('demo finished'), 500));
  });
  const why = await stopped;
  logger.info({ why }, 'shutting down');
  // A stuck exporter must not keep a CI job hanging: exit anyway after the timeout.
  const guard = setTimeout(() => {
    logger.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown timed out; exiting');
    process.exit(1);
  }, config.shutdownTimeoutMs);
  guard.unref();
  await daemon.stop();
  await runCleanups(cleanups, logger);
  logger.info('stopped');
  return 0;
}

function hasOtlpEndpoint(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env['OTEL_EXPORTER_OTLP_ENDPOINT'] || env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT']);
}

async function runCleanups(cleanups: Array<() => Promise<void> | void>, logger: Logger): Promise<void> {
  for (const cleanup of cleanups) {
    try {
      await cleanup();
    } catch (error) {
      logger.warn({ err: error }, 'cleanup failed');
    }
  }
}

main().then(
  (code) => {
    process.exitCode = code;
    // pino flushes asynchronously; give it a tick before a forced exit of lingering handles.
    setTimeout(() => process.exit(code), 50).unref();
  },
  (error: unknown) => {
    process.stderr.write(`pyats-exporter: fatal: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
