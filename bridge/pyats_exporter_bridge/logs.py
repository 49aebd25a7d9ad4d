"""A failed section's own log lines, read on the job's machine for the exporter, which cannot see the file.

pyATS reports where a section's lines are at its stop (`logs: {file, begin, size}`, the file relative to the
job's runinfo directory). The bridge reads the tail of that slice, as the exporter's native socket path does
(src/telemetry/section-logs.ts), and sends it as the event's `log_excerpt`: confined to runinfo (no `..`,
absolute path elsewhere or symlink out), regular files only (a FIFO is never waited on), at most `max_bytes`
read whatever `size` says, cut after a line break, valid UTF-8.
"""

import os
import stat

MODES = ('failed', 'all', 'none')
DEFAULT_MAX_BYTES = 4096
FAILED = {'failed', 'errored', 'aborted'}


def _within(root, path):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def tail_on_line_boundary(data, max_bytes):
    """The last bytes of `data` within `max_bytes`, from just after a line break (else a character start)."""
    start = max(0, len(data) - max_bytes)
    if start > 0:
        line = data.find(b'\n', start - 1)
        if line != -1 and line + 1 < len(data):
            start = line + 1
        else:
            while start < len(data) and data[start] & 0xC0 == 0x80:
                start += 1
    return data[start:].decode('utf-8', 'replace')


def read_excerpt(runinfo, logs, max_bytes=DEFAULT_MAX_BYTES):
    """The excerpt of `logs` ({file, begin, size}) under `runinfo`, or None when it cannot or must not be read."""
    if not isinstance(logs, dict):
        return None
    name, begin, size = logs.get('file'), logs.get('begin'), logs.get('size')
    if not isinstance(name, str) or '\0' in name or not isinstance(begin, int) or not isinstance(size, int):
        return None
    if isinstance(begin, bool) or isinstance(size, bool) or begin < 0 or size < 0:
        return None
    try:
        root = os.path.realpath(runinfo)
        path = os.path.realpath(os.path.join(root, name))
        if not _within(root, path):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_NOCTTY', 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        try:
            opened = os.readlink('/proc/self/fd/%d' % fd)
        except OSError:
            opened = path
        if not _within(root, opened):
            return None
        end = min(begin + size, info.st_size)
        if end <= begin:
            return None
        start = max(begin, end - max_bytes - 1)
        data = os.pread(fd, end - start, start)
        if not data:
            return None
        return tail_on_line_boundary(data, max_bytes) if end - begin > max_bytes else data.decode('utf-8', 'replace')
    except OSError:
        return None
    finally:
        os.close(fd)


def wants_excerpt(event, mode, result_value):
    """True for the stop of a section whose lines go on its span under `mode` (failed | all | none)."""
    if mode == 'none' or not isinstance(event.get('logs'), dict):
        return False
    if not str(event.get('event', '')).startswith('stop_'):
        return False
    return mode == 'all' or result_value in FAILED
