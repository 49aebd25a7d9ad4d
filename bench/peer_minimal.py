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

import json
import pickle
import socket
import struct
import sys
import time
import types

from prometheus_client import CollectorRegistry, Counter, Histogram

RESULTS = ['passed', 'failed', 'aborted', 'blocked', 'skipped', 'errored', 'passx']
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


def main(argv):
    path, expected = argv[0], int(argv[1])
    install_pyats_results()
    registry = CollectorRegistry()
    results = Counter('pyats_section_results', 'Finished pyATS sections by type and result.', ['type', 'result'],
                      registry=registry)
    runtimes = Histogram('pyats_section_duration_seconds', 'Runtime of finished sections.', ['type'],
                         buckets=BUCKETS, registry=registry)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    request = pickle.dumps({'name': 'subscribe_client', 'data': {}})
    sock.sendall(struct.pack('>?H', False, len(request)) + request)
    buf = bytearray()
    handled = -1  # the first message is the reply to the subscription
    counted = 0
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
                event = loads(message)
                if event['event'].startswith('stop_'):
                    result = event.get('result')
                    type_ = event.get('type')
                    results.labels(type_, getattr(result, 'value', None) or 'errored').inc()
                    runtimes.labels(type_).observe(event.get('runtime') or 0)
                    counted += 1
            handled += 1
        del buf[:pos]
    t_end = time.monotonic_ns()
    cpu_ms = (time.process_time() - (cpu_start or 0)) * 1000
    print(json.dumps({'kind': 'done' if handled >= expected else 'error', 'tEnd': str(t_end), 'cpuMs': cpu_ms,
                      'handled': handled, 'results': counted}), flush=True)
    sock.close()
    return 0 if handled >= expected else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
