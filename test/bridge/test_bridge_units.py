"""Unit tests of the bridge's parts with real sockets and a real HTTP server (run by bridge.test.ts with
PYTHONPATH=bridge:test/stubs and TZ=Asia/Kolkata)."""

import datetime
import http.server
import json
import logging
import os
import pickle
import socket
import tempfile
import threading
import time
import unittest

from pyats import results
from pyats_exporter_bridge.context import (CI_VARIABLES, RunInfoContext, ci_variables, make_context,
                                           read_env_txt)
from pyats_exporter_bridge.encode import encode_event, to_json
from pyats_exporter_bridge.forwarder import END, PING, Forwarder
from pyats_exporter_bridge.transport import (HttpTransport, PermanentError, TransportError, UnixTransport,
                                             parse_target)


# The forwarder logs every retry and drop; these tests provoke them on purpose.
logging.getLogger('pyats_exporter_bridge').setLevel(logging.CRITICAL)


class Opaque:
    def __str__(self):
        return 'opaque-thing'


class Broken:
    def __str__(self):
        raise RuntimeError('no')


class EncodeTest(unittest.TestCase):
    def test_naive_datetime_gets_the_local_offset(self):
        # TZ=Asia/Kolkata is set by the runner: +05:30, no DST.
        value = to_json(datetime.datetime(2024, 5, 1, 12, 0, 0, 123456))
        self.assertEqual(value, '2024-05-01T12:00:00.123456+05:30')

    def test_aware_datetime_keeps_its_offset(self):
        tz = datetime.timezone(datetime.timedelta(hours=-7))
        self.assertEqual(to_json(datetime.datetime(2024, 5, 1, 12, 0, tzinfo=tz)), '2024-05-01T12:00:00-07:00')

    def test_result_objects_become_value_and_reason(self):
        failed = results.Failed.clone('BGP down')
        self.assertEqual(to_json(failed), {'value': 'failed', 'reason': 'BGP down'})
        self.assertEqual(to_json(results.Passed), {'value': 'passed'})
        # A real reporter pickle of a result object (pyats.results.result.TestResult) round-trips first.
        loaded = pickle.loads(pickle.dumps(failed, protocol=4))
        self.assertEqual(type(loaded).__module__, 'pyats.results.result')
        self.assertEqual(to_json(loaded), {'value': 'failed', 'reason': 'BGP down'})

    def test_other_values(self):
        self.assertEqual(to_json(datetime.timedelta(seconds=1, microseconds=500)), 1.0005)
        self.assertEqual(to_json(float('nan')), 'nan')
        self.assertEqual(to_json(b'caf\xc3\xa9'), 'café')
        self.assertEqual(to_json({1: (1, 2), 'x': {3}}), {'1': [1, 2], 'x': [3]})
        self.assertEqual(to_json(Opaque()), 'opaque-thing')
        self.assertEqual(to_json(Broken()), '<Broken>')
        deep = []
        for _ in range(40):
            deep = [deep]
        self.assertIsInstance(json.loads(json.dumps(to_json(deep))), list)

    def test_event_line_is_one_line_of_json(self):
        line = encode_event({'event': 'stop_section', 'name': 'multi\nline', 'result': results.Passed,
                             'starttime': datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)})
        self.assertNotIn('\n', line)
        self.assertEqual(json.loads(line), {'event': 'stop_section', 'name': 'multi\nline',
                                            'result': {'value': 'passed'},
                                            'starttime': '2024-01-01T00:00:00+00:00'})


class FlakyTransport:
    """Fails the first `failures` sends, then records every batch."""

    def __init__(self, failures=0, permanent=False):
        self.failures = failures
        self.permanent = permanent
        self.batches = []
        self.closed = 0
        self.lock = threading.Lock()

    def describe(self):
        return 'flaky'

    def send(self, lines):
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                raise (PermanentError if self.permanent else TransportError)('down')
            self.batches.append(list(lines))

    def close(self):
        self.closed += 1

    def lines(self):
        with self.lock:
            return [line for batch in self.batches for line in batch]


class ForwarderTest(unittest.TestCase):
    def test_delivers_in_order_through_failures_and_ends(self):
        transport = FlakyTransport(failures=3)
        forwarder = Forwarder(transport, buffer_size=1000, batch_size=7, retry_initial=0.01, retry_max=0.02)
        forwarder.start()
        for i in range(100):
            self.assertTrue(forwarder.submit('{"n":%d}' % i))
        self.assertTrue(forwarder.close(timeout=10))
        lines = transport.lines()
        self.assertEqual(lines[:-1], ['{"n":%d}' % i for i in range(100)])
        self.assertEqual(lines[-1], END)
        self.assertTrue(all(len(batch) <= 7 for batch in transport.batches))
        self.assertEqual(forwarder.stats()['sent'], 100)

    def test_submit_never_blocks_and_counts_what_it_drops(self):
        transport = FlakyTransport(failures=10 ** 9)
        forwarder = Forwarder(transport, buffer_size=10, batch_size=5, retry_initial=0.01, retry_max=0.05)
        forwarder.start()
        started = time.monotonic()
        accepted = sum(forwarder.submit('{}') for _ in range(10000))
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertLessEqual(accepted, 15)
        self.assertFalse(forwarder.close(timeout=0.3))
        stats = forwarder.stats()
        self.assertEqual(stats['sent'], 0)
        self.assertEqual(stats['dropped'], 10000)
        self.assertFalse(forwarder.submit('{}'))

    def test_refused_batches_are_not_retried(self):
        transport = FlakyTransport(failures=1, permanent=True)
        forwarder = Forwarder(transport, buffer_size=100, batch_size=100)
        forwarder.start()
        forwarder.submit('{"a":1}')
        time.sleep(0.3)
        forwarder.submit('{"a":2}')
        forwarder.close(timeout=5)
        self.assertEqual(transport.lines(), ['{"a":2}', END])
        self.assertEqual(forwarder.stats()['refused'], 1)

    def test_pings_when_idle(self):
        transport = FlakyTransport()
        forwarder = Forwarder(transport, heartbeat=0.1)
        forwarder.start()
        deadline = time.monotonic() + 10
        while PING not in transport.lines() and time.monotonic() < deadline:
            time.sleep(0.02)
        forwarder.close(timeout=2)
        self.assertIn(PING, transport.lines())


class EnvRecordingTransport(FlakyTransport):
    """Records, with each batch, the env the forwarder had given it by then."""

    def __init__(self):
        super().__init__()
        self.env = None
        self.envs = []

    def set_env(self, env):
        self.env = env

    def send(self, lines):
        super().send(lines)
        self.envs.append(self.env)


class ForwarderContextTest(unittest.TestCase):
    def test_asks_for_the_context_before_each_batch_until_it_is_known(self):
        answers = [None, None, {'TRACEPARENT': '00-%s-%s-01' % ('1' * 32, '2' * 16)}]
        asked = []

        def context():
            asked.append(1)
            return answers.pop(0) if answers else self.fail('asked again after it was known')

        transport = EnvRecordingTransport()
        forwarder = Forwarder(transport, batch_size=1, context=context)
        forwarder.start()
        for i in range(5):
            forwarder.submit('{"n":%d}' % i)
            wait_for(lambda: len(transport.batches) == i + 1)
        forwarder.close(timeout=5)
        self.assertEqual(len(asked), 3)
        self.assertEqual(transport.envs[:2], [None, None])
        self.assertEqual(transport.envs[2:5], [{'TRACEPARENT': '00-%s-%s-01' % ('1' * 32, '2' * 16)}] * 3)

    def test_a_failing_context_costs_only_the_context(self):
        def context():
            raise RuntimeError('broken')

        transport = EnvRecordingTransport()
        forwarder = Forwarder(transport, context=context)
        forwarder.start()
        forwarder.submit('{"a":1}')
        self.assertTrue(forwarder.close(timeout=5))
        self.assertEqual(transport.lines(), ['{"a":1}', END])
        self.assertEqual(transport.envs, [None, None])


ENV_TXT = """Runtime Information
===================

Environment Variables
=====================
HOME                        : /home/lab
TRACEPARENT                 : 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
GITHUB_ACTIONS              : true
GITHUB_RUN_ID               : 4242
AWS_SECRET_ACCESS_KEY       : never-sent

Installed Packages
==================
pyats                       : 23.2
"""


class ContextTest(unittest.TestCase):
    def setUp(self):
        self.runinfo = tempfile.mkdtemp()

    def tearDown(self):
        for name in os.listdir(self.runinfo):
            os.unlink(os.path.join(self.runinfo, name))
        os.rmdir(self.runinfo)

    def test_keeps_only_the_ci_variables(self):
        env = {name: 'v-%s' % name for name in CI_VARIABLES}
        env.update({'HOME': '/root', 'GITHUB_TOKEN': 'secret', 'BUILD_URL': 'x' * 5000, 'JOB_NAME': ' '})
        kept = ci_variables(env)
        self.assertEqual(set(kept), set(CI_VARIABLES) - {'JOB_NAME'})
        self.assertEqual(len(kept['BUILD_URL']), 2048)

    def test_runinfo_context_waits_for_env_txt_then_gives_up(self):
        now = [0.0]
        context = RunInfoContext(self.runinfo, wait=5, clock=lambda: now[0])
        self.assertIsNone(context())
        with open(os.path.join(self.runinfo, 'env.txt'), 'w') as f:
            f.write(ENV_TXT)
        self.assertEqual(context(), {'TRACEPARENT': '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
                                     'GITHUB_ACTIONS': 'true', 'GITHUB_RUN_ID': '4242'})
        elsewhere = RunInfoContext(os.path.join(self.runinfo, 'missing'), wait=5, clock=lambda: now[0])
        self.assertIsNone(elsewhere())
        now[0] = 5.0
        self.assertEqual(elsewhere(), {})

    def test_a_fifo_for_env_txt_is_not_read_and_does_not_hang(self):
        os.mkfifo(os.path.join(self.runinfo, 'env.txt'))
        self.assertIsNone(read_env_txt(self.runinfo))

    def test_sources(self):
        self.assertEqual(make_context('process', self.runinfo, {'TRACEPARENT': 't', 'HOME': 'h'})(),
                         {'TRACEPARENT': 't'})
        self.assertIsNone(make_context('none', self.runinfo))
        with self.assertRaises(ValueError):
            make_context('everything', self.runinfo)


class UnixServer:
    """Accepts connections on a Unix socket and records each connection's lines."""

    def __init__(self, path):
        self.path = path
        self.connections = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            record = {'conn': conn, 'data': b''}
            self.connections.append(record)
            threading.Thread(target=self._read, args=(record,), daemon=True).start()

    def _read(self, record):
        while True:
            try:
                chunk = record['conn'].recv(65536)
            except OSError:
                return
            if not chunk:
                return
            record['data'] += chunk

    def lines(self, index):
        return self.connections[index]['data'].decode().splitlines()

    def close(self):
        self.sock.close()
        for record in self.connections:
            try:
                record['conn'].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            record['conn'].close()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('timed out')
        time.sleep(0.02)


class UnixTransportTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, 'ingest.sock')

    def test_says_hello_on_every_connection_and_reconnects(self):
        server = UnixServer(self.path)
        transport = parse_target('unix:' + self.path, stream='job-1')
        self.assertIsInstance(transport, UnixTransport)
        transport.send(['{"a":1}'])
        wait_for(lambda: len(server.connections) == 1 and len(server.lines(0)) == 2)
        self.assertEqual(json.loads(server.lines(0)[0]), {'control': 'hello', 'stream': 'job-1'})
        # The exporter drops the connection: the next send notices and reconnects instead of writing into it.
        server.connections[0]['conn'].shutdown(socket.SHUT_RDWR)
        time.sleep(0.1)
        transport.send(['{"a":2}'])
        wait_for(lambda: len(server.connections) == 2 and len(server.lines(1)) == 2)
        self.assertEqual(server.lines(1), [server.lines(0)[0], '{"a":2}'])
        transport.close()
        server.close()

    def test_says_hello_again_with_the_env_once_it_is_known_and_on_every_reconnect(self):
        server = UnixServer(self.path)
        transport = UnixTransport(self.path, stream='job-1')
        transport.send(['{"a":1}'])
        env = {'TRACEPARENT': '00-%s-%s-01' % ('a' * 32, 'b' * 16)}
        transport.set_env(env)
        transport.send(['{"a":2}'])
        transport.send(['{"a":3}'])
        wait_for(lambda: len(server.connections) == 1 and len(server.lines(0)) == 5)
        hello = {'control': 'hello', 'stream': 'job-1'}
        self.assertEqual([json.loads(line) for line in server.lines(0)],
                         [hello, {'a': 1}, dict(hello, env=env), {'a': 2}, {'a': 3}])
        server.connections[0]['conn'].shutdown(socket.SHUT_RDWR)
        time.sleep(0.1)
        transport.send(['{"a":4}'])
        wait_for(lambda: len(server.connections) == 2 and len(server.lines(1)) == 2)
        self.assertEqual([json.loads(line) for line in server.lines(1)], [dict(hello, env=env), {'a': 4}])
        transport.close()
        server.close()

    def tearDown(self):
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def test_connection_refused_is_a_transport_error(self):
        with self.assertRaises(TransportError):
            UnixTransport(self.path).send(['{}'])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    requests = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        Handler.requests.append((self.path, dict(self.headers), body.decode()))
        payload = b'{"accepted":1}'
        self.send_response(Handler.status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class HttpTransportTest(unittest.TestCase):
    def setUp(self):
        Handler.requests = []
        Handler.status = 200
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()

    def test_posts_ndjson_with_stream_and_token(self):
        transport = parse_target(self.url, token='t0k', stream='lab:job')
        self.assertIsInstance(transport, HttpTransport)
        transport.send(['{"a":1}', '{"a":2}'])
        transport.send(['{"a":3}'])
        path, headers, body = Handler.requests[0]
        self.assertEqual(path, '/api/v1/events')
        self.assertEqual(headers['X-Pyats-Stream'], 'lab:job')
        self.assertEqual(headers['Authorization'], 'Bearer t0k')
        self.assertEqual(headers['Content-Type'], 'application/x-ndjson')
        self.assertEqual(body, '{"a":1}\n{"a":2}\n')
        self.assertEqual(len(Handler.requests), 2)
        transport.close()

    def test_client_errors_are_permanent_and_server_errors_retryable(self):
        transport = parse_target(self.url + '/custom/path', stream='s')
        Handler.status = 401
        with self.assertRaises(PermanentError):
            transport.send(['{}'])
        Handler.status = 503
        with self.assertRaises(TransportError) as caught:
            transport.send(['{}'])
        self.assertNotIsInstance(caught.exception, PermanentError)
        self.assertEqual(Handler.requests[0][0], '/custom/path')
        transport.close()

    def test_the_env_leads_each_request_until_one_is_accepted(self):
        transport = parse_target(self.url, stream='lab:job')
        env = {'GITLAB_CI': 'true', 'CI_PIPELINE_ID': '7'}
        transport.set_env(env)
        Handler.status = 503
        with self.assertRaises(TransportError):
            transport.send(['{"a":1}'])
        Handler.status = 200
        transport.send(['{"a":1}'])
        transport.send(['{"a":2}'])
        hello = json.dumps({'control': 'hello', 'stream': 'lab:job', 'env': env}, separators=(',', ':'))
        self.assertEqual([r[2] for r in Handler.requests],
                         [hello + '\n{"a":1}\n', hello + '\n{"a":1}\n', '{"a":2}\n'])
        transport.close()

    def test_a_closed_keep_alive_connection_is_retried_once(self):
        transport = parse_target(self.url, stream='s')
        transport.send(['{"a":1}'])
        # The server side drops the idle kept-alive connection.
        transport._conn.sock.shutdown(socket.SHUT_RDWR)
        transport.send(['{"a":2}'])
        self.assertEqual([r[2] for r in Handler.requests], ['{"a":1}\n', '{"a":2}\n'])
        transport.close()



class MultiChunkBugClient:
    """Fails as pyATS 23.2's ReportClient.subscribe() does after a message of several chunks (observed on the
    real bundle: IncompleteReadError, then AttributeError 'ae_eof'), after two events."""

    def __init__(self, path):
        self.path = path

    async def subscribe(self, callback):
        for seq in (1, 2):
            await callback({'event': 'start_testsuite' if seq == 1 else 'start_task', 'type': 'TestSuite',
                            'seq_num': seq})
        raise AttributeError("'StreamReader' object has no attribute 'ae_eof'")


class BridgeEndTest(unittest.TestCase):
    def test_names_pyats_multichunk_bug_and_marks_the_loss(self):
        from pyats_exporter_bridge.bridge import Bridge, is_multichunk_bug
        directory = tempfile.mkdtemp()
        ingest = os.path.join(directory, 'ingest.sock')
        reporter = os.path.join(directory, 'reporter.sock')
        open(reporter, 'w').close()
        server = UnixServer(ingest)
        bridge = Bridge(reporter, 'unix:' + ingest, stream='job-1', client_class=MultiChunkBugClient)
        with self.assertLogs('pyats_exporter_bridge', level='ERROR') as logs:
            bridge.start()
            self.assertTrue(bridge.wait(10))
            bridge.stop(5)
        self.assertTrue(bridge.lost_after_large_message)
        self.assertTrue(any('over 64 KiB' in line and '--reporter-socket' in line for line in logs.output))
        self.assertEqual(bridge.events, 2)
        self.assertFalse(is_multichunk_bug(OSError('other')))
        server.close()


class FailingStepClient:
    """A ReportClient whose job has one failed step that logged before failing, and one that passed."""

    def __init__(self, path):
        self.path = path

    async def subscribe(self, callback):
        await callback({'event': 'stop_section', 'type': 'Step', 'seq_num': 5, 'result': results.Failed,
                        'logs': {'file': 'TaskLog.T', 'begin': 6, 'size': 30}})
        await callback({'event': 'stop_section', 'type': 'Step', 'seq_num': 6, 'result': results.Passed,
                        'logs': {'file': 'TaskLog.T', 'begin': 0, 'size': 6}})
        await callback({'event': 'stop_section', 'type': 'Step', 'seq_num': 7, 'result': results.Errored,
                        'logs': {'file': '../outside', 'begin': 0, 'size': 6}})


class LogExcerptTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.runinfo = os.path.join(self.root, 'runinfo')
        os.mkdir(self.runinfo)
        with open(os.path.join(self.runinfo, 'TaskLog.T'), 'wb') as f:
            f.write(b'start\nGi0/1 is down\nstep failed\n.\n')
        with open(os.path.join(self.root, 'outside'), 'w') as f:
            f.write('secret\n')

    def test_reads_the_slice_confined_to_runinfo(self):
        from pyats_exporter_bridge.logs import read_excerpt
        logs = {'file': 'TaskLog.T', 'begin': 6, 'size': 26}
        self.assertEqual(read_excerpt(self.runinfo, logs), 'Gi0/1 is down\nstep failed\n')
        # The tail within the bound, from a line start.
        self.assertEqual(read_excerpt(self.runinfo, logs, max_bytes=16), 'step failed\n')
        os.symlink(os.path.join(self.root, 'outside'), os.path.join(self.runinfo, 'out'))
        os.mkfifo(os.path.join(self.runinfo, 'fifo'))
        for name in ('../outside', os.path.join(self.root, 'outside'), 'out', 'fifo', 'gone', 'a\0b'):
            self.assertIsNone(read_excerpt(self.runinfo, {'file': name, 'begin': 0, 'size': 6}), name)
        self.assertIsNone(read_excerpt(self.runinfo, {'file': 'TaskLog.T', 'begin': -1, 'size': 6}))
        self.assertIsNone(read_excerpt(self.runinfo, {'file': 'TaskLog.T', 'begin': 500, 'size': 6}))

    def test_a_sparse_10_gb_file_is_read_only_to_the_bound(self):
        from pyats_exporter_bridge.logs import read_excerpt
        path = os.path.join(self.runinfo, 'TaskLog.Huge')
        with open(path, 'wb') as f:
            f.truncate(10 * 1024 ** 3 - 12)
            f.seek(10 * 1024 ** 3 - 12)
            f.write(b'\nlast line.\n')
        self.assertEqual(read_excerpt(self.runinfo, {'file': 'TaskLog.Huge', 'begin': 0, 'size': 2 ** 50},
                                      max_bytes=11), 'last line.\n')

    def test_the_bridge_sends_failed_sections_their_excerpt(self):
        from pyats_exporter_bridge.bridge import Bridge
        ingest = os.path.join(self.root, 'ingest.sock')
        reporter = os.path.join(self.runinfo, 'reporter.sock')
        open(reporter, 'w').close()
        server = UnixServer(ingest)
        bridge = Bridge(reporter, 'unix:' + ingest, stream='job-1', client_class=FailingStepClient)
        bridge.start()
        self.assertTrue(bridge.wait(10))
        bridge.stop(5)
        wait_for(lambda: server.connections and any('"end"' in line for line in server.lines(0)))
        events = [json.loads(line) for line in server.lines(0) if '"seq_num"' in line]
        server.close()
        self.assertEqual([e['seq_num'] for e in events], [5, 6, 7])
        # The file ends before the slice does: what is there is sent.
        self.assertEqual(events[0]['log_excerpt'], 'Gi0/1 is down\nstep failed\n.\n')
        self.assertNotIn('log_excerpt', events[1])
        self.assertNotIn('log_excerpt', events[2])


if __name__ == '__main__':
    unittest.main()
