#!/usr/bin/env python3
"""Writes the benchmark's reporter stream: pyATS jobs as a pyATS Reporter Server sends them, one pickled event
dict per message (CPython `pickle`, protocol 4, in pyATS 23.x's chunks: `struct.pack('>?H', more_follows,
length)` + at most 65,535 bytes each), concatenated into one file. The reply to the subscription is not in it:
the benchmark's reporter (lib/sender.mjs) sends that.

Event shapes follow test/helpers/reporter_standin.py (and DESIGN §1): naive `datetime` start/stop times,
`pyats.results.<Result>` objects with a `__dict__`, `xref` and `logs` dicts. Each job is a TestSuite with a
pre-job plugin, one Task with a pre-task plugin, a CommonSetup, `--testcases` Testcases (setup, two test
sections, one of them holding a Step, cleanup: six sections, twelve events) and a CommonCleanup.

Testcase ids cycle through `--testcase-names` names, as a script's testcases repeat across runs and loop
iterations, so the exporter's per-testcase series stay bounded however long the stream. `--runs` repeats the
job (same job id, later start times: new traces, the same series). Deterministic for the arguments. Writes `OUT` and `OUT.json` (counts the benchmark checks against). Standard library only.
"""

import argparse
import datetime
import json
import os
import pickle
import random
import struct
import sys
import types

RESULTS = ['passed', 'failed', 'aborted', 'blocked', 'skipped', 'errored', 'passx']
CODES = {'failed': 0, 'passed': 1, 'aborted': 3, 'blocked': 4, 'skipped': 5, 'errored': 6, 'passx': 7}
# Leaf results: mostly passed, as in a healthy regression run.
LEAF_WEIGHTS = [('passed', 900), ('failed', 40), ('skipped', 25), ('passx', 15), ('errored', 10),
                ('blocked', 6), ('aborted', 4)]
ROLLUP = ['skipped', 'passed', 'passx', 'blocked', 'failed', 'errored', 'aborted']
REASONS = {
    'failed': 'BGP neighbor 10.0.0.2 is in state Idle, expected Established',
    'errored': "KeyError: 'Ethernet1/7'",
    'aborted': 'Interrupted by user (SIGINT)',
    'blocked': 'Blocked by a failed dependency',
    'skipped': 'Not applicable on this platform',
    'passx': 'Known issue CSCvx12345',
}
SCRIPT = '/opt/tests/regression/health_checks.py'


class _ResultBase:
    pass


def install_fake_pyats_results():
    """Module `pyats.results` with one class per result, so pickles name them as real pyATS results do."""
    pyats = sys.modules.get('pyats') or types.ModuleType('pyats')
    results = types.ModuleType('pyats.results')
    pyats.results = results
    sys.modules['pyats'] = pyats
    sys.modules['pyats.results'] = results
    classes = {}
    for value in RESULTS:
        name = value.capitalize()
        cls = type(name, (_ResultBase,), {'__module__': 'pyats.results', '__qualname__': name})
        setattr(results, name, cls)
        classes[value] = cls
    return classes


CLASSES = install_fake_pyats_results()


def result_object(value):
    obj = CLASSES[value]()
    obj.value = value
    obj.code = CODES[value]
    obj.reason = REASONS.get(value)
    obj.data = None
    return obj


def rollup(values):
    worst = 'passed'
    for value in values:
        if ROLLUP.index(value) > ROLLUP.index(worst):
            worst = value
    return worst


class Writer:
    def __init__(self, out):
        self.out = out
        self.events = 0
        self.sections = 0
        self.stops_by_type = {}
        self.bytes = 0
        self.seq = 0
        self.log_cursor = 0

    def frame(self, event):
        payload = pickle.dumps(event, protocol=4)
        while True:
            chunk, payload = payload[:65535], payload[65535:]
            self.out.write(struct.pack('>?H', bool(payload), len(chunk)))
            self.out.write(chunk)
            self.bytes += 3 + len(chunk)
            if not payload:
                break
        self.events += 1


class Job:
    """Emits one job's events in the order a reporter sends them, with plausible times and results."""

    def __init__(self, writer, rng, job_id, start, testcases, names):
        self.w = writer
        self.rng = rng
        self.job_id = job_id
        self.clock = start
        self.testcases = testcases
        self.names = names
        self.line = 20

    def tick(self, lo_ms, hi_ms):
        self.clock += datetime.timedelta(microseconds=self.rng.randint(lo_ms * 1000, hi_ms * 1000))
        return self.clock

    def xref(self):
        self.line += 7
        return {'file': SCRIPT, 'line': self.line}

    def open(self, kind, type_, id_, parent, name=None, logfile='TaskLog.Task-1', xref=True):
        self.w.seq += 1
        section = {'type': type_, 'id': id_, 'name': name or id_, 'seq_num': self.w.seq, 'parent': parent,
                   'suffix': {'TestSuite': 'testsuite', 'Task': 'task', 'Plugin': 'plugin',
                              'Step': 'step'}.get(type_, 'section'),
                   'logfile': logfile, 'xref': self.xref() if xref else None, 'start': None}
        if kind == 'init':
            self.w.frame(self.base('init', section))
        return section

    def base(self, kind, section):
        d = {'event': '%s_%s' % (kind, section['suffix']), 'type': section['type'], 'seq_num': section['seq_num']}
        if section['parent'] is not None:
            d['parent_seq_num'] = section['parent']['seq_num']
        d['id'] = section['id']
        d['name'] = section['name']
        return d

    def start(self, section):
        section['start'] = self.tick(1, 20)
        d = self.base('start', section)
        d['starttime'] = section['start']
        d['logfile'] = section['logfile']
        if section['xref']:
            d['xref'] = dict(section['xref'])
        self.w.frame(d)

    def stop(self, section, result, busy_ms=(1, 400)):
        stop = self.tick(*busy_ms)
        d = self.base('stop', section)
        d['starttime'] = section['start']
        d['logfile'] = section['logfile']
        if section['xref']:
            d['xref'] = dict(section['xref'])
        d['stoptime'] = stop
        d['runtime'] = (stop - section['start']).total_seconds()
        d['result'] = result_object(result)
        size = self.rng.randint(80, 4000)
        d['logs'] = {'file': section['logfile'], 'begin': self.w.log_cursor, 'size': size}
        self.w.log_cursor += size
        self.w.frame(d)
        self.w.sections += 1
        self.w.stops_by_type[section['type']] = self.w.stops_by_type.get(section['type'], 0) + 1
        return result

    def leaf_result(self):
        pick = self.rng.randint(1, 1000)
        for value, weight in LEAF_WEIGHTS:
            pick -= weight
            if pick <= 0:
                return value
        return 'passed'

    def leaf(self, type_, id_, parent, name=None):
        section = self.open('start', type_, id_, parent, name)
        self.start(section)
        return self.stop(section, self.leaf_result())

    def run(self):
        suite = self.open('init', 'TestSuite', self.job_id, None, logfile='JobLog.%s' % self.job_id, xref=False)
        kleenex = self.open('start', 'Plugin', 'KleenexPlugin', suite, logfile=suite['logfile'], xref=False)
        self.start(kleenex)
        self.stop(kleenex, 'passed')
        self.start(suite)
        task = self.open('init', 'Task', 'Task-1', suite, name='health_checks', xref=False)
        telemetry = self.open('start', 'Plugin', 'GenieTelemetryPlugin', task, xref=False)
        self.start(telemetry)
        self.stop(telemetry, 'passed')
        self.start(task)

        results = []
        common = self.open('start', 'CommonSetup', 'common_setup', task)
        self.start(common)
        parts = [self.leaf('Subsection', 'connect', common), self.leaf('Subsection', 'configure', common)]
        results.append(self.stop(common, rollup(parts), (0, 5)))

        for i in range(self.testcases):
            name = self.names[i % len(self.names)]
            testcase = self.open('start', 'Testcase', name, task)
            self.start(testcase)
            parts = [self.leaf('SetupSection', 'setup', testcase), self.leaf('TestSection', 'test_state', testcase)]
            section = self.open('start', 'TestSection', 'test_counters', testcase)
            self.start(section)
            step_result = self.leaf('Step', '1', section, 'STEP 1: Verify counters')
            parts.append(self.stop(section, step_result, (0, 5)))
            parts.append(self.leaf('CleanupSection', 'cleanup', testcase))
            results.append(self.stop(testcase, rollup(parts), (0, 5)))

        common = self.open('start', 'CommonCleanup', 'common_cleanup', task)
        self.start(common)
        parts = [self.leaf('Subsection', 'disconnect', common)]
        results.append(self.stop(common, rollup(parts), (0, 5)))
        self.stop(task, rollup(results), (0, 5))
        xunit = self.open('start', 'Plugin', 'XunitPlugin', suite, logfile=suite['logfile'], xref=False)
        self.start(xunit)
        self.stop(xunit, 'passed')
        self.stop(suite, rollup(results), (0, 5))
        return self.clock


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--out', required=True)
    p.add_argument('--testcases', type=int, default=20000, help='testcases per run')
    p.add_argument('--runs', type=int, default=1, help='runs of the job, one after the other (same job id)')
    p.add_argument('--start', default='2024-05-01T02:00:00', help='start of the first run (naive local time)')
    p.add_argument('--testcase-names', type=int, default=1000)
    p.add_argument('--job-id', default='regression_nightly')
    p.add_argument('--seed', type=int, default=6)
    args = p.parse_args(argv)

    rng = random.Random(args.seed)
    names = ['verify_%s_%04d' % (rng.choice(['bgp', 'ospf', 'isis', 'interfaces', 'acl', 'ntp', 'vlan']), i)
             for i in range(args.testcase_names)]
    start = datetime.datetime.fromisoformat(args.start)
    tmp = args.out + '.tmp'
    with open(tmp, 'wb', buffering=1 << 20) as out:
        writer = Writer(out)
        for _ in range(args.runs):
            # Each run is a new trace (its run id includes the start time); the metric series are the job's.
            start = Job(writer, rng, args.job_id, start, args.testcases, names).run() + datetime.timedelta(minutes=5)
    os.replace(tmp, args.out)
    meta = {
        'events': writer.events,
        'sections': writer.sections,
        'bytes': writer.bytes,
        'runs': args.runs,
        'testcases': args.testcases * args.runs,
        'testcase_names': args.testcase_names,
        'stops_by_type': writer.stops_by_type,
    }
    with open(args.out + '.json', 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    print(json.dumps(meta, sort_keys=True))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
