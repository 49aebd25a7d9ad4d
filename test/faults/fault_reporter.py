#!/usr/bin/env python3
"""A misbehaving pyATS reporter for fault tests: listens on a Unix stream socket and serves each scripted
subscription in turn (a connection that sends subscribe_client): it answers it (None as pyATS 23.2 does, or
a refusal), then sends messages that are real CPython pickles (of good and of bad events) or raw broken
bytes, and ends the connection as the script says. Other connections (the exporter fetching what already
ran: ping, register_client, get_testsuite, get_section) get pyATS's answers; get_testsuite says nothing ran
yet (None), or refuses when the scenario says so. CPython standard library only.

Usage: fault_reporter.py --socket PATH --scenario NAME --expect FILE [--frame chunked] [--max-frame-bytes N]

Prints `READY <path>` when listening and `DONE <subscriptions>` at the end; `--expect FILE` gets a JSON
manifest: per subscription the steps sent and how the exporter must end it, over all the rejections (by
reason) the exporter must count and the sections it must finish, and the requests it sent. A request
without 'name' (which kills the real 23.2 server and fails the job) is recorded and ends the run (exit 5).
"""

import argparse
import datetime
import json
import os
import pickle
import queue
import signal
import socket
import struct
import sys
import threading
import time
import types

# The framing and the reporter's replies are the stand-in's, which matches real pyATS 23.2 byte for byte.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'helpers'))
from reporter_standin import CHUNK_HEADER, FORMATS, LEGACY_FORMATS, MAX_CHUNK, UNREGISTERED, frame  # noqa: E402

UTC = datetime.timezone.utc


class Result:
    """Pickled as a `pyats.results.result.TestResult` (code, value, reason, data), as pyATS 23.2 sends."""

    CODES = {'failed': 0, 'passed': 1, 'aborted': 2, 'blocked': 3, 'skipped': 4, 'errored': 5, 'passx': 8}

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, value, reason=None):
        self.code = self.CODES.get(value, 0)
        self.value = value
        self.reason = reason
        self.data = None

    def __getnewargs__(self):
        return (self.code, self.reason, self.data)


def install_fake_pyats():
    # pickle checks that a class is importable under its module and name before writing a reference to it.
    mods = {}
    for name in ('pyats', 'pyats.results', 'pyats.results.result', 'pyats.reporter', 'pyats.reporter.exceptions'):
        mods[name] = types.ModuleType(name)
        sys.modules[name] = mods[name]
        parent, _, child = name.rpartition('.')
        if parent:
            setattr(mods[parent], child, mods[name])
    Result.__module__ = 'pyats.results.result'
    Result.__qualname__ = Result.__name__ = 'TestResult'
    mods['pyats.results.result'].TestResult = Result
    errors = {}
    for name in ('UnregisteredClientError', 'MessageReceiveError', 'ExistingClientError'):
        cls = type(name, (Exception,), {'__module__': 'pyats.reporter.exceptions', '__qualname__': name})
        setattr(mods['pyats.reporter.exceptions'], name, cls)
        errors[name] = cls
    return errors


ERRORS = install_fake_pyats()


class Plan:
    """One subscription: the reply to subscribe_client, what follows it, and how the connection ends."""

    def __init__(self, name, fmt, end='close', reply='none', snapshot='none', chunk_size=MAX_CHUNK):
        self.name = name
        self.fmt = fmt
        self.chunk_size = chunk_size
        # close: we close after the last step. wait_close: the exporter must drop us (it refused something).
        self.end = end
        # The reply to subscribe_client: none (None, as pyATS), refuse (an exception dict), pong (a string),
        # or absent (nothing: the first step's bytes are all the exporter gets).
        self.reply = reply
        # What get_testsuite answers while this subscription is served: none (nothing ran yet) or refuse.
        self.snapshot = snapshot
        self.steps = []
        if reply == 'none':
            self.frame(pickle.dumps(None, protocol=4), 'ok', 'reply None to subscribe_client', count=False)
        elif reply == 'refuse':
            refusal = {'exception': ERRORS['ExistingClientError']('This socket already subscribed')}
            self.frame(pickle.dumps(refusal, protocol=4), 'subscribe_refused', 'subscription refused')
        elif reply == 'pong':
            self.frame(pickle.dumps('pong', protocol=4), 'subscribe_refused', 'reply pong, not None')

    def frame(self, payload, expect, note, header=None, count=True, chunk_size=None):
        data = frame(payload, header or self.fmt, chunk_size or self.chunk_size)
        self.steps.append({'bytes': data, 'expect': expect, 'note': note, 'count': count})

    def raw(self, data, expect, note):
        self.steps.append({'bytes': data, 'expect': expect, 'note': note, 'count': True})

    def wait_for_snapshot(self):
        """Sends nothing until the exporter has asked get_testsuite (what ran before it attached) and had the
        answer: a subscriber holds events back until then and drops them if the connection fails meanwhile."""
        self.steps.append({'wait_snapshot': True})

    @property
    def disconnect(self):
        """How the exporter must count the end of this connection."""
        return 'reset' if self.end == 'wait_close' else 'eof'


def at(base, seconds):
    return base + datetime.timedelta(seconds=seconds)


class Job:
    """Builds the events of a small well-formed job, so faults can be slipped between them."""

    def __init__(self, plan, job_id, start, protocol=4, first_seq=1):
        self.plan = plan
        self.job_id = job_id
        self.start = start
        self.protocol = protocol
        self.seq = first_seq - 1
        self.finished = []

    def next_seq(self):
        self.seq += 1
        return self.seq

    def send(self, event, note, expect='ok', chunk_size=None):
        self.plan.frame(pickle.dumps(event, protocol=self.protocol), expect, note, chunk_size=chunk_size)

    def start_section(self, kind, type_, seq, parent, id_, t, **extra):
        event = {'event': 'start_%s' % kind, 'type': type_, 'seq_num': seq, 'id': id_, 'name': id_,
                 'starttime': at(self.start, t)}
        if parent is not None:
            event['parent_seq_num'] = parent
        event.update(extra)
        self.send(event, 'start %s %s' % (type_, id_))

    def stop_section(self, kind, type_, seq, parent, id_, t0, t1, result='passed', expect_finished=True,
                     reason=None, **extra):
        """`result=None`: no result, as pyATS 23.2's stop_task and stop_testsuite (the exporter rolls it up)."""
        event = {'event': 'stop_%s' % kind, 'type': type_, 'seq_num': seq, 'id': id_, 'name': id_,
                 'starttime': at(self.start, t0), 'stoptime': at(self.start, t1), 'runtime': float(t1 - t0)}
        if result is not None:
            event['result'] = Result(result, reason)
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


def oversize(plan, header, max_frame_bytes):
    """A message over the limit: in chunks (all of them well formed) for chunked, else one size prefix."""
    plan.wait_for_snapshot()
    if header == 'chunked':
        payload = b'\x80\x04\x8c' + b'x' * (max_frame_bytes + 2 * MAX_CHUNK)
        plan.raw(frame(payload, 'chunked'), 'frame_too_large', 'a message over the limit, in %d chunks' % (
            len(payload) // MAX_CHUNK + 1))
    else:
        plan.raw(struct.pack(LEGACY_FORMATS[header], 2 ** 31 - 1 if header.startswith('4') else 2 ** 40) +
                 b'\x80\x04', 'frame_too_large', 'size header over the limit')


def good_job(plan, job_id, start, first_seq=1, protocol=4):
    """A small whole job: TestSuite, Task, one Testcase with one TestSection."""
    job = Job(plan, job_id, start, protocol=protocol, first_seq=first_seq)
    suite = job.next_seq()
    job.send({'type': 'TestSuite', 'seq_num': suite, 'id': job_id, 'name': job_id, 'event': 'init_testsuite'},
             'init suite')
    job.start_section('testsuite', 'TestSuite', suite, None, job_id, 0)
    task = job.next_seq()
    job.start_section('task', 'Task', task, suite, 'Task-1', 1)
    tc = job.next_seq()
    job.start_section('section', 'Testcase', tc, task, 'tc', 2)
    job.section('section', 'TestSection', tc, 'check', 3, 4)
    job.stop_section('section', 'Testcase', tc, task, 'tc', 2, 5)
    job.stop_section('task', 'Task', task, suite, 'Task-1', 1, 6, result=None)
    job.stop_section('testsuite', 'TestSuite', suite, None, job_id, 0, 7, result=None)
    return job


def malformed_scenario(header, opts):
    """Subscription 1: every kind of bad frame and bad event between the events of a good job, ending with a
    message over the size limit. 2: a good job, then a frame cut off by the end of the stream. 3: bytes no
    framing fits, instead of the reply. 4: a good job, cleanly."""
    plans = []
    base = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

    one = Plan('malformed events', header, end='wait_close')
    job = Job(one, 'faulty_job', base)
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
    # The stream goes on after the job: a message over the size limit ends it.
    oversize(one, header, opts.max_frame_bytes)
    plans.append((one, job))

    two = Plan('truncated at EOF', header)
    second = Job(two, 'after_reset', at(base, 3600))
    root = second.next_seq()
    second.start_section('testsuite', 'TestSuite', root, None, 'after_reset', 0)
    second.section('section', 'Testcase', root, 'tc_a', 1, 2)
    second.stop_section('testsuite', 'TestSuite', root, None, 'after_reset', 0, 3)
    cut = frame(pickle.dumps({'event': 'start_testsuite', 'seq_num': 1, 'id': 'x' * 500}, protocol=4), header)
    two.wait_for_snapshot()
    two.raw(cut[:120], 'truncated_frame', 'frame cut off by the end of the stream')
    plans.append((two, second))

    three = Plan('not a reporter', header, end='wait_close', reply=None)
    three.raw(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n' * 4, 'undetectable_header', 'bytes no framing fits')
    plans.append((three, None))

    four = Plan('recovered', header)
    last = Job(four, 'recovered_job', at(base, 7200), protocol=2)
    root = last.next_seq()
    last.start_section('testsuite', 'TestSuite', root, None, 'recovered_job', 0)
    last.section('section', 'Testcase', root, 'tc_b', 1, 2)
    last.stop_section('testsuite', 'TestSuite', root, None, 'recovered_job', 0, 3)
    plans.append((four, last))
    return plans


def duplicates_scenario(header, _opts):
    """One connection: a job with every frame sent twice, then the whole job again (a replayed stream)."""
    base = datetime.datetime(2024, 6, 1, 8, 0, 0, tzinfo=UTC)
    source = Plan('source', header, reply=None)
    job = Job(source, 'dup_job', base)
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

    plan = Plan('every frame twice, then the job again', header)
    for step in source.steps:
        plan.raw(step['bytes'], step['expect'], step['note'])
        plan.raw(step['bytes'], step['expect'], step['note'] + ' (again)')
    for step in source.steps:
        plan.raw(step['bytes'], step['expect'], step['note'] + ' (replayed)')
    return [(plan, job)]


def protocol_scenario(header, opts):
    """The request protocol's faults, each between good jobs (so reconnect backoff stays short): a refused
    subscription, a reply that is not None, a refused get_testsuite, messages split into many small chunks
    and one of over 64 KiB in two, a more_follows byte that is neither 0 nor 1, a message over the size limit
    spread over chunks. The exporter must count each, reset where framing is lost, and export every good
    job whole."""
    base = datetime.datetime(2024, 7, 1, 9, 0, 0, tzinfo=UTC)
    plans = []
    refused = Plan('subscription refused', header, end='wait_close', reply='refuse')
    plans.append((refused, None))

    split = Plan('messages in many chunks', header)
    job = Job(split, 'chunky_job', base)
    suite = job.next_seq()
    job.send({'type': 'TestSuite', 'seq_num': suite, 'id': 'chunky_job', 'name': 'chunky_job',
              'event': 'init_testsuite'}, 'init suite', chunk_size=7)
    job.start_section('testsuite', 'TestSuite', suite, None, 'chunky_job', 0)
    task = job.next_seq()
    job.start_section('task', 'Task', task, suite, 'Task-1', 1)
    for i in range(3):
        job.section('section', 'Testcase', task, 'tc_%d' % i, 2 + i, 2.5 + i)
    big = job.next_seq()
    # 100,000 bytes of reason: the stop event spans two 65,535-byte chunks, as pyATS sends it.
    job.start_section('section', 'Testcase', big, task, 'tc_long_reason', 10)
    job.stop_section('section', 'Testcase', big, task, 'tc_long_reason', 10, 11, result='failed',
                     reason='long reason ' + 'x' * 100_000)
    job.stop_section('task', 'Task', task, suite, 'Task-1', 1, 20, result=None)
    job.stop_section('testsuite', 'TestSuite', suite, None, 'chunky_job', 0, 21, result=None)
    # Seven-byte chunks for the first events: chunk headers and pickles cut everywhere.
    small = [step for step in split.steps if step.get('count') and step['expect'] == 'ok']
    for step in small[:6]:
        payload = b''.join(p for p in _payloads(step['bytes'], header))
        step['bytes'] = frame(payload, header, 7)
        step['note'] += ' (in 7-byte chunks)'
    plans.append((split, job))

    pong = Plan('reply not None', header, end='wait_close', reply='pong')
    plans.append((pong, None))

    no_snapshot = Plan('get_testsuite refused', header, snapshot='refuse')
    no_snapshot.steps.append({'snapshot_refused': True, 'expect': 'attach_failed', 'note': 'get_testsuite refused'})
    plans.append((no_snapshot, good_job(no_snapshot, 'unattached_job', base + datetime.timedelta(hours=1))))

    bad_chunk = Plan('more_follows byte 2', header, end='wait_close')
    cut_job = good_job(bad_chunk, 'cut_job', base + datetime.timedelta(hours=2))
    bad_chunk.wait_for_snapshot()
    ping = pickle.dumps({'type': 'TestSuite', 'seq_num': 99, 'id': 'x', 'event': 'init_testsuite'}, protocol=4)
    bad_chunk.raw(struct.pack('>BH', 2, len(ping)) + ping, 'bad_chunk_header', 'more_follows byte 2')
    plans.append((bad_chunk, cut_job))

    between = Plan('between', header)
    plans.append((between, good_job(between, 'between_job', base + datetime.timedelta(hours=3))))

    too_big = Plan('message over the limit', header, end='wait_close')
    job_big = good_job(too_big, 'before_big_job', base + datetime.timedelta(hours=4))
    oversize(too_big, header, opts.max_frame_bytes)
    plans.append((too_big, job_big))

    last = Plan('protocol done', header)
    plans.append((last, good_job(last, 'protocol_done', base + datetime.timedelta(hours=5))))
    return plans


def _payloads(data, header):
    """The payload bytes of one framed message."""
    if header != 'chunked':
        width = struct.calcsize(LEGACY_FORMATS[header])
        yield data[width:]
        return
    at = 0
    while at < len(data):
        more, size = CHUNK_HEADER.unpack_from(data, at)
        yield data[at + 3:at + 3 + size]
        at += 3 + size


SCENARIOS = {'malformed': malformed_scenario, 'duplicates': duplicates_scenario, 'protocol': protocol_scenario}


class Connection:
    """One accepted connection, read by its own thread: requests are answered as pyATS answers them, and a
    subscribe_client hands the connection to the scenario."""

    def __init__(self, server, sock, index):
        self.server = server
        self.sock = sock
        self.index = index
        self.buf = bytearray()
        self.closed = threading.Event()
        self.registered = False

    def recv_exact(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_message(self):
        fmt = self.server.fmt
        if fmt == 'chunked':
            parts = []
            while True:
                more, size = CHUNK_HEADER.unpack(self.recv_exact(3))
                parts.append(self.recv_exact(size))
                if not more:
                    return b''.join(parts)
        (size,) = struct.unpack(LEGACY_FORMATS[fmt], self.recv_exact(struct.calcsize(LEGACY_FORMATS[fmt])))
        return self.recv_exact(size)

    def reply(self, value):
        self.sock.sendall(frame(pickle.dumps(value, protocol=4), self.server.fmt))

    def serve(self):
        try:
            while True:
                payload = self.read_message()
                try:
                    request = pickle.loads(payload)
                except Exception:  # noqa: BLE001 - the real server answers anything it cannot load
                    self.server.record(self.index, None, 'unpicklable')
                    self.reply({'exception': ERRORS['MessageReceiveError'](
                        'Unable to unpickle received message. Size of sent data may exceed advertised size.')})
                    continue
                if not isinstance(request, dict) or 'name' not in request:
                    self.server.record(self.index, None, 'no_name')
                    self.server.die('request %r has no name: the real pyATS 23.2 server dies here (KeyError)'
                                    % (request,))
                    return
                name = request['name']
                self.server.record(self.index, name, None)
                if name == 'subscribe_client':
                    # The scenario takes over: this thread now only watches for the exporter closing.
                    self.server.subscriptions.put(self)
                    self.drain()
                    return
                self.answer(name, request.get('data') or {})
        except (EOFError, OSError, struct.error):
            pass
        finally:
            self.closed.set()

    def answer(self, name, data):
        if name == 'ping':
            return self.reply('pong')
        if name == 'register_client':
            self.registered = True
            return self.reply(None)
        if not self.registered:
            return self.reply({'exception': ERRORS['UnregisteredClientError'](UNREGISTERED)})
        if name == 'get_testsuite':
            plan = self.server.current
            if plan is not None and plan.snapshot == 'refuse':
                self.reply({'exception': ERRORS['UnregisteredClientError'](UNREGISTERED)})
            else:
                self.reply(None)
            self.server.snapshot_answered.set()
            return None
        if name == 'get_section':
            return self.reply(None)
        return self.reply({'exception': AttributeError('Cannot find function %s' % name)})

    def drain(self):
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass


class Server:
    def __init__(self, listener, fmt, timeout):
        self.listener = listener
        self.fmt = fmt
        self.timeout = timeout
        self.subscriptions = queue.Queue()
        self.snapshot_answered = threading.Event()
        self.current = None
        self.requests = []
        self.failure = None
        self.lock = threading.Lock()
        self.connections = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.settimeout(None)
            with self.lock:
                conn = Connection(self, sock, len(self.connections) + 1)
                self.connections.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def record(self, index, name, problem):
        with self.lock:
            if len(self.requests) < 10000:
                self.requests.append({'connection': index, 'name': name, 'problem': problem})

    def die(self, message):
        self.failure = message
        print('fault reporter: %s' % message, file=sys.stderr, flush=True)
        self.subscriptions.put(None)

    def serve(self, plans):
        for plan, _job in plans:
            self.current = plan
            self.snapshot_answered.clear()
            conn = self.subscriptions.get(timeout=self.timeout)
            if conn is None:
                raise SystemExit(5)
            try:
                for step in plan.steps:
                    if step.get('wait_snapshot'):
                        # Nothing asked within a second: the exporter is not fetching (or already did).
                        self.snapshot_answered.wait(1.0)
                        time.sleep(0.1)
                    elif 'bytes' in step:
                        conn.sock.sendall(step['bytes'])
            except OSError:
                if plan.end != 'wait_close':
                    raise
            if plan.end == 'wait_close':
                if not conn.closed.wait(self.timeout):
                    raise TimeoutError('the exporter did not drop connection "%s"' % plan.name)
            else:
                # A refused get_testsuite must reach the exporter before the connection ends.
                if plan.snapshot == 'refuse':
                    self.snapshot_answered.wait(self.timeout)
                conn.sock.shutdown(socket.SHUT_WR)
                conn.closed.wait(self.timeout)
            conn.sock.close()
        self.current = None
        if self.failure is not None:
            raise SystemExit(5)


def manifest(plans, requests):
    rejected = {}
    connections = []
    finished = []
    for plan, job in plans:
        steps = []
        for step in plan.steps:
            if 'expect' not in step:
                continue
            steps.append({'expect': step['expect'], 'note': step['note'], 'bytes': len(step.get('bytes', b''))})
            if step['expect'] != 'ok':
                rejected[step['expect']] = rejected.get(step['expect'], 0) + 1
        connections.append({'name': plan.name, 'end': plan.end, 'disconnect': plan.disconnect, 'steps': steps})
        if job is not None:
            finished.append({'job_id': job.job_id, 'sections': job.finished})
    return {'connections': connections, 'rejected': rejected, 'jobs': finished, 'requests': requests}


def write_manifest(path, plans, requests):
    if not path:
        return
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(manifest(plans, requests), f, indent=1)
    os.replace(path + '.tmp', path)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--socket', required=True)
    p.add_argument('--scenario', choices=sorted(SCENARIOS), required=True)
    p.add_argument('--frame', '--header', dest='frame', choices=FORMATS, default='chunked')
    p.add_argument('--max-frame-bytes', type=int, default=64 * 1024 * 1024,
                   help="the exporter's --max-frame-bytes: the oversize message is just over it")
    p.add_argument('--expect')
    p.add_argument('--accept-timeout', type=float, default=30)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plans = SCENARIOS[args.scenario](args.frame, args)
    write_manifest(args.expect, plans, [])
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket)
    listener.listen(8)
    print('READY %s' % args.socket, flush=True)
    server = Server(listener, args.frame, args.accept_timeout)
    try:
        server.serve(plans)
    finally:
        listener.close()
        try:
            os.unlink(args.socket)
        except OSError:
            pass
        # Leave the exporter time to read what was sent before the run ends.
        time.sleep(0.2)
        write_manifest(args.expect, plans, list(server.requests))
    print('DONE %d' % len(plans), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
