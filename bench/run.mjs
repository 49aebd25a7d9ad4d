#!/usr/bin/env node
// The benchmark (issue 6): on one generated pyATS stream sent over a real Unix socket, measures events/s of
// the floor (FrameReader + unpickle only), the pipeline (the real daemon: decode, normalize, track, metrics,
// spans over OTLP/HTTP to a discarding receiver) and the peer (a CPython prometheus_client subscriber);
// then /metrics latency under ingest, and events/s and RSS from 10k to 1M sections; last, the end-to-end
// benchmark of the CLI (e2e.mjs, its own report), given the same --quick / --rounds / --profile / --dist.
// Usage: npm run bench [-- --quick] [--rounds N] [--profile] [--skip peer,scrape,scale,e2e] [--dist DIR]
//        [--exporter-node-options '--max-semi-space-size=32']
//        --skip e2e-NAME passes --skip NAME to e2e.mjs (e2e-peers, e2e-decode, e2e-span-thread, e2e-streams, e2e-decode-thread);
//        --skip peer also skips e2e's peers.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { gunzipSync } from 'node:zlib';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { BENCH, OUT, exitOnError, exporterEnv, parseOptions } from './lib/common.mjs';
import { fmtRate, log, mark, mb, median, progressWriter } from './lib/common.mjs';
import { forkLib, nextMessage, runPeerScript, startSender, stopChild } from './lib/common.mjs';
import { cachedStream, ensurePeerPython } from './lib/common.mjs';
import { formatProfile, summarizeProfile } from './lib/profile.mjs';

/** Sections per job besides its testcases' six each: suite, task, 3 plugins, 2 common sections, 3 subsections. */
const FIXED_SECTIONS = 10;
const SECTIONS_PER_TESTCASE = 6;

// Children import the build under test from DIST_DIR (lib/dist.mjs); default ./dist.
const { opts, distDir: DIST_DIR, quick, skip } = parseOptions();
const rounds = Number(opts.rounds ?? (quick ? 1 : 3));
const MAIN_TESTCASES = quick ? 4_000 : 20_000;
const SCALE_SECTIONS = quick ? [10_000, 100_000] : [10_000, 100_000, 1_000_000];
// With 4 runs of the job ingested, about 125 scrapes of each kind: enough for a p99 that is not just the max.
const SCRAPE_INTERVAL_MS = 25;
const SCRAPE_RUNS = 4;
// Testcase names cycle through 1,000 by default (~22,500 series once issue 12's per-testcase history is in);
// the scrape is measured a second time with fewer names, at the target's own size (just over 10,000 series).
const TARGET_SIZE_NAMES = 480;
const EXPORTER_ENV = {
  OTEL_TRACES_EXPORTER: 'otlp',
  OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
  // Large enough that no span is ever dropped: the run ends when every span reached the receiver.
  OTEL_BSP_MAX_QUEUE_SIZE: '2000000',
  // Only the last, partial batch waits for this timer; the default 5 s would be pure idle time at the end
  // of a run (and would swamp the short 10k-section run).
  OTEL_BSP_SCHEDULE_DELAY: '20',
};

const progress = progressWriter();
const ns = (text) => BigInt(text);
const rate = (events, t0, tEnd) => events / (Number(ns(tEnd) - ns(t0)) / 1e9);

// ---- streams ----------------------------------------------------------------------------------------------

/**
 * The cached stream of `runs` runs of a job with `testcases` testcases each, regenerated when the generator
 * changes. Later runs (`start`) are new traces for the same series.
 */
function ensureStream(testcases, { runs = 1, start = '2024-05-01T02:00:00', names = 1000 } = {}) {
  const tag =
    (runs === 1 && start.startsWith('2024-05-01T02') ? '' : `-${runs}runs-${start.slice(0, 10)}`) +
    (names === 1000 ? '' : `-${names}names`);
  const args = ['--testcases', String(testcases), '--runs', String(runs), '--start', start];
  args.push('--testcase-names', String(names));
  const about = `${testcases} testcases × ${runs} run(s), ${names} testcase names`;
  const { file, meta } = cachedStream(`${testcases}tc${tag}`, args, about, progress);
  return { file, events: meta.events, sections: meta.sections, bytes: meta.bytes, testcases };
}

// ---- the three contenders ---------------------------------------------------------------------------------

let scratch;
let socketCount = 0;
/** Spans every exporter run was expected to export, to check against what the receiver counted. */
let spansExpected = 0;
const nextSocket = () => join(scratch, `reporter-${++socketCount}.sock`);

async function runFloor(stream) {
  const socket = nextSocket();
  const sender = await startSender(socket, [stream.file]);
  const sent = nextMessage(sender, 'sent');
  const floor = forkLib('floor.mjs', [socket, String(stream.events)]);
  const done = await nextMessage(floor, 'done');
  const { t0 } = await sent;
  await Promise.all([stopChild(floor), stopChild(sender)]);
  if (done.failed > 0) throw new Error(`floor: ${done.failed} frames failed to decode`);
  return { eventsPerSec: rate(stream.events, t0, done.tEnd), cpuMs: done.cpuMs };
}

async function runPeer(stream) {
  const socket = nextSocket();
  const sender = await startSender(socket, [stream.file]);
  const sent = nextMessage(sender, 'sent');
  const done = await runPeerScript('peer.py', socket, stream.events);
  const { t0 } = await sent;
  await stopChild(sender);
  return { eventsPerSec: rate(stream.events, t0, done.tEnd), cpuMs: done.cpuMs };
}

/** A fresh exporter process (the real daemon, see lib/exporter-worker.mjs) reading `socket`. */
async function startExporter(receiverUrl, socket) {
  const env = exporterEnv(opts, {
    BENCH_DIST: DIST_DIR,
    ...EXPORTER_ENV,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiverUrl,
  });
  const args = ['--reporter-socket', socket, '--listen', '127.0.0.1:0', '--timezone', 'UTC'];
  const worker = forkLib('exporter-worker.mjs', args, { env });
  const { url } = await nextMessage(worker, 'ready', 30_000);
  worker.url = url;
  return worker;
}

/** Sends `files` to a running exporter; resolves when all events arrived and all spans were exported. */
async function feedExporter(worker, socket, files, events, spans, profilePath) {
  const done = nextMessage(worker, 'done');
  worker.send({ cmd: 'expect', events, spans, profilePath });
  await nextMessage(worker, 'armed', 10_000);
  const sender = await startSender(socket, files);
  const sent = nextMessage(sender, 'sent');
  const result = await done;
  const { t0 } = await sent;
  await stopChild(sender);
  spansExpected += spans;
  if (result.spansDropped > 0 || result.rejected > 0) {
    throw new Error(`exporter dropped ${result.spansDropped} spans, rejected ${result.rejected} events`);
  }
  return {
    ...result,
    eventsPerSec: rate(events, t0, result.tSpans),
    decodedPerSec: rate(events, t0, result.tEvents),
    seconds: Number(ns(result.tSpans) - ns(t0)) / 1e9,
  };
}

async function runPipeline(stream, receiver, profilePath) {
  const socket = nextSocket();
  const worker = await startExporter(receiver.url, socket);
  try {
    return await feedExporter(worker, socket, [stream.file], stream.events, stream.sections, profilePath);
  } finally {
    await stopChild(worker);
  }
}

// ---- /metrics under ingest --------------------------------------------------------------------------------

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

async function runScrape(stream, later, receiver) {
  const socket = nextSocket();
  const worker = await startExporter(receiver.url, socket);
  try {
    // First pass creates the series; the measured passes then ingest while /metrics is scraped.
    await feedExporter(worker, socket, [stream.file], stream.events, stream.sections);
    let last = Buffer.alloc(0);
    /** Bytes on the wire of the last gzip scrape. */
    let compressedBytes = 0;
    // node:http with a keep-alive agent, body kept as bytes: as little client work as Prometheus itself does.
    // Prometheus asks for gzip (and pays the gunzip, counted here too); `identity` is the uncompressed body.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const scrape = (encoding) =>
      new Promise((resolve, reject) => {
        const start = performance.now();
        http
          .get(`${worker.url}/metrics`, { agent, headers: { 'accept-encoding': encoding } }, (response) => {
            const chunks = [];
            response.on('data', (chunk) => chunks.push(chunk));
            response.on('end', () => {
              const body = Buffer.concat(chunks);
              const gzipped = response.headers['content-encoding'] === 'gzip';
              if (gzipped !== (encoding === 'gzip')) {
                reject(new Error(`asked for ${encoding}, got ${gzipped}`));
                return;
              }
              if (gzipped) compressedBytes = body.length;
              last = gzipped ? gunzipSync(body) : body;
              resolve(performance.now() - start);
            });
            response.on('error', reject);
          })
          .on('error', reject);
      });
    // The same scrape with nothing else going on: what the exposition itself costs on this machine. The first
    // scrape of the process (connection, first gzip, code not yet optimized) is left out, as warm-up.
    await scrape('gzip');
    const idle = [];
    for (let i = 0; i < 40; i++) {
      idle.push(await scrape('gzip'));
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    worker.send({ cmd: 'render', count: 40 });
    const renders = (await nextMessage(worker, 'render')).ms.sort((a, b) => a - b);
    let ingesting = true;
    // Alternating, so both see the same ingest.
    const latencies = { gzip: [], identity: [] };
    const scraping = (async () => {
      for (let i = 0; ingesting; i++) {
        const encoding = i % 2 === 0 ? 'gzip' : 'identity';
        latencies[encoding].push(await scrape(encoding));
        await new Promise((resolve) => setTimeout(resolve, SCRAPE_INTERVAL_MS));
      }
    })();
    let fed;
    try {
      fed = await feedExporter(worker, socket, [later.file], later.events, later.sections);
    } finally {
      ingesting = false;
      await scraping.catch(() => {});
    }
    await scraping;
    agent.destroy();
    const text = last.toString('utf8');
    const series = text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).length;
    const sorted = [...latencies.gzip].sort((a, b) => a - b);
    const plain = [...latencies.identity].sort((a, b) => a - b);
    const idleSorted = [...idle].sort((a, b) => a - b);
    return {
      idleP50: percentile(idleSorted, 0.5),
      idleP99: percentile(idleSorted, 0.99),
      renderP50: percentile(renders, 0.5),
      renderP99: percentile(renders, 0.99),
      scrapes: sorted.length,
      series,
      bytes: last.length,
      compressedBytes,
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      max: sorted[sorted.length - 1],
      identityP50: percentile(plain, 0.5),
      identityP99: percentile(plain, 0.99),
      eventsPerSec: fed.eventsPerSec,
    };
  } finally {
    await stopChild(worker);
  }
}

// ---- scale ------------------------------------------------------------------------------------------------

async function runScale(streams, receiver) {
  const socket = nextSocket();
  const worker = await startExporter(receiver.url, socket);
  try {
    worker.send({ cmd: 'memory' });
    const atStart = await nextMessage(worker, 'memory', 10_000);
    const [warm] = streams;
    await feedExporter(worker, socket, [warm.file], warm.events, warm.sections);
    const points = [];
    for (const stream of streams) {
      // Short runs are repeated (median kept): a 0.3 s run is at the mercy of one GC or one busy neighbour.
      const repeats = stream.sections <= 10_000 ? 5 : stream.sections <= 100_000 ? 3 : 1;
      const runs = [];
      for (let i = 0; i < repeats; i++) {
        runs.push(await feedExporter(worker, socket, [stream.file], stream.events, stream.sections));
      }
      const result = {
        ...runs.at(-1),
        eventsPerSec: median(runs.map((r) => r.eventsPerSec)),
        decodedPerSec: median(runs.map((r) => r.decodedPerSec)),
        seconds: median(runs.map((r) => r.seconds)),
        repeats,
      };
      points.push({ sections: stream.sections, events: stream.events, ...result });
      progress(
        `scale ${stream.sections} sections: ${fmtRate(result.decodedPerSec)} events/s (median of ${repeats})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 4000));
    worker.send({ cmd: 'memory' });
    const idle = await nextMessage(worker, 'memory', 10_000);
    return { points, idle, atStart };
  } finally {
    await stopChild(worker);
  }
}

// ---- report -----------------------------------------------------------------------------------------------

async function main() {
  if (!existsSync(join(DIST_DIR, 'daemon.js')))
    throw new Error(`${DIST_DIR} has no build: run "npm run build" first`);
  mkdirSync(OUT, { recursive: true });
  scratch = mkdtempSync(join(tmpdir(), 'pyats-bench-'));
  if (!skip.has('peer')) ensurePeerPython(progress);
  const main = ensureStream(MAIN_TESTCASES);
  // Ingest while /metrics is scraped: more runs of the same job (new traces, the series the first run made).
  const laterRuns = { runs: quick ? 1 : SCRAPE_RUNS, start: '2024-05-02T02:00:00' };
  const later = skip.has('scrape') ? undefined : ensureStream(MAIN_TESTCASES, laterRuns);
  const targetSize = skip.has('scrape')
    ? undefined
    : {
        main: ensureStream(MAIN_TESTCASES, { names: TARGET_SIZE_NAMES }),
        later: ensureStream(MAIN_TESTCASES, { ...laterRuns, names: TARGET_SIZE_NAMES }),
      };
  const scale = skip.has('scale')
    ? []
    : SCALE_SECTIONS.map((s) => ensureStream((s - FIXED_SECTIONS) / SECTIONS_PER_TESTCASE));

  const receiver = forkLib('receiver.mjs', []);
  receiver.url = (await nextMessage(receiver, 'ready', 10_000)).url;
  const results = { floor: [], pipeline: [], peer: [] };
  try {
    for (let round = 1; round <= rounds; round++) {
      results.floor.push(await runFloor(main));
      results.pipeline.push(await runPipeline(main, receiver));
      if (!skip.has('peer')) results.peer.push(await runPeer(main));
      const last = (k) => (results[k].length ? fmtRate(results[k].at(-1).eventsPerSec) : '-');
      progress(
        `round ${round}/${rounds}: floor ${last('floor')}, pipeline ${last('pipeline')}, peer ${last('peer')}`,
      );
    }
    const scrape = skip.has('scrape') ? undefined : await runScrape(main, later, receiver);
    const scrapeAtTarget = targetSize && (await runScrape(targetSize.main, targetSize.later, receiver));
    const scaled = scale.length ? await runScale(scale, receiver) : undefined;
    let profile;
    if (opts.profile) {
      const file = join(OUT, `pipeline-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
      await runPipeline(main, receiver, file);
      profile = { file, summary: summarizeProfile(file) };
    }
    // Let the last export's response reach the receiver's counters.
    await new Promise((r) => setTimeout(r, 200));
    receiver.send({ cmd: 'stats' });
    const received = await nextMessage(receiver, 'stats', 10_000);
    report({ main, results, scrape, scrapeAtTarget, scaled, profile, received });
  } finally {
    await stopChild(receiver);
    rmSync(scratch, { recursive: true, force: true });
  }
}

function report({ main, results, scrape, scrapeAtTarget, scaled, profile, received }) {
  const med = (k) => (results[k].length ? median(results[k].map((r) => r.eventsPerSec)) : NaN);
  const perCpu = (k) =>
    results[k].length ? median(results[k].map((r) => main.events / (r.cpuMs / 1000))) : NaN;
  const floor = med('floor');
  const pipeline = med('pipeline');
  const peer = med('peer');
  const lines = [];
  lines.push(
    `pyats-exporter benchmark — node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ` +
      `${mb(totalmem())} RAM${quick ? ', --quick' : ''}`,
  );
  lines.push(
    `stream: ${main.testcases.toLocaleString('en-US')} testcases, ${main.events.toLocaleString('en-US')} events, ` +
      `${main.sections.toLocaleString('en-US')} sections, ${mb(main.bytes)} of pickle protocol 4 frames; median of ${rounds} round(s)`,
  );
  lines.push('');
  lines.push('                 events/s (wall)   events per CPU-second   runs (events/s)');
  for (const [name, key] of [
    ['floor', 'floor'],
    ['pipeline', 'pipeline'],
    ['peer', 'peer'],
  ]) {
    if (!results[key].length) continue;
    const runs = results[key].map((r) => fmtRate(r.eventsPerSec)).join(' / ');
    lines.push(
      `  ${name.padEnd(10)} ${fmtRate(med(key)).padStart(15)}   ${fmtRate(perCpu(key)).padStart(21)}   ${runs}`,
    );
  }
  lines.push('');
  if (results.peer.length) {
    lines.push(
      `  pipeline / peer  = ${(pipeline / peer).toFixed(2)}  (target ≥ 2.0: ${mark(pipeline / peer >= 2)}; ` +
        `per CPU-second ${(perCpu('pipeline') / perCpu('peer')).toFixed(2)})`,
    );
  }
  lines.push(
    `  pipeline / floor = ${(pipeline / floor).toFixed(2)}  (target ≥ 0.5: ${mark(pipeline / floor >= 0.5)}; ` +
      `per CPU-second ${(perCpu('pipeline') / perCpu('floor')).toFixed(2)})`,
  );
  const lastPipeline = results.pipeline.at(-1);
  lines.push(
    `  pipeline detail: all events decoded at ${fmtRate(median(results.pipeline.map((r) => r.decodedPerSec)))} events/s, ` +
      `spans exported ${lastPipeline.spansExported.toLocaleString('en-US')}, dropped ${lastPipeline.spansDropped}, ` +
      `the receiver counted ${received.spans.toLocaleString('en-US')} of the ${spansExpected.toLocaleString('en-US')} spans ` +
      `all runs exported, in ${received.requests} requests`,
  );
  const scrapeLines = (result, title) => {
    lines.push('');
    lines.push(
      `${title}: ${result.series.toLocaleString('en-US')} series (${mb(result.bytes)}, ` +
        `${(result.compressedBytes / 1024).toFixed(0)} kB gzipped), ${result.scrapes} gzip scrapes as Prometheus ` +
        `asks, alternating with as many uncompressed, every ${SCRAPE_INTERVAL_MS} ms while ingesting at ` +
        `${fmtRate(result.eventsPerSec)} events/s`,
    );
    lines.push(
      `  gzip p50 ${result.p50.toFixed(1)} ms, p99 ${result.p99.toFixed(1)} ms, max ${result.max.toFixed(1)} ms  ` +
        `(target p99 ≤ 20 ms with ≥ 10,000 series: ${mark(result.p99 <= 20 && result.series >= 10_000)})`,
    );
    lines.push(
      `  uncompressed p50 ${result.identityP50.toFixed(1)} ms, p99 ${result.identityP99.toFixed(1)} ms; ` +
        `gzip without ingest: p50 ${result.idleP50.toFixed(1)} ms, p99 ${result.idleP99.toFixed(1)} ms (40 scrapes); ` +
        `rendering alone, in the exporter: p50 ${result.renderP50.toFixed(1)} ms, p99 ${result.renderP99.toFixed(1)} ms`,
    );
  };
  if (scrape) scrapeLines(scrape, '/metrics under ingest');
  if (scrapeAtTarget) {
    scrapeLines(scrapeAtTarget, `the same at the target's size (${TARGET_SIZE_NAMES} testcase names)`);
  }
  if (scaled) {
    lines.push('');
    lines.push(
      `scale (one exporter process, warmed up on the 10k stream, one job per stream; RSS at start ` +
        `${mb(scaled.atStart.rssBytes)}):`,
    );
    lines.push(
      '     sections   events/s processed   events/s exported   seconds   RSS after   (median of 5 / 3 / 1 runs)',
    );
    for (const p of scaled.points) {
      lines.push(
        `  ${p.sections.toLocaleString('en-US').padStart(11)}   ${fmtRate(p.decodedPerSec).padStart(18)}   ` +
          `${fmtRate(p.eventsPerSec).padStart(17)}   ${p.seconds.toFixed(2).padStart(7)}   ${mb(p.rssBytes)} ` +
          `(heap ${mb(p.heapUsedBytes)} used of ${mb(p.heapTotalBytes)}, external ${mb(p.externalBytes)})`,
      );
    }
    const first = scaled.points[0];
    const lastPoint = scaled.points.at(-1);
    // Processed = every event through decode, normalize, tracker and sinks; exported adds the drain of the span
    // queue after the last event, a fixed delay that weighs on a 0.3 s run and not on a 20 s one.
    // Linear cost means no slowdown as sections accumulate; a 10k run (0.2 s) also pays warm-up and a fixed
    // drain that longer runs amortize, so the big run may well be faster, which is not a growing cost.
    const flatness = lastPoint.decodedPerSec / first.decodedPerSec;
    lines.push(
      `  events/s processed at ${lastPoint.sections.toLocaleString('en-US')} vs ${first.sections.toLocaleString('en-US')} sections: ` +
        `${flatness.toFixed(2)}× (linear cost = no slowdown beyond 20%: ${mark(flatness >= 0.8)})`,
    );
    // Judged twice: as the burst ends (peak-like, V8 has not collected its old generation yet) and once the
    // exporter has been idle long enough for the idle collector's checks (src/idle-gc.ts).
    const full = lastPoint.sections >= 1_000_000;
    const rssMark = (bytes) => (full ? mark(bytes <= 150 * 1024 * 1024) : 'not measured (--quick)');
    lines.push(
      `  RSS after ${lastPoint.sections.toLocaleString('en-US')} sections: ${mb(lastPoint.rssBytes)} as the burst ends, ` +
        `${mb(scaled.idle.rssBytes)} after 4 s idle (peak ${mb(scaled.idle.maxRssBytes)})  ` +
        `(target ≤ 150 MB after 1,000,000: ${rssMark(lastPoint.rssBytes)} / idle ${rssMark(scaled.idle.rssBytes)})`,
    );
  }
  if (profile) {
    lines.push('');
    lines.push(`CPU profile of one pipeline run (${profile.file}):`);
    lines.push(formatProfile(profile.summary));
  }
  const text = lines.join('\n');
  log(text);
  writeFileSync(join(OUT, 'last-run.txt'), `${text}\n`);
  writeFileSync(
    join(OUT, 'last-run.json'),
    JSON.stringify({ main, results, scrape, scrapeAtTarget, scaled }, null, 1),
  );
}

/** The end-to-end benchmark (e2e.mjs) in a process of its own, after everything above has stopped. */
function runE2e() {
  const e2eSkips = [...skip].filter((name) => name.startsWith('e2e-')).map((name) => name.slice(4));
  if (skip.has('peer')) e2eSkips.push('peers');
  const args = [
    join(BENCH, 'e2e.mjs'),
    '--dist',
    DIST_DIR,
    ...(quick ? ['--quick'] : []),
    ...(opts.rounds ? ['--rounds', opts.rounds] : []),
    ...(opts.profile ? ['--profile'] : []),
    ...(e2eSkips.length ? ['--skip', e2eSkips.join(',')] : []),
    ...(opts['exporter-node-options'] ? [`--exporter-node-options=${opts['exporter-node-options']}`] : []),
  ];
  log('');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`e2e.mjs exited ${code}`))));
  });
}

main()
  .then(() => (skip.has('e2e') ? undefined : runE2e()))
  .catch(exitOnError('bench'));
