// Spawns fault_reporter.py (a misbehaving pyATS reporter: real CPython pickles of bad events, raw broken
// frames, refused subscriptions, connections ended mid-message) for a fault test, and reads the manifest of
// what it sent and of the requests it received.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const FAULT_REPORTER_SCRIPT = fileURLToPath(new URL('./fault_reporter.py', import.meta.url));

export type FaultScenario = 'malformed' | 'duplicates' | 'protocol';

export interface FaultSection {
  seq_num: number;
  type: string;
  id: string;
  parent_seq_num: number | null;
  name_length?: number;
}

export interface FaultManifest {
  /** Per subscription: the steps sent, and how the exporter must count its end (`reset` when it drops us). */
  connections: {
    name: string;
    end: string;
    disconnect: 'eof' | 'reset';
    steps: { expect: string; note: string; bytes: number }[];
  }[];
  /** Rejections the exporter must count, by reason. */
  rejected: Record<string, number>;
  /** Per job, the sections whose events were all good (each must become exactly one span). */
  jobs: { job_id: string; sections: FaultSection[] }[];
  /** Every request received; `problem` when real pyATS would refuse it (or die of it: `no_name`). */
  requests: { connection: number; name: string | null; problem: string | null }[];
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
  /** Message framing (default `chunked`, as pyATS 23.x). */
  frame?: 'chunked' | '4be' | '4le' | '8be' | '8le';
  /** The exporter's --max-frame-bytes: the oversize message is just over it (default 64 MiB). */
  maxFrameBytes?: number;
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
  if (opts.frame) args.push('--frame', opts.frame);
  if (opts.maxFrameBytes !== undefined) args.push('--max-frame-bytes', String(opts.maxFrameBytes));
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
