// The shipped Prometheus config and rules against real parts: Debian's Prometheus scraping the built exporter
// (fed by CPython reporter stand-ins, a reporter sending garbage, and four runs of one job over HTTP ingest)
// and sending alerts to Debian's Alertmanager running the shipped alertmanager.yaml. Asserts through their
// HTTP APIs that the testcase failure alert fires and reaches Alertmanager, that the history alerts (new
// failure, flaky, slower than usual) fire for the runs' testcases, that every alerting rule is active
// (pending or firing) and every PromQL expression of the rules, the dashboard and the Grafana alerts returns
// data — except the absence alert, which by design returns nothing while jobs complete.
//
// The shipped rules are loaded unchanged: only the intervals (1 s), the targets and the Alertmanager address
// differ from prometheus.yaml. Rules with a long `for:` are therefore seen pending, not firing; the failure
// alerts have no `for:` and fire at once.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import YAML from 'yaml';
import { runExporter, type ExporterProcess } from '../helpers/exporter-process.js';
import { postRun, type JobRun } from '../helpers/job-runs.js';
import { startStandin, type Standin, type StandinJobNode } from '../helpers/standin.js';
import {
  ALERTMANAGER_CONFIG,
  alertRules,
  allExpressions,
  PROMETHEUS_CONFIG,
  readYaml,
  RULE_FILES,
  type ShippedExpression,
} from './shipped.js';
import {
  ALERTMANAGER,
  freePort,
  HAVE_ALERTMANAGER,
  HAVE_PROMETHEUS,
  itPrometheus,
  PROMETHEUS,
  startServer,
  type ServerProcess,
} from './tools.js';

/** Alerts whose expression is empty while things work: absence alerts. Their expressions are too. */
const EXPECTED_EMPTY_ALERTS = new Set(['PyatsNoJobCompleted']);

function expectedEmpty(e: ShippedExpression): boolean {
  return [...EXPECTED_EMPTY_ALERTS].some((name) => new RegExp(`\\b${name}\\b`).test(e.where));
}

/**
 * Recording rules whose expression has data only at the evaluation right after a testcase run (one sample per
 * run): left out of "returns data", checked through the series they record instead.
 */
const PER_RUN_RECORD = 'job_task_testcase_instance:pyats_testcase_last_duration_seconds:per_run';

function perRunOnly(e: ShippedExpression): boolean {
  return e.where.includes(`rule ${PER_RUN_RECORD} `);
}

/**
 * Four runs of one job, ten minutes apart, as real pyATS 23.2 names them (TestSuite `job.<time>`, job `job`):
 * verify_flap passes, fails, passes and fails (three flips, and a new failure in the last run); verify_latency
 * passes every time, in 2 s, then 200 s.
 */
function historyRuns(): JobRun[] {
  const first = Date.now() - 50 * 60_000;
  const flap = ['passed', 'failed', 'passed', 'failed'] as const;
  return flap.map((result, i) => ({
    name: 'job',
    start: new Date(first + i * 10 * 60_000),
    testcases: [
      {
        id: 'verify_flap',
        result,
        runtime: 3,
        ...(result === 'failed' ? { reason: 'peer 10.0.0.2 down' } : {}),
      },
      { id: 'verify_latency', result: 'passed', runtime: i === 3 ? 200 : 2 },
    ],
  }));
}

const HISTORY_ALERTS = ['PyatsTestcaseNewlyFailing', 'PyatsTestcaseFlaky', 'PyatsTestcaseSlowerThanUsual'];

/** A job that last completed two days ago: the "not completed recently" rule has something to report. */
const STALE_JOB: StandinJobNode = {
  type: 'TestSuite',
  id: 'weekly_soak',
  children: [
    {
      type: 'Task',
      id: 'Task-1',
      name: 'soak',
      children: [
        { type: 'CommonSetup', id: 'common_setup', result: 'passed', duration_s: 2 },
        { type: 'Testcase', id: 'verify_uptime', result: 'passed', duration_s: 60 },
        { type: 'CommonCleanup', id: 'common_cleanup', result: 'passed', duration_s: 1 },
      ],
    },
  ],
};

interface PromResponse<T> {
  status: string;
  data: T;
  error?: string;
}
interface Alert {
  labels: Record<string, string>;
  state: string;
  value: string;
}
interface RuleState {
  type: 'alerting' | 'recording';
  name: string;
  health: string;
  lastError?: string;
  state?: string;
}

async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url);
  const body = (await response.json()) as T;
  if (!response.ok) throw new Error(`${url} answered ${response.status}: ${JSON.stringify(body)}`);
  return body;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface GarbageReporter {
  close(): Promise<void>;
}

/** A reporter socket that answers every connection with one frame that is not a pickle. */
function startGarbageReporter(path: string): Promise<GarbageReporter> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const payload = Buffer.from('definitely not a pickle');
    const header = Buffer.alloc(8);
    header.writeBigUInt64BE(BigInt(payload.length));
    socket.write(Buffer.concat([header, payload]));
  });
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      // server.close() waits for open connections: end them first.
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return new Promise((resolve) => server.listen(path, () => resolve({ close })));
}

const RUN = HAVE_PROMETHEUS || Boolean(process.env['CI']);

describe('shipped rules and dashboard on a real Prometheus', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pyats-deploy-live-'));
  const standins: Standin[] = [];
  let garbage: GarbageReporter | undefined;
  let exporter: ExporterProcess | undefined;
  let prometheus: ServerProcess | undefined;
  let alertmanager: ServerProcess | undefined;
  let failedTestcase = '';

  const query = async (expr: string): Promise<unknown[]> => {
    const url = `${prometheus!.url}/api/v1/query?query=${encodeURIComponent(expr)}`;
    const body = await getJson<PromResponse<{ resultType: string; result: unknown }>>(url);
    if (body.data.resultType === 'scalar' || body.data.resultType === 'string') return [body.data.result];
    return body.data.result as unknown[];
  };

  beforeAll(async () => {
    if (!RUN) return;
    const failing = await startStandin({ jobId: 'nightly_regression', seed: 3 });
    standins.push(failing);
    standins.push(await startStandin({ jobTree: STALE_JOB, startEpoch: Date.now() / 1000 - 2 * 86400 }));
    // Ends abruptly mid-job: its open sections are reported abandoned. Paced, so it does not close before the
    // exporter's subscribe request arrives (the exporter then loses the whole stream on EPIPE).
    standins.push(await startStandin({ jobId: 'flaky_lab', seed: 5, dropAfter: 30, eventDelayMs: 20 }));
    // Still running during the whole test: sections in progress.
    standins.push(await startStandin({ jobId: 'soak_test', seed: 2, eventDelayMs: 1500 }));
    const garbagePath = join(dir, 'garbage.sock');
    garbage = await startGarbageReporter(garbagePath);

    // Spans go to a port nobody listens on, so they are dropped (export_failed) as a broken collector would.
    const otlpPort = await freePort();
    exporter = await runExporter(
      [
        '--listen',
        '127.0.0.1:0',
        '--ingest-http',
        ...[...standins.map((s) => s.path), garbagePath].flatMap((path) => ['--reporter-socket', path]),
      ],
      {
        OTEL_TRACES_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${otlpPort}`,
        OTEL_EXPORTER_OTLP_TIMEOUT: '1000',
        OTEL_BSP_SCHEDULE_DELAY: '200',
      },
    );
    const manifest = await failing.manifest();
    failedTestcase = manifest.sections.find((s) => s.type === 'Testcase' && s.result === 'failed')?.id ?? '';

    const amPort = await freePort();
    if (HAVE_ALERTMANAGER) {
      alertmanager = await startServer(
        ALERTMANAGER,
        [
          `--config.file=${ALERTMANAGER_CONFIG}`,
          `--storage.path=${join(dir, 'alertmanager')}`,
          `--web.listen-address=127.0.0.1:${amPort}`,
          // No gossip: one instance, and no second port to collide with other tests.
          '--cluster.listen-address=',
        ],
        `http://127.0.0.1:${amPort}`,
      );
    }

    // The shipped config with 1 s intervals, the exporter (and a dead target) instead of the compose
    // hostnames, the shipped rule files by absolute path, and the local Alertmanager.
    const shipped = readYaml(PROMETHEUS_CONFIG) as {
      global: Record<string, unknown>;
      scrape_configs: { job_name: string; honor_labels?: boolean; static_configs: unknown }[];
    };
    const deadPort = await freePort();
    const exporterTarget = new URL(exporter.url).host;
    const config = {
      ...shipped,
      global: { ...shipped.global, scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '1s' },
      rule_files: RULE_FILES,
      alerting: { alertmanagers: [{ static_configs: [{ targets: [`127.0.0.1:${amPort}`] }] }] },
      scrape_configs: shipped.scrape_configs.map((job) => ({
        ...job,
        static_configs: [{ targets: [exporterTarget, `127.0.0.1:${deadPort}`] }],
      })),
    };
    const configPath = join(dir, 'prometheus.yaml');
    writeFileSync(configPath, YAML.stringify(config));
    const promPort = await freePort();
    prometheus = await startServer(
      PROMETHEUS,
      [
        `--config.file=${configPath}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
        '--enable-feature=exemplar-storage',
        '--log.level=warn',
      ],
      `http://127.0.0.1:${promPort}`,
    );

    // The runs one after the other, each scraped and through the history recording rules before the next, as
    // runs minutes apart would be.
    for (const [i, run] of historyRuns().entries()) {
      await postRun(exporter.url, run);
      await until(
        `run ${i + 1} recorded`,
        async () => {
          const [sample] = (await query(
            'job_task_testcase_instance:pyats_testcase_verdicts:sum{job="job", testcase="verify_latency"}',
          )) as { value: [number, string] }[];
          return sample?.value[1] === String(i + 1) ? true : undefined;
        },
        20_000,
      );
    }
  }, 120_000);

  afterAll(async () => {
    await prometheus?.stop();
    await alertmanager?.stop();
    await exporter?.stop();
    for (const standin of standins) await standin.kill();
    await garbage?.close();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  itPrometheus(
    'the testcase failure alert fires for the failed testcase and reaches Alertmanager',
    async () => {
      expect(failedTestcase, 'the stand-in job has a failed testcase').not.toBe('');
      const alert = await until(
        'PyatsTestcaseFailed firing',
        async () => {
          const body = await getJson<PromResponse<{ alerts: Alert[] }>>(`${prometheus!.url}/api/v1/alerts`);
          // The history test's runs (job `job`) fire it too: this test is about the stand-in's job.
          return body.data.alerts.find(
            (a) =>
              a.labels['alertname'] === 'PyatsTestcaseFailed' &&
              a.state === 'firing' &&
              a.labels['job'] === 'nightly_regression',
          );
        },
        40_000,
      );
      // honor_labels kept the pyATS job name in `job`.
      expect(alert.labels).toMatchObject({
        job: 'nightly_regression',
        task: 'Task-1',
        testcase: failedTestcase,
      });

      if (!HAVE_ALERTMANAGER) {
        expect(process.env['CI'], `${ALERTMANAGER} is missing`).toBeFalsy();
        return;
      }
      const received = await until(
        'the alert in Alertmanager',
        async () => {
          const alerts = await getJson<{ labels: Record<string, string> }[]>(
            `${alertmanager!.url}/api/v2/alerts`,
          );
          return alerts.find(
            (a) => a.labels['alertname'] === 'PyatsTestcaseFailed' && a.labels['testcase'] === failedTestcase,
          );
        },
        30_000,
      );
      expect(received.labels['severity']).toBe('warning');
    },
    90_000,
  );

  itPrometheus(
    'a testcase that passed, failed, passed and failed in four runs fires the new-failure and flaky alerts',
    async () => {
      const history = await until(
        'the history alerts firing',
        async () => {
          const body = await getJson<PromResponse<{ alerts: Alert[] }>>(`${prometheus!.url}/api/v1/alerts`);
          const firing = body.data.alerts.filter(
            (a) => a.state === 'firing' && HISTORY_ALERTS.includes(a.labels['alertname'] ?? ''),
          );
          return HISTORY_ALERTS.every((name) => firing.some((a) => a.labels['alertname'] === name))
            ? firing
            : undefined;
        },
        40_000,
      );
      // Only the job run four times has history: every other job ran once.
      expect(
        history.map((a) => [a.labels['alertname'], a.labels['job'], a.labels['testcase']]).sort(),
      ).toEqual([
        ['PyatsTestcaseFlaky', 'job', 'verify_flap'],
        ['PyatsTestcaseNewlyFailing', 'job', 'verify_flap'],
        ['PyatsTestcaseSlowerThanUsual', 'job', 'verify_latency'],
      ]);
      const byName = (name: string): Alert | undefined => history.find((a) => a.labels['alertname'] === name);
      expect(byName('PyatsTestcaseNewlyFailing')?.labels).toMatchObject({
        task: 'Task-1',
        result: 'failed',
        severity: 'warning',
      });
      expect(Number(byName('PyatsTestcaseFlaky')?.value)).toBe(3);
      expect(Number(byName('PyatsTestcaseSlowerThanUsual')?.value)).toBe(200);

      const values = async (expr: string): Promise<Record<string, number>> =>
        Object.fromEntries(
          ((await query(expr)) as { metric: Record<string, string>; value: [number, string] }[]).map((r) => [
            r.metric['testcase'] ?? '',
            Number(r.value[1]),
          ]),
        );
      expect(await values('pyats_testcase_result_flips_total{job="job"}')).toEqual({ verify_flap: 3 });
      expect(await values('pyats_testcase_previous_result{job="job", result="passed"} == 1')).toEqual({
        common_setup: 1,
        verify_flap: 1,
        verify_latency: 1,
      });
      // One duration sample per run, whatever the scrape and evaluation intervals (1 s here).
      expect(await values(`count_over_time(${PER_RUN_RECORD}{job="job"}[1h])`)).toEqual({
        common_setup: 4,
        verify_flap: 4,
        verify_latency: 4,
      });
      expect(
        await values('job_task_testcase:pyats_testcase_last_duration_seconds:median7d{job="job"}'),
      ).toEqual({ common_setup: 0.5, verify_flap: 3, verify_latency: 2 });
    },
    60_000,
  );

  itPrometheus(
    'pyATS series keep their job label (honor_labels) and the exporter health series the scrape job',
    async () => {
      expect(await query('pyats_job_runs_total{job="nightly_regression"}')).not.toHaveLength(0);
      expect(await query('pyats_exporter_build_info{job="pyats-exporter"}')).not.toHaveLength(0);
      expect(await query('{exported_job!=""}')).toHaveLength(0);
    },
    30_000,
  );

  itPrometheus(
    'every shipped PromQL expression returns data, except the absence alert',
    async () => {
      const expressions = allExpressions();
      expect(expressions.filter(perRunOnly)).toHaveLength(1);
      const results = new Map<ShippedExpression, number>();
      // Data arrives over a few scrapes (the running job, the dropped spans): poll until all is there.
      await until(
        'every expression to return data',
        async () => {
          for (const e of expressions) results.set(e, (await query(e.expr)).length);
          return expressions.every((e) => expectedEmpty(e) || perRunOnly(e) || (results.get(e) ?? 0) > 0)
            ? true
            : undefined;
        },
        40_000,
      ).catch(() => undefined);
      const empty = expressions.filter((e) => results.get(e) === 0 && !expectedEmpty(e) && !perRunOnly(e));
      const exposition = empty.length > 0 ? await exporter!.scrape() : '';
      expect(
        empty.map((e) => `${e.where}: ${e.expr}`),
        `the exporter exposed:\n${exposition
          .split('\n')
          .filter((l) => l.startsWith('pyats_'))
          .join('\n')}`,
      ).toEqual([]);
      const absent = expressions.filter((e) => expectedEmpty(e));
      expect(absent.length).toBeGreaterThan(0);
      for (const e of absent) expect(results.get(e), e.where).toBe(0);
    },
    90_000,
  );

  itPrometheus(
    'every alerting rule is pending or firing (except the absence alert) and every rule evaluates cleanly',
    async () => {
      const rulesOf = async (): Promise<RuleState[]> => {
        const body = await getJson<PromResponse<{ groups: { rules: RuleState[] }[] }>>(
          `${prometheus!.url}/api/v1/rules`,
        );
        return body.data.groups.flatMap((g) => g.rules);
      };
      const names = alertRules().map((r) => r.alert!);
      const rules = await until(
        'every alert active',
        async () => {
          const current = await rulesOf();
          const active = current
            .filter((r) => r.type === 'alerting' && r.state !== 'inactive')
            .map((r) => r.name);
          return names.every((n) => EXPECTED_EMPTY_ALERTS.has(n) || active.includes(n)) ? current : undefined;
        },
        40_000,
      ).catch(rulesOf);
      for (const rule of rules) expect(rule.health, `${rule.name}: ${rule.lastError ?? ''}`).toBe('ok');
      const state = Object.fromEntries(
        rules.filter((r) => r.type === 'alerting').map((r) => [r.name, r.state]),
      );
      for (const name of names) {
        if (EXPECTED_EMPTY_ALERTS.has(name)) expect(state[name], name).toBe('inactive');
        else expect(['pending', 'firing'], name).toContain(state[name]);
      }
    },
    90_000,
  );
});
