// Runs the Python bridge for tests: as an easypy plugin inside easypy_harness.py (configured by the YAML
// documented in docs/ingest.md), or as the `python -m pyats_exporter_bridge` script; both against the stub
// pyats package, whose ReportClient reads the CPython reporter stand-in.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BRIDGE_DIR = join(ROOT, 'bridge');
export const STUBS_DIR = join(ROOT, 'test', 'stubs');
export const HARNESS = join(ROOT, 'test', 'bridge', 'easypy_harness.py');
export const DOCS = join(ROOT, 'docs', 'ingest.md');

export interface PythonProcess {
  proc: ChildProcess;
  output(): string;
  /** Resolves when a stdout line matches. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  exited: Promise<number | null>;
  kill(): Promise<void>;
}

export function pythonEnv(tz: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    PYTHONPATH: `${BRIDGE_DIR}:${STUBS_DIR}`,
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONUNBUFFERED: '1',
    TZ: tz,
    ...extra,
  };
}

export function runPython(args: string[], env: NodeJS.ProcessEnv, cwd = ROOT): PythonProcess {
  const proc = spawn('python3', args, { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const waiters: { pattern: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  const check = (): void => {
    for (const waiter of [...waiters]) {
      const match = waiter.pattern.exec(out);
      if (match) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(match);
      }
    }
  };
  proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    check();
  });
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    check();
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    output: () => out,
    exited,
    waitFor: (pattern, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const match = pattern.exec(out);
        if (match) return resolve(match);
        const timer = setTimeout(() => reject(new Error(`no ${String(pattern)} in:\n${out}`)), timeoutMs);
        waiters.push({
          pattern,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
        });
        void exited.then(() => {
          clearTimeout(timer);
          const late = pattern.exec(out);
          if (late) resolve(late);
          else reject(new Error(`exited without ${String(pattern)}:\n${out}`));
        });
      }),
    kill: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** The easypy `plugins:` configuration exactly as docs/ingest.md shows it, with keys overridden. */
export function documentedPluginConfig(overrides: Record<string, unknown>): Record<string, unknown> {
  const docs = readFileSync(DOCS, 'utf8');
  const block = [...docs.matchAll(/```yaml\n([\s\S]*?)```/g)]
    .map((m) => m[1] ?? '')
    .find((b) => b.includes('plugins:'));
  if (block === undefined) throw new Error('docs/ingest.md has no plugins: YAML block');
  const config = parseYaml(block) as { plugins: Record<string, Record<string, unknown>> };
  const [name] = Object.keys(config.plugins);
  if (name === undefined) throw new Error('no plugin in the documented configuration');
  config.plugins[name] = { ...config.plugins[name], ...overrides };
  return config;
}

/** Starts easypy_harness.py with `config` (written as JSON into `dir`); call `postJob()` to end the job. */
export function runEasypyJob(options: {
  dir: string;
  runinfo: string;
  config: Record<string, unknown>;
  tz: string;
  jobUid?: string;
}): PythonProcess & { postJob(): void } {
  const configPath = join(options.dir, 'easypy_config.json');
  writeFileSync(configPath, JSON.stringify(options.config));
  const args = [HARNESS, '--config', configPath, '--runinfo', options.runinfo];
  if (options.jobUid !== undefined) args.push('--job-uid', options.jobUid);
  const run = runPython(args, pythonEnv(options.tz));
  return {
    ...run,
    postJob: () => {
      run.proc.stdin?.write('post_job\n');
    },
  };
}

/** `python -m pyats_exporter_bridge ...args`. */
export function runBridgeScript(args: string[], tz: string, env: NodeJS.ProcessEnv = {}): PythonProcess {
  return runPython(['-m', 'pyats_exporter_bridge', ...args], pythonEnv(tz, env));
}
