// Runs REAL pyATS 23.2 easypy jobs (../shared/real-pyats beside the repo: a pyATS install that needs
// CPython 3.10) for the tests that prove the exporter against the real thing. Where the bundle or its
// Python is missing, `requireRealPyats()` throws with what is missing: these tests fail, never skip.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { unzipSync } from 'fflate';

/** The bundle: $REAL_PYATS (as test/fixtures/real-pyats/record.py takes it), else ../shared/real-pyats. */
export const REAL_PYATS_DIR = resolve(
  process.env['REAL_PYATS'] ??
    join(fileURLToPath(new URL('../../..', import.meta.url)), 'shared', 'real-pyats'),
);
export const FIXTURES = fileURLToPath(new URL('../fixtures/real-pyats/', import.meta.url));

let checked: string | undefined;

/** Throws unless ../shared/real-pyats and a CPython 3.10 for it are here; returns the bundle's directory. */
export function requireRealPyats(): string {
  if (checked !== undefined) return checked;
  const runJob = join(REAL_PYATS_DIR, 'run-job.sh');
  if (!existsSync(runJob)) {
    throw new Error(
      `real pyATS bundle not found at ${REAL_PYATS_DIR} (expected ../shared/real-pyats beside the repo): ` +
        'these tests run a real pyATS 23.2 job and cannot pass without it',
    );
  }
  const check =
    'import sys; assert sys.version_info[:2] == (3, 10), sys.version; import pyats.reporter; print("ok")';
  const probe = spawnSync(join(REAL_PYATS_DIR, 'python.sh'), ['-c', check], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (probe.status !== 0 || !probe.stdout.includes('ok')) {
    throw new Error(
      `real pyATS bundle at ${REAL_PYATS_DIR} does not run (needs CPython 3.10: python3.10 on PATH, ` +
        `a pyenv 3.10.x, or PYATS_PYTHON): ${(probe.stderr || probe.stdout || String(probe.error)).trim()}`,
    );
  }
  checked = REAL_PYATS_DIR;
  return checked;
}

export interface RealJob {
  /** HOME of the job: runinfo under .pyats/runinfo, the archive under .pyats/archive. */
  runDir: string;
  proc: ChildProcess;
  /** Resolves with easypy's exit code (1 when the job has failures, as the fixture jobs do). */
  exited: Promise<number | null>;
  output(): string;
  /** The job's reporter.sock, once easypy has made it. */
  socket(timeoutMs?: number): Promise<string>;
  /** results.json from the job's archive (after exit). */
  results(): ResultsJson;
  /** The archive .zip (after exit). */
  archive(): string;
  cleanup(): void;
}

export interface ResultsSection {
  type: string;
  id: string;
  fullid?: string;
  name: string;
  starttime?: string;
  stoptime?: string;
  result?: { value: string };
  /** Where the section's log lines are in its TaskLog (relative to runinfo; the archive's root). */
  logs?: { file: string; begin: number; size: number };
  sections?: ResultsSection[];
  tasks?: ResultsSection[];
}

export interface ResultsJson {
  version: string;
  report: ResultsSection;
}

/**
 * Starts `run-job.sh JOB ARGS` in a fresh HOME; `env` reaches the job (PYATS_WAIT_FOR and the like), `args`
 * are easypy's (`-configuration FILE`: easypy's own options take one dash; unknown ones go to the job file).
 */
export function startRealJob(job: string, env: NodeJS.ProcessEnv = {}, args: string[] = []): RealJob {
  const bundle = requireRealPyats();
  const runDir = mkdtempSync(join(tmpdir(), 'pyx-real-'));
  const proc = spawn(join(bundle, 'run-job.sh'), [job, ...args], {
    env: { ...process.env, ...env, PYATS_RUN_DIR: runDir },
    cwd: runDir,
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: easypy forks a process per task, and a test that fails midway kills them all.
    detached: true,
  });
  let output = '';
  proc.stdout?.setEncoding('utf8').on('data', (c: string) => (output += c));
  proc.stderr?.setEncoding('utf8').on('data', (c: string) => (output += c));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const runinfo = join(runDir, '.pyats', 'runinfo');
  const socket = async (timeoutMs = 60_000): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const dirs = existsSync(runinfo) ? readdirSync(runinfo) : [];
      for (const d of dirs) {
        const path = join(runinfo, d, 'reporter.sock');
        if (existsSync(path)) return path;
      }
      if (Date.now() > deadline) throw new Error(`no reporter.sock under ${runinfo}; job output:\n${output}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  const archive = (): string => {
    const root = join(runDir, '.pyats', 'archive');
    for (const month of existsSync(root) ? readdirSync(root) : []) {
      const zip = readdirSync(join(root, month)).find((f) => f.endsWith('.zip'));
      if (zip !== undefined) return join(root, month, zip);
    }
    throw new Error(`no archive under ${root}; job output:\n${output}`);
  };
  const results = (): ResultsJson => {
    const files = unzipSync(readFileSync(archive()), { filter: (f) => f.name.endsWith('results.json') });
    const bytes = Object.values(files)[0];
    if (bytes === undefined) throw new Error('archive has no results.json');
    return JSON.parse(new TextDecoder().decode(bytes)) as ResultsJson;
  };
  return {
    runDir,
    proc,
    exited,
    output: () => output,
    socket,
    results,
    archive,
    cleanup: () => {
      if (proc.pid !== undefined) {
        try {
          process.kill(-proc.pid, 'SIGKILL');
        } catch {
          // The group is gone already.
        }
      }
      rmSync(runDir, { recursive: true, force: true });
    },
  };
}

/** Every section of a results.json report, the TestSuite first, with its parent's fullid. */
export function sectionsOf(report: ResultsSection): { section: ResultsSection; parent?: string }[] {
  const out: { section: ResultsSection; parent?: string }[] = [];
  const visit = (s: ResultsSection, parent: string | undefined): void => {
    out.push(parent === undefined ? { section: s } : { section: s, parent });
    for (const child of [...(s.tasks ?? []), ...(s.sections ?? [])]) visit(child, s.fullid ?? s.id);
  };
  visit(report, undefined);
  return out;
}

/** Lines the job's reporter logged as warnings or errors (an exporter must cause none). */
export function reporterComplaints(output: string): string[] {
  return output.split('\n').filter((line) => /%REPORTER-(WARNING|ERROR|CRITICAL)/.test(line));
}

/** The bundle's scripts, checked (see requireRealPyats). */
export interface RealPyats {
  dir: string;
  runJob: string;
  python: string;
  exampleJob: string;
}

export function realPyats(): RealPyats {
  const dir = requireRealPyats();
  return {
    dir,
    runJob: join(dir, 'run-job.sh'),
    python: join(dir, 'python.sh'),
    exampleJob: join(dir, 'example', 'job.py'),
  };
}

/** `python.sh -c CODE ARGS...`: CPython 3.10 with pyATS importable; ARGS are sys.argv[2:] inside CODE. */
export function spawnRealPython(
  pyats: RealPyats,
  code: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): ChildProcess {
  return spawn(pyats.python, ['-c', code, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
}
