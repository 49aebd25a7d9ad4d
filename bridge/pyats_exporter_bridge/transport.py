"""Where the lines go: the exporter's ingest Unix socket (`--ingest-socket`) or its HTTP ingest
(`POST /api/v1/events`). Both name the job's stream, so a reconnect or a new request continues the same job.
Once the job's CI variables are known (`set_env`), a hello line carrying them as `env` goes ahead of the next
batch (and with every later reconnect on the socket), so the exporter puts the job into the CI's trace.
"""

import base64
import http.client
import select
import socket
import ssl
import urllib.parse

from .encode import control_line

EVENTS_PATH = '/api/v1/events'


class TransportError(Exception):
    """Sending failed; the batch may be retried."""


class PermanentError(TransportError):
    """The exporter refused the batch (bad token, too large, ...); retrying would not help."""


def parse_target(target, token=None, stream=None, timeout=10.0):
    """`unix:/path`, `unix:///path` or a plain path -> UnixTransport; `http(s)://host[:port][/path]` ->
    HttpTransport (path defaults to /api/v1/events)."""
    if target.startswith(('http://', 'https://')):
        return HttpTransport(target, token=token, stream=stream, timeout=timeout)
    if target.startswith('unix://'):
        path = target[len('unix://'):]
    elif target.startswith('unix:'):
        path = target[len('unix:'):]
    else:
        path = target
    if not path:
        raise ValueError('target %r names no socket path' % target)
    return UnixTransport(path, stream=stream, timeout=timeout)


def hello_line(stream, env):
    """The hello naming the stream, with the job's CI variables when there are any."""
    return control_line('hello', stream=stream, env=env) if env else control_line('hello', stream=stream)


class UnixTransport:
    def __init__(self, path, stream=None, timeout=10.0):
        self.path = path
        self.stream = stream
        self.timeout = timeout
        self.env = None
        # The env is new since the connection's hello: say hello again, with it, before the next batch.
        self._announce = False
        self._sock = None

    def set_env(self, env):
        if self.stream is None or not env:
            return
        self.env = dict(env)
        self._announce = self._sock is not None

    def describe(self):
        return 'unix:%s' % self.path

    def send(self, lines):
        if self._sock is not None and self._peer_closed():
            self.close()
        if self._sock is None:
            self._connect()
        if self._announce:
            lines = [hello_line(self.stream, self.env)] + list(lines)
        try:
            self._sock.sendall(('\n'.join(lines) + '\n').encode('utf-8'))
            self._announce = False
        except OSError as e:
            self.close()
            raise TransportError('sending to %s failed: %s' % (self.path, e)) from e

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
            if self.stream is not None:
                sock.sendall((hello_line(self.stream, self.env) + '\n').encode('utf-8'))
        except OSError as e:
            sock.close()
            raise TransportError('cannot connect to %s: %s' % (self.path, e)) from e
        self._sock = sock
        self._announce = False

    def _peer_closed(self):
        # The exporter never writes to us: readable means it closed (or reset) the connection, and a send
        # now would vanish into a dead socket.
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return False
            return self._sock.recv(1, socket.MSG_PEEK) == b''
        except OSError:
            return True


class HttpTransport:
    def __init__(self, url, token=None, stream=None, timeout=10.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ('http', 'https') or not parsed.hostname:
            raise ValueError('not an http(s) URL: %r' % url)
        self.url = url
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.path = (parsed.path if parsed.path not in ('', '/') else EVENTS_PATH) + (
            '?' + parsed.query if parsed.query else '')
        self.token = token
        self.stream = stream
        self.timeout = timeout
        self.env = None
        # A hello with the env leads each request until one is accepted.
        self._announce = False
        self.basic = None
        if parsed.username is not None:
            creds = '%s:%s' % (urllib.parse.unquote(parsed.username), urllib.parse.unquote(parsed.password or ''))
            self.basic = base64.b64encode(creds.encode('utf-8')).decode('ascii')
        self._conn = None
        self._used = False

    def set_env(self, env):
        if self.stream is None or not env:
            return
        self.env = dict(env)
        self._announce = True

    def describe(self):
        return '%s://%s%s%s' % (self.scheme, self.host, '' if self.port is None else ':%d' % self.port, self.path)

    def send(self, lines):
        if self._announce:
            lines = [hello_line(self.stream, self.env)] + list(lines)
        body = ('\n'.join(lines) + '\n').encode('utf-8')
        headers = {'Content-Type': 'application/x-ndjson', 'Content-Length': str(len(body))}
        if self.stream is not None:
            headers['X-Pyats-Stream'] = self.stream
        if self.token:
            headers['Authorization'] = 'Bearer %s' % self.token
        elif self.basic:
            headers['Authorization'] = 'Basic %s' % self.basic
        try:
            status, payload = self._post(body, headers)
        except (OSError, http.client.HTTPException) as first:
            # A kept-alive connection the server has since closed fails at once: retry on a fresh one.
            reused = self._conn is not None and self._used
            self.close()
            if not reused:
                raise TransportError('POST %s failed: %s' % (self.describe(), first)) from first
            try:
                status, payload = self._post(body, headers)
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise TransportError('POST %s failed: %s' % (self.describe(), e)) from e
        if 200 <= status < 300:
            self._announce = False
            return
        detail = payload[:300].decode('utf-8', 'replace')
        if status in (408, 429) or status >= 500:
            self.close()
            raise TransportError('POST %s: HTTP %d %s' % (self.describe(), status, detail))
        raise PermanentError('POST %s: HTTP %d %s' % (self.describe(), status, detail))

    def _post(self, body, headers):
        conn = self._connection()
        conn.request('POST', self.path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        self._used = True
        return response.status, payload

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None
        self._used = False

    def _connection(self):
        if self._conn is None:
            if self.scheme == 'https':
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                         context=ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn
