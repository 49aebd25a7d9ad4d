// What a job's runinfo directory says of the job beyond its events: easypy writes the job's environment to
// `env.txt` beside `reporter.sock` when the job starts (observed on pyATS 23.2), and the CI run that started
// the job is in it (TRACEPARENT, Jenkins / GitHub Actions / GitLab CI variables).
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { ciContext, parseEnvTxt, type StreamContext } from '../events/index.js';

/** env.txt is ~20 KB; a larger one is read only this far (the variables come before the package list). */
const MAX_ENV_BYTES = 1 << 20;

/**
 * The context of the job whose runinfo directory is `runinfoDir` (where reporter.sock is, as given: a symlink
 * to the socket sits there when the path is long): undefined when there is no env.txt (yet) or it cannot be
 * read; `{}` when it names no CI run. Synchronous, as the tracker asks just before a job's first span.
 */
export function readRunContext(runinfoDir: string): StreamContext | undefined {
  let fd: number;
  try {
    // Non-blocking: a FIFO named env.txt must not hang the daemon (it is then refused as not a file).
    fd = openSync(join(runinfoDir, 'env.txt'), constants.O_RDONLY | constants.O_NONBLOCK);
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
