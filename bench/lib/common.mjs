// What run.mjs and e2e.mjs share: paths, options, formatting, child processes, streams and the peers' Python.
import { fork, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BENCH = join(ROOT, 'bench');
export const OUT = join(BENCH, 'out');
export const LIB = join(BENCH, 'lib');
export const GENERATOR = join(BENCH, 'gen_stream.py');
// Debian's python, which has python3-prometheus-client; a pyenv python3 first on PATH usually does not.
export const SYSTEM_PYTHON = '/usr/bin/python3';
export const RUN_TIMEOUT_MS = 300_000;

/** The options both benchmarks take; sets BENCH_DIST, where children import the build under test from. */
export function parseOptions() {
  const { values: opts } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      profile: { type: 'boolean', default: false },
      skip: { type: 'string', default: '' },
      dist: { type: 'string' },
      'exporter-node-options': { type: 'string' },
    },
  });
  const distDir = opts.dist ? resolve(opts.dist) : join(ROOT, 'dist');
  process.env.BENCH_DIST = distDir;
  return { opts, distDir, quick: opts.quick, skip: new Set(opts.skip.split(',').filter(Boolean)) };
}

export const log = (line) => process.stdout.write(`${line}\n`);
/** A progress line writer for stderr, each line after `prefix`. */
export const progressWriter =
  (prefix = '') =>
  (line) =>
    process.stderr.write(`· ${prefix}${line}\n`);
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
export const fmtRate = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
export const mb = (bytes) => `${(bytes / 1024 / 1024).toFixed(0)} MB`;
export const mark = (ok) => (ok ? 'met' : 'MISSED');

// ---- child processes --------------------------------------------------------------------------------------

/** Every child started, so a failure can show what each said on stderr and none is left behind. */
export const children = new Set();

export function track(child) {
  children.add(child);
  child.stderrTail = '';
  child.stderr
    ?.setEncoding('utf8')
    .on('data', (text) => (child.stderrTail = (child.stderrTail + text).slice(-4000)));
  child.on('exit', () => children.delete(child));
  return child;
}

/** Forks bench/lib/`script`, its stderr kept. */
export function forkLib(script, args = [], options = {}) {
  return track(fork(join(LIB, script), args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], ...options }));
}

/** Resolves with the child's first IPC message of `kind`; rejects on exit, an `error` message or timeout. */
export function nextMessage(child, kind, timeoutMs = RUN_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    const onMessage = (message) => {
      if (message.kind === kind) {
        cleanup();
        resolve(message);
      } else if (message.kind === 'error') {
        cleanup();
        reject(new Error(`${child.spawnargs.join(' ')}: ${message.message}`));
      }
    };
    const onExit = (code) => {
      cleanup();
      reject(
        new Error(
          `child exited (${code}) before "${kind}"${child.stderrTail ? `:\n${child.stderrTail}` : ''}`,
        ),
      );
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting for "${kind}"`));
    }, timeoutMs);
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

/** Stops a forked helper (IPC `stop`) or a plain child (SIGTERM); SIGKILL after 15 s. */
export async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  // The child may be closing its channel on its own (floor.mjs does when the stream ends).
  child.on('error', () => {});
  if (child.connected) child.send({ cmd: 'stop' }, () => {});
  else child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/** A reporter stand-in on `socket` that will write `files` to its first subscriber as fast as it reads. */
export async function startSender(socket, files) {
  const sender = forkLib('sender.mjs', [socket, ...files]);
  await nextMessage(sender, 'ready', 10_000);
  return sender;
}

/** Runs bench/`script` (a Python peer) on `socket` until `events` events; returns its last stdout line, parsed. */
export async function runPeerScript(script, socket, events) {
  const peer = track(
    spawn(SYSTEM_PYTHON, [join(BENCH, script), socket, String(events)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let stdout = '';
  peer.stdout.setEncoding('utf8').on('data', (text) => (stdout += text));
  const code = await new Promise((resolve) => peer.on('exit', resolve));
  if (code !== 0) throw new Error(`${script} exited ${code}: ${peer.stderrTail}`);
  return JSON.parse(stdout.trim().split('\n').pop());
}

/** The exporter's environment: PATH, HOME, MALLOC_* (glibc allocator tuning), PYATS_EXPORTER_*, `extra`. */
export function exporterEnv(opts, extra) {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ...Object.fromEntries(
      Object.entries(process.env).filter(([k]) => k.startsWith('MALLOC_') || k.startsWith('PYATS_EXPORTER_')),
    ),
    ...(opts['exporter-node-options'] ? { NODE_OPTIONS: opts['exporter-node-options'] } : {}),
    ...extra,
  };
}

/** A `catch` for main(): prints the error and each live child's stderr, kills the children, exits 1. */
export function exitOnError(name) {
  return (error) => {
    process.stderr.write(`${name}: ${error.stack ?? error}\n`);
    for (const child of children) {
      if (child.stderrTail) process.stderr.write(`--- ${child.spawnargs.join(' ')}\n${child.stderrTail}\n`);
      child.kill('SIGKILL');
    }
    process.exit(1);
  };
}

// ---- streams and the peers' Python ------------------------------------------------------------------------

/**
 * The stream gen_stream.py writes with `args`, cached in OUT/stream-NAME-VERSION.bin (VERSION: a hash of the
 * generator, so a changed generator regenerates it); returns the file and its metadata (the .json beside it).
 */
export function cachedStream(name, args, about, progress) {
  const version = createHash('sha256').update(readFileSync(GENERATOR)).digest('hex').slice(0, 10);
  const file = join(OUT, `stream-${name}-${version}.bin`);
  if (!existsSync(file) || !existsSync(`${file}.json`)) {
    // Streams of earlier generator versions are never read again; they are large.
    for (const old of readdirSync(OUT)) {
      if (/^stream-.*\.bin(\.json)?$/.test(old) && !old.includes(`-${version}.`)) rmSync(join(OUT, old));
    }
    progress(`generating ${file} (${about}) with CPython pickle`);
    const result = spawnSync(SYSTEM_PYTHON, [GENERATOR, '--out', file, ...args], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    if (result.status !== 0) throw new Error(`gen_stream.py failed (${result.status})`);
  }
  return { file, meta: JSON.parse(readFileSync(`${file}.json`, 'utf8')) };
}

/** Makes sure SYSTEM_PYTHON imports prometheus_client, installing Debian's package as root if need be. */
export function ensurePeerPython(progress) {
  const check = () =>
    spawnSync(SYSTEM_PYTHON, ['-c', 'import prometheus_client'], { stdio: 'ignore' }).status === 0;
  if (check()) return;
  if (process.getuid?.() === 0 && existsSync('/usr/bin/apt-get')) {
    progress('installing Debian python3-prometheus-client for the peers');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'python3-prometheus-client'], {
      stdio: 'inherit',
      env,
    });
  }
  if (!check()) {
    throw new Error(
      `${SYSTEM_PYTHON} cannot import prometheus_client: run "sudo apt-get install python3-prometheus-client"`,
    );
  }
}
