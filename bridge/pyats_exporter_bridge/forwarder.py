"""A bounded buffer and one sender thread between the reporter subscription and the exporter.

`submit` never blocks and never raises: when the exporter is away longer than the buffer lasts, the newest
events are dropped and counted, and the pyATS job goes on at full speed. The sender batches lines, reconnects
with capped exponential backoff, sends a `ping` when idle (so a keyed stream does not time out during a long
test step) and, on close, drains the buffer and sends `end` within a deadline. Until the job's CI context is
known (see context.py), it is asked for before each batch, and handed to the transport once it is.
"""

import logging
import queue
import random
import threading
import time

from .encode import control_line
from .transport import PermanentError

logger = logging.getLogger('pyats_exporter_bridge')

PING = control_line('ping')
END = control_line('end')


class Forwarder:
    def __init__(self, transport, buffer_size=10000, batch_size=500, heartbeat=30.0, retry_initial=0.25,
                 retry_max=10.0, send_end=True, context=None):
        self.transport = transport
        self.context = context
        self.batch_size = max(1, int(batch_size))
        self.heartbeat = float(heartbeat)
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        self.send_end = send_end
        self._queue = queue.Queue(maxsize=max(1, int(buffer_size)))
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._deadline = None
        self._thread = None
        self._lock = threading.Lock()
        self.submitted = 0
        self.sent = 0
        self.dropped = 0
        self.refused = 0
        self.failures = 0

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name='pyats-exporter-bridge-sender', daemon=True)
            self._thread.start()

    def submit(self, line):
        """Queues one line; False (and counted) when the buffer is full or the forwarder is closing."""
        if self._closing.is_set():
            self._count_drop()
            return False
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._count_drop()
            return False
        with self._lock:
            self.submitted += 1
        return True

    def close(self, timeout=10.0):
        """Drains what is buffered, sends `end`, stops the sender; gives up after `timeout` seconds.
        Returns True when everything was delivered."""
        if self._thread is None:
            return self._queue.empty()
        if not self._closing.is_set():
            self._deadline = time.monotonic() + max(0.0, float(timeout))
            self._closing.set()
            self._wake.set()
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + 1.0)
        return not self._thread.is_alive() and self.dropped == 0 and self._queue.empty()

    def stats(self):
        return {'submitted': self.submitted, 'sent': self.sent, 'dropped': self.dropped, 'refused': self.refused,
                'failures': self.failures, 'buffered': self._queue.qsize()}

    def _count_drop(self):
        with self._lock:
            self.dropped += 1
            dropped = self.dropped
        if dropped == 1 or dropped % 1000 == 0:
            logger.warning('pyats-exporter bridge buffer full: %d events dropped so far (exporter unreachable?)',
                           dropped)

    def _take(self):
        """Up to batch_size queued lines; waits a little for the first one."""
        wait = 0.05 if self._closing.is_set() else min(1.0, self.heartbeat)
        try:
            first = self._queue.get(timeout=wait)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _expired(self):
        return self._closing.is_set() and time.monotonic() >= self._deadline

    def _run(self):
        batch = []
        events_in_batch = 0
        end_sent = False
        backoff = self.retry_initial
        last_send = time.monotonic()
        warned_at = 0.0
        try:
            while True:
                if not batch:
                    batch = self._take()
                    events_in_batch = len(batch)
                    if not batch:
                        if self._closing.is_set():
                            if end_sent or not self.send_end:
                                return
                            batch, events_in_batch = [END], 0
                        elif time.monotonic() - last_send >= self.heartbeat:
                            batch, events_in_batch = [PING], 0
                        else:
                            continue
                if self._expired():
                    lost = events_in_batch + self._queue.qsize()
                    if lost:
                        with self._lock:
                            self.dropped += lost
                        logger.warning('pyats-exporter bridge: %d events not delivered before the drain deadline',
                                       lost)
                    return
                if self.context is not None:
                    self._ask_context()
                try:
                    self.transport.send(batch)
                except PermanentError as e:
                    with self._lock:
                        self.refused += events_in_batch
                    logger.error('pyats-exporter refused %d events: %s', events_in_batch, e)
                    end_sent = end_sent or batch[-1] == END
                    batch, events_in_batch = [], 0
                    continue
                except Exception as e:  # noqa: BLE001 - any failure is retried, never raised into pyATS
                    with self._lock:
                        self.failures += 1
                    now = time.monotonic()
                    if now - warned_at >= 30.0:
                        warned_at = now
                        logger.warning('pyats-exporter unreachable at %s (%s); retrying, %d events buffered',
                                       self.transport.describe(), e, self._queue.qsize() + events_in_batch)
                    self._sleep(backoff)
                    backoff = min(self.retry_max, backoff * 2)
                    continue
                with self._lock:
                    self.sent += events_in_batch
                end_sent = end_sent or batch[-1] == END
                batch, events_in_batch = [], 0
                backoff = self.retry_initial
                last_send = time.monotonic()
        finally:
            self.transport.close()

    def _ask_context(self):
        try:
            env = self.context()
        except Exception:  # noqa: BLE001 - the job's events go on without the CI context
            logger.exception('pyats-exporter bridge: cannot read the CI context')
            env = {}
        if env is None:
            return
        self.context = None
        if env:
            self.transport.set_env(env)
            logger.info('pyats-exporter bridge: the job runs in CI (%s)', ', '.join(sorted(env)))

    def _sleep(self, seconds):
        delay = seconds * random.uniform(0.8, 1.2)
        if self._closing.is_set():
            delay = min(delay, max(0.0, self._deadline - time.monotonic()))
        self._wake.wait(delay)
        self._wake.clear()
