// Debian's real promtool, for checking expositions. In CI a missing promtool is a broken environment
// (the tests fail); elsewhere the tests that need it are skipped with a note saying how to install it.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { it } from 'vitest';

export const PROMTOOL = '/usr/bin/promtool';
export const HAVE_PROMTOOL = existsSync(PROMTOOL);
export const itPromtool = HAVE_PROMTOOL || process.env['CI'] ? it : it.skip;
export const PROMTOOL_SKIP_NOTE = HAVE_PROMTOOL
  ? ''
  : ` (skipped: ${PROMTOOL} not found; apt-get install prometheus)`;

/**
 * prom-client names three default gauges `nodejs_active_*_total`, and promtool's lint flags exactly those.
 * They are prom-client's to rename; any other finding is ours and fails a test.
 */
export const PROCESS_METRICS_LINT = [
  'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
];

/** Runs `promtool check metrics` on `exposition`; returns its exit code and everything it printed. */
export function promtoolCheck(exposition: string): Promise<{ code: number | null; output: string }> {
  if (!HAVE_PROMTOOL) throw new Error(`${PROMTOOL} is missing; CI must install Debian's prometheus package`);
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(exposition);
  });
}

/** The findings promtool reports beyond the known prom-client ones. */
export async function promtoolFindings(exposition: string): Promise<string[]> {
  const { output } = await promtoolCheck(exposition);
  return output.split('\n').filter((line) => line !== '' && !PROCESS_METRICS_LINT.includes(line));
}
