"""pyats-exporter bridge: forwards a pyATS job's live reporter events, read through pyATS's public
`ReportClient(path).subscribe(callback)` API, to pyats-exporter as NDJSON (Unix socket or HTTP).

Standard library only besides pyATS. The easypy plugin is `pyats_exporter_bridge.plugin.ExporterBridgePlugin`
(imported from there, so this package imports without pyATS); the script is `python -m pyats_exporter_bridge`.
"""

from .bridge import Bridge, default_stream_key
from .encode import encode_event, to_json
from .forwarder import Forwarder
from .transport import HttpTransport, PermanentError, TransportError, UnixTransport, parse_target

__version__ = '0.1.0'

__all__ = ['Bridge', 'Forwarder', 'HttpTransport', 'PermanentError', 'TransportError', 'UnixTransport',
           'default_stream_key', 'encode_event', 'parse_target', 'to_json', '__version__']
