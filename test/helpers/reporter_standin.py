#!/usr/bin/env python3
"""Stand-in for a pyATS 23.2 Reporter Server, for tests: listens on a Unix stream socket, answers requests as
the real server does and streams a scripted job to its subscribers (DESIGN §1). CPython standard library only.

On the happy path it sends what real pyATS 23.2 sends, byte for byte: every message a CPython pickle
(protocol 4) in chunks of `struct.pack('>?H', more_follows, length)` + at most 65,535 bytes; requests
`{'name': METHOD, 'data': {...}}`: `subscribe_client` (reply None, then one event dict per message),
`ping` ('pong'), `register_client` (None), `get_testsuite` / `get_section` (the section tree so far, with
`tasks` / `sections` child-id lists), the same exception dicts for a client that did not register, an
unpicklable message or a section that does not exist. Event dicts have the keys, key order, object sharing
and value types of real events (timezone-aware datetimes, `pyats.results.result.TestResult`, no result on
stop_task / stop_testsuite). standin.test.ts compares the stream with a recording of real pyATS.

Beyond the real thing, for fault injection and older formats: legacy framings (--frame 4be|4le|8be|8le, as
pyATS 20.2 and guesses of other versions), small chunks (--chunk-size), other pickle protocols, naive / ISO /
epoch times, result dicts or strings, writes in tiny pieces, a job killed mid-run (--drop-after), an exporter
attached mid-job (--skip-first: those events happened before anyone subscribed; get_testsuite still has
them), a refused snapshot (--snapshot refuse), plugin sections.

Prints `READY <path>` when listening (once per job) and `DONE <events_sent>` when finished; `--expect FILE`
writes a JSON manifest of the job (and of the requests received) so a test knows what the exporter must
report. A request dict without 'name' kills the real 23.2 server and fails the job: the stand-in does the
same (exit 5) so a test sees it.
"""

import argparse
import datetime
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import types

# Real pyATS 23.2 result objects: code, and the TIMS value they carry besides their own (pyats.results).
RESULT_CODES = {
    'failed': 0,
    'passed': 1,
    'aborted': 2,
    'blocked': 3,
    'skipped': 4,
    'errored': 5,
    'passx': 8,
}
TIMS_VALUES = {
    'failed': 'failed',
    'passed': 'passed',
    'aborted': 'blocked',
    'blocked': 'blocked',
    'skipped': 'dropped',
    'errored': 'blocked',
    'passx': 'passx',
}
# The codes the stand-in used before it was checked against real pyATS; `--results object` keeps them.
LEGACY_RESULT_CODES = {'failed': 0, 'passed': 1, 'aborted': 3, 'blocked': 4, 'skipped': 5, 'errored': 6,
                       'passx': 7}

# Roll-up priority, lowest first, from pyATS's result roll-up table (results/rollup.html): Skipped + Passed is
# Passed, Passed + Passx is Passx, Passx + Blocked is Blocked, Blocked + Failed is Failed, Failed + Errored is
# Errored, anything + Aborted is Aborted.
ROLLUP_ORDER = ['skipped', 'passed', 'passx', 'blocked', 'failed', 'errored', 'aborted']

REASONS = {
    'failed': 'BGP neighbor 10.0.0.2 is in state Idle, expected Established',
    'errored': "KeyError: 'Ethernet1/7'",
    'aborted': 'Interrupted by user (SIGINT)',
    'blocked': 'Blocked by a failed dependency',
    'skipped': 'Not applicable on this platform',
    'passx': 'Known issue CSCvx12345',
}

LEGACY_FORMATS = {'4be': '>I', '4le': '<I', '8be': '>Q', '8le': '<Q'}
FORMATS = ['chunked'] + sorted(LEGACY_FORMATS)
CHUNK_HEADER = struct.Struct('>?H')
MAX_CHUNK = 0xffff
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Sections whose types are the job's levels: no result, logs or xref of their own on the wire.
LEVEL_TYPES = ('TestSuite', 'Task')
TESTCASE_TYPES = ('CommonSetup', 'Testcase', 'CommonCleanup')

# Messages of the real server (pyats/reporter/server.py, 23.2), typo included.
UNREGISTERED = 'Unkown client. Must register with server before calling other functions'
UNPICKLABLE = 'Unable to unpickle received message. Size of sent data may exceed advertised size.'
TRACEBACK = ('Traceback (most recent call last):\n'
             '  File "src/pyats/reporter/server.py", line 1119, in pyats.reporter.server.ReportServer._client_call\n'
             '%s%s\n')
UNREGISTERED_METHODS_ALLOWED = ('ping', 'register_client', 'subscribe_client')


def rollup(values):
    worst = 'passed' if not values else values[0]
    for value in values:
        if ROLLUP_ORDER.index(value) > ROLLUP_ORDER.index(worst):
            worst = value
    return worst


def fresh(value):
    """A new str object equal to `value`. Real events come out of the server's own unpickling, so which strings
    are one object (and pickled once, then fetched from the memo) follows the client's pickle, not Python's
    interning; the stand-in builds its dicts with exactly the sharing observed. Strings of one character
    are always shared (CPython caches them), as in real events."""
    if not isinstance(value, str):
        return value
    return value.encode('utf-8', 'surrogatepass').decode('utf-8', 'surrogatepass')


def fresh_tree(value, keys=None):
    """A deep copy of JSON-like `value` with fresh strings; dict keys of one tree shared by text, as one
    unpickled message shares them (a Step's xref and its `git` dict both hold the one key 'file')."""
    keys = {} if keys is None else keys
    if isinstance(value, str):
        return fresh(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = keys.setdefault(k, fresh(k)) if isinstance(k, str) else k
            out[key] = fresh_tree(v, keys)
        return out
    if isinstance(value, list):
        return [fresh_tree(v, keys) for v in value]
    return value


# --- fake pyATS modules, so pickle names classes as real pyATS does ----------------------------------------------


def module(name):
    mod = sys.modules.get(name)
    if mod is None:
        mod = types.ModuleType(name)
        sys.modules[name] = mod
        parent, _, child = name.rpartition('.')
        if parent:
            setattr(module(parent), child, mod)
    return mod


class TestResult:
    """pyats.results.result.TestResult: pickled as NEWOBJ(cls, (code, reason, data)) + its __dict__ (code,
    value, tims, reason, data), the arguments' data dict a copy holding the same objects, as real pyATS."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, value, reason=None, data=None, interned=False):
        # A result from an event was unpickled by the server: its value a new string. pyats.results.Passed
        # itself (a section's health) holds the interned one.
        own = value if interned else fresh(value)
        tims = TIMS_VALUES[value]
        self.code = RESULT_CODES[value]
        self.value = own
        self.tims = own if tims == value else fresh(tims)
        self.reason = reason
        self.data = data

    def __getnewargs__(self):
        data = dict(self.data) if isinstance(self.data, dict) else self.data
        return (self.code, self.reason, data)


class ResultCounter:
    """pyats.results.counter.ResultCounter: pickled as REDUCE(cls, ({result: count}, 1.0))."""

    def __init__(self, counts):
        self.counts = counts

    def __reduce__(self):
        return (ResultCounter, (self.counts, 1.0))


class _LegacyResult:
    pass


def install_fake_pyats():
    results = module('pyats.results')
    result_mod = module('pyats.results.result')
    counter_mod = module('pyats.results.counter')
    for cls, mod in ((TestResult, result_mod), (ResultCounter, counter_mod)):
        cls.__module__ = mod.__name__
        setattr(mod, cls.__name__, cls)
    legacy = {}
    _LegacyResult.__module__ = 'pyats.results'
    results.LegacyResult = _LegacyResult
    for value in RESULT_CODES:
        name = value.capitalize()
        cls = type(name, (_LegacyResult,), {'__module__': 'pyats.results', '__qualname__': name})
        setattr(results, name, cls)
        legacy[value] = cls
    exceptions = module('pyats.reporter.exceptions')
    errors = {}
    for name in ('UnregisteredClientError', 'MessageReceiveError', 'ExistingClientError'):
        cls = type(name, (Exception,), {'__module__': exceptions.__name__, '__qualname__': name})
        setattr(exceptions, name, cls)
        errors[name] = cls
    return legacy, errors


LEGACY_RESULT_CLASSES, ERRORS = install_fake_pyats()


def legacy_result_object(value, reason):
    obj = LEGACY_RESULT_CLASSES[value]()
    obj.value = value
    obj.code = LEGACY_RESULT_CODES[value]
    obj.reason = reason
    obj.data = None
    return obj


# --- framing ---------------------------------------------------------------------------------------------------


def frame(payload, fmt, chunk_size=MAX_CHUNK):
    """One message: chunks of at most `chunk_size` bytes (pyATS 23.x: 65,535), or one size prefix."""
    if fmt != 'chunked':
        return struct.pack(LEGACY_FORMATS[fmt], len(payload)) + payload
    out = []
    rest = payload
    while True:
        chunk, rest = rest[:chunk_size], rest[chunk_size:]
        out.append(CHUNK_HEADER.pack(bool(rest), len(chunk)) + chunk)
        if not rest:
            return b''.join(out)


class ProtocolError(Exception):
    pass


class Reader:
    """Buffered reads of one socket, with a look ahead (to tell the framing of a request)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                return False
            self.buf += data
        return True

    def peek(self, n):
        self.fill(n)
        return bytes(self.buf[:n])

    def read(self, n):
        if not self.fill(n):
            raise ProtocolError('stream ended inside a message')
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def read_message(reader, fmt):
    """The next message's payload, or None at the end of the stream. Requests are read in either framing:
    a chunk header is a 0/1 byte and a size, then a pickle's PROTO (0x80); a legacy size prefix is not."""
    head = reader.peek(5)[:5]
    if not head:
        return None
    # A chunk opens a pickle at byte 3 (PROTO, then the protocol 2..5); a 4-byte size whose low byte is 0x80
    # (a 128-byte request) has PROTO at byte 4 instead.
    if fmt == 'chunked' or (len(head) == 5 and head[0] in (0, 1) and head[3] == 0x80 and 2 <= head[4] <= 5):
        parts = []
        while True:
            more, size = CHUNK_HEADER.unpack(reader.read(3))
            parts.append(reader.read(size))
            if not more:
                return b''.join(parts)
    (size,) = struct.unpack(LEGACY_FORMATS[fmt], reader.read(struct.calcsize(LEGACY_FORMATS[fmt])))
    if size > 1 << 30:
        raise ProtocolError('request of %d bytes' % size)
    return reader.read(size)


# --- the job model -------------------------------------------------------------------------------------------


class Node:
    def __init__(self, type_, id_, name=None, result=None, reason=None, duration_us=None, plugin_before=False,
                 event=None, xref=None, logfile=None):
        self.type = type_
        self.id = id_
        self.name = name if name is not None else id_
        self.own_result = result
        self.own_reason = reason
        self.data = None
        self.duration_us = duration_us
        self.plugin_before = plugin_before
        self.event_suffix = event or default_event_suffix(type_)
        self.xref = xref
        self.logfile = logfile
        self.children = []
        self.parent = None
        self.seq_num = None
        self.start_us = None
        self.stop_us = None
        self.runtime = None
        self.result = None
        self.reason = None
        self.log_begin = None
        self.log_size = None
        self.fixed = {}
        # Values of get_section's reply the model does not know (`view`), and the health result (`health`).
        self.view = {}
        self.health = None
        # What the reporter has been told so far: None, 'init', 'started' or 'stopped' (get_testsuite's view).
        self.state = None

    def add(self, *children):
        for child in children:
            child.parent = self
            self.children.append(child)
        return self

    def pre_children(self):
        return [c for c in self.children if c.plugin_before]

    def main_children(self):
        return [c for c in self.children if not c.plugin_before]

    def has_init(self):
        return self.type in LEVEL_TYPES or bool(self.pre_children())

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def idlist(self):
        """Ids from the Task (or the TestSuite itself) down, as real events list them."""
        ids = []
        node = self
        while node is not None and not (node.type == 'TestSuite' and node is not self):
            ids.append(node.id)
            node = node.parent
        return list(reversed(ids))


def default_event_suffix(type_):
    # Real 23.2 sends start_section / stop_section for every section type, Steps included.
    return {'TestSuite': 'testsuite', 'Task': 'task', 'Plugin': 'plugin'}.get(type_, 'section')


TESTCASE_POOL = [
    ('verify_interfaces', ['test_admin_state', 'test_oper_state', 'test_error_counters']),
    ('verify_bgp_neighbors', ['test_neighbor_state', 'test_prefix_count']),
    ('verify_ospf', ['test_adjacency', 'test_lsdb']),
    ('verify_routing_table', ['test_default_route', 'test_static_routes', 'test_connected']),
    ('verify_platform', ['test_inventory', 'test_redundancy']),
    ('verify_ntp', ['test_sync', 'test_stratum']),
    ('verify_acl', ['test_acl_hits', 'test_acl_config']),
    ('verify_vlans', ['test_vlan_database', 'test_trunk_ports']),
]

STEP_POOL = ['Connect to device', 'Collect show output', 'Parse output', 'Compare with baseline',
             'Check counters', 'Verify state', 'Learn feature', 'Apply config', 'Rollback config']


def leaf_duration(rng, lo_ms, hi_ms):
    return rng.randint(lo_ms * 1000, hi_ms * 1000)


def builtin_job(seed, job_id):
    """A realistic job: pre-job plugin, one Task with a pre-task plugin, CommonSetup, 4-6 Testcases with nested
    Steps, CommonCleanup, a post-job plugin. Deterministic for a seed; every result value appears somewhere."""
    rng = random.Random(seed)
    script = '/opt/tests/health_checks.py'
    line = [20]

    def xref():
        line[0] += rng.randint(8, 40)
        return {'file': script, 'line': line[0]}

    suite = Node('TestSuite', job_id, job_id)
    suite.add(Node('Plugin', 'KleenexPlugin', duration_us=leaf_duration(rng, 200, 900), plugin_before=True))
    task = Node('Task', 'Task-1', 'health_checks')
    suite.add(task)
    task.add(Node('Plugin', 'GenieTelemetryPlugin', duration_us=leaf_duration(rng, 50, 400), plugin_before=True))

    common_setup = Node('CommonSetup', 'common_setup', xref=xref())
    common_setup.add(Node('Subsection', 'connect', duration_us=leaf_duration(rng, 500, 3000), xref=xref()),
                     Node('Subsection', 'configure_interfaces', duration_us=leaf_duration(rng, 200, 1500),
                          xref=xref()))
    task.add(common_setup)

    count = rng.randint(4, 6)
    picked = rng.sample(TESTCASE_POOL, count)
    tests_with_steps = set()
    all_sections = [(i, j) for i in range(count) for j in range(len(picked[i][1]))]
    for index in rng.sample(range(len(all_sections)), 3):
        tests_with_steps.add(all_sections[index])

    leaves = []
    step_leaves = []
    for i, (tc_name, section_names) in enumerate(picked):
        testcase = Node('Testcase', tc_name, xref=xref())
        setup = Node('SetupSection', 'setup', duration_us=leaf_duration(rng, 20, 500), xref=xref())
        testcase.add(setup)
        leaves.append(setup)
        for j, section_name in enumerate(section_names):
            section = Node('TestSection', section_name, xref=xref())
            if (i, j) in tests_with_steps:
                for k in range(rng.randint(2, 3)):
                    step_name = 'STEP %d: %s' % (k + 1, rng.choice(STEP_POOL))
                    step = Node('Step', 'STEP %d' % (k + 1), step_name, xref=xref())
                    if k == 0:
                        for m in range(rng.randint(1, 2)):
                            sub = Node('Step', 'STEP %d.%d' % (k + 1, m + 1),
                                       'STEP %d.%d: %s' % (k + 1, m + 1, rng.choice(STEP_POOL)),
                                       duration_us=leaf_duration(rng, 10, 400), xref=xref())
                            step.add(sub)
                            step_leaves.append(sub)
                    else:
                        step.duration_us = leaf_duration(rng, 10, 600)
                        step_leaves.append(step)
                    section.add(step)
            else:
                section.duration_us = leaf_duration(rng, 50, 2500)
                leaves.append(section)
            testcase.add(section)
        cleanup = Node('CleanupSection', 'cleanup', duration_us=leaf_duration(rng, 20, 300), xref=xref())
        testcase.add(cleanup)
        leaves.append(cleanup)
        task.add(testcase)

    common_cleanup = Node('CommonCleanup', 'common_cleanup', xref=xref())
    common_cleanup.add(Node('Subsection', 'disconnect', duration_us=leaf_duration(rng, 100, 800), xref=xref()),
                       Node('Subsection', 'archive_logs', duration_us=leaf_duration(rng, 50, 400), xref=xref()))
    task.add(common_cleanup)
    suite.add(Node('Plugin', 'XunitPlugin', duration_us=leaf_duration(rng, 20, 200)))

    # Steps carry aborted and passx; the other non-passed values land on sections or steps at random.
    aborted, passx = rng.sample(step_leaves, 2)
    aborted.own_result = 'aborted'
    passx.own_result = 'passx'
    free = [n for n in leaves + step_leaves if n.own_result is None]
    for value, node in zip(['failed', 'errored', 'blocked', 'skipped'], rng.sample(free, 4)):
        node.own_result = value
    for node in suite.walk():
        if node.own_result is not None and node.own_reason is None:
            node.own_reason = REASONS.get(node.own_result)
    return suite


# Keys of a JSON job node that pin what is otherwise laid out from durations and the seed: a recorded real job
# replays exactly (test/fixtures/real-pyats/standin-example-job.json).
FIXED_KEYS = ('start_us', 'stop_us', 'runtime', 'log_begin', 'log_size')


def node_from_json(obj):
    duration_s = obj.get('duration_s')
    node = Node(obj['type'], obj['id'], obj.get('name'), obj.get('result'), obj.get('reason'),
                None if duration_s is None else int(round(duration_s * 1e6)), bool(obj.get('plugin_before')),
                obj.get('event'), obj.get('xref'), obj.get('logfile'))
    node.data = obj.get('data')
    node.fixed = {key: obj[key] for key in FIXED_KEYS if key in obj}
    node.view = obj.get('view') or {}
    node.health = obj.get('health')
    if node.own_result is not None and node.own_reason is None and 'reason' not in obj:
        node.own_reason = REASONS.get(node.own_result)
    for child in obj.get('children', []):
        node.add(node_from_json(child))
    return node


def find_path(root, path):
    """The node at `path` (ids from the TestSuite's down)."""
    node = root
    if not path or path[0] != root.id:
        raise ValueError('order: %r does not start at the TestSuite' % (path,))
    for ident in path[1:]:
        node = next((c for c in node.children if c.id == ident), None)
        if node is None:
            raise ValueError('order: no section %r' % (path,))
    return node


def finish_model(root, rng, start_us, first_seq, runinfo, explicit_order=None):
    """Assign roll-up results, log file paths, times (integer microseconds), seq_nums and log offsets.
    `explicit_order` ([kind, id path] pairs) replaces the walk: tasks that ran in parallel interleave."""
    resolve_results(root)
    assign_logfiles(root, os.path.join(runinfo, 'JobLog.%s' % root.id), runinfo)
    layout(root, rng, start_us)
    for node in root.walk():
        node.start_us = node.fixed.get('start_us', node.start_us)
        node.stop_us = node.fixed.get('stop_us', node.stop_us)
        node.runtime = node.fixed.get('runtime', (node.stop_us - node.start_us) / 1e6)
    order = []
    counter = [first_seq]
    cursors = {}

    def emit(kind, node):
        if node.seq_num is None:
            node.seq_num = counter[0]
            counter[0] += 1
        if kind == 'start':
            node.log_begin = node.fixed.get('log_begin', cursors.get(node.logfile, 0))
            cursors[node.logfile] = node.log_begin + rng.randint(80, 400)
        elif kind == 'stop':
            cursors[node.logfile] = cursors.get(node.logfile, 0) + rng.randint(40, 200)
            node.log_size = node.fixed.get('log_size', cursors[node.logfile] - node.log_begin)
        order.append((kind, node))

    def walk(node):
        if node.has_init():
            emit('init', node)
        for child in node.pre_children():
            walk(child)
        emit('start', node)
        for child in node.main_children():
            walk(child)
        emit('stop', node)

    if explicit_order is None:
        walk(root)
    else:
        for kind, path in explicit_order:
            emit(kind, find_path(root, path))
    return order


def resolve_results(node):
    for child in node.children:
        resolve_results(child)
    if node.own_result is not None:
        node.result, node.reason = node.own_result, node.own_reason
    else:
        # Plugins do not count towards their owner's result.
        node.result = rollup([c.result for c in node.children if c.type != 'Plugin'])
        node.reason = None


def assign_logfiles(node, inherited, runinfo):
    if node.logfile is None:
        node.logfile = os.path.join(runinfo, 'TaskLog.%s' % node.id) if node.type == 'Task' else inherited
    for child in node.children:
        assign_logfiles(child, node.logfile, runinfo)


def layout(node, rng, t):
    """Place `node` starting at `t` (its first activity, pre-plugins included); return its stop time."""
    for child in node.pre_children():
        t = layout(child, rng, t) + rng.randint(200, 5000)
    node.start_us = t
    children = node.main_children()
    if children:
        t += rng.randint(500, 20000)
        for child in children:
            t = layout(child, rng, t) + rng.randint(200, 5000)
        node.stop_us = max(t, node.start_us + (node.duration_us or 0))
    else:
        node.stop_us = t + (node.duration_us if node.duration_us is not None else rng.randint(10000, 500000))
    return node.stop_us


# --- wire values ---------------------------------------------------------------------------------------------


def wire_time(us, mode, offset):
    aware = EPOCH + datetime.timedelta(microseconds=us)
    if mode == 'aware':
        # Real 23.2: every datetime has its own timezone(timedelta(0), 'UTC') object.
        return aware.replace(tzinfo=datetime.timezone(datetime.timedelta(0), fresh('UTC')))
    if mode == 'datetime':
        return aware.astimezone().replace(tzinfo=None)
    if mode == 'datetime-tz':
        return aware.astimezone(offset)
    if mode == 'iso':
        return aware.astimezone(offset).isoformat()
    return us / 1e6


def wire_result(node, mode):
    value, reason = node.result, node.reason
    if mode == 'testresult':
        return TestResult(value, fresh(reason), fresh_tree(node.data) if node.data is not None else None)
    if mode == 'object':
        return legacy_result_object(value, reason)
    if mode == 'dict':
        d = {'value': value}
        if reason is not None:
            d['reason'] = reason
        return d
    return value


def event_dict(kind, node, args, offset, stop_index):
    """One event as real pyATS 23.2 sends it: its keys in this order, `id` one object with the last of
    `idlist` (and with `fullid` for the TestSuite and Tasks, and `name` when the init or start carries it)."""
    ident = fresh(node.id)
    ids = node.idlist()
    d = {'type': fresh(node.type), 'seq_num': node.seq_num, 'id': ident,
         'fullid': ident if node.type in LEVEL_TYPES else fresh('.'.join(ids)),
         'idlist': [fresh(i) for i in ids[:-1]] + [ident]}
    if kind == 'init' or (kind == 'start' and node.name == node.id):
        d['name'] = ident
    else:
        d['name'] = fresh(node.name)
    level = node.type in LEVEL_TYPES
    if kind != 'init':
        d['starttime'] = wire_time(node.start_us, args.times, offset)
    if kind == 'stop':
        d['stoptime'] = wire_time(node.stop_us, args.times, offset)
        d['runtime'] = node.runtime
        # stop_task and stop_testsuite carry no result: the roll-up is the subscriber's to make.
        if not level:
            mode = args.results
            if mode == 'mixed':
                mode = ('testresult', 'dict', 'string')[stop_index % 3]
            d['result'] = wire_result(node, mode)
    if kind != 'init' and node.type != 'TestSuite':
        # A quirk of 23.2: stop_task names the Task's log file without its directory.
        d['logfile'] = fresh(os.path.basename(node.logfile) if kind == 'stop' and level else node.logfile)
    # The TestSuite and Tasks have an xref only when their job file is in a git repository.
    if kind != 'init' and node.xref:
        d['xref'] = fresh_tree(node.xref)
    d['event'] = fresh('%s_%s' % (kind, node.event_suffix))
    if node.parent is not None:
        d['parent_seq_num'] = node.parent.seq_num
    if kind != 'init' and not level:
        logs = {'file': fresh(os.path.basename(node.logfile)), 'begin': node.log_begin}
        if kind == 'stop':
            logs['size'] = node.log_size
        d['logs'] = logs
    return d


# --- the section tree, as get_testsuite / get_section return it ----------------------------------------------


def result_counter(nodes, totals=False):
    counts = {'passed': 0, 'passx': 0, 'failed': 0, 'errored': 0, 'aborted': 0, 'blocked': 0, 'skipped': 0}
    for node in nodes:
        counts[node.result] += 1
    if totals:
        counts['total'] = 0
        counts['success_rate'] = 0.0
    return ResultCounter(counts)


def counted(node):
    """Testcase-level sections under `node` that have stopped (what its summary counts)."""
    return [n for n in node.walk() if n is not node and n.type in TESTCASE_TYPES and n.state == 'stopped']


def listed(node):
    return [c for c in node.children if c.state is not None]


def in_snapshot(node):
    """Whether get_testsuite / get_section can reach `node`: the TestSuite lists only its Tasks, so what else
    hangs off the TestSuite (pre- and post-job plugins) is not in the tree a client can walk."""
    while node.parent is not None and node.parent.parent is not None:
        node = node.parent
    return node.parent is None or node.type == 'Task'


def digest(*parts):
    return hashlib.sha256('/'.join(str(p) for p in parts).encode()).hexdigest()


def section_view(node, args, job):
    """The dict the real server returns for `node` (the TestSuite, a Task, a section): its keys in that order,
    its objects shared as the server's are (values that came from events unpickled, names of its own code
    interned). Values the model does not know (the job file, hashes, log line counts...) are made up unless
    the job tree gives them (`view`)."""
    offset = datetime.timezone(datetime.timedelta(minutes=args.offset_minutes))
    started = node.state in ('started', 'stopped')
    stopped = node.state == 'stopped'
    ident = fresh(node.id)
    ids = node.idlist()
    idlist = [fresh(i) for i in ids[:-1]] + [ident]
    # The server renames a section from its stop event: until then its name may be its id, one object.
    name = ident if not started or (not stopped and node.name == node.id) else fresh(node.name)
    start = wire_time(node.start_us, args.times, offset) if started else None
    stop = wire_time(node.stop_us, args.times, offset) if stopped else None
    runtime = node.runtime if stopped else None
    zero = result_counter([])
    if node.type == 'TestSuite':
        view = {'job_type': 'easypy', 'type': fresh(node.type), 'id': ident, 'fullid': ident, 'idlist': idlist,
                'name': name, 'starttime': start, 'stoptime': stop, 'runtime': runtime,
                'cli': 'easypy %s --no-mail' % job.jobfile, 'jobfile': job.jobfile,
                'jobfile_hash': digest('jobfile', job.jobfile)}
        # An xref only when the job file is in a git repository.
        if node.xref:
            view['xref'] = fresh_tree(node.xref)
        view.update({'pyatspath': sys.prefix, 'pyatsversion': '23.2', 'host': 'standin', 'submitter': 'pyats', 'user': 'pyats',
                'archivefile': '%s.zip' % job.runinfo.replace('runinfo', 'archive'),
                'summary': result_counter(counted(node)) if stopped else zero, 'pluginsummary': result_counter([]),
                'details': [], 'extra': {},
                'totaltasks': len([c for c in node.children if c.type == 'Task' and c.state == 'stopped']),
                'tasks': [fresh(c.id) for c in listed(node) if c.type == 'Task'], 'health_result': None,
                'health_summary': result_counter([]), 'seq_num': node.seq_num})
    elif node.type == 'Task':
        view = {'type': fresh(node.type), 'id': ident, 'fullid': ident, 'idlist': idlist, 'name': name,
                'script_type': 'aetest', 'starttime': start, 'stoptime': stop, 'runtime': runtime,
                'logfile': fresh(node.logfile), 'testscript': job.testscript,
                'testscript_hash': digest('testscript', job.testscript)}
        if node.xref:
            view['xref'] = fresh_tree(node.xref)
        view.update({'summary': result_counter(counted(node)) if stopped else zero, 'pluginsummary': result_counter([]),
                'details': [], 'extra': {}, 'sections': [fresh(c.id) for c in listed(node)],
                'health_result': None, 'health_summary': result_counter([]), 'seq_num': node.seq_num})
    else:
        view = {'type': fresh(node.type), 'id': ident, 'fullid': fresh('.'.join(ids)), 'idlist': idlist,
                'name': name}
        if node.type == 'Testcase':
            view['testcase_type'] = 'aetest'
            view['testcase_signature'] = digest('testcase', node.id)
        view['starttime'] = start
        view['stoptime'] = stop
        view['runtime'] = runtime
        if node.xref:
            view['xref'] = fresh_tree(node.xref)
        # Line counts are not modelled: the real server counts the log's lines.
        logs = {'file': fresh(os.path.basename(node.logfile)), 'begin': node.log_begin,
                'begin_lines': node.log_begin // 56}
        if stopped:
            logs['size'] = node.log_size
            logs['size_lines'] = max(1, node.log_size // 56)
        view['logs'] = logs
        if stopped and node.type != 'Step':
            view['parameters'] = {}
        view['result'] = wire_result(node, 'testresult') if stopped else None
        view['details'] = []
        view['extra'] = {'continue_': False} if node.type == 'Step' else {}
        view['sections'] = [fresh(c.id) for c in listed(node)]
        # As observed: a finished section's health is Passed, except CommonSetup / CommonCleanup (None).
        healthy = node.health if node.health is not None else (
            'passed' if stopped and node.type not in ('CommonSetup', 'CommonCleanup') else None)
        view['health_result'] = TestResult(sys.intern(healthy), interned=True) if stopped and healthy else None
        # As observed: the health summary of a finished section with children has totals too.
        view['health_summary'] = result_counter([], totals=stopped and bool(node.children))
        view['seq_num'] = node.seq_num
        view['logfile'] = fresh(node.logfile)
    for key, value in node.view.items():
        view[key] = fresh_tree(value)
    return view


def exception_reply(error, trace=None):
    """`{'exception': error}`, with the traceback text the real server adds for errors it did not expect."""
    reply = {'exception': error}
    if trace is not None:
        cls = type(error)
        name = cls.__name__ if cls.__module__ == 'builtins' else '%s.%s' % (cls.__module__, cls.__name__)
        reply['traceback'] = TRACEBACK % (trace, '%s: %s' % (name, error))
    return reply


# --- the server ------------------------------------------------------------------------------------------------


class Job:
    def __init__(self, args, run_index, start_us, runinfo):
        self.args = args
        self.run_index = run_index
        self.runinfo = runinfo
        rng = random.Random(args.seed * 7919 + 17)
        tree = {}
        if args.job == 'builtin':
            self.root = builtin_job(args.seed, args.job_id)
            self.jobfile = '/opt/tests/%s.py' % args.job_id
        else:
            with open(args.job, encoding='utf-8') as f:
                tree = json.load(f)
            self.root = node_from_json(tree)
            self.jobfile = tree.get('jobfile', '/opt/tests/%s.py' % self.root.name)
        self.testscript = os.path.join(os.path.dirname(self.jobfile), 'script.py')
        self.order = finish_model(self.root, rng, start_us, args.first_seq, runinfo,
                                  tree.get('order') if args.job != 'builtin' else None)
        offset = datetime.timezone(datetime.timedelta(minutes=args.offset_minutes))
        self.frames = []
        stops = 0
        for kind, node in self.order:
            d = event_dict(kind, node, args, offset, stops)
            if kind == 'stop':
                stops += 1
            self.frames.append(frame(pickle.dumps(d, protocol=args.protocol), args.frame, args.chunk_size))
        first = args.skip_first
        last = len(self.order) if args.drop_after is None else min(len(self.order), first + args.drop_after)
        self.sent = list(range(first, max(first, last)))
        self.dropped = args.drop_after is not None and last < len(self.order)
        self.events_sent = 0
        self.attach_states = {}

    def apply(self, index):
        """The reporter learns of event `index` (it has happened): the tree get_testsuite returns grows."""
        kind, node = self.order[index]
        node.state = {'init': node.state or 'init', 'start': 'started', 'stop': 'stopped'}[kind]

    def find(self, id_list):
        """get_section's lookup; raises SectionNotFound with the real server's reply when it fails."""
        get_section = ('  File "src/pyats/reporter/server.py", line 804, in '
                       'pyats.reporter.server.ReportServer.get_section\n')
        if self.root.state not in ('started', 'stopped'):
            raise SectionNotFound(AttributeError("'NoneType' object has no attribute 'id'"), get_section +
                                  '  File "src/pyats/reporter/server.py", line 322, in '
                                  'pyats.reporter.server.ReportServer._get_ctx\n')
        node = None
        for depth, ident in enumerate(id_list):
            # The TestSuite lists its Tasks; a Task or section lists its sections.
            pool = [c for c in listed(self.root) if c.type == 'Task'] if node is None else listed(node)
            match = next((c for c in pool if c.id == ident), None)
            if match is None:
                reached = list(id_list[:depth]) if depth else [self.root.id]
                message = 'Section %r not found in TestSuite. Tried to find %r, got as far as %r' % (
                    ident, list(id_list), reached)
                raise SectionNotFound(KeyError(message), get_section +
                                      '  File "src/pyats/reporter/server.py", line 325, in '
                                      'pyats.reporter.server.ReportServer._get_ctx\n')
            node = match
        return node

    def manifest(self):
        sent_kinds = {}
        for index in self.sent[:self.events_sent]:
            kind, node = self.order[index]
            sent_kinds.setdefault(node.seq_num, set()).add(kind)
        sections = []
        for node in sorted(self.root.walk(), key=lambda n: n.seq_num):
            kinds = sent_kinds.get(node.seq_num, set())
            sections.append({
                'seq_num': node.seq_num,
                'parent_seq_num': None if node.parent is None else node.parent.seq_num,
                'type': node.type,
                'id': node.id,
                'name': node.name,
                'result': node.result,
                'reason': node.reason,
                'start_us': node.start_us,
                'stop_us': node.stop_us,
                'start_ms': node.start_us / 1000,
                'stop_ms': node.stop_us / 1000,
                'runtime': node.runtime,
                'plugin_before': node.plugin_before,
                'seen': bool(kinds),
                'completed': 'stop' in kinds,
                'attach_state': self.attach_states.get(node.seq_num),
            })
        events = []
        for index in self.sent[:self.events_sent]:
            kind, node = self.order[index]
            events.append({'event': '%s_%s' % (kind, node.event_suffix), 'seq_num': node.seq_num,
                           'type': node.type})
        return {
            'run_index': self.run_index,
            'job_id': self.root.id,
            'job_result': self.root.result,
            'start_ms': self.root.start_us / 1000 if not self.root.pre_children()
            else self.root.pre_children()[0].start_us / 1000,
            'events_total': len(self.order),
            'events_sent': self.events_sent,
            'dropped': self.dropped,
            'sections': sections,
            'events': events,
        }


class SectionNotFound(Exception):
    def __init__(self, error, trace):
        super().__init__(str(error))
        self.reply = exception_reply(error, trace)


class Connection:
    """One client connection: a thread reading its requests; writes (replies and pushed events) locked."""

    def __init__(self, server, sock, index):
        self.server = server
        self.sock = sock
        self.index = index
        self.lock = threading.Lock()
        self.registered = None
        self.subscribed = False
        self.closed = False

    def send(self, data, pieces=None):
        with self.lock:
            if self.closed:
                raise OSError('closed')
            if pieces is None:
                self.sock.sendall(data)
            else:
                pieces(self.sock, data)

    def reply(self, value):
        args = self.server.args
        self.send(frame(pickle.dumps(value, protocol=args.protocol), args.frame, args.chunk_size))

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        close_quietly(self.sock)

    def serve(self):
        reader = Reader(self.sock)
        try:
            while True:
                payload = read_message(reader, self.server.args.frame)
                if payload is None:
                    return
                try:
                    request = pickle.loads(payload)
                except Exception:  # noqa: BLE001 - whatever the bytes, the real server answers and goes on
                    self.server.record(self.index, None, 'unpicklable')
                    self.reply(exception_reply(ERRORS['MessageReceiveError'](UNPICKLABLE)))
                    continue
                self.handle(request)
        except (OSError, ProtocolError, struct.error):
            return
        except Exception as e:  # noqa: BLE001 - a bug of the stand-in: say so, end this connection only
            print('standin: connection %d: %s: %s' % (self.index, type(e).__name__, e), file=sys.stderr, flush=True)
        finally:
            self.server.drop(self)

    def handle(self, request):
        server = self.server
        if not isinstance(request, dict) or 'name' not in request:
            server.record(self.index, None, 'no_name')
            server.fatal('request %r has no name: the real pyATS 23.2 server dies here (KeyError) and the job '
                         'fails' % (request,))
            return
        name = request['name']
        data = request.get('data') or {}
        server.record(self.index, name, None)
        if name == 'ping':
            return self.reply('pong')
        if name == 'subscribe_client':
            self.reply(None)
            server.subscribe(self)
            return
        if name == 'register_client':
            if self.registered is not None:
                message = 'This socket already registered as client Client (pid: %s, num_ctx: 0)' % self.registered
                return self.reply(exception_reply(ERRORS['ExistingClientError'](message),
                                                  '  File "src/pyats/reporter/server.py", line 352, in '
                                                  'pyats.reporter.server.ReportServer.register_client\n'))
            self.registered = data.get('pid') if isinstance(data, dict) else None
            return self.reply(None)
        if self.registered is None:
            return self.reply(exception_reply(ERRORS['UnregisteredClientError'](UNREGISTERED)))
        if name == 'get_testsuite':
            return self.reply(server.testsuite())
        if name == 'get_section':
            id_list = data.get('id_list') if isinstance(data, dict) else None
            return self.reply(server.section(id_list or []))
        return self.reply({'exception': AttributeError('Cannot find function %s' % name)})


class Server:
    def __init__(self, args, job):
        self.args = args
        self.job = job
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.connections = []
        self.subscribers = []
        self.listener = None
        self.accepting = False
        self.temp_dir = None
        self.real_path = None
        self.public_path = None
        self.requests = []
        self.failure = None

    def listen(self):
        args = self.args
        if args.symlink_from:
            if args.socket:
                self.real_path = args.socket
            else:
                self.temp_dir = tempfile.mkdtemp(prefix='pyats-reporter-')
                self.real_path = os.path.join(self.temp_dir, 'reporter.sock')
            self.public_path = args.symlink_from
        else:
            self.real_path = self.public_path = args.socket
        remove_quietly(self.real_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.real_path)
        self.listener.listen(16)
        if self.public_path != self.real_path:
            remove_quietly(self.public_path)
            os.symlink(self.real_path, self.public_path)
        self.accepting = True
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while self.accepting:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.settimeout(None)
            with self.lock:
                if not self.accepting:
                    close_quietly(sock)
                    return
                conn = Connection(self, sock, len(self.connections) + 1)
                self.connections.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def record(self, index, name, problem):
        with self.lock:
            if len(self.requests) < 10000:
                self.requests.append({'connection': index, 'name': name, 'problem': problem})

    def fatal(self, message):
        with self.changed:
            self.failure = message
            self.changed.notify_all()
        print('standin: %s' % message, file=sys.stderr, flush=True)
        self.close()

    def subscribe(self, conn):
        with self.changed:
            conn.subscribed = True
            self.subscribers.append(conn)
            self.changed.notify_all()

    def drop(self, conn):
        with self.changed:
            if conn in self.subscribers:
                self.subscribers.remove(conn)
        conn.close()

    def testsuite(self):
        with self.lock:
            if self.args.snapshot == 'refuse':
                return exception_reply(ERRORS['UnregisteredClientError'](UNREGISTERED))
            root = self.job.root
            if self.args.snapshot == 'none' or root.state not in ('started', 'stopped'):
                return None
            return section_view(root, self.args, self.job)

    def section(self, id_list):
        with self.lock:
            if not id_list:
                return None
            try:
                node = self.job.find(id_list)
            except SectionNotFound as e:
                return e.reply
            return section_view(node, self.args, self.job)

    def wait_for_subscribers(self):
        deadline = time.monotonic() + self.args.accept_timeout
        with self.changed:
            while len(self.subscribers) < self.args.subscribers and self.failure is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError('only %d of %d subscribers subscribed' % (len(self.subscribers),
                                                                                 self.args.subscribers))
                self.changed.wait(remaining)
        if self.failure is not None:
            raise ServerDied(self.failure)

    def push(self, index, data, pieces=None):
        """Event `index` happens: into the tree, then to every subscriber (as the real server pushes)."""
        with self.lock:
            if self.failure is not None:
                raise ServerDied(self.failure)
            self.job.apply(index)
            targets = list(self.subscribers)
        for conn in targets:
            try:
                conn.send(data, pieces)
            except OSError:
                self.drop(conn)

    def close(self):
        self.accepting = False
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            conn.close()
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            close_quietly(self.listener)
            self.listener = None
        if self.public_path != self.real_path:
            remove_quietly(self.public_path)
        remove_quietly(self.real_path)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


class ServerDied(Exception):
    pass


def close_quietly(sock):
    try:
        sock.close()
    except OSError:
        pass


def remove_quietly(path):
    try:
        if path and (os.path.islink(path) or os.path.exists(path)):
            os.unlink(path)
    except OSError:
        pass


def stream(server, job, args, chunk_rng):
    delay = args.event_delay_ms / 1000

    def small_pieces(sock, data):
        # 1-7 byte writes, pausing after the first piece (splitting the header) and mid-payload, so a reader
        # really sees partial headers and partial pickles.
        middle = len(data) // 2
        pos = 0
        paused_mid = False
        while pos < len(data):
            size = chunk_rng.randint(1, 7)
            sock.sendall(data[pos:pos + size])
            pos += size
            if pos == size or (not paused_mid and pos >= middle):
                paused_mid = paused_mid or pos >= middle
                time.sleep(0.001)

    if args.chunking == 'packed':
        for index in job.sent[:-1]:
            with server.lock:
                job.apply(index)
        if job.sent:
            server.push(job.sent[-1], b''.join(job.frames[i] for i in job.sent))
        job.events_sent = len(job.sent)
        return
    for index in job.sent:
        server.push(index, job.frames[index], small_pieces if args.chunking == 'bytewise' else None)
        job.events_sent += 1
        if delay:
            time.sleep(delay)


def write_manifest(path, jobs, final, server=None):
    if not path:
        return
    current = jobs[-1].manifest()
    data = dict(current)
    data['events_sent'] = sum(j.events_sent for j in jobs)
    data['final'] = final
    data['jobs'] = [j.manifest() for j in jobs]
    if server is not None:
        with server.lock:
            data['requests'] = list(server.requests)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--socket', help='socket path (the real socket when --symlink-from is also given)')
    p.add_argument('--symlink-from', help='make the real socket in a temp dir and symlink it at this path')
    p.add_argument('--subscribers', type=int, default=1, help='subscriptions to wait for before the job runs')
    p.add_argument('--frame', '--header', dest='frame', choices=FORMATS, default='chunked',
                   help='message framing (chunked: pyATS 23.x; 4be: pyATS 20.2)')
    p.add_argument('--chunk-size', type=int, default=MAX_CHUNK, help='bytes per chunk at most (chunked)')
    p.add_argument('--protocol', type=int, choices=[2, 3, 4, 5], default=4)
    p.add_argument('--results', choices=['testresult', 'object', 'dict', 'string', 'mixed'], default='testresult',
                   help='testresult: pyats.results.result.TestResult as 23.2; object: pyats.results.<Class>')
    p.add_argument('--times', choices=['aware', 'datetime', 'datetime-tz', 'iso', 'epoch'], default='aware',
                   help='aware: UTC datetimes as 23.2; datetime: naive local; datetime-tz / iso: --offset-minutes')
    p.add_argument('--offset-minutes', type=int, default=120, help='UTC offset for datetime-tz and iso times')
    p.add_argument('--job', default='builtin', help='builtin or a JSON job tree file')
    p.add_argument('--job-id', default='demo_job')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--start-epoch', type=float, help='job start, epoch seconds (default: now)')
    p.add_argument('--first-seq', type=int, default=1)
    p.add_argument('--runinfo', help='the runinfo directory log file paths name (default: beside the socket)')
    p.add_argument('--chunking', choices=['whole', 'bytewise', 'packed'], default='whole',
                   help='how messages are written: one write each, in tiny pieces, or all in one write')
    p.add_argument('--drop-after', type=int)
    p.add_argument('--skip-first', type=int, default=0,
                   help='events that happen before anyone subscribes (get_testsuite has them)')
    p.add_argument('--snapshot', choices=['real', 'refuse', 'none'], default='real',
                   help='get_testsuite: the tree so far, an exception, or None (nothing ran)')
    p.add_argument('--event-delay-ms', type=float, default=0)
    p.add_argument('--expect')
    p.add_argument('--linger', type=float, default=0.5, help='seconds the socket stays open after the job')
    p.add_argument('--repeat-jobs', type=int, default=1)
    p.add_argument('--job-gap', type=float, default=0.2, help='seconds between repeated jobs')
    p.add_argument('--accept-timeout', type=float, default=30)
    args = p.parse_args(argv)
    if not args.socket and not args.symlink_from:
        p.error('--socket or --symlink-from is required')
    if not 1 <= args.chunk_size <= MAX_CHUNK:
        p.error('--chunk-size must be 1..65535')
    return args


def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start_us = int(round((time.time() if args.start_epoch is None else args.start_epoch) * 1e6))
    chunk_rng = random.Random(args.seed)
    runinfo = args.runinfo or os.path.dirname(os.path.abspath(args.symlink_from or args.socket))
    jobs = []
    total = 0
    for run_index in range(args.repeat_jobs):
        job = Job(args, run_index, start_us, runinfo)
        jobs.append(job)
        start_us = job.root.stop_us + 2_000_000
        # What happened before anyone subscribed (an exporter attaching mid-job).
        for index in range(min(args.skip_first, len(job.order))):
            job.apply(index)
        job.attach_states = {n.seq_num: n.state for n in job.root.walk() if in_snapshot(n)}
        write_manifest(args.expect, jobs, False)
        server = Server(args, job)
        try:
            server.listen()
            print('READY %s' % server.public_path, flush=True)
            try:
                server.wait_for_subscribers()
                stream(server, job, args, chunk_rng)
            except (TimeoutError, socket.timeout) as e:
                print('standin: %s' % e, file=sys.stderr, flush=True)
                return 3
            except ServerDied:
                return 5
            if not job.dropped:
                time.sleep(args.linger)
            if server.failure is not None:
                return 5
        finally:
            server.close()
            write_manifest(args.expect, jobs, run_index == args.repeat_jobs - 1, server)
        total += job.events_sent
        if run_index < args.repeat_jobs - 1:
            time.sleep(args.job_gap)
    print('DONE %d' % total, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
