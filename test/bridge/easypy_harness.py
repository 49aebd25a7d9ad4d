#!/usr/bin/env python3
"""Plays easypy's part for one job, for bridge tests: loads the plugins of an easypy configuration (the
`plugins:` mapping of the documented --configuration YAML, given here as JSON), instantiates each enabled one
with the runtime and its extra keys, calls pre_job(job), waits for a `post_job` line on stdin (the test decides
when the job's tests are over), calls post_job(job) and exits like easypy does — the interpreter then waits for
non-daemon threads.

Prints `PRE_JOB_DONE <seconds>` and `POST_JOB_DONE <seconds>` (how long each stage took) and
`PLUGIN_ERROR <stage> <message>` if a stage raised.
"""

import argparse
import importlib
import inspect
import json
import logging
import sys
import time
import types


def load_plugins(config, runtime):
    plugins = []
    for name, spec in (config.get('plugins') or {}).items():
        if not spec.get('enabled', False):
            continue
        module = importlib.import_module(spec['module'])
        cls = getattr(module, name)
        kwargs = {k: v for k, v in spec.items() if k not in ('enabled', 'module', 'order')}
        plugins.append((float(spec.get('order', 0)), cls(runtime=runtime, **kwargs)))
    plugins.sort(key=lambda item: item[0])
    return [plugin for _, plugin in plugins]


def run_stage(plugin, stage, job):
    method = getattr(plugin, stage, None)
    if method is None or not plugin.enabled:
        return
    kwargs = {'job': job} if 'job' in inspect.signature(method).parameters else {}
    try:
        method(**kwargs)
    except Exception as e:  # easypy's error_handler registers the error and goes on
        print('PLUGIN_ERROR %s %s' % (stage, e), flush=True)


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument('--config', required=True, help='JSON of the easypy configuration')
    p.add_argument('--runinfo', required=True)
    p.add_argument('--job-uid', default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    with open(args.config, encoding='utf-8') as f:
        config = json.load(f)
    runtime = types.SimpleNamespace(directory=args.runinfo)
    job = types.SimpleNamespace(name='job', uid=args.job_uid, runtime=runtime)
    plugins = load_plugins(config, runtime)

    started = time.monotonic()
    for plugin in plugins:
        run_stage(plugin, 'pre_job', job)
    print('PRE_JOB_DONE %.3f' % (time.monotonic() - started), flush=True)

    for line in sys.stdin:
        if line.strip() == 'post_job':
            break

    started = time.monotonic()
    for plugin in reversed(plugins):
        run_stage(plugin, 'post_job', job)
    print('POST_JOB_DONE %.3f' % (time.monotonic() - started), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
