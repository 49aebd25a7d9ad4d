"""`python -m pyats_exporter_bridge --reporter-socket PATH --target TARGET`: the bridge as a script, for a job
whose easypy configuration cannot be changed. Runs until the reporter closes the subscription (the job
ended) or SIGTERM/SIGINT, then delivers what is buffered and sends `end`. Exit 0, or 2 for bad arguments.
"""

import argparse
import logging
import os
import signal
import sys
import threading

from .bridge import Bridge, default_stream_key
from .context import SOURCES as CI_ENV_SOURCES
from .logs import DEFAULT_MAX_BYTES, MODES

TOKEN_ENV = 'PYATS_EXPORTER_TOKEN'


def parse_args(argv):
    p = argparse.ArgumentParser(prog='python -m pyats_exporter_bridge', description=__doc__.split('\n\n')[0])
    p.add_argument('--reporter-socket', required=True, help="the job's runinfo/reporter.sock")
    p.add_argument('--target', required=True,
                   help='unix:/path/to/ingest.sock or http(s)://host:port[/api/v1/events]')
    p.add_argument('--token-file', help='file holding the bearer token (default: $%s)' % TOKEN_ENV)
    p.add_argument('--stream', help='job key naming the stream (default: host:pid:random)')
    p.add_argument('--buffer-size', type=int, default=10000, help='events held while the exporter is away')
    p.add_argument('--batch-size', type=int, default=500, help='events per write or request')
    p.add_argument('--heartbeat', type=float, default=30.0, help='seconds of silence before a ping')
    p.add_argument('--wait-timeout', type=float, default=0,
                   help='give up if the reporter socket does not appear in this many seconds (0: wait forever)')
    p.add_argument('--drain-timeout', type=float, default=10.0, help='seconds to deliver the buffer at the end')
    p.add_argument('--section-logs', default='failed', choices=list(MODES),
                   help="whose log lines go with the event for their span (default failed)")
    p.add_argument('--section-log-max-bytes', type=int, default=DEFAULT_MAX_BYTES,
                   help='the most of a section\'s log lines sent, its tail (default %d)' % DEFAULT_MAX_BYTES)
    p.add_argument('--ci-env', default='runinfo', choices=list(CI_ENV_SOURCES),
                   help="where the job's CI variables (TRACEPARENT, ...) come from: the job's runinfo env.txt "
                        "(default), this process's environment, or none")
    p.add_argument('--log-level', default='INFO', choices=['DEBUG', 'INFO', 'WARNING', 'ERROR'])
    args = p.parse_args(argv)
    if args.section_log_max_bytes < 64:
        p.error('--section-log-max-bytes must be at least 64')
    if args.buffer_size < 1 or args.batch_size < 1 or args.heartbeat <= 0:
        p.error('--buffer-size, --batch-size and --heartbeat must be positive')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    token = None
    if args.token_file:
        with open(args.token_file, encoding='utf-8') as f:
            token = f.read().strip()
    else:
        token = os.environ.get(TOKEN_ENV) or None
    try:
        bridge = Bridge(args.reporter_socket, args.target, token=token, stream=args.stream or default_stream_key(),
                        buffer_size=args.buffer_size, batch_size=args.batch_size, heartbeat=args.heartbeat,
                        wait_timeout=args.wait_timeout or None, section_logs=args.section_logs,
                        section_log_max_bytes=args.section_log_max_bytes, ci_env=args.ci_env)
    except ValueError as e:
        print('pyats_exporter_bridge: %s' % e, file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum, _frame):
        logging.getLogger('pyats_exporter_bridge').info('signal %d: stopping', signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bridge.start()
    while not stop.is_set() and not bridge.wait(0.2):
        pass
    bridge.stop(args.drain_timeout)
    # Events were lost to pyATS's ReportClient (see MULTICHUNK_BUG): the caller must know.
    return 3 if bridge.lost_after_large_message else 0


if __name__ == '__main__':
    sys.exit(main())
