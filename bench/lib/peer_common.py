"""What the two Python peers share: a stand-in for pyats.results, and the subscription and chunked read loop of
a pyATS ReportClient, timed, with the one JSON line each prints at the end."""

import json
import pickle
import socket
import struct
import sys
import time
import types

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


def serve(path, expected, on_event, summary=dict):
    """Subscribes on the reporter socket `path` as ReportClient does (`subscribe_client`, reply None), reads the
    chunked stream (`>?H` more_follows + length) and calls `on_event` with each unpickled event until `expected`.
    Prints one JSON line (CLOCK_MONOTONIC end time in ns, CPU time from the first read, events handled, then
    `summary()`) and returns the exit status."""
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
                on_event(loads(message))
            handled += 1
        del buf[:pos]
    t_end = time.monotonic_ns()
    cpu_ms = (time.process_time() - (cpu_start or 0)) * 1000
    print(json.dumps({'kind': 'done' if handled >= expected else 'error', 'tEnd': str(t_end), 'cpuMs': cpu_ms,
                      'handled': handled, **summary()}), flush=True)
    sock.close()
    return 0 if handled >= expected else 1
