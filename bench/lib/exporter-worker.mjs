// The benchmark's pipeline: the real exporter, started exactly as dist/cli.js starts it (parseConfig on the
// same flags and OTEL_* environment, then startDaemon), in a child process of its own. The only addition is
// a completion probe that reads the daemon's own registry — pyats_exporter_events_received_total and the
// spans exported / dropped counters — every 2 ms, so the end of a run is known without HTTP scrapes that
// would themselves load the process under test.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { distModule } from './dist.mjs';

const { parseConfig } = await distModule('config.js');
const { startDaemon } = await distModule('daemon.js');
const { createLogger } = await distModule('log.js');
const { renderMetrics } = await distModule('http/server.js');

const outcome = parseConfig(process.argv.slice(2), process.env);
if (outcome.kind !== 'config') throw new Error('exporter-worker needs a run configuration');
const config = outcome.config;
const daemon = await startDaemon(config, createLogger(config.logLevel));

async function total(name) {
  const metric = daemon.registry.getSingleMetric(name);
  if (metric === undefined) return 0;
  const { values } = await metric.get();
  return values.reduce((sum, v) => sum + v.value, 0);
}

async function counters() {
  const [events, exported, dropped, rejected] = await Promise.all([
    total('pyats_exporter_events_received_total'),
    total('pyats_exporter_spans_exported_total'),
    total('pyats_exporter_spans_dropped_total'),
    total('pyats_exporter_events_rejected_total'),
  ]);
  return { events, exported, dropped, rejected };
}

function memory() {
  const usage = process.memoryUsage();
  return {
    rssBytes: usage.rss,
    heapUsedBytes: usage.heapUsed,
    heapTotalBytes: usage.heapTotal,
    externalBytes: usage.external,
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
  };
}

/** V8's CPU profiler (what `node --cpu-prof` runs), started and stopped around one run: no start-up noise. */
async function startProfiler() {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  return async (path) => {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(path, JSON.stringify(profile));
    session.disconnect();
  };
}

async function expect({ events, spans, profilePath }) {
  const base = await counters();
  const stopProfiler = profilePath ? await startProfiler() : undefined;
  process.send({ kind: 'armed' });
  const cpuStart = process.cpuUsage();
  let tEvents;
  return new Promise((resolve) => {
    let busy = false;
    const timer = setInterval(async () => {
      if (busy) return;
      busy = true;
      const now = await counters();
      busy = false;
      const seen = now.events - base.events;
      const settled = now.exported + now.dropped - base.exported - base.dropped;
      if (tEvents === undefined && seen >= events) tEvents = process.hrtime.bigint();
      if (tEvents === undefined || settled < spans) return;
      clearInterval(timer);
      const tSpans = process.hrtime.bigint();
      const cpu = process.cpuUsage(cpuStart);
      if (stopProfiler) await stopProfiler(profilePath);
      resolve({
        kind: 'done',
        tEvents: String(tEvents),
        tSpans: String(tSpans),
        cpuMs: (cpu.user + cpu.system) / 1000,
        events: seen,
        spansExported: now.exported - base.exported,
        spansDropped: now.dropped - base.dropped,
        rejected: now.rejected - base.rejected,
        ...memory(),
      });
    }, 2);
  });
}

/** `count` renders of /metrics' body in this process, in ms: the exposition's cost without HTTP. */
async function renderTimes(count) {
  const times = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await renderMetrics(daemon.registry, 'prometheus');
    times.push(performance.now() - start);
  }
  return times;
}

process.on('message', async (message) => {
  if (message.cmd === 'expect') process.send(await expect(message));
  if (message.cmd === 'memory') process.send({ kind: 'memory', ...memory() });
  if (message.cmd === 'render') process.send({ kind: 'render', ms: await renderTimes(message.count) });
  if (message.cmd === 'stop') {
    await daemon.stop();
    process.exit(0);
  }
});

process.send({ kind: 'ready', url: `http://${daemon.address.host}:${daemon.address.port}` });
