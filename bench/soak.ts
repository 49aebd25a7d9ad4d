// Soak benchmark (issue 3, item 7): pushes ~1,000,000 sections — 1,000 pyATS jobs of ~1,000 sections, each
// job a new reporter connection on one of a few socket paths, as pyATS gives every job its own Reporter
// Server — through the real socket path into the real exporter binary, and prints its RSS at intervals.
// RSS must level off: finished sections, closed jobs and old connections are released.
//
// Usage: npm run build && npx vite-node bench/soak.ts [-- --jobs 1000 --sections 1000 --sockets 4
//        --traces otlp|none --interval 5 --frame-format chunked]
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseFrameFormat } from '../src/reporter/framing.js';
import { soakJob, startGeneratorReporter } from './soak-reporter.js';

interface Sample {
  seconds: number;
  jobs: number;
  sections: number;
  rssMb: number;
  heapMb: number;
  spansExported: number;
  spansDropped: number;
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
  return kb === undefined ? NaN : Number(kb) / 1024;
}

function sum(text: string, name: string, where = ''): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
      if (where === '' || line.includes(where)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}

/** An OTLP/HTTP endpoint that accepts and discards every export. */
async function startDiscardingReceiver(): Promise<{
  url: string;
  server: HttpServer;
  requests: () => number;
}> {
  let requests = 0;
  const server = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => {
      requests += 1;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    requests: () => requests,
  };
}

function startExporter(
  cli: string,
  sockets: string[],
  frameFormat: string,
  env: NodeJS.ProcessEnv,
): Promise<{ proc: ChildProcess; url: string }> {
  const args = [cli, '--listen', '127.0.0.1:0', '--log-level', 'info', '--frame-format', frameFormat];
  for (const socket of sockets) args.push('--reporter-socket', socket);
  const proc = spawn(process.execPath, args, {
    env: { PATH: process.env['PATH'], ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let rest = '';
    let found = false;
    proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      if (found) return;
      rest += chunk;
      const match = /"url":"(http:[^"]+)"[^\n]*"msg":"http server listening"/.exec(rest);
      if (match?.[1] !== undefined) {
        found = true;
        rest = '';
        resolve({ proc, url: match[1] });
      }
    });
    proc.once('exit', (code) => reject(new Error(`exporter exited (${String(code)}) before listening`)));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((arg) => arg !== '--'),
    options: {
      jobs: { type: 'string', default: '1000' },
      sections: { type: 'string', default: '1000' },
      sockets: { type: 'string', default: '4' },
      traces: { type: 'string', default: 'otlp' },
      interval: { type: 'string', default: '5' },
      'frame-format': { type: 'string', default: 'chunked' },
    },
  });
  const jobCount = Number(values.jobs);
  const sectionsTarget = Number(values.sections);
  const socketCount = Number(values.sockets);
  const intervalMs = Number(values.interval) * 1000;
  const frameFormat = parseFrameFormat(values['frame-format']);
  const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
  if (!existsSync(cli)) throw new Error(`${cli} not found: run \`npm run build\` first`);

  const dir = mkdtempSync(join(tmpdir(), 'pyats-soak-'));
  const receiver = values.traces === 'otlp' ? await startDiscardingReceiver() : undefined;
  const sockets = Array.from({ length: socketCount }, (_, i) => join(dir, `job${i}`, 'reporter.sock'));
  for (const socket of sockets) mkdirSync(join(socket, '..'), { recursive: true });
  const env: NodeJS.ProcessEnv = receiver
    ? { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: 'soak' }
    : { OTEL_TRACES_EXPORTER: 'none' };
  const { proc, url } = await startExporter(cli, sockets, frameFormat, env);
  const pid = proc.pid as number;

  console.log(
    `soak: ${jobCount} jobs x ~${sectionsTarget} sections over ${socketCount} socket paths, traces=${values.traces}, ` +
      `exporter pid ${pid}, node ${process.version}`,
  );
  console.log('   time   jobs   sections   RSS MB  heap MB   spans out  spans dropped');
  const samples: Sample[] = [];
  const started = Date.now();
  let sent = { jobs: 0, sections: 0, events: 0 };
  const sample = async (): Promise<Sample> => {
    const text = await (await fetch(`${url}/metrics`)).text();
    const s: Sample = {
      seconds: (Date.now() - started) / 1000,
      jobs: sum(text, 'pyats_job_runs_total'),
      sections: sum(text, 'pyats_section_results_total'),
      rssMb: rssMb(pid),
      heapMb: sum(text, 'nodejs_heap_size_used_bytes') / 2 ** 20,
      spansExported: sum(text, 'pyats_exporter_spans_exported_total'),
      spansDropped: sum(text, 'pyats_exporter_spans_dropped_total'),
    };
    samples.push(s);
    console.log(
      `${s.seconds.toFixed(0).padStart(6)}s ${String(s.jobs).padStart(6)} ${String(s.sections).padStart(10)} ` +
        `${s.rssMb.toFixed(1).padStart(8)} ${s.heapMb.toFixed(1).padStart(8)} ${String(s.spansExported).padStart(11)} ` +
        `${String(s.spansDropped).padStart(14)}`,
    );
    return s;
  };
  const timer = setInterval(() => void sample(), intervalMs);

  let next = 0;
  const reporters = sockets.map((path) =>
    startGeneratorReporter(
      path,
      () => (next < jobCount ? soakJob(next++, sectionsTarget, frameFormat) : undefined),
      (job) => {
        sent = {
          jobs: sent.jobs + 1,
          sections: sent.sections + job.sections,
          events: sent.events + job.events,
        };
      },
    ),
  );
  await Promise.all(reporters.map((r) => r.done));
  for (;;) {
    const text = await (await fetch(`${url}/metrics`)).text();
    if (sum(text, 'pyats_job_runs_total') >= jobCount) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const ingestSeconds = (Date.now() - started) / 1000;
  // Idle a little: what is still held now is what the exporter keeps.
  await new Promise((r) => setTimeout(r, Math.max(intervalMs, 5000)));
  clearInterval(timer);
  const last = await sample();
  const text = await (await fetch(`${url}/metrics`)).text();
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
  receiver?.server.close();
  rmSync(dir, { recursive: true, force: true });

  const at = (fraction: number): Sample =>
    samples.find((s) => s.sections >= fraction * sent.sections) ?? (samples[samples.length - 1] as Sample);
  const quarter = at(0.25);
  console.log('');
  console.log(
    `sent ${sent.jobs} jobs, ${sent.sections} sections, ${sent.events} events in ${ingestSeconds.toFixed(0)} s ` +
      `(${Math.round(sent.events / ingestSeconds)} events/s)`,
  );
  console.log(
    `exporter: ${sum(text, 'pyats_job_runs_total')} job runs, ${sum(text, 'pyats_section_results_total')} sections, ` +
      `${sum(text, 'pyats_exporter_reporter_connections_total')} connections, ` +
      `${sum(text, 'pyats_exporter_events_rejected_total')} rejected, ` +
      `${sum(text, 'pyats_sections_abandoned_total')} abandoned, spans exported ${last.spansExported}, ` +
      `dropped ${last.spansDropped} (queue_full ${sum(text, 'pyats_exporter_spans_dropped_total', 'queue_full')})`,
  );
  const rows = [0.25, 0.5, 0.75, 1].map((f) => at(f));
  console.log(
    `RSS at 25/50/75/100% of sections: ${rows.map((s) => s.rssMb.toFixed(1)).join(' / ')} MB; ` +
      `after idling ${last.rssMb.toFixed(1)} MB (heap ${last.heapMb.toFixed(1)} MB); ` +
      `growth 25%→end ${(last.rssMb - quarter.rssMb).toFixed(1)} MB`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
