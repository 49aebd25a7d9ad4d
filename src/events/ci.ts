// Where a job ran: the CI run that started it, from the job's environment. Easypy writes that environment
// to `env.txt` in the job's runinfo directory (section "Environment Variables", `NAME<spaces>: value` per
// line, observed on pyATS 23.2); the bridge reads it from its own process. Pure: text or a map in, a
// typed context out.

/** A W3C trace context parent (https://www.w3.org/TR/trace-context/#traceparent-header). */
export interface TraceParent {
  traceId: string;
  spanId: string;
  sampled: boolean;
}

/** The CI run a job belongs to, as OpenTelemetry's `cicd.*` attributes describe it. */
export interface CiContext {
  /** The CI's span (TRACEPARENT): the job's root span becomes its child, in its trace. */
  parent?: TraceParent;
  /** `cicd.pipeline.name`. */
  pipelineName?: string;
  /** `cicd.pipeline.run.id`. */
  runId?: string;
  /** `cicd.pipeline.task.run.url.full`: the CI job's page. */
  taskRunUrl?: string;
  /** Which CI it is: `jenkins`, `github_actions`, `gitlab_ci`. */
  system?: string;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** A `traceparent` value, or undefined when it is not a valid one (all-zero ids and version ff are invalid). */
export function parseTraceParent(value: string | undefined): TraceParent | undefined {
  const m = value === undefined ? null : TRACEPARENT.exec(value.trim().toLowerCase());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags] = m as unknown as [string, string, string, string, string];
  if (version === 'ff' || /^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

/** The "Environment Variables" section of an easypy `env.txt`. */
export function parseEnvTxt(text: string): Map<string, string> {
  const env = new Map<string, string>();
  const lines = text.split('\n');
  const at = lines.findIndex(
    (line, i) => line.trim() === 'Environment Variables' && /^=+$/.test(lines[i + 1]?.trim() ?? ''),
  );
  if (at < 0) return env;
  for (const line of lines.slice(at + 2)) {
    if (line.trim() === '') break;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*: ?(.*)$/.exec(line);
    if (m) env.set(m[1]!, m[2]!);
  }
  return env;
}

const MAX_VALUE = 2048;

/** The CI context in an environment (Jenkins, GitHub Actions, GitLab CI), or undefined outside CI. */
export function ciContext(env: ReadonlyMap<string, string>): CiContext | undefined {
  const get = (name: string): string | undefined => {
    const value = env.get(name)?.trim();
    return value === undefined || value === '' ? undefined : value.slice(0, MAX_VALUE);
  };
  const context: CiContext = {};
  const parent = parseTraceParent(get('TRACEPARENT'));
  if (parent !== undefined) context.parent = parent;
  if (get('GITHUB_ACTIONS') === 'true') {
    context.system = 'github_actions';
    const server = get('GITHUB_SERVER_URL') ?? 'https://github.com';
    const repo = get('GITHUB_REPOSITORY');
    const run = get('GITHUB_RUN_ID');
    setDefined(context, 'pipelineName', get('GITHUB_WORKFLOW'));
    setDefined(context, 'runId', run);
    // The job's own page needs its numeric id, which Actions does not put in the environment: the run's.
    if (repo !== undefined && run !== undefined) {
      const attempt = get('GITHUB_RUN_ATTEMPT');
      context.taskRunUrl = `${server}/${repo}/actions/runs/${run}${attempt !== undefined ? `/attempts/${attempt}` : ''}`;
    }
  } else if (get('GITLAB_CI') === 'true') {
    context.system = 'gitlab_ci';
    setDefined(context, 'pipelineName', get('CI_PIPELINE_NAME') ?? get('CI_PROJECT_PATH'));
    setDefined(context, 'runId', get('CI_PIPELINE_ID'));
    setDefined(context, 'taskRunUrl', get('CI_JOB_URL'));
  } else if (get('JENKINS_URL') !== undefined || get('BUILD_URL') !== undefined) {
    context.system = 'jenkins';
    setDefined(context, 'pipelineName', get('JOB_NAME'));
    setDefined(context, 'runId', get('BUILD_NUMBER') ?? get('BUILD_ID'));
    setDefined(context, 'taskRunUrl', get('BUILD_URL'));
  }
  return Object.keys(context).length === 0 ? undefined : context;
}

function setDefined<K extends keyof CiContext>(
  context: CiContext,
  key: K,
  value: CiContext[K] | undefined,
): void {
  if (value !== undefined) context[key] = value;
}
