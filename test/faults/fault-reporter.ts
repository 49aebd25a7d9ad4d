// Spawns fault_reporter.py (a misbehaving pyATS reporter: real CPython pickles of bad events, raw broken
// frames, connections ended mid-frame) for a fault test, and reads the manifest of what it sent.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const FAULT_REPORTER_SCRIPT = fileURLToPath(new URL('./fault_reporter.py', import.meta.url));

export type FaultScenario = 'malformed' | 'duplicates';

export interface FaultSection {
  seq_num: number;
  type: string;
  id: string;
  parent_seq_num: number | null;
  name_length?: number;
}

export interface FaultManifest {
  connections: { name: string; end: string; steps: { expect: string; note: string; bytes: number }[] }[];
  /** Rejections the exporter must count, by reason. */
  rejected: Record<string, number>;
  /** Per job, the sections whose events were all good (each must become exactly one span). */
  jobs: { job_id: string; sections: FaultSection[] }[];
}

export interface FaultReporter {
  path: string;
  /** Resolves when every scripted connection was served; rejects if the script failed. */
  done: Promise<void>;
  manifest(): Promise<FaultManifest>;
  kill(): Promise<void>;
}

export async function startFaultReporter(opts: {
  socket: string;
  scenario: FaultScenario;
  header?: '4be' | '4le' | '8be' | '8le';
}): Promise<FaultReporter> {
  const dir = await mkdtemp(join(tmpdir(), 'fault-reporter-'));
  const expect = join(dir, 'expect.json');
  const args = [
    FAULT_REPORTER_SCRIPT,
    '--socket',
    opts.socket,
    '--scenario',
    opts.scenario,
    '--expect',
    expect,
  ];
  if (opts.header) args.push('--header', opts.header);
  const proc = spawn('python3', args, {
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let ready!: () => void;
  const readyP = new Promise<void>((resolve) => (ready = resolve));
  let sawDone = false;
  createInterface({ input: proc.stdout }).on('line', (line) => {
    if (line.startsWith('READY ')) ready();
    if (line.startsWith('DONE ')) sawDone = true;
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const done = exited.then((code) => {
    if (code !== 0 || !sawDone) throw new Error(`fault reporter exited ${String(code)}: ${stderr.trim()}`);
  });
  done.catch(() => undefined);
  const kill = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  await Promise.race([
    readyP,
    exited.then((code) => {
      throw new Error(`fault reporter exited ${String(code)} before READY: ${stderr.trim()}`);
    }),
  ]).catch(async (err: unknown) => {
    await kill();
    throw err;
  });
  return {
    path: opts.socket,
    done,
    manifest: async () => JSON.parse(await readFile(expect, 'utf8')) as FaultManifest,
    kill,
  };
}
