#!/usr/bin/env node
// The end-to-end benchmark (issue 11): the built CLI measured as a new user runs it. A reporter stand-in
// (lib/sender.mjs) serves a pre-generated burst of a pyATS job (CPython-pickled events from gen_stream.py) on a
// Unix socket; `node dist/cli.js --reporter-socket SOCK --listen 127.0.0.1:PORT` is started as a child process
// and timed from its start until /metrics counts every testcase result, minus the same for a 1-testcase job
// (start-up cancels out). Three trace configurations, two Python peers on the same stream, the exporter's RSS
// after the burst, and 1 / 2 / N concurrent streams (`--watch DIR`, with and without `--decode-thread`).
// Usage: node bench/e2e.mjs [--quick] [--rounds N] [--profile] [--skip peers,decode,span-thread,streams,decode-thread]
//        [--dist DIR] [--exporter-node-options '...']     (npm run bench runs it last; --skip e2e there)
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { OUT, RUN_TIMEOUT_MS, exitOnError, exporterEnv, parseOptions } from './lib/common.mjs';
import { fmtRate, log, mark, mb, median, progressWriter } from './lib/common.mjs';
import { forkLib, nextMessage, runPeerScript, startSender, stopChild, track } from './lib/common.mjs';
import { cachedStream, ensurePeerPython } from './lib/common.mjs';
import { formatProfile, summarizeProfile } from './lib/profile.mjs';

/** The counter whose total says every testcase result arrived (Testcase, CommonSetup, CommonCleanup). */
const RESULTS_METRIC = 'pyats_testcase_results_total';
const TESTCASE_TYPES = ['Testcase', 'CommonSetup', 'CommonCleanup'];

const { opts, distDir: DIST_DIR, quick, skip } = parseOptions();
const CLI = join(DIST_DIR, 'cli.js');
const rounds = Number(opts.rounds ?? 3);
const TESTCASES = quick ? 2_000 : 20_000;
const CORES = cpus().length;
const STREAM_COUNTS = [1, 2, ...(CORES > 2 ? [CORES] : [])];
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

const progress = progressWriter('e2e: ');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => process.hrtime.bigint();
const seconds = (t0, t1) => Number(t1 - t0) / 1e9;
const fmtInt = (n) => n.toLocaleString('en-US');
/** mb() of a size in kB (/proc/PID/status). */
const mbOfKb = (kb) => mb(kb * 1024);

// ---- child processes --------------------------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// ---- streams ----------------------------------------------------------------------------------------------

/** The cached stream of one run of job `jobId` with `testcases` testcases, regenerated when the generator changes. */
function ensureStream(testcases, jobId = 'regression_nightly') {
  const args = ['--testcases', String(testcases), '--job-id', jobId];
  const about = `${testcases} testcases, job ${jobId}`;
  const { file, meta } = cachedStream(`e2e-${testcases}tc-${jobId}`, args, about, progress);
  const results = TESTCASE_TYPES.reduce((sum, type) => sum + (meta.stops_by_type[type] ?? 0), 0);
  return { file, jobId, testcases, events: meta.events, sections: meta.sections, bytes: meta.bytes, results };
}

// ---- the exporter, as a user starts it --------------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

/** Sum of every `RESULTS_METRIC` sample in one /metrics scrape; undefined while the server is not up. */
function scrapeResults(port) {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path: '/metrics', agent }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (text) => (body += text));
      response.on('end', () => {
        if (response.statusCode !== 200) return resolve(undefined);
        let total = 0;
        const prefix = `\n${RESULTS_METRIC}{`;
        for (let at = body.indexOf(prefix); at !== -1; at = body.indexOf(prefix, at + 1)) {
          const eol = body.indexOf('\n', at + 1);
          const line = body.slice(at + 1, eol === -1 ? undefined : eol);
          total += Number(line.slice(line.lastIndexOf(' ') + 1));
        }
        resolve(total);
      });
      response.on('error', () => resolve(undefined));
    });
    request.on('error', () => resolve(undefined));
  });
}

/**
 * Polls /metrics until `expected` results are counted and returns when the scrape that showed it ended. Every
 * scrape costs the exporter a render of all its series, so the polls are spaced by half the time the progress
 * so far predicts is left (5 to 500 ms): few scrapes during the run, dense ones at its end.
 */
async function waitForResults(port, expected, child) {
  const deadline = Date.now() + RUN_TIMEOUT_MS;
  let last;
  let scrapes = 0;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exporter exited (${child.exitCode ?? child.signalCode}):\n${child.stderrTail}`);
    }
    if (Date.now() > deadline)
      throw new Error(`timed out: ${last?.count ?? 0} of ${expected} results counted`);
    const count = await scrapeResults(port);
    const t = now();
    if (count !== undefined) scrapes++;
    if (count !== undefined && count >= expected) return { tEnd: t, scrapes };
    let delay = 10;
    if (count !== undefined && count > 0) {
      if (last !== undefined && count > last.count) {
        const perSec = (count - last.count) / seconds(last.t, t);
        delay = Math.min(500, Math.max(5, (500 * (expected - count)) / perSec));
      }
      if (last === undefined || count > last.count) last = { t, count };
    }
    await sleep(delay);
  }
}

/** VmRSS and VmHWM of a process, in kB, and the CPU time of all its threads so far (user + system), in ms. */
function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)" start at field 3 (state); utime and stime are fields 14 and 15, in USER_HZ ticks.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuMs = ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  return { rssKb: field('VmRSS'), hwmKb: field('VmHWM'), cpuMs };
}

/**
 * CPU time the whole machine has spent busy so far (every process: exporter, senders, receivers, peers,
 * neighbours), in ms: /proc/stat's first line less idle and iowait. Over a run it says how many of the
 * machine's cores the run kept busy, and so what more streams could get from the cores left.
 */
function machineBusyMs() {
  const ticks = readFileSync('/proc/stat', 'utf8')
    .split('\n', 1)[0]
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const [user, nice, system, _idle, _iowait, irq, softirq, steal] = ticks;
  return ((user + nice + system + irq + softirq + steal) * 1000) / CLOCK_TICKS;
}

let scratch;
let runCount = 0;

/**
 * One timed run: reporter stand-ins serve `streams` (one each), then the CLI is started with `source` — 'sockets'
 * (a --reporter-socket per stream) or 'watch' (--watch DIR, the sockets at DIR/<job>/reporter.sock) — and
 * `args`, and timed until /metrics counts every result of every stream.
 */
async function runExporter(streams, { env, source = 'sockets', args = [], profileDir }) {
  const dir = join(scratch, `run-${++runCount}`);
  mkdirSync(dir);
  const sockets = streams.map((stream, i) => {
    if (source === 'sockets') return join(dir, `reporter-${i + 1}.sock`);
    mkdirSync(join(dir, `job-${i + 1}`));
    return join(dir, `job-${i + 1}`, 'reporter.sock');
  });
  const senders = await Promise.all(streams.map((stream, i) => startSender(sockets[i], [stream.file])));
  const port = await freePort();
  const sourceArgs =
    source === 'sockets' ? sockets.flatMap((socket) => ['--reporter-socket', socket]) : ['--watch', dir];
  const nodeArgs = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const expected = streams.reduce((sum, stream) => sum + stream.results, 0);
  const t0 = now();
  const busy0 = machineBusyMs();
  const child = track(
    spawn(process.execPath, [...nodeArgs, CLI, ...sourceArgs, '--listen', `127.0.0.1:${port}`, ...args], {
      env: exporterEnv(opts, env),
      stdio: ['ignore', 'ignore', 'pipe'],
    }),
  );
  try {
    const { tEnd, scrapes } = await waitForResults(port, expected, child);
    const memory = memoryOf(child.pid);
    return { seconds: seconds(t0, tEnd), scrapes, machineMs: machineBusyMs() - busy0, ...memory };
  } finally {
    await stopChild(child);
    await Promise.all(senders.map(stopChild));
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- the Python peers -------------------------------------------------------------------------------------

async function runPeer(script, stream) {
  const dir = join(scratch, `run-${++runCount}`);
  mkdirSync(dir);
  const socket = join(dir, 'reporter.sock');
  const sender = await startSender(socket, [stream.file]);
  try {
    const t0 = now();
    const busy0 = machineBusyMs();
    const done = await runPeerScript(script, socket, stream.events);
    return { seconds: seconds(t0, BigInt(done.tEnd)), cpuMs: done.cpuMs, machineMs: machineBusyMs() - busy0 };
  } finally {
    await stopChild(sender);
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- measurements -----------------------------------------------------------------------------------------

/**
 * A contender measured on the big and the 1-testcase job: `run(big)` and `run(small)` give seconds from start
 * to all results; its rate is the events between the two over the time between the two medians.
 */
function contender(key, label, run) {
  return { key, label, run, big: [], small: [] };
}

function rateOf(c, bigEvents, smallEvents) {
  const dt = median(c.big.map((r) => r.seconds)) - median(c.small.map((r) => r.seconds));
  const perRound = c.big.map((r, i) => (bigEvents - smallEvents) / (r.seconds - c.small[i].seconds));
  const dcpu = (median(c.big.map((r) => r.cpuMs)) - median(c.small.map((r) => r.cpuMs))) / 1000;
  const dmachine = (median(c.big.map((r) => r.machineMs)) - median(c.small.map((r) => r.machineMs))) / 1000;
  return {
    dt,
    eventsPerSec: (bigEvents - smallEvents) / dt,
    perCpuSec: (bigEvents - smallEvents) / dcpu,
    // Cores the whole machine kept busy over the events (the run less the 1-testcase run).
    machineCores: dmachine / dt,
    perRound,
  };
}

async function main() {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first`);
  mkdirSync(OUT, { recursive: true });
  scratch = mkdtempSync(join(tmpdir(), 'pyats-e2e-'));
  if (!skip.has('peers')) ensurePeerPython(progress);
  const big = ensureStream(TESTCASES);
  const small = ensureStream(1);
  // Concurrent streams are jobs of their own (another job name: their own series, as two labs' jobs).
  const maxStreams = skip.has('streams') ? 1 : Math.max(...STREAM_COUNTS);
  const bigs = [big];
  const smalls = [small];
  for (let i = 2; i <= maxStreams; i++) {
    bigs.push(ensureStream(TESTCASES, `regression_nightly_${i}`));
    smalls.push(ensureStream(1, `regression_nightly_${i}`));
  }

  const receiverA = forkLib('receiver.mjs');
  const receiverB = forkLib('decoding-receiver.mjs');
  const [{ url: urlA }, { url: urlB }] = await Promise.all([
    nextMessage(receiverA, 'ready', 10_000),
    nextMessage(receiverB, 'ready', 10_000),
  ]);
  const envA = { OTEL_EXPORTER_OTLP_ENDPOINT: urlA };
  const envB = { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${urlB}/v1/traces` };
  const envC = { OTEL_TRACES_EXPORTER: 'none' };

  const single = [
    contender('a', '(a) exporter, OTLP/HTTP to an acking receiver', (s) => runExporter([s], { env: envA })),
    ...(skip.has('span-thread')
      ? []
      : [
          contender('a-thread', "(a') as (a), with --span-thread", (s) =>
            runExporter([s], { env: envA, args: ['--span-thread'] }),
          ),
        ]),
    ...(skip.has('decode')
      ? []
      : [
          contender('b', '(b) exporter, OTLP/HTTP to a decoding receiver', (s) =>
            runExporter([s], { env: envB }),
          ),
        ]),
    contender('c', '(c) exporter, OTEL_TRACES_EXPORTER=none', (s) => runExporter([s], { env: envC })),
    ...(skip.has('peers')
      ? []
      : [
          contender('minimal', 'minimal peer (bench/peer_minimal.py)', (s) => runPeer('peer_minimal.py', s)),
          contender('fuller', 'fuller peer (bench/peer.py)', (s) => runPeer('peer.py', s)),
        ]),
  ];
  const modes = [
    { key: 'watch', label: '--watch DIR', args: [] },
    ...(skip.has('decode-thread')
      ? []
      : [{ key: 'watch-thread', label: '--watch DIR --decode-thread', args: ['--decode-thread'] }]),
  ];
  const concurrent = skip.has('streams')
    ? []
    : modes.flatMap((mode) =>
        STREAM_COUNTS.map((n) => ({
          ...contender(`${mode.key}-${n}`, mode.label, (streams) =>
            runExporter(streams, { env: envA, source: 'watch', args: mode.args }),
          ),
          mode,
          n,
        })),
      );

  let profile;
  try {
    for (let round = 1; round <= rounds; round++) {
      // Interleaved, so a busy neighbour or drift weighs on every contender alike.
      for (const c of single) {
        c.big.push(await c.run(big));
        c.small.push(await c.run(small));
      }
      for (const c of concurrent) {
        c.big.push(await c.run(bigs.slice(0, c.n)));
        c.small.push(await c.run(smalls.slice(0, c.n)));
      }
      const summary = single.map((c) => `${c.key} ${c.big.at(-1).seconds.toFixed(2)} s`).join(', ');
      progress(`round ${round}/${rounds}: ${summary}`);
    }
    if (opts.profile) {
      // (a) as asked, and (c) beside it: the difference is what sending spans costs the exporter. (a') too,
      // whose span thread writes a profile of its own.
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      profile = {};
      for (const [key, env, args = []] of [
        ['a', envA],
        ['c', envC],
        ...(skip.has('span-thread') ? [] : [['a-thread', envA, ['--span-thread']]]),
      ]) {
        const profileDir = join(OUT, `e2e-profile-${stamp}-${key}`);
        mkdirSync(profileDir, { recursive: true });
        const run = await runExporter([big], { env, profileDir, args });
        // node names them CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile; the main thread's id is 0.
        const files = readdirSync(profileDir)
          .filter((name) => name.endsWith('.cpuprofile'))
          .sort((x, y) => threadIdOf(x) - threadIdOf(y));
        if (files.length === 0) throw new Error(`node --cpu-prof wrote no profile in ${profileDir}`);
        const [main, ...workers] = files.map((name) => join(profileDir, name));
        profile[key] = {
          file: main,
          seconds: run.seconds,
          summary: summarizeProfile(main),
          workers: workers.map((file) => ({ file, summary: summarizeProfile(file) })),
        };
      }
    }
    const stats = async (receiver) => {
      receiver.send({ cmd: 'stats' });
      return nextMessage(receiver, 'stats', 10_000);
    };
    const received = { a: await stats(receiverA), b: await stats(receiverB) };
    report({ big, small, single, concurrent, profile, received });
  } finally {
    agent.destroy();
    await Promise.all([stopChild(receiverA), stopChild(receiverB)]);
    rmSync(scratch, { recursive: true, force: true });
  }
}

// ---- report -----------------------------------------------------------------------------------------------

/** One table line: the first cell left-aligned in `widths[0]`, the others right-aligned in theirs. */
const row = (cells, widths) =>
  `  ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[0]) : cell.padStart(widths[i]))).join('  ')}`.trimEnd();
const sec = (xs) => median(xs).toFixed(2);

function report({ big, small, single, concurrent, profile, received }) {
  const lines = [];
  const date = new Date().toISOString().slice(0, 10);
  lines.push(
    `pyats-exporter end-to-end benchmark — ${date}, node ${process.version}, ${CORES} × ${cpus()[0]?.model ?? 'cpu'}, ` +
      `${mb(totalmem())} RAM${quick ? ', --quick' : ''}`,
  );
  lines.push(
    `job: ${fmtInt(big.testcases)} testcases = ${fmtInt(big.events)} events (${fmtInt(big.results)} testcase ` +
      `results, ${(big.bytes / 1024 / 1024).toFixed(0)} MB of pickles), minus a 1-testcase job (${fmtInt(small.events)} ` +
      `events); timed from process start to all results seen; median of ${rounds} round(s)`,
  );
  lines.push('');
  const widths = [46, 6, 6, 6, 9, 11, 5, 6, 6, 0];
  lines.push(
    row(
      [
        '',
        'job s',
        '1-tc s',
        'diff s',
        'events/s',
        'ev/CPU-s',
        'cores',
        'VmRSS',
        'VmHWM',
        '  events/s per round',
      ],
      widths,
    ),
  );
  const rates = {};
  const perCpu = {};
  for (const c of single) {
    const r = rateOf(c, big.events, small.events);
    rates[c.key] = r.eventsPerSec;
    perCpu[c.key] = r.perCpuSec;
    const exporter = c.big[0].rssKb !== undefined;
    lines.push(
      row(
        [
          c.label,
          sec(c.big.map((x) => x.seconds)),
          sec(c.small.map((x) => x.seconds)),
          r.dt.toFixed(2),
          fmtRate(r.eventsPerSec),
          fmtRate(r.perCpuSec),
          r.machineCores.toFixed(2),
          exporter ? mbOfKb(median(c.big.map((x) => x.rssKb))) : '-',
          exporter ? mbOfKb(median(c.big.map((x) => x.hwmKb))) : '-',
          `  ${r.perRound.map(fmtRate).join(' / ')}`,
        ],
        widths,
      ),
    );
  }
  const scrapes = single.find((c) => c.key === 'a')?.big.map((x) => x.scrapes);
  lines.push(
    '  ev/CPU-s: events over the CPU time between the two runs (exporter: all its threads, /proc/PID/stat; ' +
      'peers: process_time).',
  );
  lines.push(
    `  cores: of the machine's ${CORES}, how many were busy over the same events (/proc/stat: every process, the ` +
      'sender, receivers and neighbours too).',
  );
  lines.push(
    '  VmRSS / VmHWM: the exporter, /proc/PID/status, when /metrics first showed every result' +
      (scrapes ? ` (${median(scrapes)} /metrics polls per run of (a)).` : '.'),
  );
  lines.push(
    `  receivers: (a) acked ${fmtInt(received.a.spans)} spans in ${fmtInt(received.a.requests)} requests; ` +
      `(b) decoded ${fmtInt(received.b.spans)} spans in ${fmtInt(received.b.requests)} requests, ${received.b.errors} errors`,
  );

  const streamRates = {};
  const streamCpu = {};
  const oneStreamCores = {};
  if (concurrent.length) {
    lines.push('');
    lines.push(
      `concurrent streams: N jobs of ${fmtInt(big.testcases)} testcases (other job names) served at once on N ` +
        'sockets to one exporter, config (a), minus N 1-testcase jobs at once:',
    );
    const w = [28, 7, 6, 6, 6, 9, 11, 5, 10, 6, 6];
    lines.push(
      row(
        [
          '',
          'streams',
          'job s',
          '1-tc s',
          'diff s',
          'events/s',
          'ev/CPU-s',
          'cores',
          '× 1 stream',
          'VmRSS',
          'VmHWM',
        ],
        w,
      ),
    );
    for (const c of concurrent) {
      const r = rateOf(c, c.n * big.events, c.n * small.events);
      streamRates[`${c.mode.key}-${c.n}`] = r.eventsPerSec;
      streamCpu[`${c.mode.key}-${c.n}`] = r.perCpuSec;
      lines.push(
        row(
          [
            c.mode.label,
            String(c.n),
            sec(c.big.map((x) => x.seconds)),
            sec(c.small.map((x) => x.seconds)),
            r.dt.toFixed(2),
            fmtRate(r.eventsPerSec),
            fmtRate(r.perCpuSec),
            r.machineCores.toFixed(2),
            (r.eventsPerSec / streamRates[`${c.mode.key}-1`]).toFixed(2),
            mbOfKb(median(c.big.map((x) => x.rssKb))),
            mbOfKb(median(c.big.map((x) => x.hwmKb))),
          ],
          w,
        ),
      );
      if (c.n === 1) oneStreamCores[c.mode.key] = r.machineCores;
    }
    // If each event costs the machine what it did with one stream, N streams can go at most cores / (cores
    // one kept busy) times as fast, however well the exporter spreads them: the rest of the machine is all
    // there is to gain.
    for (const [key, cores] of Object.entries(oneStreamCores)) {
      const label = concurrent.find((c) => c.mode.key === key).mode.label;
      lines.push(
        `  ${label}: one stream kept ${cores.toFixed(2)} of ${CORES} cores busy; at the same CPU per event, more ` +
          `streams go at most ${(CORES / cores).toFixed(2)}× as fast on this machine`,
      );
    }
  }

  lines.push('');
  lines.push('ratios (events/s; in brackets, of events per CPU-second):');
  const ratio = (name, [num, den], [cpuNum, cpuDen] = [], target = undefined) => {
    if (!Number.isFinite(num) || !Number.isFinite(den)) return;
    const value = num / den;
    const cpu = Number.isFinite(cpuNum / cpuDen) ? ` [${(cpuNum / cpuDen).toFixed(2)}]` : '';
    const goal = target === undefined ? '' : `  target ≥ ${target.toFixed(1)}: ${mark(value >= target)}`;
    lines.push(`  ${name.padEnd(50)} ${value.toFixed(2).padStart(5)}${cpu.padEnd(7)}${goal}`);
  };
  const pair = (table, x, y) => [table[x], table[y]];
  ratio('exporter (a) / minimal peer', pair(rates, 'a', 'minimal'), pair(perCpu, 'a', 'minimal'), 1.0);
  ratio('exporter (a) / fuller peer', pair(rates, 'a', 'fuller'), pair(perCpu, 'a', 'fuller'), 2.0);
  ratio('(a) / (c)', pair(rates, 'a', 'c'), pair(perCpu, 'a', 'c'), 0.8);
  ratio("(a') --span-thread / (c)", pair(rates, 'a-thread', 'c'), pair(perCpu, 'a-thread', 'c'));
  ratio("(a') --span-thread / (a)", pair(rates, 'a-thread', 'a'), pair(perCpu, 'a-thread', 'a'));
  ratio('(b) / (c)', pair(rates, 'b', 'c'), pair(perCpu, 'b', 'c'));
  ratio('(b) / (a)', pair(rates, 'b', 'a'), pair(perCpu, 'b', 'a'));
  ratio('exporter (c) / minimal peer', pair(rates, 'c', 'minimal'), pair(perCpu, 'c', 'minimal'));
  ratio('minimal peer / fuller peer', pair(rates, 'minimal', 'fuller'), pair(perCpu, 'minimal', 'fuller'));
  for (const mode of new Set(concurrent.map((c) => c.mode))) {
    for (const n of STREAM_COUNTS.slice(1)) {
      ratio(
        `${n} streams / 1 stream, ${mode.label}`,
        pair(streamRates, `${mode.key}-${n}`, `${mode.key}-1`),
        pair(streamCpu, `${mode.key}-${n}`, `${mode.key}-1`),
        n === 2 ? 1.7 : undefined,
      );
    }
  }
  ratio(
    '1 stream: --decode-thread / without',
    pair(streamRates, 'watch-thread-1', 'watch-1'),
    pair(streamCpu, 'watch-thread-1', 'watch-1'),
  );
  ratio(
    '1 stream: --watch / --reporter-socket (a)',
    [streamRates['watch-1'], rates.a],
    [streamCpu['watch-1'], perCpu.a],
  );

  if (profile) {
    const { a, c, 'a-thread': thread } = profile;
    lines.push('');
    lines.push(
      `CPU profile of the CLI (node --cpu-prof), config (a), the whole process life: start-up, the job, ` +
        `${a.seconds.toFixed(2)} s to all results, shutdown (${a.file}):`,
    );
    lines.push(formatProfile(a.summary));
    lines.push('');
    lines.push(`self time by area, (a) against (c) (${c.seconds.toFixed(2)} s to all results; ${c.file}):`);
    lines.push(...areasAgainst('(a)', a.summary, c.summary));
    if (thread) {
      lines.push('');
      lines.push(
        `(a') --span-thread, ${thread.seconds.toFixed(2)} s to all results: main thread by area against (c) ` +
          `(${thread.file}):`,
      );
      lines.push(...areasAgainst("(a')", thread.summary, c.summary));
      for (const worker of thread.workers) {
        lines.push('');
        lines.push(`(a') its span thread (${worker.file}):`);
        lines.push(formatProfile(worker.summary, 12));
      }
    }
  }
  const text = lines.join('\n');
  log(text);
  writeFileSync(join(OUT, 'e2e-last-run.txt'), `${text}\n`);
  writeFileSync(
    join(OUT, 'e2e-last-run.json'),
    JSON.stringify(
      {
        big,
        small,
        single: single.map(({ key, big: b, small: s }) => ({ key, big: b, small: s })),
        concurrent: concurrent.map(({ key, n, big: b, small: s }) => ({ key, n, big: b, small: s })),
      },
      null,
      1,
    ),
  );
}

/** The thread id in a `node --cpu-prof` file name (CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile). */
function threadIdOf(name) {
  return Number(name.split('.').at(-3));
}

/** Self time by area of `summary` against (c)'s, the areas that differ most first. */
function areasAgainst(label, summary, c) {
  const lines = [`  ${label.padStart(9)} ms    (c) ms  ${`${label} − (c)`.padStart(11)}`];
  const names = [...new Set([...summary.areas, ...c.areas].map((x) => x.name))];
  const msOf = (s, name) => s.areas.find((x) => x.name === name)?.ms ?? 0;
  const rows = names
    .map((name) => ({ name, x: msOf(summary, name), c: msOf(c, name) }))
    .sort((p, q) => q.x - q.c - (p.x - p.c));
  for (const row of [...rows, { name: 'total busy', x: summary.busyMs, c: c.busyMs }]) {
    if (row.x < 5 && row.c < 5) continue;
    lines.push(
      `  ${row.x.toFixed(0).padStart(12)} ${row.c.toFixed(0).padStart(9)} ${(row.x - row.c).toFixed(0).padStart(11)}   ${row.name}`,
    );
  }
  return lines;
}

main().catch(exitOnError('e2e'));
