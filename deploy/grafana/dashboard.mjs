// The "pyATS test health" Grafana dashboard as code: deploy/generate.mjs renders it to
// deploy/grafana/dashboards/pyats-exporter.json. Edit here (or edit in Grafana, export, and port the change).

/** Counted over `window`, first increments of new series included (see deploy/prometheus/rules). */
function increase(selector, window) {
  return `(${selector} unless ${selector} offset ${window}) or increase(${selector}[${window}])`;
}

const PROMETHEUS = { type: 'prometheus', uid: '${datasource}' };
const JAEGER = { type: 'jaeger', uid: '${tracing}' };
const JOB = 'job=~"$job"';
const INSTANCE = 'instance=~"$instance"';
const FAILED = 'result=~"failed|errored|aborted"';

const RESULT_COLORS = {
  passed: 'green',
  passx: 'blue',
  skipped: 'text',
  blocked: 'yellow',
  failed: 'red',
  errored: 'orange',
  aborted: 'purple',
};

function resultOverrides() {
  return Object.entries(RESULT_COLORS).map(([result, color]) => ({
    matcher: { id: 'byName', options: result },
    properties: [{ id: 'color', value: { mode: 'fixed', fixedColor: color } }],
  }));
}

function target(expr, legendFormat = '', extra = {}) {
  return { datasource: PROMETHEUS, expr, legendFormat, range: true, instant: false, ...extra };
}

function instantTable(expr) {
  return { datasource: PROMETHEUS, expr, format: 'table', range: false, instant: true };
}

function timeseries(
  title,
  description,
  targets,
  { unit = 'short', bars = false, min, max, overrides = [] } = {},
) {
  return {
    type: 'timeseries',
    title,
    description,
    datasource: PROMETHEUS,
    // Bars count what happened in each interval: at least four 15 s scrapes, so increase() has samples.
    ...(bars ? { interval: '1m' } : {}),
    fieldConfig: {
      defaults: {
        unit,
        ...(min === undefined ? {} : { min }),
        ...(max === undefined ? {} : { max }),
        custom: bars
          ? { drawStyle: 'bars', fillOpacity: 80, lineWidth: 1, stacking: { mode: 'normal', group: 'A' } }
          : { drawStyle: 'line', fillOpacity: 10, lineWidth: 1, showPoints: 'auto', spanNulls: false },
      },
      overrides,
    },
    options: {
      legend: {
        displayMode: 'table',
        placement: 'right',
        showLegend: true,
        calcs: bars ? ['sum'] : ['lastNotNull'],
      },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
    targets,
  };
}

function stat(
  title,
  description,
  expr,
  legendFormat,
  { unit = 'short', textMode = 'value_and_name', steps } = {},
) {
  return {
    type: 'stat',
    title,
    description,
    datasource: PROMETHEUS,
    fieldConfig: {
      defaults: {
        unit,
        color: { mode: steps ? 'thresholds' : 'fixed', fixedColor: 'text' },
        thresholds: { mode: 'absolute', steps: steps ?? [{ color: 'text', value: null }] },
      },
      overrides: [],
    },
    options: {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: steps ? 'background' : 'none',
      graphMode: 'none',
      justifyMode: 'auto',
      orientation: 'auto',
      textMode,
    },
    targets: [target(expr, legendFormat)],
  };
}

function table(title, description, expr, rename = {}, { unit = 'short', hideValue = false } = {}) {
  const excludeByName = hideValue ? { Time: true, Value: true } : { Time: true };
  return {
    type: 'table',
    title,
    description,
    datasource: PROMETHEUS,
    fieldConfig: { defaults: { unit }, overrides: [] },
    options: { showHeader: true, cellHeight: 'sm', footer: { show: false, reducer: ['sum'], fields: '' } },
    targets: [instantTable(expr)],
    transformations: [{ id: 'organize', options: { excludeByName, renameByName: rename } }],
  };
}

function row(title) {
  return { type: 'row', title, collapsed: false, panels: [] };
}

/** Panels in reading order with their width; heights and positions are laid out by `layout`. */
function panels() {
  const sectionDurations = `pyats_section_duration_seconds_bucket{${JOB}}`;
  const testcaseDurations = `pyats_section_duration_seconds_bucket{${JOB}, type="Testcase"}`;
  return [
    [24, row('Last run of each job')],
    [
      6,
      stat(
        'Success rate',
        "Easypy's success rate of each job's last run: (passed + passx + skipped) / testcases.",
        `max by (job) (pyats_job_success_ratio{${JOB}})`,
        '{{job}}',
        {
          unit: 'percentunit',
          steps: [
            { color: 'red', value: null },
            { color: 'orange', value: 0.9 },
            { color: 'green', value: 1 },
          ],
        },
      ),
    ],
    [
      6,
      stat(
        'Result',
        "The rolled-up result of each job's last run.",
        `max by (job, result) (pyats_job_last_result{${JOB}}) == 1`,
        '{{job}}: {{result}}',
        { textMode: 'name' },
      ),
    ],
    [
      6,
      stat(
        'Since the last completed run',
        'Time since each job last completed; the PyatsJobNotCompletedRecently alert fires past 24 h.',
        `time() - max by (job) (pyats_job_last_completion_timestamp_seconds{${JOB}})`,
        '{{job}}',
        {
          unit: 's',
          steps: [
            { color: 'green', value: null },
            { color: 'red', value: 86400 },
          ],
        },
      ),
    ],
    [
      6,
      stat(
        'Sections running now',
        'Sections started and not yet finished, over all jobs.',
        `sum(pyats_sections_in_progress{${JOB}})`,
        'sections',
        { textMode: 'value' },
      ),
    ],

    [24, row('Results over time')],
    [
      12,
      timeseries(
        'Testcase results',
        'Testcases (with CommonSetup and CommonCleanup) finished in each interval, by result.',
        [
          target(
            `sum by (result) (${increase(`pyats_testcase_results_total{${JOB}}`, '$__interval')})`,
            '{{result}}',
          ),
        ],
        { bars: true, overrides: resultOverrides() },
      ),
    ],
    [
      12,
      timeseries(
        'Section results by type and result',
        'Every finished section (Testcase, TestSection, Step, Plugin, ...) in each interval.',
        [
          target(
            `sum by (type, result) (${increase(`pyats_section_results_total{${JOB}}`, '$__interval')})`,
            '{{type}} {{result}}',
          ),
        ],
        { bars: true },
      ),
    ],

    [24, row('Jobs')],
    [
      8,
      timeseries(
        'Success rate per job',
        "Easypy's success rate of each job's latest run.",
        [target(`max by (job) (pyats_job_success_ratio{${JOB}})`, '{{job}}')],
        { unit: 'percentunit', min: 0, max: 1 },
      ),
    ],
    [
      8,
      timeseries(
        'Job duration',
        'Mean duration of the runs that finished in each interval (a point per interval with a finished run).',
        [
          target(
            `sum by (job) (${increase(`pyats_job_duration_seconds_sum{${JOB}}`, '$__interval')})` +
              ` / sum by (job) (${increase(`pyats_job_duration_seconds_count{${JOB}}`, '$__interval')})`,
            '{{job}}',
          ),
        ],
        { unit: 's' },
      ),
    ],
    [
      8,
      timeseries(
        'Job runs by result',
        'Job runs finished in each interval, by rolled-up result.',
        [
          target(
            `sum by (job, result) (${increase(`pyats_job_runs_total{${JOB}}`, '$__interval')})`,
            '{{job}} {{result}}',
          ),
        ],
        { bars: true },
      ),
    ],

    [24, row('Testcases')],
    [
      12,
      table(
        'Testcases not passing now',
        'Testcases whose latest result is failed, errored, aborted or blocked.',
        `max by (job, task, testcase, result) (pyats_testcase_last_result{${JOB}, result=~"failed|errored|aborted|blocked"}) == 1`,
        { Value: 'latest' },
      ),
    ],
    [
      12,
      table(
        'Most failing testcases',
        'Failed, errored or aborted runs of each testcase over the dashboard time range (top 10).',
        `topk(10, sum by (job, task, testcase) (${increase(`pyats_testcase_results_total{${JOB}, ${FAILED}}`, '$__range')}) > 0)`,
        { Value: 'failures' },
      ),
    ],
    [
      12,
      timeseries(
        'Slowest testcases (p95 runtime of Testcases; click an exemplar for its trace)',
        '95th percentile of Testcase runtimes per job and task. Each exemplar dot is one testcase run: it links ' +
          'to its trace in Jaeger, which names the testcase.',
        [
          target(
            `histogram_quantile(0.95, sum by (job, task, le) (${increase(testcaseDurations, '$__rate_interval')}))`,
            '{{job}} {{task}}',
            { exemplar: true },
          ),
        ],
        { unit: 's' },
      ),
    ],
    [
      12,
      table(
        'Slowest section types',
        '95th percentile runtime of each section type over the dashboard time range (top 10).',
        `topk(10, histogram_quantile(0.95, sum by (job, task, type, le) (${increase(sectionDurations, '$__range')})) > 0)`,
        { Value: 'p95' },
        { unit: 's' },
      ),
    ],

    [24, row('History between runs')],
    [
      8,
      table(
        'New failures',
        "Testcases that passed in their job's previous run and fail in its latest (the PyatsTestcaseNewlyFailing " +
          'alert); each stays listed until the job runs again.',
        `max by (job, task, testcase, result) (pyats_testcase_last_result{${JOB}, ${FAILED}}) == 1` +
          ` and on (job, task, testcase)` +
          ` max by (job, task, testcase) (pyats_testcase_previous_result{${JOB}, result=~"passed|passx"}) == 1`,
        { result: 'now' },
        { hideValue: true },
      ),
    ],
    [
      8,
      table(
        'Flakiest testcases',
        'Flips between pass and fail from one run to the next over the dashboard time range (top 10); the ' +
          'PyatsTestcaseFlaky alert fires at 3 in 7 days.',
        `topk(10, max by (job, task, testcase) (${increase(`pyats_testcase_result_flips_total{${JOB}}`, '$__range')}) > 0)`,
        { Value: 'flips' },
      ),
    ],
    [
      8,
      table(
        'Slowest-growing testcases',
        "Each testcase's latest duration over its median of the last 7 days of runs (top 10 above 1); the " +
          'PyatsTestcaseSlowerThanUsual alert fires above 2 (and 30 s more).',
        `topk(10, max by (job, task, testcase) (pyats_testcase_last_duration_seconds{${JOB}})` +
          ` / job_task_testcase:pyats_testcase_last_duration_seconds:median7d{${JOB}} > 1)`,
        { Value: 'latest / median' },
      ),
    ],

    [24, row('Traces')],
    [
      24,
      {
        type: 'table',
        title: 'Recent job traces',
        description: 'The latest traces in Jaeger (one per job run); click one to open it.',
        datasource: JAEGER,
        fieldConfig: { defaults: {}, overrides: [] },
        options: { showHeader: true, cellHeight: 'sm' },
        targets: [{ datasource: JAEGER, queryType: 'search', service: 'pyats-exporter', limit: 20 }],
      },
    ],

    [24, row('In progress')],
    [
      12,
      timeseries('Sections in progress', 'Sections started and not yet finished, by job and type.', [
        target(`sum by (job, type) (pyats_sections_in_progress{${JOB}})`, '{{job}} {{type}}'),
      ]),
    ],
    [
      12,
      timeseries(
        'Sections abandoned',
        'Sections still open when their job ended (disconnect, shutdown), reported unfinished.',
        [
          target(
            `sum by (job, type) (${increase(`pyats_sections_abandoned_total{${JOB}}`, '$__interval')})`,
            '{{job}} {{type}}',
          ),
        ],
        { bars: true },
      ),
    ],
    [24, row('Exporter health')],
    [
      8,
      table(
        'Exporters',
        'Each scraped exporter: up (1) or not, its version and Node.js version.',
        `max by (instance, version, nodejs_version) (pyats_exporter_build_info{${INSTANCE}})` +
          ` * on (instance) group_left max by (instance) (up{job="pyats-exporter", ${INSTANCE}})`,
        { Value: 'up' },
      ),
    ],
    [
      8,
      timeseries(
        'Events received and rejected',
        'Raw reporter events per second by source, and refused events or frames by reason.',
        [
          target(
            `sum by (instance, source) (rate(pyats_exporter_events_received_total{${INSTANCE}}[$__rate_interval]))`,
            'received {{source}} {{instance}}',
          ),
          target(
            `sum by (instance, reason) (rate(pyats_exporter_events_rejected_total{${INSTANCE}}[$__rate_interval])) > 0`,
            'rejected {{reason}} {{instance}}',
          ),
        ],
        { unit: 'ops' },
      ),
    ],
    [
      8,
      timeseries(
        'Reporter connections',
        'Open reporter socket connections, and disconnections per second by reason.',
        [
          target(
            `sum by (instance) (pyats_exporter_reporter_connections_open{${INSTANCE}})`,
            'open {{instance}}',
          ),
          target(
            `sum by (instance, reason) (rate(pyats_exporter_reporter_disconnects_total{${INSTANCE}}[$__rate_interval]))`,
            'closed {{reason}} {{instance}}',
          ),
        ],
      ),
    ],
    [
      8,
      table(
        'Reporter sockets',
        'Each watched reporter socket: 1 while connected, 0 while waiting for it.',
        `max by (instance, socket) (pyats_exporter_reporter_up{${INSTANCE}})`,
        { Value: 'connected' },
      ),
    ],
    [
      8,
      timeseries(
        'Spans exported and dropped',
        'Spans per second handed to the trace backend, and lost by reason.',
        [
          target(
            `sum by (instance) (rate(pyats_exporter_spans_exported_total{${INSTANCE}}[$__rate_interval]))`,
            'exported {{instance}}',
          ),
          target(
            `sum by (instance, reason) (rate(pyats_exporter_spans_dropped_total{${INSTANCE}}[$__rate_interval]))`,
            'dropped {{reason}} {{instance}}',
          ),
        ],
        { unit: 'ops' },
      ),
    ],
    [
      8,
      timeseries(
        'Exporter process',
        'CPU (cores), resident memory and event-loop lag (p99) of each exporter.',
        [
          target(
            `rate(process_cpu_seconds_total{job="pyats-exporter", ${INSTANCE}}[$__rate_interval])`,
            'cpu {{instance}}',
          ),
          target(
            `process_resident_memory_bytes{job="pyats-exporter", ${INSTANCE}} / 1e9`,
            'memory GB {{instance}}',
          ),
          target(
            `nodejs_eventloop_lag_p99_seconds{job="pyats-exporter", ${INSTANCE}}`,
            'loop lag p99 s {{instance}}',
          ),
        ],
      ),
    ],
  ];
}

const PANEL_HEIGHT = { row: 1, stat: 4 };

/** Places panels left to right, wrapping at 24 columns, and numbers them. */
function layout(entries) {
  let x = 0;
  let y = 0;
  let rowHeight = 0;
  return entries.map(([w, panel], index) => {
    const h = PANEL_HEIGHT[panel.type] ?? 8;
    if (x + w > 24) {
      x = 0;
      y += rowHeight;
      rowHeight = 0;
    }
    const placed = { id: index + 1, gridPos: { h, w, x, y }, ...panel };
    if (placed.targets)
      placed.targets = placed.targets.map((t, i) => ({ refId: String.fromCharCode(65 + i), ...t }));
    x += w;
    rowHeight = Math.max(rowHeight, h);
    return placed;
  });
}

function datasourceVariable(name, label, pluginId, uid) {
  return {
    name,
    label,
    type: 'datasource',
    query: pluginId,
    current: { text: uid, value: uid },
    hide: 0,
    refresh: 1,
    regex: '',
    options: [],
  };
}

function labelVariable(name, label, metric, labelName) {
  const query = `label_values(${metric}, ${labelName})`;
  return {
    name,
    label,
    type: 'query',
    datasource: PROMETHEUS,
    definition: query,
    query: { query, refId: `${name}-values` },
    refresh: 2,
    sort: 1,
    includeAll: true,
    multi: true,
    allValue: '.+',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    hide: 0,
    options: [],
    regex: '',
  };
}

export function buildDashboard() {
  return {
    uid: 'pyats-exporter',
    title: 'pyATS test health',
    description:
      'Results, durations and health of pyATS jobs reported by pyats-exporter. Generated by deploy/generate.mjs.',
    tags: ['pyats', 'pyats-exporter'],
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    time: { from: 'now-24h', to: 'now' },
    timepicker: {},
    timezone: 'browser',
    refresh: '1m',
    links: [],
    annotations: {
      list: [
        {
          builtIn: 1,
          datasource: { type: 'grafana', uid: '-- Grafana --' },
          enable: true,
          hide: true,
          iconColor: 'rgba(0, 211, 255, 1)',
          name: 'Annotations & Alerts',
          type: 'dashboard',
        },
      ],
    },
    templating: {
      list: [
        datasourceVariable('datasource', 'Prometheus', 'prometheus', 'prometheus'),
        datasourceVariable('tracing', 'Jaeger', 'jaeger', 'jaeger'),
        labelVariable('job', 'pyATS job', 'pyats_section_results_total', 'job'),
        labelVariable('instance', 'Exporter', 'pyats_exporter_build_info', 'instance'),
      ],
    },
    panels: layout(panels()),
  };
}
