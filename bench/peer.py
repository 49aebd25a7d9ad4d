#!/usr/bin/python3
"""The benchmark's peer: the subscriber a pyATS user would write instead of running the exporter — metrics only,
no traces. It subscribes as pyATS's ReportClient does (`subscribe_client`, reply None), reads the same chunked
stream from the same kind of Unix socket, unpickles each event with
CPython's `pickle`, keeps the little section table it needs to know each section's task and testcase, and
updates `prometheus_client` metrics with the same names and labels as the exporter's metrics sink.

Needs Debian's python3-prometheus-client (run it with /usr/bin/python3). Usage: peer.py SOCKET EXPECTED_EVENTS.
Prints one JSON line when EXPECTED_EVENTS events were handled: CLOCK_MONOTONIC end time (ns) and CPU time.
"""

import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

sys.path.insert(0, str(Path(__file__).resolve().parent / 'lib'))
from peer_common import BUCKETS, RESULTS, install_pyats_results, serve  # noqa: E402

TESTCASE_TYPES = {'CommonSetup', 'Testcase', 'CommonCleanup'}


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
    return serve(path, expected, Subscriber().on_event)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
