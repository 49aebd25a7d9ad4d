"""The job's CI run, for the exporter: the few environment variables that name it (TRACEPARENT and the
Jenkins / GitHub Actions / GitLab CI ones the exporter's src/events/ci.ts reads), sent as the `env` of a
hello line. Never the whole environment: it holds the CI's secrets.

Inside easypy (the plugin) they come from os.environ, which is the job's. Beside the job (the script) they come
from the job's runinfo env.txt, which easypy writes a moment before the first task starts (after reporter.sock
appears and the suite has started); the script's own environment is read only when asked, as it may be another
process's (a service, another CI step).

A context is a callable the sender asks before each batch until it answers: None (not known yet) or a dict
({} outside CI). Easypy writes env.txt before any section can stop, so the hello that carries it reaches the
exporter before the job's first span could go out.
"""

import os
import re
import stat
import time

# Exactly the variables src/events/ci.ts reads (bridge.test.ts checks the two lists agree).
CI_VARIABLES = (
    'TRACEPARENT',
    'GITHUB_ACTIONS', 'GITHUB_SERVER_URL', 'GITHUB_REPOSITORY', 'GITHUB_RUN_ID', 'GITHUB_RUN_ATTEMPT',
    'GITHUB_WORKFLOW',
    'GITLAB_CI', 'CI_PIPELINE_NAME', 'CI_PROJECT_PATH', 'CI_PIPELINE_ID', 'CI_JOB_URL',
    'JENKINS_URL', 'BUILD_URL', 'JOB_NAME', 'BUILD_NUMBER', 'BUILD_ID',
)
# Where the CI context comes from: the job's env.txt, this process's environment, or nowhere.
SOURCES = ('runinfo', 'process', 'none')
# ci.ts keeps this much of a value; the exporter refuses an `env` value over 4096 characters.
MAX_VALUE = 2048
ENV_TXT = 'env.txt'
# As src/reporter/runinfo.ts: env.txt is ~20 KB, and the variables come before the package list.
MAX_ENV_BYTES = 1 << 20
_LINE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)\s*: ?(.*)$')


def ci_variables(environ):
    """The CI variables of an environment (a mapping), values cut to MAX_VALUE; {} outside CI."""
    out = {}
    for name in CI_VARIABLES:
        value = environ.get(name)
        if isinstance(value, str) and value.strip() != '':
            out[name] = value[:MAX_VALUE]
    return out


def parse_env_txt(text):
    """The "Environment Variables" section of an easypy env.txt (`NAME<spaces>: value` per line), as a dict;
    the same reading as parseEnvTxt in src/events/ci.ts."""
    lines = text.split('\n')
    env = {}
    for i, line in enumerate(lines[:-1]):
        if line.strip() == 'Environment Variables' and re.match(r'^=+$', lines[i + 1].strip()):
            for entry in lines[i + 2:]:
                if entry.strip() == '':
                    break
                m = _LINE.match(entry)
                if m:
                    env[m.group(1)] = m.group(2)
            break
    return env


def read_env_txt(runinfo):
    """The variables of `runinfo`/env.txt, or None when there is none (yet) or it cannot be read. Opened
    non-blocking and checked to be a regular file, so a FIFO in its place cannot hang the sender."""
    try:
        fd = os.open(os.path.join(runinfo, ENV_TXT), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_ENV_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_env_txt(data.decode('utf-8', 'replace'))


def process_context(environ=None):
    """The context of this process's environment (the plugin, inside easypy): known at once."""
    environ = os.environ if environ is None else environ
    return lambda: ci_variables(environ)


class RunInfoContext:
    """The CI variables of the job's env.txt: None until easypy has written it; {} once `wait` seconds have
    passed without one (not an easypy job, or not one that writes it)."""

    def __init__(self, runinfo, wait=60.0, clock=time.monotonic):
        self.runinfo = runinfo
        self.clock = clock
        self.deadline = clock() + float(wait)

    def __call__(self):
        env = read_env_txt(self.runinfo)
        if env is not None:
            return ci_variables(env)
        return {} if self.clock() >= self.deadline else None


def make_context(source, runinfo, environ=None):
    """The context callable for a SOURCES name, or None for 'none'."""
    if source == 'runinfo':
        return RunInfoContext(runinfo)
    if source == 'process':
        return process_context(environ)
    if source == 'none':
        return None
    raise ValueError('ci_env must be one of %s, not %r' % (', '.join(SOURCES), source))
