// What deploy/ ships, read the way its consumers read it: the Prometheus rule files, the Grafana dashboard and
// alert rules, the compose and Kubernetes manifests, and every PromQL expression in them (Grafana variables
// replaced by values a live Prometheus can evaluate).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DEPLOY = join(ROOT, 'deploy');
export const RULES_DIR = join(DEPLOY, 'prometheus', 'rules');
export const PROMETHEUS_CONFIG = join(DEPLOY, 'prometheus', 'prometheus.yaml');
export const RULE_TESTS_DIR = join(DEPLOY, 'prometheus', 'tests');
export const ALERTMANAGER_CONFIG = join(DEPLOY, 'alertmanager', 'alertmanager.yaml');
export const COMPOSE_FILE = join(DEPLOY, 'compose', 'compose.yaml');
export const KUBERNETES_DIR = join(DEPLOY, 'kubernetes');
export const DASHBOARD_FILE = join(DEPLOY, 'grafana', 'dashboards', 'pyats-exporter.json');
export const GRAFANA_ALERTS_FILE = join(DEPLOY, 'grafana', 'provisioning', 'alerting', 'pyats-alerts.yaml');
export const GRAFANA_DATASOURCES_FILE = join(
  DEPLOY,
  'grafana',
  'provisioning',
  'datasources',
  'datasources.yaml',
);
export const GRAFANA_DASHBOARDS_FILE = join(
  DEPLOY,
  'grafana',
  'provisioning',
  'dashboards',
  'dashboards.yaml',
);

export type Yaml = Record<string, unknown>;

export function readYaml(path: string): Yaml {
  // Compose files use YAML 1.1 merge keys (`<<: *exporter`).
  return YAML.parse(readFileSync(path, 'utf8'), { merge: true }) as Yaml;
}

export function readYamlDocuments(path: string): Yaml[] {
  return YAML.parseAllDocuments(readFileSync(path, 'utf8')).map((doc) => doc.toJS() as Yaml);
}

export const RULE_FILES: string[] = readdirSync(RULES_DIR)
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .map((f) => join(RULES_DIR, f));

export interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface RuleGroup {
  name: string;
  rules: Rule[];
}

export function ruleGroups(): RuleGroup[] {
  return RULE_FILES.flatMap((file) => (readYaml(file) as unknown as { groups: RuleGroup[] }).groups);
}

export function alertRules(): Rule[] {
  return ruleGroups().flatMap((g) => g.rules.filter((r) => r.alert !== undefined));
}

/** One PromQL expression the project ships, and where it comes from. */
export interface ShippedExpression {
  where: string;
  expr: string;
}

/**
 * Values for the Grafana variables the dashboard uses, as Grafana would substitute them: every pyATS job and
 * exporter, and windows long enough for increase() over 1 s scrapes.
 */
const GRAFANA_VALUES: Record<string, string> = {
  $__rate_interval: '1m',
  $__interval: '1m',
  $__range: '1h',
  $job: '.+',
  $instance: '.+',
};

export function substituteGrafanaVariables(expr: string): string {
  return expr.replace(
    /\$__rate_interval|\$__interval|\$__range|\$job|\$instance/g,
    (v) => GRAFANA_VALUES[v] ?? v,
  );
}

export function ruleExpressions(): ShippedExpression[] {
  return ruleGroups().flatMap((g) =>
    g.rules.map((r) => ({ where: `rule ${r.alert ?? r.record} (${g.name})`, expr: r.expr.trim() })),
  );
}

interface DashboardTarget {
  expr?: string;
  datasource?: { type?: string; uid?: string };
  exemplar?: boolean;
}

export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: DashboardTarget[];
}

export interface DashboardVariable {
  name: string;
  type: string;
  query: string | { query: string };
  datasource?: { type?: string; uid?: string };
  current?: { value?: unknown };
}

export interface Dashboard {
  uid: string;
  title: string;
  panels: DashboardPanel[];
  templating: { list: DashboardVariable[] };
}

export function dashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard;
}

/** Every Prometheus query of the dashboard's panels (Grafana variables substituted), plus its variables'. */
export function dashboardExpressions(): ShippedExpression[] {
  const board = dashboard();
  const out: ShippedExpression[] = [];
  for (const panel of board.panels) {
    for (const [i, t] of (panel.targets ?? []).entries()) {
      if (t.expr === undefined) continue;
      out.push({ where: `panel "${panel.title}" query ${i + 1}`, expr: substituteGrafanaVariables(t.expr) });
    }
  }
  for (const variable of board.templating.list) {
    if (variable.type !== 'query') continue;
    const query = typeof variable.query === 'string' ? variable.query : variable.query.query;
    const m = /^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$/.exec(query);
    if (!m) throw new Error(`variable ${variable.name}: unsupported query ${query}`);
    // What Grafana asks Prometheus for label_values(metric, label): the label's values on that metric.
    out.push({ where: `variable $${variable.name}`, expr: `group by (${m[2]}) (${m[1]})` });
  }
  return out;
}

interface GrafanaAlertRule {
  uid: string;
  title: string;
  condition: string;
  for: string;
  data: { refId: string; datasourceUid: string; model: { expr?: string } }[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface GrafanaAlertGroup {
  name: string;
  folder: string;
  interval: string;
  rules: GrafanaAlertRule[];
}

export function grafanaAlertGroups(): GrafanaAlertGroup[] {
  return (readYaml(GRAFANA_ALERTS_FILE) as unknown as { groups: GrafanaAlertGroup[] }).groups;
}

export function grafanaAlertExpressions(): ShippedExpression[] {
  return grafanaAlertGroups().flatMap((g) =>
    g.rules.flatMap((r) =>
      r.data
        .filter((d) => d.model.expr !== undefined)
        .map((d) => ({ where: `Grafana rule ${r.title} query ${d.refId}`, expr: String(d.model.expr) })),
    ),
  );
}

/** Every PromQL expression the project ships. */
export function allExpressions(): ShippedExpression[] {
  return [...ruleExpressions(), ...dashboardExpressions(), ...grafanaAlertExpressions()];
}
