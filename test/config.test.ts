import { availableParallelism } from 'node:os';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig, parseListen, type ExporterConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'pyats-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function config(argv: string[], env: NodeJS.ProcessEnv = {}): ExporterConfig {
  const outcome = parseConfig(argv, env);
  if (outcome.kind !== 'config') throw new Error(outcome.kind);
  return outcome.config;
}

function error(argv: string[], env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    parseConfig(argv, env);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('no error');
}

describe('parseConfig', () => {
  it('has working defaults', () => {
    const c = config(['--reporter-socket', '/r/reporter.sock'], { TZ: 'UTC' });
    expect(c).toMatchObject({
      command: 'run',
      reporterSockets: ['/r/reporter.sock'],
      listen: { host: '0.0.0.0', port: 9464 },
      frameFormat: 'chunked',
      maxFrameBytes: 64 * 1024 * 1024,
      logLevel: 'info',
      orphanHoldMax: 10_000,
      maxOpenSections: 100_000,
    });
    expect(c.decodeThread).toBe(false);
    expect(config(['demo', '--decode-thread']).decodeThread).toBe(true);
    expect(config(['demo'], { PYATS_EXPORTER_DECODE_THREAD: 'true' }).decodeThread).toBe(true);
    expect(c.decodeThreads).toBe(0);
    expect(c.spanThread).toBe(false);
    expect(config(['demo', '--span-thread']).spanThread).toBe(true);
    expect(config(['demo', '--decode-thread']).decodeThreads).toBe(Math.max(1, availableParallelism() - 1));
    expect(config(['demo', '--decode-threads', '3'])).toMatchObject({ decodeThread: true, decodeThreads: 3 });
    expect(config(['demo', '--decode-threads', '0'])).toMatchObject({
      decodeThread: false,
      decodeThreads: 0,
    });
    expect(() => config(['demo', '--decode-threads', '65'])).toThrow(/from 0 to 64/);
    expect(config(['demo', '--max-open-sections', '50']).maxOpenSections).toBe(50);
    expect(config(['demo'], { PYATS_EXPORTER_MAX_OPEN_SECTIONS: '70' }).maxOpenSections).toBe(70);
    expect(c.tracing.exporter).toBe('otlp');
  });

  it('takes flags over env over file', () => {
    const file = join(dir, 'c.yaml');
    writeFileSync(
      file,
      'listen: 127.0.0.1:1000\nlog-level: debug\nreporter-socket: [/a.sock, /b.sock]\ntimezone: Europe/Paris\n',
    );
    const c = config(['--config', file, '--listen', ':2000'], { PYATS_EXPORTER_LOG_LEVEL: 'warn' });
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 2000 });
    expect(c.logLevel).toBe('warn');
    expect(c.reporterSockets).toEqual(['/a.sock', '/b.sock']);
    expect(c.timezone).toBe('Europe/Paris');
    expect(config([], { PYATS_EXPORTER_REPORTER_SOCKET: '/x.sock,/y.sock' }).reporterSockets).toEqual([
      '/x.sock',
      '/y.sock',
    ]);
  });

  it('reads the frame format of a reporter that differs', () => {
    const c = config(['demo', '--frame-format', '4be']);
    expect(c.command).toBe('demo');
    expect(c.frameFormat).toBe('4be');
    expect(config(['demo'], { PYATS_EXPORTER_FRAME_FORMAT: '8le' }).frameFormat).toBe('8le');
  });

  it('refuses the flags that could send pyATS a request it does not know, saying why', () => {
    // A request dict without 'name' kills a pyATS 23.2 reporter (and fails the job): there is no way to send one.
    expect(error(['demo', '--subscribe-request', '{"action":"subscribe"}']).message).toMatch(
      /--subscribe-request was removed: .*subscribe_client/,
    );
    expect(error(['demo', '--subscribe-request={}']).code).toBe('bad_flag');
    expect(error(['demo'], { PYATS_EXPORTER_SUBSCRIBE_REQUEST: 'none' }).message).toMatch(
      /PYATS_EXPORTER_SUBSCRIBE_REQUEST was removed/,
    );
    expect(error(['demo', '--request-header', '8be']).message).toMatch(/use --frame-format/);
    expect(error(['demo', '--frame-header', 'auto']).message).toMatch(/use --frame-format/);
  });

  it('says what and where for bad input', () => {
    expect(error(['--nope']).message).toMatch(/nope/);
    expect(error(['launch']).message).toMatch(/unknown command "launch"/);
    expect(error([]).code).toBe('no_source');
    expect(error(['demo', '--listen', 'localhost:99999']).message).toMatch(
      /--listen: "localhost:99999" is not HOST:PORT/,
    );
    expect(error(['demo', '--frame-format', '16be']).message).toMatch(
      /--frame-format: bad frame format "16be"/,
    );
    expect(error(['demo', '--max-frame-bytes', 'lots']).message).toMatch(/--max-frame-bytes: "lots"/);
    expect(error(['demo', '--timezone', 'Mars/Olympus']).message).toMatch(/--timezone: unknown time zone/);
    expect(error(['demo', '--log-level', 'loud']).message).toMatch(/--log-level/);
    expect(error(['demo', '--max-open-sections', '0']).message).toMatch(/--max-open-sections/);
    expect(error(['demo'], { PYATS_EXPORTER_LISTEN: 'nowhere' }).message).toMatch(/PYATS_EXPORTER_LISTEN/);
    expect(error(['demo', '--config', join(dir, 'missing.yaml')]).message).toMatch(
      /cannot read config file .*missing.yaml/,
    );
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'listen: [1, 2]\n');
    expect(error(['demo', '--config', bad]).message).toMatch(/bad.yaml: listen/);
    const unknown = join(dir, 'unknown.yaml');
    writeFileSync(unknown, 'colour: blue\n');
    expect(error(['demo', '--config', unknown]).message).toMatch(/unknown.yaml/);
    expect(error(['demo'], { OTEL_TRACES_EXPORTER: 'zipkin2' }).message).toMatch(/OTEL_TRACES_EXPORTER/);
  });

  it('answers help and version', () => {
    expect(parseConfig(['--help'], {}).kind).toBe('help');
    expect(parseConfig(['-V'], {}).kind).toBe('version');
  });

  it('parses listen addresses', () => {
    expect(parseListen('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListen('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseListen(':9464')).toEqual({ host: '0.0.0.0', port: 9464 });
  });
});
