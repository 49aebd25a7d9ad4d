// The compose, Kubernetes and Grafana files parse and only reference what exists: exporter flags from the
// built binary's --help, Prometheus and Alertmanager flags from the real binaries' --help, the ports the
// exporter listens on, images with explicit tags, files that are in the repository, data source uids that are
// provisioned, and Services / ServiceMonitors that select what the Deployment runs.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, posix, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/exporter-process.js';
import {
  alertRules,
  COMPOSE_FILE,
  dashboard,
  GRAFANA_DASHBOARDS_FILE,
  GRAFANA_DATASOURCES_FILE,
  grafanaAlertGroups,
  KUBERNETES_DIR,
  PROMETHEUS_CONFIG,
  readYaml,
  readYamlDocuments,
  ROOT,
  type Yaml,
} from './shipped.js';
import { ALERTMANAGER, HAVE_ALERTMANAGER, HAVE_PROMETHEUS, PROMETHEUS, runTool } from './tools.js';

const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
const EXPORTER_IMAGE = `pyats-exporter:${PACKAGE.version}`;
const COMPOSE_DIR = dirname(COMPOSE_FILE);

let exporterFlags: Set<string>;
let defaultPort: number;

beforeAll(async () => {
  const help = await runCli(['--help']);
  expect(help.code).toBe(0);
  exporterFlags = new Set(
    [...help.stdout.matchAll(/^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)/gm)].map((m) => m[1] ?? ''),
  );
  defaultPort = Number(/--listen HOST:PORT.*default [\d.]+:(\d+)/.exec(help.stdout)?.[1]);
  expect(exporterFlags.has('--listen')).toBe(true);
  expect(defaultPort).toBeGreaterThan(0);
});

/** Checks an exporter command line (compose `command`, Kubernetes `args`) and returns the port it listens on. */
function checkExporterArgs(args: string[], env: Record<string, string> = {}): number {
  const flags = args.filter((a) => a.startsWith('-'));
  for (const flag of flags) {
    const name = flag.split('=')[0] ?? flag;
    expect(exporterFlags.has(name), `exporter flag ${name} exists`).toBe(true);
  }
  const positional = args.filter((a, i) => !a.startsWith('-') && !(args[i - 1] ?? '').startsWith('--'));
  for (const word of positional) expect(word, 'the only long-running subcommand is demo').toBe('demo');
  const listenAt = args.indexOf('--listen');
  const listen = listenAt >= 0 ? args[listenAt + 1] : env['PYATS_EXPORTER_LISTEN'];
  return listen === undefined ? defaultPort : Number(listen.slice(listen.lastIndexOf(':') + 1));
}

function expectExplicitTag(image: string, where: string): void {
  const m = /^([a-z0-9][a-z0-9._/-]*):([\w][\w.-]*)$/.exec(image);
  expect(m, `${where}: image ${image} has an explicit tag`).not.toBeNull();
  expect(m?.[2], `${where}: ${image} is pinned`).not.toBe('latest');
}

/** Flag names (`--a.b`) of a Prometheus-style binary's --help. */
async function binaryFlags(binary: string): Promise<Set<string>> {
  const { output } = await runTool(binary, ['--help']);
  return new Set(
    [...output.matchAll(/^\s+(?:-\w, )?--(?:\[no-\])?([a-z][a-z0-9.-]*)/gm)].map((m) => `--${m[1]}`),
  );
}

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile?: string };
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
  profiles?: string[];
}

const compose = readYaml(COMPOSE_FILE) as { services: Record<string, ComposeService>; volumes: Yaml };
const services = compose.services;

/** Services that run the exporter image built from the repository's Dockerfile. */
const exporterServices = Object.entries(services).filter(
  ([, s]) => s.build !== undefined && resolve(COMPOSE_DIR, s.build.context) === resolve(ROOT),
);

function containerPorts(service: ComposeService): number[] {
  return (service.ports ?? []).map((p) => Number(p.split(':').at(-1)));
}

/** The container path a compose bind mount or a named volume is mounted at, by source. */
function mounts(service: ComposeService): { source: string; target: string }[] {
  return (service.volumes ?? []).map((v) => {
    const [source = '', target = ''] = v.split(':');
    return { source, target };
  });
}

describe('compose', () => {
  it('has the exporter (demo and --watch), Prometheus, Alertmanager, Jaeger, Grafana and a pyATS job', () => {
    for (const name of [
      'exporter',
      'exporter-demo',
      'prometheus',
      'alertmanager',
      'jaeger',
      'grafana',
      'pyats-job',
    ]) {
      expect(services[name], name).toBeDefined();
    }
    expect(exporterServices.map(([name]) => name).sort()).toEqual(['exporter', 'exporter-demo']);
    expect(services['exporter-demo']?.command?.[0]).toBe('demo');
  });

  it('uses images with explicit tags; the exporter image is tagged with the package version', () => {
    for (const [name, service] of Object.entries(services)) {
      expect(service.image, `${name} has an image`).toBeDefined();
      expectExplicitTag(service.image ?? '', name);
    }
    for (const [name, service] of exporterServices) expect(service.image, name).toBe(EXPORTER_IMAGE);
    const job = services['pyats-job'];
    const jobDockerfile = readFileSync(
      join(resolve(COMPOSE_DIR, job?.build?.context ?? ''), 'Dockerfile'),
      'utf8',
    );
    for (const m of jobDockerfile.matchAll(/^FROM\s+(\S+)/gm))
      expectExplicitTag(m[1] ?? '', 'pyats-job Dockerfile');
  });

  it('runs the exporter with existing flags and publishes the port it listens on', () => {
    for (const [name, service] of exporterServices) {
      const port = checkExporterArgs(service.command ?? [], service.environment);
      expect(containerPorts(service), name).toEqual([port]);
    }
  });

  it('shares the runinfo volume between the pyATS job and the exporter that watches it', () => {
    const watcher = services['exporter'];
    const args = watcher?.command ?? [];
    const watched = args[args.indexOf('--watch') + 1];
    const volume = mounts(watcher ?? {}).find((m) => m.target === watched);
    expect(volume, `a volume is mounted at ${watched}`).toBeDefined();
    expect(compose.volumes).toHaveProperty(volume?.source ?? '');
    const job = services['pyats-job'];
    expect(mounts(job ?? {})).toContainEqual({ source: volume?.source, target: watched });
    const script = readFileSync(
      join(resolve(COMPOSE_DIR, job?.build?.context ?? ''), 'run-forever.sh'),
      'utf8',
    );
    expect(script).toContain(`--runinfo-dir "$dir"`);
    expect(script).toContain(`dir=${watched}/`);
  });

  it('bind-mounts only files of the repository, where the services read them', () => {
    for (const [name, service] of Object.entries(services)) {
      for (const { source } of mounts(service)) {
        if (source.startsWith('.'))
          expect(existsSync(resolve(COMPOSE_DIR, source)), `${name}: ${source}`).toBe(true);
      }
    }
    // A file the service is told to read (a --flag=PATH or an env var PATH) must be inside a mount.
    const inMount = (service: ComposeService, path: string): boolean =>
      mounts(service).some(({ source, target }) => {
        if (!source.startsWith('.') || !path.startsWith(`${target}/`)) return false;
        return existsSync(join(resolve(COMPOSE_DIR, source), posix.relative(target, path)));
      });
    for (const name of ['prometheus', 'alertmanager']) {
      const service = services[name] ?? {};
      const config = (service.command ?? []).find((a) => a.startsWith('--config.file='))?.split('=')[1] ?? '';
      expect(inMount(service, config), `${name} reads ${config}`).toBe(true);
    }
    const grafana = services['grafana'] ?? {};
    const home = grafana.environment?.['GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH'] ?? '';
    expect(inMount(grafana, home), `grafana home dashboard ${home}`).toBe(true);
    const providers = readYaml(GRAFANA_DASHBOARDS_FILE) as { providers: { options: { path: string } }[] };
    for (const p of providers.providers) {
      expect(inMount(grafana, `${p.options.path}/pyats-exporter.json`), p.options.path).toBe(true);
    }
    expect(mounts(grafana).map((m) => m.target)).toContain('/etc/grafana/provisioning');
  });

  it('passes Prometheus and Alertmanager only flags their binaries have', async () => {
    for (const [name, binary, have] of [
      ['prometheus', PROMETHEUS, HAVE_PROMETHEUS],
      ['alertmanager', ALERTMANAGER, HAVE_ALERTMANAGER],
    ] as const) {
      if (!have) {
        expect(process.env['CI'], `${binary} is missing`).toBeFalsy();
        continue;
      }
      const known = await binaryFlags(binary);
      expect(known.size).toBeGreaterThan(10);
      for (const arg of services[name]?.command ?? []) {
        const flag = arg.split('=')[0] ?? arg;
        expect(known.has(flag), `${name} flag ${flag}`).toBe(true);
      }
    }
  });

  it("scrapes every exporter service on its port, and points spans and Grafana at services' published ports", () => {
    const prom = readYaml(PROMETHEUS_CONFIG) as {
      scrape_configs: { job_name: string; honor_labels?: boolean; static_configs: { targets: string[] }[] }[];
    };
    const job = prom.scrape_configs.find((j) => j.job_name === 'pyats-exporter');
    expect(job?.honor_labels).toBe(true);
    const targets = (job?.static_configs ?? []).flatMap((c) => c.targets);
    const expected = exporterServices.map(
      ([name, s]) => `${name}:${checkExporterArgs(s.command ?? [], s.environment)}`,
    );
    expect([...targets].sort()).toEqual([...expected].sort());

    const reachable = (url: string, where: string): void => {
      const { hostname, port } = new URL(url);
      const service = services[hostname];
      expect(service, `${where}: ${hostname} is a compose service`).toBeDefined();
      expect(containerPorts(service ?? {}), `${where}: ${hostname} exposes ${port}`).toContain(Number(port));
    };
    for (const [name, service] of exporterServices) {
      reachable(service.environment?.['OTEL_EXPORTER_OTLP_ENDPOINT'] ?? '', `${name} OTLP`);
    }
    expect(services['jaeger']?.environment?.['COLLECTOR_OTLP_ENABLED']).toBe('true');
    const datasources = readYaml(GRAFANA_DATASOURCES_FILE) as {
      datasources: { name: string; url: string }[];
    };
    for (const ds of datasources.datasources) reachable(ds.url, `Grafana data source ${ds.name}`);
  });
});

describe('Kubernetes', () => {
  const kustomization = readYaml(join(KUBERNETES_DIR, 'kustomization.yaml')) as { resources: string[] };
  const docs = kustomization.resources.flatMap((file) => readYamlDocuments(join(KUBERNETES_DIR, file)));
  const byKind = (kind: string): Yaml & Record<string, never> => {
    const found = docs.filter((d) => d['kind'] === kind);
    expect(found, kind).toHaveLength(1);
    return found[0] as Yaml & Record<string, never>;
  };

  interface Container {
    image: string;
    args: string[];
    env?: { name: string; value: string }[];
    ports: { name: string; containerPort: number }[];
    livenessProbe: { httpGet: { path: string; port: string } };
    readinessProbe: { httpGet: { path: string; port: string } };
    resources: { requests: Record<string, string>; limits: Record<string, string> };
    volumeMounts: { name: string; mountPath: string }[];
  }
  interface Deployment {
    spec: {
      selector: { matchLabels: Record<string, string> };
      template: {
        metadata: { labels: Record<string, string> };
        spec: { securityContext: { runAsNonRoot: boolean; runAsUser: number }; containers: Container[] };
      };
    };
  }
  interface Service {
    metadata: { name: string; labels: Record<string, string> };
    spec: { selector: Record<string, string>; ports: { name: string; port: number; targetPort: string }[] };
  }
  interface ServiceMonitor {
    spec: {
      selector: { matchLabels: Record<string, string> };
      endpoints: { port: string; path: string; honorLabels: boolean }[];
    };
  }

  it('lists only files that exist and holds a Deployment, Service, ServiceMonitor and PrometheusRule', () => {
    for (const file of kustomization.resources)
      expect(existsSync(join(KUBERNETES_DIR, file)), file).toBe(true);
    expect(docs.map((d) => d['kind']).sort()).toEqual([
      'Deployment',
      'PrometheusRule',
      'Service',
      'ServiceMonitor',
    ]);
  });

  it('runs the versioned image with existing flags, probes on /healthz and /readyz, requests and limits', () => {
    const deployment = byKind('Deployment') as unknown as Deployment;
    const pod = deployment.spec.template;
    for (const [k, v] of Object.entries(deployment.spec.selector.matchLabels))
      expect(pod.metadata.labels[k]).toBe(v);
    expect(pod.spec.securityContext.runAsNonRoot).toBe(true);
    expect(pod.spec.securityContext.runAsUser).not.toBe(0);
    const [container] = pod.spec.containers;
    expect(container).toBeDefined();
    if (!container) return;
    expect(container.image).toBe(EXPORTER_IMAGE);
    const env = Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value]));
    const port = checkExporterArgs(container.args, env);
    expect(container.ports).toEqual([{ name: 'metrics', containerPort: port, protocol: 'TCP' }]);
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    for (const kind of ['requests', 'limits'] as const) {
      expect(Object.keys(container.resources[kind]).sort(), kind).toEqual(['cpu', 'memory']);
    }
    const watched = container.args[container.args.indexOf('--watch') + 1];
    expect(container.volumeMounts.map((m) => m.mountPath)).toContain(watched);
  });

  it('selects the pods with the Service and the Service with the ServiceMonitor, honouring labels', () => {
    const pod = (byKind('Deployment') as unknown as Deployment).spec.template;
    const service = byKind('Service') as unknown as Service;
    const monitor = byKind('ServiceMonitor') as unknown as ServiceMonitor;
    // The scrape job (and so `up{job=...}` in PyatsExporterDown) is named after the Service.
    expect(service.metadata.name).toBe('pyats-exporter');
    expect(alertRules().find((r) => r.alert === 'PyatsExporterDown')?.expr).toContain(
      `job="${service.metadata.name}"`,
    );
    for (const [k, v] of Object.entries(service.spec.selector)) expect(pod.metadata.labels[k]).toBe(v);
    const portNames = (pod.spec.containers[0]?.ports ?? []).map((p) => p.name);
    for (const p of service.spec.ports) expect(portNames).toContain(p.targetPort);
    for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels))
      expect(service.metadata.labels[k]).toBe(v);
    for (const endpoint of monitor.spec.endpoints) {
      expect(service.spec.ports.map((p) => p.name)).toContain(endpoint.port);
      expect(endpoint.path).toBe('/metrics');
      expect(endpoint.honorLabels).toBe(true);
    }
  });
});

describe('Grafana provisioning', () => {
  interface Datasource {
    uid: string;
    type: string;
    jsonData?: { exemplarTraceIdDestinations?: { name: string; datasourceUid: string }[] };
  }
  const datasources = (readYaml(GRAFANA_DATASOURCES_FILE) as { datasources: Datasource[] }).datasources;
  const uidType = new Map(datasources.map((d) => [d.uid, d.type]));

  it('links exemplars of the Prometheus data source to the Jaeger data source by trace id', () => {
    const prometheus = datasources.find((d) => d.type === 'prometheus');
    const destinations = prometheus?.jsonData?.exemplarTraceIdDestinations ?? [];
    expect(destinations.map((d) => d.name)).toEqual(['trace_id']);
    for (const d of destinations) expect(uidType.get(d.datasourceUid)).toBe('jaeger');
  });

  it('lays out dashboard panels without overlap, on provisioned data sources, with exemplars on durations', () => {
    const board = dashboard();
    const variables = new Map(board.templating.list.map((v) => [v.name, v]));
    const ids = new Set<number>();
    const cells = new Set<string>();
    for (const panel of board.panels) {
      expect(ids.has(panel.id), `panel id ${panel.id} unique`).toBe(false);
      ids.add(panel.id);
      const { x, y, w, h } = panel.gridPos;
      expect(x + w, panel.title).toBeLessThanOrEqual(24);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          expect(cells.has(`${i},${j}`), `${panel.title} overlaps`).toBe(false);
          cells.add(`${i},${j}`);
        }
      }
      if (panel.type === 'row') continue;
      const uid = panel.datasource?.uid ?? '';
      const variable = variables.get(/^\$\{(\w+)\}$/.exec(uid)?.[1] ?? '');
      expect(variable?.type, `${panel.title} uses a data source variable`).toBe('datasource');
      const dsType = uidType.get(String(variable?.current?.value));
      expect(dsType, `${panel.title}: the variable defaults to a provisioned data source`).toBe(
        panel.datasource?.type,
      );
      expect(variable?.query).toBe(dsType);
      for (const target of panel.targets ?? []) {
        if (dsType === 'prometheus') expect(target.expr, panel.title).toBeTruthy();
      }
    }
    const exemplars = board.panels.flatMap((p) => (p.targets ?? []).filter((t) => t.exemplar === true));
    expect(exemplars.length).toBeGreaterThan(0);
    for (const t of exemplars) expect(t.expr).toContain('pyats_section_duration_seconds_bucket');
  });

  it('mirrors every Prometheus alert as a Grafana-managed rule on the Prometheus data source', () => {
    const rules = grafanaAlertGroups().flatMap((g) => g.rules);
    const prometheusAlerts = alertRules();
    expect(rules.map((r) => r.title).sort()).toEqual(prometheusAlerts.map((r) => r.alert).sort());
    const uids = new Set(rules.map((r) => r.uid));
    expect(uids.size).toBe(rules.length);
    for (const rule of rules) {
      expect(rule.uid).toMatch(/^[a-z0-9-]{1,40}$/);
      expect(rule.data.map((d) => d.refId)).toContain(rule.condition);
      for (const d of rule.data) {
        if (d.datasourceUid !== '__expr__')
          expect(uidType.get(d.datasourceUid), rule.title).toBe('prometheus');
      }
      const source = prometheusAlerts.find((a) => a.alert === rule.title);
      expect(rule.for).toBe(source?.for ?? '0s');
      expect(rule.labels).toEqual(source?.labels);
      expect(rule.annotations).toEqual(source?.annotations);
    }
  });
});
