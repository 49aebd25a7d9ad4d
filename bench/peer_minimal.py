#!/usr/bin/python3
"""The benchmark's minimal peer: the least a pyATS user could write to get result metrics from a live job. It
subscribes as pyATS's ReportClient does (`subscribe_client`, reply None), reads the chunked stream (`>?H`
more_follows + length) from the reporter's Unix socket, `pickle.loads` each event and, for each finished
section, increments a prometheus_client Counter of results by type and result and observes its runtime in a
Histogram by type. Nothing else: no section table, no job/task/testcase labels, no traces.

Needs Debian's python3-prometheus-client (run it with /usr/bin/python3). Usage: peer_minimal.py SOCKET
EXPECTED_EVENTS. Prints one JSON line when EXPECTED_EVENTS events were handled: CLOCK_MONOTONIC end time (ns),
CPU time, and the results it counted.
"""

import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

sys.path.insert(0, str(Path(__file__).resolve().parent / 'lib'))
from peer_common import BUCKETS, install_pyats_results, serve  # noqa: E402


def main(argv):
    path, expected = argv[0], int(argv[1])
    install_pyats_results()
    registry = CollectorRegistry()
    results = Counter('pyats_section_results', 'Finished pyATS sections by type and result.', ['type', 'result'],
                      registry=registry)
    runtimes = Histogram('pyats_section_duration_seconds', 'Runtime of finished sections.', ['type'],
                         buckets=BUCKETS, registry=registry)
    counted = 0

    def on_event(event):
        nonlocal counted
        if event['event'].startswith('stop_'):
            result = event.get('result')
            type_ = event.get('type')
            results.labels(type_, getattr(result, 'value', None) or 'errored').inc()
            runtimes.labels(type_).observe(event.get('runtime') or 0)
            counted += 1

    return serve(path, expected, on_event, lambda: {'results': counted})


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
