#!/usr/bin/env python3
"""Stand-in for a pyATS Reporter Server, for tests: listens on a Unix stream socket, accepts subscribers and
streams a scripted job to them as size-prefixed pickles of event dicts (DESIGN §1). CPython standard library only.

Prints `READY <path>` when listening (once per job) and `DONE <events_sent>` when finished; `--expect FILE`
writes a JSON manifest of the job so a test knows exactly what the exporter should report.
"""

import argparse
import datetime
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

RESULT_CODES = {
    'failed': 0,
    'passed': 1,
    'aborted': 3,
    'blocked': 4,
    'skipped': 5,
    'errored': 6,
    'passx': 7,
}

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

HEADERS = {'4be': '>I', '4le': '<I', '8be': '>Q', '8le': '<Q'}
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def rollup(values):
    worst = 'passed' if not values else values[0]
    for value in values:
        if ROLLUP_ORDER.index(value) > ROLLUP_ORDER.index(worst):
            worst = value
    return worst


# --- fake pyats.results, so pickle references pyats.results.<Class> as real pyATS result objects do -------------


class _ResultBase:
    pass


def install_fake_pyats_results():
    pyats = sys.modules.get('pyats') or types.ModuleType('pyats')
    results = types.ModuleType('pyats.results')
    pyats.results = results
    sys.modules['pyats'] = pyats
    sys.modules['pyats.results'] = results
    _ResultBase.__module__ = 'pyats.results'
    results.TestResult = _ResultBase
    classes = {}
    for value in RESULT_CODES:
        name = value.capitalize()
        cls = type(name, (_ResultBase,), {'__module__': 'pyats.results', '__qualname__': name})
        setattr(results, name, cls)
        classes[value] = cls
    return classes


RESULT_CLASSES = install_fake_pyats_results()


def make_result_object(value, reason):
    obj = RESULT_CLASSES[value]()
    obj.value = value
    obj.code = RESULT_CODES[value]
    obj.reason = reason
    obj.data = None
    return obj


# --- the job model -------------------------------------------------------------------------------------------


class Node:
    def __init__(self, type_, id_, name=None, result=None, reason=None, duration_us=None, plugin_before=False,
                 event=None, xref=None, logfile=None):
        self.type = type_
        self.id = id_
        self.name = name if name is not None else id_
        self.own_result = result
        self.own_reason = reason
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
        self.result = None
        self.reason = None
        self.log_begin = 0
        self.log_size = 0

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
        return self.type in ('TestSuite', 'Task') or bool(self.pre_children())

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def default_event_suffix(type_):
    return {'TestSuite': 'testsuite', 'Task': 'task', 'Plugin': 'plugin', 'Step': 'step'}.get(type_, 'section')


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
                    step = Node('Step', str(k + 1), step_name, xref=xref())
                    if k == 0:
                        for m in range(rng.randint(1, 2)):
                            sub = Node('Step', '%d.%d' % (k + 1, m + 1),
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


def node_from_json(obj):
    duration_s = obj.get('duration_s')
    node = Node(obj['type'], obj['id'], obj.get('name'), obj.get('result'), obj.get('reason'),
                None if duration_s is None else int(round(duration_s * 1e6)), bool(obj.get('plugin_before')),
                obj.get('event'), obj.get('xref'), obj.get('logfile'))
    if node.own_result is not None and node.own_reason is None:
        node.own_reason = REASONS.get(node.own_result)
    for child in obj.get('children', []):
        node.add(node_from_json(child))
    return node


def finish_model(root, rng, start_us, first_seq):
    """Assign roll-up results, log file names, times (integer microseconds), seq_nums and log offsets."""
    resolve_results(root)
    assign_logfiles(root, 'JobLog.%s' % root.id)
    layout(root, rng, start_us)
    order = []
    counter = [first_seq]
    cursors = {}

    def emit(kind, node):
        if node.seq_num is None:
            node.seq_num = counter[0]
            counter[0] += 1
        if kind == 'start':
            node.log_begin = cursors.get(node.logfile, 0)
            cursors[node.logfile] = node.log_begin + rng.randint(80, 400)
        elif kind == 'stop':
            cursors[node.logfile] = cursors.get(node.logfile, 0) + rng.randint(40, 200)
            node.log_size = cursors[node.logfile] - node.log_begin
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

    walk(root)
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


def assign_logfiles(node, inherited):
    if node.logfile is None:
        node.logfile = 'TaskLog.%s' % node.id if node.type == 'Task' else inherited
    for child in node.children:
        assign_logfiles(child, node.logfile)


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


# --- wire encoding ---------------------------------------------------------------------------------------------


def wire_time(us, mode, offset):
    aware = EPOCH + datetime.timedelta(microseconds=us)
    if mode == 'datetime':
        return aware.astimezone().replace(tzinfo=None)
    if mode == 'datetime-tz':
        return aware.astimezone(offset)
    if mode == 'iso':
        return aware.astimezone(offset).isoformat()
    return us / 1e6


def wire_result(value, reason, mode):
    if mode == 'object':
        return make_result_object(value, reason)
    if mode == 'dict':
        d = {'value': value}
        if reason is not None:
            d['reason'] = reason
        return d
    return value


def event_dict(kind, node, args, offset, stop_index):
    d = {'event': '%s_%s' % (kind, node.event_suffix), 'type': node.type, 'seq_num': node.seq_num}
    if node.parent is not None:
        d['parent_seq_num'] = node.parent.seq_num
    d['id'] = node.id
    d['name'] = node.name
    if kind in ('start', 'stop'):
        d['starttime'] = wire_time(node.start_us, args.times, offset)
        d['logfile'] = node.logfile
        if node.xref:
            d['xref'] = dict(node.xref)
    if kind == 'stop':
        d['stoptime'] = wire_time(node.stop_us, args.times, offset)
        d['runtime'] = (node.stop_us - node.start_us) / 1e6
        mode = args.results
        if mode == 'mixed':
            mode = ('object', 'dict', 'string')[stop_index % 3]
        d['result'] = wire_result(node.result, node.reason, mode)
        d['logs'] = {'file': node.logfile, 'begin': node.log_begin, 'size': node.log_size}
    return d


def frame(payload, header):
    return struct.pack(HEADERS[header], len(payload)) + payload


# --- the server ------------------------------------------------------------------------------------------------


class Job:
    def __init__(self, args, run_index, start_us):
        self.args = args
        self.run_index = run_index
        rng = random.Random(args.seed * 7919 + 17)
        if args.job == 'builtin':
            self.root = builtin_job(args.seed, args.job_id)
        else:
            with open(args.job, encoding='utf-8') as f:
                self.root = node_from_json(json.load(f))
        self.order = finish_model(self.root, rng, start_us, args.first_seq)
        offset = datetime.timezone(datetime.timedelta(minutes=args.offset_minutes))
        self.frames = []
        stops = 0
        for kind, node in self.order:
            d = event_dict(kind, node, args, offset, stops)
            if kind == 'stop':
                stops += 1
            self.frames.append(frame(pickle.dumps(d, protocol=args.protocol), args.header))
        first = args.skip_first
        last = len(self.order) if args.drop_after is None else min(len(self.order), first + args.drop_after)
        self.sent = list(range(first, max(first, last)))
        self.dropped = args.drop_after is not None and last < len(self.order)
        self.events_sent = 0

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
                'runtime': (node.stop_us - node.start_us) / 1e6,
                'plugin_before': node.plugin_before,
                'seen': bool(kinds),
                'completed': 'stop' in kinds,
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


class Server:
    def __init__(self, args):
        self.args = args
        self.clients = []
        self.lock = threading.Lock()
        self.listener = None
        self.accepting = False
        self.temp_dir = None
        self.real_path = None
        self.public_path = None

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

    def wait_for_subscribers(self):
        deadline = time.monotonic() + self.args.accept_timeout
        while len(self.clients) < self.args.subscribers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('only %d of %d subscribers connected' % (len(self.clients),
                                                                            self.args.subscribers))
            self.listener.settimeout(remaining)
            conn, _ = self.listener.accept()
            self.add_client(conn)
        # Later subscribers join mid-job and receive the events from then on, like an exporter attaching late.
        self.listener.settimeout(None)
        threading.Thread(target=self.accept_late, daemon=True).start()

    def accept_late(self):
        while self.accepting:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.add_client(conn)

    def add_client(self, conn):
        conn.settimeout(None)
        with self.lock:
            self.clients.append(conn)
        threading.Thread(target=drain, args=(conn,), daemon=True).start()

    def send(self, data, pieces=None):
        with self.lock:
            for conn in list(self.clients):
                try:
                    if pieces is None:
                        conn.sendall(data)
                    else:
                        pieces(conn, data)
                except OSError:
                    self.clients.remove(conn)
                    close_quietly(conn)

    def close(self):
        self.accepting = False
        with self.lock:
            for conn in self.clients:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                close_quietly(conn)
            self.clients = []
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


def drain(conn):
    # Whatever a subscriber sends (a subscribe request or nothing at all) is read and ignored.
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def close_quietly(sock):
    try:
        sock.close()
    except OSError:
        pass


def remove_quietly(path):
    try:
        if os.path.islink(path) or os.path.exists(path):
            os.unlink(path)
    except OSError:
        pass


def stream(server, job, args, chunk_rng):
    delay = args.event_delay_ms / 1000

    def small_pieces(conn, data):
        # 1-7 byte writes, pausing after the first piece (splitting the size prefix) and mid-payload, so a
        # reader really sees partial headers and partial pickles.
        middle = len(data) // 2
        pos = 0
        paused_mid = False
        while pos < len(data):
            size = chunk_rng.randint(1, 7)
            conn.sendall(data[pos:pos + size])
            pos += size
            if pos == size or (not paused_mid and pos >= middle):
                paused_mid = paused_mid or pos >= middle
                time.sleep(0.001)

    if args.chunking == 'packed':
        server.send(b''.join(job.frames[i] for i in job.sent))
        job.events_sent = len(job.sent)
        return
    for index in job.sent:
        server.send(job.frames[index], small_pieces if args.chunking == 'bytewise' else None)
        job.events_sent += 1
        if delay:
            time.sleep(delay)


def write_manifest(path, jobs, final):
    if not path:
        return
    current = jobs[-1].manifest()
    data = dict(current)
    data['events_sent'] = sum(j.events_sent for j in jobs)
    data['final'] = final
    data['jobs'] = [j.manifest() for j in jobs]
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--socket', help='socket path (the real socket when --symlink-from is also given)')
    p.add_argument('--symlink-from', help='make the real socket in a temp dir and symlink it at this path')
    p.add_argument('--subscribers', type=int, default=1)
    p.add_argument('--header', choices=sorted(HEADERS), default='8be')
    p.add_argument('--protocol', type=int, choices=[2, 3, 4, 5], default=4)
    p.add_argument('--results', choices=['object', 'dict', 'string', 'mixed'], default='object')
    p.add_argument('--times', choices=['datetime', 'datetime-tz', 'iso', 'epoch'], default='datetime')
    p.add_argument('--offset-minutes', type=int, default=120, help='UTC offset for datetime-tz and iso times')
    p.add_argument('--job', default='builtin', help='builtin or a JSON job tree file')
    p.add_argument('--job-id', default='demo_job')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--start-epoch', type=float, help='job start, epoch seconds (default: now)')
    p.add_argument('--first-seq', type=int, default=1)
    p.add_argument('--chunking', choices=['whole', 'bytewise', 'packed'], default='whole')
    p.add_argument('--drop-after', type=int)
    p.add_argument('--skip-first', type=int, default=0)
    p.add_argument('--event-delay-ms', type=float, default=0)
    p.add_argument('--expect')
    p.add_argument('--linger', type=float, default=0.5)
    p.add_argument('--repeat-jobs', type=int, default=1)
    p.add_argument('--job-gap', type=float, default=0.2, help='seconds between repeated jobs')
    p.add_argument('--accept-timeout', type=float, default=30)
    args = p.parse_args(argv)
    if not args.socket and not args.symlink_from:
        p.error('--socket or --symlink-from is required')
    return args


def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start_us = int(round((time.time() if args.start_epoch is None else args.start_epoch) * 1e6))
    chunk_rng = random.Random(args.seed)
    jobs = []
    total = 0
    for run_index in range(args.repeat_jobs):
        job = Job(args, run_index, start_us)
        jobs.append(job)
        start_us = job.root.stop_us + 2_000_000
        write_manifest(args.expect, jobs, False)
        server = Server(args)
        try:
            server.listen()
            print('READY %s' % server.public_path, flush=True)
            try:
                server.wait_for_subscribers()
            except (TimeoutError, socket.timeout) as e:
                print('standin: %s' % e, file=sys.stderr, flush=True)
                return 3
            stream(server, job, args, chunk_rng)
            if not job.dropped:
                time.sleep(args.linger)
        finally:
            server.close()
            write_manifest(args.expect, jobs, run_index == args.repeat_jobs - 1)
        total += job.events_sent
        if run_index < args.repeat_jobs - 1:
            time.sleep(args.job_gap)
    print('DONE %d' % total, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
