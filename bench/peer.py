#!/usr/bin/python3
"""The benchmark's peer: the subscriber a pyATS user would write instead of running the exporter — metrics only,
no traces. It subscribes as pyATS's ReportClient does (`subscribe_client`, reply None), reads the same chunked
stream from the same kind of Unix socket, unpickles each event with
CPython's `pickle`, keeps the little section table it needs to know each section's task and testcase, and
updates `prometheus_client` metrics with the same names and labels as the exporter's metrics sink.

Needs Debian's python3-prometheus-client (run it with /usr/bin/python3). Usage: peer.py SOCKET EXPECTED_EVENTS.
Prints one JSON line when EXPECTED_EVENTS events were handled: CLOCK_MONOTONIC end time (ns) and CPU time.
"""

import json
import pickle
import socket
import struct
import sys
import time
import types

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RESULTS = ['passed', 'failed', 'aborted', 'blocked', 'skipped', 'errored', 'passx']
TESTCASE_TYPES = {'CommonSetup', 'Testcase', 'CommonCleanup'}
BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400]


def install_pyats_results():
    """Stands in for an installed pyATS: unpickling a result object imports pyats.results.<Result>."""
    pyats = types.ModuleType('pyats')
    results = types.ModuleType('pyats.results')
    pyats.results = results
    sys.modules['pyats'] = pyats
    sys.modules['pyats.results'] = results
    for value in RESULTS:
        name = value.capitalize()
        setattr(results, name, type(name, (), {'__module__': 'pyats.results', '__qualname__': name}))


class Subscriber:
    def __init__(self):
        registry = CollectorRegistry()
        self.events = Counter('pyats_exporter_events_received', 'Raw reporter events received, by source.',
                              ['source'], registry=registry)
        labels = ['job', 'task', 'type', 'result']
        self.section_results = Counter('pyats_section_results', 'Finished pyATS sections by type and result.',
                                       labels, registry=registry)
        self.section_duration = Histogram('pyats_section_duration_seconds', 'Runtime of finished sections.',
                                          labels, buckets=BUCKETS, registry=registry)
        testcase_labels = ['job', 'task', 'testcase', 'result']
        self.testcase_results = Counter('pyats_testcase_results', 'Finished testcases by result.',
                                        testcase_labels, registry=registry)
        self.testcase_last = Gauge('pyats_testcase_last_result', "1 for the testcase's latest result.",
                                   testcase_labels, registry=registry)
        self.in_progress = Gauge('pyats_sections_in_progress', 'Sections started and not yet finished.',
                                 ['job', 'type'], registry=registry)
        self.sections = {}
        self.job = 'unknown'

    def on_event(self, event):
        self.events.labels('reporter_socket').inc()
        name = event['event']
        seq = event['seq_num']
        type_ = event.get('type')
        if name.startswith('stop_'):
            task, testcase = self.sections.pop(seq, ('unknown', None))
            result = event.get('result')
            value = getattr(result, 'value', result) or 'errored'
            job = self.job
            self.section_results.labels(job, task, type_, value).inc()
            self.section_duration.labels(job, task, type_, value).observe(event.get('runtime') or 0)
            if type_ in TESTCASE_TYPES:
                self.testcase_results.labels(job, task, testcase, value).inc()
                for r in RESULTS:
                    self.testcase_last.labels(job, task, testcase, r).set(1 if r == value else 0)
            self.in_progress.labels(job, type_).dec()
            return
        if type_ == 'TestSuite':
            self.job = event.get('id') or 'unknown'
        if seq not in self.sections:
            parent = self.sections.get(event.get('parent_seq_num'))
            task = event.get('id') if type_ == 'Task' else (parent[0] if parent else 'none')
            testcase = event.get('id') if type_ in TESTCASE_TYPES else (parent[1] if parent else None)
            self.sections[seq] = (task, testcase)
        if name.startswith('start_'):
            self.in_progress.labels(self.job, type_).inc()


def main(argv):
    path, expected = argv[0], int(argv[1])
    install_pyats_results()
    subscriber = Subscriber()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    request = pickle.dumps({'name': 'subscribe_client', 'data': {}})
    sock.sendall(struct.pack('>?H', False, len(request)) + request)
    buf = bytearray()
    handled = -1  # the first message is the reply to the subscription
    cpu_start = None
    loads = pickle.loads
    unpack_from = struct.unpack_from
    parts = []
    while handled < expected:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        if cpu_start is None:
            cpu_start = time.process_time()
        buf += chunk
        pos = 0
        end = len(buf)
        while end - pos >= 3:
            more, size = unpack_from('>?H', buf, pos)
            if end - pos - 3 < size:
                break
            if more or parts:
                parts.append(bytes(buf[pos + 3:pos + 3 + size]))
                if not more:
                    message = b''.join(parts)
                    parts = []
            else:
                message = buf[pos + 3:pos + 3 + size]
            pos += 3 + size
            if more:
                continue
            if handled >= 0:
                subscriber.on_event(loads(message))
            handled += 1
        del buf[:pos]
    t_end = time.monotonic_ns()
    cpu_ms = (time.process_time() - (cpu_start or 0)) * 1000
    print(json.dumps({'kind': 'done' if handled >= expected else 'error', 'tEnd': str(t_end), 'cpuMs': cpu_ms,
                      'handled': handled}), flush=True)
    sock.close()
    return 0 if handled >= expected else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
