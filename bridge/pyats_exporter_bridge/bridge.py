"""Runs pyATS's documented public API, `ReportClient(path).subscribe(callback)`, in a background thread with
its own asyncio loop, and hands each event dict, encoded as a JSON line, to the Forwarder.

Nothing here raises into the caller once started: every failure is logged and the pyATS job goes on.
"""

import asyncio
import logging
import os
import socket as socket_module
import threading
import time
import uuid

from .context import make_context
from .encode import encode_event, to_json
from .logs import DEFAULT_MAX_BYTES, read_excerpt, wants_excerpt
from .forwarder import Forwarder
from .transport import parse_target

logger = logging.getLogger('pyats_exporter_bridge')

# pyATS 23.2's ReportClient.subscribe() cannot read a message sent in more than one 65,535-byte chunk (an
# event with a reason or data over ~64 KiB): it reads the next chunk with the first one's length and fails at
# the end of the stream (IncompleteReadError, then AttributeError: 'StreamReader' ... 'ae_eof'). Every event
# after that message is lost to any ReportClient subscriber; the server sent them all.
MULTICHUNK_BUG = ("pyATS's ReportClient could not read a message over 64 KiB (a pyATS 23.2 bug: "
                  "StreamReader 'ae_eof'); the events after it were not forwarded. The exporter's native "
                  "--reporter-socket reads such messages: use it for this job")


def is_multichunk_bug(error):
    """The error pyATS 23.2's ReportClient.subscribe() ends with after a message of several chunks."""
    return (isinstance(error, AttributeError) and 'ae_eof' in str(error)) or \
        type(error).__name__ == 'IncompleteReadError'


def default_stream_key(job_uid=None):
    """host:job-uid when pyATS gave the job a uid, else host:pid:random — unique per job run."""
    host = socket_module.gethostname()
    if job_uid:
        return '%s:%s' % (host, job_uid)
    return '%s:%d:%s' % (host, os.getpid(), uuid.uuid4().hex[:12])


def load_report_client():
    """pyATS's ReportClient class (pyats.reporter.ReportClient, documented; pyats.reporter.client as fallback)."""
    try:
        from pyats.reporter import ReportClient  # type: ignore
        return ReportClient
    except ImportError:
        from pyats.reporter.client import ReportClient  # type: ignore
        return ReportClient


class Bridge:
    def __init__(self, reporter_socket, target, token=None, stream=None, buffer_size=10000, batch_size=500,
                 heartbeat=30.0, wait_timeout=None, send_timeout=10.0, client_class=None, section_logs='failed',
                 section_log_max_bytes=DEFAULT_MAX_BYTES, runinfo=None, ci_env='runinfo'):
        self.reporter_socket = reporter_socket
        # The job's log files are relative to its runinfo directory, where reporter.sock is.
        self.runinfo = runinfo or os.path.dirname(os.path.abspath(reporter_socket))
        self.section_logs = section_logs
        self.section_log_max_bytes = section_log_max_bytes
        self.stream = stream or default_stream_key()
        self.wait_timeout = wait_timeout
        self.client_class = client_class
        transport = parse_target(target, token=token, stream=self.stream, timeout=send_timeout)
        # The CI run the job belongs to: from its env.txt beside the job, or easypy's environment in the plugin.
        context = make_context(ci_env, self.runinfo)
        self.forwarder = Forwarder(transport, buffer_size=buffer_size, batch_size=batch_size, heartbeat=heartbeat,
                                   context=context)
        self.events = 0
        self.encode_errors = 0
        # The subscription ended on pyATS's multi-chunk bug: events after it were lost.
        self.lost_after_large_message = False
        self._thread = None
        self._loop = None
        self._task = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._finisher = None

    def start(self):
        """Starts the sender and the subscription thread; returns at once."""
        if self._thread is not None:
            return
        self.forwarder.start()
        self._thread = threading.Thread(target=self._run, name='pyats-exporter-bridge', daemon=True)
        self._thread.start()
        logger.info('pyats-exporter bridge: forwarding %s to %s as stream %r', self.reporter_socket,
                    self.forwarder.transport.describe(), self.stream)

    def wait(self, timeout=None):
        """Waits for the subscription to end (the reporter closed it); True if it did."""
        return self._done.wait(timeout)

    def stop(self, drain_timeout=10.0):
        """Ends the subscription now, delivers what is buffered (at most `drain_timeout` s) and sends `end`."""
        self._cancel()
        if self._thread is not None:
            self._thread.join(5.0)
        delivered = self.forwarder.close(drain_timeout)
        self._log_summary(delivered)
        return delivered

    def finish(self, linger=30.0, drain_timeout=10.0):
        """Returns at once; in a non-daemon thread keeps the subscription until the reporter ends it (at most
        `linger` s), then drains like stop(). The interpreter waits for that thread before exiting."""
        if self._finisher is not None:
            return self._finisher

        def run():
            try:
                if not self._done.wait(linger):
                    logger.info('pyats-exporter bridge: reporter still open %.0f s after the job; stopping', linger)
                self.stop(drain_timeout)
            except Exception:  # noqa: BLE001
                logger.exception('pyats-exporter bridge: error while finishing')

        self._finisher = threading.Thread(target=run, name='pyats-exporter-bridge-finish', daemon=False)
        self._finisher.start()
        return self._finisher

    def _cancel(self):
        self._stop.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop already closed

    def _log_summary(self, delivered):
        stats = self.forwarder.stats()
        log = logger.info if delivered else logger.warning
        log('pyats-exporter bridge: %d events seen, %d sent, %d dropped, %d refused', self.events, stats['sent'],
            stats['dropped'], stats['refused'])

    def _run(self):
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._subscribe())
        except Exception:  # noqa: BLE001
            logger.exception('pyats-exporter bridge: subscription failed')
        finally:
            self._done.set()
            try:
                loop.close()
            except Exception:  # noqa: BLE001
                pass

    async def _subscribe(self):
        deadline = None if self.wait_timeout is None else time.monotonic() + self.wait_timeout
        if not await self._wait_for_socket(deadline):
            return
        try:
            client_class = self.client_class or load_report_client()
        except ImportError as e:
            logger.error('pyats-exporter bridge: pyATS ReportClient not importable (%s); not forwarding', e)
            return
        while not self._stop.is_set():
            error = await self._subscribe_once(client_class)
            # A reporter that is not listening yet (socket file made before listen, or a stale one) is retried;
            # once events have flowed, the end of the subscription is the end of the job.
            if error is None or self.events > 0 or (deadline is not None and time.monotonic() >= deadline):
                if error is not None and is_multichunk_bug(error):
                    self.lost_after_large_message = True
                    logger.error('pyats-exporter bridge: %s', MULTICHUNK_BUG)
                elif error is not None:
                    logger.warning('pyats-exporter bridge: reporter subscription ended: %s', error)
                return
            await asyncio.sleep(0.25)

    async def _subscribe_once(self, client_class):
        client = None
        try:
            client = client_class(self.reporter_socket)
            self._task = asyncio.ensure_future(client.subscribe(self._callback))
            if self._stop.is_set():
                self._task.cancel()
            await self._task
            return None
        except asyncio.CancelledError:
            return None
        except Exception as e:  # noqa: BLE001 - a broken reporter connection ends the subscription, not the job
            return e
        finally:
            self._task = None
            close = getattr(client, 'close', None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass

    async def _wait_for_socket(self, deadline):
        while not os.path.exists(self.reporter_socket):
            if self._stop.is_set():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                logger.error('pyats-exporter bridge: %s did not appear within %s s', self.reporter_socket,
                             self.wait_timeout)
                return False
            await asyncio.sleep(0.1)
        return True

    def _with_log_excerpt(self, event):
        """The event with its section's log lines (`log_excerpt`) when the exporter wants them on the span."""
        if not isinstance(event, dict) or self.section_logs == 'none':
            return event
        result = to_json(event.get('result'))
        value = result.get('value') if isinstance(result, dict) else None
        if not wants_excerpt(event, self.section_logs, value):
            return event
        excerpt = read_excerpt(self.runinfo, event['logs'], self.section_log_max_bytes)
        return event if excerpt is None else dict(event, log_excerpt=excerpt)

    def _callback(self, event):
        # Called by ReportClient for each event. It is documented as an async callback: the work is done
        # right here and an already-finished future is returned, which works whether or not it is awaited.
        try:
            event = self._with_log_excerpt(event)
            self.forwarder.submit(encode_event(event))
            self.events += 1
        except Exception:  # noqa: BLE001
            self.encode_errors += 1
            if self.encode_errors == 1:
                logger.exception('pyats-exporter bridge: cannot encode an event; skipping it')
        done = self._loop.create_future()
        done.set_result(None)
        return done
