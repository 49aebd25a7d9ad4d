// What a job's runinfo directory says of the job beyond its events: easypy writes the job's environment to
// `env.txt` beside `reporter.sock` when the job starts (observed on pyATS 23.2), and the CI run that started
// the job is in it (TRACEPARENT, Jenkins / GitHub Actions / GitLab CI variables).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ciContext, parseEnvTxt, type StreamContext } from '../events/index.js';

/** env.txt is ~20 KB; a larger one is read only this far (the variables come before the package list). */
const MAX_ENV_BYTES = 1 << 20;

/**
 * The context of the job whose reporter socket is `socketPath` (a symlink to it sits in runinfo when the
 * path is long, so the directory of the path as given is the runinfo directory): undefined when there is no
 * env.txt (yet) or it cannot be read; `{}` when it names no CI run.
 */
export function readRunContext(socketPath: string): StreamContext | undefined {
  let fd: number;
  try {
    fd = openSync(join(dirname(socketPath), 'env.txt'), 'r');
  } catch {
    return undefined;
  }
  try {
    if (!fstatSync(fd).isFile()) return undefined;
    const buf = Buffer.alloc(MAX_ENV_BYTES);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const ci = ciContext(parseEnvTxt(buf.toString('utf8', 0, n)));
    return ci === undefined ? {} : { ci };
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}
