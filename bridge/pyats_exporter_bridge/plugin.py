"""Easypy plugin: forwards the job's reporter events to pyats-exporter.

Enable it with a configuration YAML (`pyats run job --configuration FILE`, `easypy -configuration FILE`;
see docs/ingest.md):

    plugins:
      ExporterBridgePlugin:
        enabled: True
        module: pyats_exporter_bridge.plugin
        order: 1.0
        target: unix:/run/pyats-exporter/ingest.sock

pre_job starts a background thread subscribed to `<runinfo>/reporter.sock`; post_job returns at once and
lets that thread finish in the background: the TestSuite's own stop event (and the post-job plugins') come
after post_job, so the thread keeps the subscription until the reporter closes it (at most `linger`
seconds), then delivers what is buffered (at most `drain_timeout` seconds) and exits. A plugin error must
never fail the job, so every stage catches and logs.
"""

import logging
import os

from pyats.easypy.plugins.bases import BasePlugin  # type: ignore

from .bridge import Bridge, default_stream_key

logger = logging.getLogger('pyats_exporter_bridge')

TARGET_ENV = 'PYATS_EXPORTER_TARGET'
TOKEN_ENV = 'PYATS_EXPORTER_TOKEN'


class ExporterBridgePlugin(BasePlugin):
    """Streams this job's reporter events to pyats-exporter's NDJSON ingest."""

    name = 'ExporterBridgePlugin'

    def __init__(self, *args, target=None, token=None, token_file=None, stream=None, reporter_socket=None,
                 buffer_size=10000, batch_size=500, heartbeat=30.0, linger=30.0, drain_timeout=10.0,
                 wait_timeout=60.0, section_logs='failed', section_log_max_bytes=4096, ci_env='process', **kwargs):
        super().__init__(*args, **kwargs)
        self.bridge_target = target or os.environ.get(TARGET_ENV)
        self.bridge_token = token
        self.bridge_token_file = token_file
        self.bridge_stream = stream
        self.bridge_reporter_socket = reporter_socket
        self.bridge_options = {'buffer_size': int(buffer_size), 'batch_size': int(batch_size),
                               'heartbeat': float(heartbeat), 'wait_timeout': float(wait_timeout),
                               'section_logs': str(section_logs),
                               'section_log_max_bytes': int(section_log_max_bytes),
                               # Inside easypy this process's environment is the job's: known at once.
                               'ci_env': str(ci_env)}
        self.bridge_linger = float(linger)
        self.bridge_drain_timeout = float(drain_timeout)
        self.bridge = None

    def pre_job(self, job):
        try:
            self._start(job)
        except Exception:  # noqa: BLE001 - never fail the job
            logger.exception('pyats-exporter bridge: not started')

    def post_job(self, job):
        try:
            if self.bridge is not None:
                self.bridge.finish(linger=self.bridge_linger, drain_timeout=self.bridge_drain_timeout)
        except Exception:  # noqa: BLE001
            logger.exception('pyats-exporter bridge: error at post_job')

    def _start(self, job):
        if not self.bridge_target:
            logger.warning('pyats-exporter bridge: no target (set "target" in the plugin configuration or %s);'
                           ' not forwarding', TARGET_ENV)
            return
        socket_path = self.bridge_reporter_socket or os.path.join(self._runinfo(job), 'reporter.sock')
        self.bridge = Bridge(socket_path, self.bridge_target, token=self._token(),
                             stream=self.bridge_stream or default_stream_key(getattr(job, 'uid', None)),
                             **self.bridge_options)
        self.bridge.start()

    def _runinfo(self, job):
        runtime = getattr(self, 'runtime', None) or getattr(job, 'runtime', None)
        directory = getattr(runtime, 'directory', None)
        if not directory:
            raise RuntimeError('cannot find the runinfo directory (runtime.directory); set reporter_socket')
        return str(directory)

    def _token(self):
        if self.bridge_token_file:
            with open(self.bridge_token_file, encoding='utf-8') as f:
                return f.read().strip()
        return self.bridge_token or os.environ.get(TOKEN_ENV)
