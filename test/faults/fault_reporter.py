#!/usr/bin/env python3
"""A misbehaving pyATS reporter for fault tests: listens on a Unix stream socket and, for each scripted
connection in turn, sends frames that are real CPython pickles (of good and of bad events) or raw broken bytes,
then ends the connection as the script says. CPython standard library only.

Usage: fault_reporter.py --socket PATH --scenario NAME --expect FILE [--header 8be] [--max-frame-bytes N]

Prints `READY <path>` when listening and `DONE <connections>` at the end; `--expect FILE` gets a JSON manifest:
per connection the steps sent and, over all, the rejections (by reason) the exporter must count and the
sections it must finish.
"""

import argparse
import datetime
import json
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import types

HEADERS = {'4be': '>I', '4le': '<I', '8be': '>Q', '8le': '<Q'}
UTC = datetime.timezone.utc


class Result:
    """Pickled as a `pyats.results.<Class>`-like instance, as pyATS result objects are."""

    def __init__(self, value, reason=None):
        self.value = value
        self.code = 0
        self.reason = reason
        self.data = None


def install_fake_pyats_results():
    # pickle checks that a class is importable under its module and name before writing a reference to it.
    pyats = types.ModuleType('pyats')
    results = types.ModuleType('pyats.results')
    pyats.results = results
    Result.__module__ = 'pyats.results'
    Result.__qualname__ = Result.__name__ = 'Passed'
    results.Passed = Result
    sys.modules['pyats'] = pyats
    sys.modules['pyats.results'] = results


install_fake_pyats_results()


class Plan:
    """What to send on one connection, and how the connection ends."""

    def __init__(self, name, end='close'):
        self.name = name
        # close: we close after the last step. wait_close: the exporter must drop us (a framing error).
        self.end = end
        self.steps = []

    def frame(self, payload, expect, note, header):
        self.steps.append({'bytes': frame(payload, header), 'expect': expect, 'note': note})

    def raw(self, data, expect, note):
        self.steps.append({'bytes': data, 'expect': expect, 'note': note})


def frame(payload, header):
    return struct.pack(HEADERS[header], len(payload)) + payload


def at(base, seconds):
    return base + datetime.timedelta(seconds=seconds)


class Job:
    """Builds the events of a small well-formed job, so faults can be slipped between them."""

    def __init__(self, plan, header, job_id, start, protocol=4, first_seq=1):
        self.plan = plan
        self.header = header
        self.job_id = job_id
        self.start = start
        self.protocol = protocol
        self.seq = first_seq - 1
        self.finished = []

    def next_seq(self):
        self.seq += 1
        return self.seq

    def send(self, event, note, expect='ok'):
        self.plan.frame(pickle.dumps(event, protocol=self.protocol), expect, note, self.header)

    def start_section(self, kind, type_, seq, parent, id_, t, **extra):
        event = {'event': 'start_%s' % kind, 'type': type_, 'seq_num': seq, 'id': id_, 'name': id_,
                 'starttime': at(self.start, t)}
        if parent is not None:
            event['parent_seq_num'] = parent
        event.update(extra)
        self.send(event, 'start %s %s' % (type_, id_))

    def stop_section(self, kind, type_, seq, parent, id_, t0, t1, result='passed', expect_finished=True,
                     **extra):
        event = {'event': 'stop_%s' % kind, 'type': type_, 'seq_num': seq, 'id': id_, 'name': id_,
                 'starttime': at(self.start, t0), 'stoptime': at(self.start, t1), 'runtime': float(t1 - t0),
                 'result': Result(result)}
        if parent is not None:
            event['parent_seq_num'] = parent
        event.update(extra)
        self.send(event, 'stop %s %s' % (type_, id_))
        if expect_finished:
            self.finished.append({'seq_num': seq, 'type': type_, 'id': id_, 'parent_seq_num': parent})

    def section(self, kind, type_, parent, id_, t0, t1, result='passed'):
        seq = self.next_seq()
        self.start_section(kind, type_, seq, parent, id_, t0)
        self.stop_section(kind, type_, seq, parent, id_, t0, t1, result)
        return seq


def deeply_nested_pickle(depth):
    """{'x': [[[...]]]} nested `depth` lists deep, written by hand: CPython's pickler would recurse."""
    body = b']' * depth + b'a' * (depth - 1)
    return b'\x80\x04}\x8c\x01x' + body + b's.'


def invalid_utf8_pickle(seq, parent):
    """A start event whose id is SHORT_BINUNICODE with bytes that are not UTF-8 at all."""
    def short_str(b):
        return b'\x8c' + bytes([len(b)]) + b

    items = [(b'event', short_str(b'start_section')), (b'type', short_str(b'TestSection')),
             (b'seq_num', b'K' + bytes([seq])), (b'parent_seq_num', b'K' + bytes([parent])),
             (b'id', short_str(b'bad\xff\xfeutf8\xc3'))]
    out = b'\x80\x04}('
    for key, value in items:
        out += short_str(key) + value
    return out + b'u.'


def malformed_scenario(header, max_attr):
    """Connection 1: every kind of bad frame and bad event between the events of a good job, ending with a
    size header over the limit. Connection 2: a good job, then a frame cut off by the end of the stream.
    Connection 3: bytes no size prefix fits. Connection 4: a good job, cleanly."""
    plans = []
    base = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

    one = Plan('malformed events', end='wait_close')
    job = Job(one, header, 'faulty_job', base)
    suite = job.next_seq()
    job.send({'event': 'init_testsuite', 'type': 'TestSuite', 'seq_num': suite, 'id': 'faulty_job'}, 'init suite')
    job.start_section('testsuite', 'TestSuite', suite, None, 'faulty_job', 0)
    task = job.next_seq()
    job.start_section('task', 'Task', task, suite, 'Task-1', 1)
    tc = job.next_seq()
    job.start_section('section', 'Testcase', tc, task, 'tc_faults', 2)

    # Frames that are not pickles at all, or broken ones: skipped, the connection kept.
    one.frame(b'\x80\x04\x95garbage that is no pickle', 'decode_error', 'bad opcode', header)
    good = pickle.dumps({'event': 'start_section', 'type': 'TestSection', 'seq_num': 99, 'id': 'cut'}, protocol=4)
    one.frame(good[:-7], 'decode_error', 'truncated pickle', header)
    one.frame(b'\x80\x04\x8c\x05hello\x93\x81.', 'decode_error', 'bad STACK_GLOBAL', header)
    one.frame(deeply_nested_pickle(100_000), 'decode_error', 'nesting 100000 deep', header)
    one.frame(b'\x80\x04' + b'(' * 50_000 + b'.', 'decode_error', '50000 MARKs', header)

    # Pickles that are not events.
    for value, note in ([1, 2, 3], 'a list'), ('start_section', 'a string'), (None, 'None'), (3.5, 'a float'):
        job.send(value, note, 'not_a_dict')
    job.send({}, 'empty dict', 'missing_event')
    job.send({'seq_num': 7}, 'no event key', 'missing_event')
    job.send({'event': 5, 'seq_num': 7}, 'event is an int', 'bad_field_type')
    job.send({'event': b'start_section', 'seq_num': 7}, 'event is bytes', 'bad_field_type')
    job.send({'event': 'finish_section', 'seq_num': 7}, 'unknown event name', 'unknown_event')
    job.send({'event': 'start_section', 'seq_num': 'seven'}, 'seq_num a word', 'bad_seq_num')
    job.send({'event': 'start_section', 'seq_num': -7}, 'negative seq_num', 'bad_seq_num')
    job.send({'event': 'start_section', 'seq_num': 2 ** 70}, 'seq_num beyond 2^53', 'bad_seq_num')
    job.send({'event': 'start_section', 'seq_num': 7.5}, 'fractional seq_num', 'bad_seq_num')
    job.send({'event': 'stop_section', 'seq_num': 7, 'result': 'splendid'}, 'unknown result', 'bad_result')
    job.send({'event': 'stop_section', 'seq_num': 7, 'result': ['passed']}, 'result a list', 'bad_result')

    # A testcase whose own events are unusable: its step's parent is never seen.
    lost = job.next_seq()
    bad_parent = {'event': 'start_section', 'type': 'Testcase', 'seq_num': lost, 'parent_seq_num': [task],
                  'id': 'tc_lost', 'starttime': at(base, 30)}
    job.send(bad_parent, 'parent_seq_num a list', 'bad_parent_seq_num')
    step = job.next_seq()
    job.start_section('step', 'Step', step, lost, 'orphan_step', 31)
    job.stop_section('step', 'Step', step, lost, 'orphan_step', 31, 32)
    job.send(dict(bad_parent, event='stop_section', result=Result('passed')), 'its stop', 'bad_parent_seq_num')

    # Values that decode but are unusable: strict normalizing rejects the event with the field's reason.
    t = 40
    for field, value, reason, note in (
            ('runtime', float('nan'), 'bad_runtime', 'NaN runtime'),
            ('runtime', -5.0, 'bad_runtime', 'negative runtime'),
            ('runtime', 1e12, 'bad_runtime', 'runtime of 31,000 years'),
            ('runtime', 'fast', 'bad_runtime', 'runtime a word'),
            ('starttime', datetime.datetime(1970, 1, 1, tzinfo=UTC), 'bad_time', 'starttime in 1970'),
            ('starttime', float('inf'), 'bad_time', 'infinite starttime'),
            ('starttime', float('nan'), 'bad_time', 'NaN starttime'),
            ('starttime', -1e9, 'bad_time', 'negative epoch starttime'),
            ('stoptime', datetime.datetime(9999, 12, 31, tzinfo=UTC), 'bad_time', 'stoptime in 9999'),
            ('stoptime', '2024-13-45T99:00:00', 'bad_time', 'impossible ISO stoptime'),
            ('stoptime', at(base, 1), 'bad_time', 'stoptime before starttime'),
            ('id', ['a', 'b'], 'bad_field_type', 'id a list'),
            ('name', {'first': 1}, 'bad_field_type', 'name a dict'),
    ):
        seq = job.next_seq()
        t += 2
        event = {'event': 'stop_section', 'type': 'TestSection', 'seq_num': seq, 'parent_seq_num': tc,
                 'id': 'bad_%s' % seq, 'starttime': at(base, t), 'stoptime': at(base, t + 1), 'runtime': 1.0,
                 'result': Result('passed')}
        event[field] = value
        job.send(event, note, reason)

    # Values that are odd but usable: accepted as they are, cut or cleaned.
    huge = job.next_seq()
    job.start_section('section', 'TestSection', huge, tc, 'huge_name', 70, name='n' * 3_000_000,
                      logfile='L' * 200_000)
    job.stop_section('section', 'TestSection', huge, tc, 'huge_name', 70, 71, name='n' * 3_000_000)
    job.finished[-1]['name_length'] = 3_000_000
    proto = job.next_seq()
    job.start_section('section', 'TestSection', proto, tc, 'proto_keys', 72,
                      __proto__={'polluted': True, 'event': 'stop_section'}, constructor='x',
                      prototype={'toString': 1})
    job.stop_section('section', 'TestSection', proto, tc, 'proto_keys', 72, 73, __proto__={'seq_num': 1})
    surrogate = job.next_seq()
    job.start_section('section', 'TestSection', surrogate, tc, 'lone_\udc80_surrogate', 74)
    job.stop_section('section', 'TestSection', surrogate, tc, 'lone_\udc80_surrogate', 74, 75)
    bad_bytes = job.next_seq()
    one.frame(invalid_utf8_pickle(bad_bytes, tc), 'ok', 'id with invalid UTF-8 bytes', header)
    job.stop_section('section', 'TestSection', bad_bytes, tc, 'bad\ufffd\ufffdutf8\ufffd', 76, 77,
                     id=None, name=None)
    nested = job.next_seq()
    deep_ok = [[[[[[[[[[['deep but within bounds']]]]]]]]]]]
    job.start_section('section', 'TestSection', nested, tc, 'nested_extra', 78, extra=deep_ok)
    job.stop_section('section', 'TestSection', nested, tc, 'nested_extra', 78, 79, extra={'a': deep_ok})
    dup = job.next_seq()
    for _ in range(3):
        job.start_section('section', 'TestSection', dup, tc, 'repeated', 80)
    for _ in range(3):
        job.stop_section('section', 'TestSection', dup, tc, 'repeated', 80, 81, expect_finished=False)
    job.finished.append({'seq_num': dup, 'type': 'TestSection', 'id': 'repeated', 'parent_seq_num': tc})
    early = job.next_seq()
    job.stop_section('section', 'TestSection', early, tc, 'stop_before_start', 82, 83)
    job.start_section('section', 'TestSection', early, tc, 'stop_before_start', 82)

    job.stop_section('section', 'Testcase', tc, task, 'tc_faults', 2, 90, result='failed')
    job.stop_section('task', 'Task', task, suite, 'Task-1', 1, 91, result='failed')
    job.stop_section('testsuite', 'TestSuite', suite, None, 'faulty_job', 0, 92, result='failed')
    # The stream goes on after the job: a size prefix announcing far more than the limit ends it.
    one.raw(struct.pack(HEADERS[header], 2 ** 31 - 1 if header.startswith('4') else 2 ** 40) + b'\x80\x04',
            'frame_too_large', 'size header over the limit')
    plans.append((one, job))

    two = Plan('truncated at EOF')
    second = Job(two, header, 'after_reset', at(base, 3600))
    root = second.next_seq()
    second.start_section('testsuite', 'TestSuite', root, None, 'after_reset', 0)
    second.section('section', 'Testcase', root, 'tc_a', 1, 2)
    second.stop_section('testsuite', 'TestSuite', root, None, 'after_reset', 0, 3)
    cut = frame(pickle.dumps({'event': 'start_testsuite', 'seq_num': 1, 'id': 'x' * 500}, protocol=4), header)
    two.raw(cut[:120], 'truncated_frame', 'frame cut off by the end of the stream')
    plans.append((two, second))

    three = Plan('not a reporter', end='wait_close')
    three.raw(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n' * 4, 'undetectable_header', 'bytes no size prefix fits')
    plans.append((three, None))

    four = Plan('recovered')
    last = Job(four, header, 'recovered_job', at(base, 7200), protocol=2)
    root = last.next_seq()
    last.start_section('testsuite', 'TestSuite', root, None, 'recovered_job', 0)
    last.section('section', 'Testcase', root, 'tc_b', 1, 2)
    last.stop_section('testsuite', 'TestSuite', root, None, 'recovered_job', 0, 3)
    plans.append((four, last))
    return plans


def duplicates_scenario(header, _max_attr):
    """One connection: a job with every frame sent twice, then the whole job again (a replayed stream)."""
    base = datetime.datetime(2024, 6, 1, 8, 0, 0, tzinfo=UTC)
    source = Plan('source')
    job = Job(source, header, 'dup_job', base)
    suite = job.next_seq()
    job.send({'event': 'init_testsuite', 'type': 'TestSuite', 'seq_num': suite, 'id': 'dup_job'}, 'init suite')
    job.start_section('testsuite', 'TestSuite', suite, None, 'dup_job', 0)
    task = job.next_seq()
    job.send({'event': 'init_task', 'type': 'Task', 'seq_num': task, 'parent_seq_num': suite, 'id': 'Task-1'},
             'init task')
    job.section('plugin', 'Plugin', task, 'pre_task_plugin', 1, 2)
    job.start_section('task', 'Task', task, suite, 'Task-1', 3)
    for i in range(5):
        tc = job.next_seq()
        job.start_section('section', 'Testcase', tc, task, 'tc_%d' % i, 4 + i * 10)
        job.section('section', 'TestSection', tc, 'check', 5 + i * 10, 6 + i * 10, 'failed' if i == 2 else 'passed')
        job.stop_section('section', 'Testcase', tc, task, 'tc_%d' % i, 4 + i * 10, 8 + i * 10,
                         'failed' if i == 2 else 'passed')
    job.stop_section('task', 'Task', task, suite, 'Task-1', 3, 60, 'failed')
    job.stop_section('testsuite', 'TestSuite', suite, None, 'dup_job', 0, 61, 'failed')

    plan = Plan('every frame twice, then the job again')
    for step in source.steps:
        plan.raw(step['bytes'], step['expect'], step['note'])
        plan.raw(step['bytes'], step['expect'], step['note'] + ' (again)')
    for step in source.steps:
        plan.raw(step['bytes'], step['expect'], step['note'] + ' (replayed)')
    return [(plan, job)]


SCENARIOS = {'malformed': malformed_scenario, 'duplicates': duplicates_scenario}


def drain(conn, closed):
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
    closed.set()


def serve(listener, plans, timeout):
    for plan, _job in plans:
        listener.settimeout(timeout)
        conn, _ = listener.accept()
        conn.settimeout(None)
        closed = threading.Event()
        threading.Thread(target=drain, args=(conn, closed), daemon=True).start()
        try:
            for step in plan.steps:
                conn.sendall(step['bytes'])
        except OSError:
            if plan.end != 'wait_close':
                raise
        if plan.end == 'wait_close':
            if not closed.wait(timeout):
                raise TimeoutError('the exporter did not drop connection "%s"' % plan.name)
        else:
            conn.shutdown(socket.SHUT_WR)
            closed.wait(timeout)
        conn.close()


def manifest(plans):
    rejected = {}
    connections = []
    finished = []
    for plan, job in plans:
        steps = []
        for step in plan.steps:
            steps.append({'expect': step['expect'], 'note': step['note'], 'bytes': len(step['bytes'])})
            if step['expect'] != 'ok':
                rejected[step['expect']] = rejected.get(step['expect'], 0) + 1
        connections.append({'name': plan.name, 'end': plan.end, 'steps': steps})
        if job is not None:
            finished.append({'job_id': job.job_id, 'sections': job.finished})
    return {'connections': connections, 'rejected': rejected, 'jobs': finished}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--socket', required=True)
    p.add_argument('--scenario', choices=sorted(SCENARIOS), required=True)
    p.add_argument('--header', choices=sorted(HEADERS), default='8be')
    p.add_argument('--max-attribute-length', type=int, default=4096)
    p.add_argument('--expect')
    p.add_argument('--accept-timeout', type=float, default=30)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plans = SCENARIOS[args.scenario](args.header, args.max_attribute_length)
    if args.expect:
        with open(args.expect + '.tmp', 'w', encoding='utf-8') as f:
            json.dump(manifest(plans), f, indent=1)
        os.replace(args.expect + '.tmp', args.expect)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket)
    listener.listen(4)
    print('READY %s' % args.socket, flush=True)
    try:
        serve(listener, plans, args.accept_timeout)
    finally:
        listener.close()
        try:
            os.unlink(args.socket)
        except OSError:
            pass
    # Leave the exporter time to read what was sent before the socket is gone.
    time.sleep(0.2)
    print('DONE %d' % len(plans), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
