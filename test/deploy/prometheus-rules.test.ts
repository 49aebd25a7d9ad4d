// The shipped Prometheus config, rules and their unit tests through the real promtool; the Alertmanager
// config through amtool; every PromQL expression of rules, dashboard and Grafana alerts parsed by promtool;
// and the generated copies (PrometheusRule, Grafana alerts, dashboard) up to date with their sources.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { itPromtool, PROMTOOL } from '../helpers/promtool.js';
import {
  ALERTMANAGER_CONFIG,
  allExpressions,
  KUBERNETES_DIR,
  PROMETHEUS_CONFIG,
  readYaml,
  ROOT,
  RULE_FILES,
  RULE_TESTS_DIR,
  ruleGroups,
  type Yaml,
} from './shipped.js';
import { AMTOOL, itAlertmanager, runTool } from './tools.js';

const TEST_FILES = readdirSync(RULE_TESTS_DIR)
  .filter((f) => f.endsWith('.test.yaml'))
  .sort()
  .map((f) => join(RULE_TESTS_DIR, f));

const tmp = mkdtempSync(join(tmpdir(), 'pyats-deploy-rules-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('Prometheus config and rules (promtool)', () => {
  itPromtool('promtool check config accepts prometheus.yaml and the rule files it loads', async () => {
    const { code, output } = await runTool(PROMTOOL, ['check', 'config', PROMETHEUS_CONFIG]);
    expect(output).toContain(`${RULE_FILES.length} rule files found`);
    expect(code, output).toBe(0);
  });

  itPromtool('promtool check rules accepts every rule file', async () => {
    const { code, output } = await runTool(PROMTOOL, ['check', 'rules', ...RULE_FILES]);
    expect(code, output).toBe(0);
  });

  itPromtool('promtool test rules passes every unit test file', async () => {
    expect(TEST_FILES.length).toBeGreaterThan(0);
    const { code, output } = await runTool(PROMTOOL, ['test', 'rules', ...TEST_FILES]);
    expect(code, output).toBe(0);
    expect(output).not.toContain('FAILED');
  });

  it('every alert has a unit test where it fires and one where it does not, every record one test', () => {
    const fires = new Set<string>();
    const quiet = new Set<string>();
    const records = new Set<string>();
    for (const file of TEST_FILES) {
      const doc = readYaml(file) as {
        tests: {
          alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[];
          promql_expr_test?: { expr: string }[];
        }[];
      };
      for (const test of doc.tests) {
        for (const a of test.alert_rule_test ?? [])
          ((a.exp_alerts ?? []).length > 0 ? fires : quiet).add(a.alertname);
        for (const p of test.promql_expr_test ?? []) records.add(p.expr.trim());
      }
    }
    for (const rule of ruleGroups().flatMap((g) => g.rules)) {
      if (rule.alert !== undefined) {
        expect(fires.has(rule.alert), `${rule.alert} has a firing case`).toBe(true);
        expect(quiet.has(rule.alert), `${rule.alert} has a non-firing case`).toBe(true);
      } else {
        expect(records.has(rule.record ?? ''), `${rule.record} has a test`).toBe(true);
      }
    }
  });

  itPromtool('every PromQL expression in rules, dashboard and Grafana alerts parses', async () => {
    const expressions = allExpressions();
    expect(expressions.length).toBeGreaterThan(30);
    // promtool parses (and type-checks) expressions only inside rule files: one recording rule each.
    const file = join(tmp, 'all-expressions.yaml');
    const rules = expressions.map((e, i) => ({ record: `shipped_expression_${i}`, expr: e.expr }));
    writeFileSync(file, YAML.stringify({ groups: [{ name: 'shipped', rules }] }));
    const { code, output } = await runTool(PROMTOOL, ['check', 'rules', file]);
    const where = expressions.map((e, i) => `${i}: ${e.where}: ${e.expr}`).join('\n');
    expect(code, `${output}\n${where}`).toBe(0);
  });
});

describe('Alertmanager config (amtool)', () => {
  itAlertmanager('amtool check-config accepts alertmanager.yaml', async () => {
    const { code, output } = await runTool(AMTOOL, ['check-config', ALERTMANAGER_CONFIG]);
    expect(code, output).toBe(0);
  });
});

describe('generated copies', () => {
  it('deploy/generate.mjs --check finds the PrometheusRule, Grafana alerts and dashboard up to date', async () => {
    const { code, output } = await runTool(process.execPath, ['deploy/generate.mjs', '--check'], {
      cwd: ROOT,
    });
    expect(code, output).toBe(0);
  });

  it('the Kubernetes PrometheusRule carries exactly the rule groups of deploy/prometheus/rules', () => {
    const rule = readYaml(join(KUBERNETES_DIR, 'prometheusrule.yaml')) as Yaml & {
      spec: { groups: unknown };
    };
    expect(rule['kind']).toBe('PrometheusRule');
    expect(rule.spec.groups).toEqual(ruleGroups());
  });
});
