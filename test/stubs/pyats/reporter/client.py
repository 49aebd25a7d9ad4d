"""ReportClient(socketpath).subscribe(callback), as documented by pyATS and as pyATS 23.2 speaks it on the
wire (DESIGN §1): a connection of its own, the request {'name': 'subscribe_client', 'data': {}}, the reply
None, then one event dict per message until the server closes; every message a pickle in chunks of
`struct.pack('>?H', more_follows, length)` + at most 65,535 bytes. The async `callback` gets each event.

CPython's real pickle both ways, so a bridge test against the reporter stand-in is real end to end. Unlike
pyATS 23.2's own client this one reassembles messages of several chunks (the real one cannot: see
test/fixtures/real-pyats/record.py).
"""

import asyncio
import inspect
import pickle
import struct

CHUNK_HEADER = struct.Struct('>?H')
MAX_CHUNK = 0xffff


class SubscriptionRefused(Exception):
    """The reporter answered subscribe_client with something other than None."""


def frame(payload):
    out = []
    while True:
        chunk, payload = payload[:MAX_CHUNK], payload[MAX_CHUNK:]
        out.append(CHUNK_HEADER.pack(bool(payload), len(chunk)) + chunk)
        if not payload:
            return b''.join(out)


async def read_message(reader):
    """The next message's pickle, or None at the end of the stream."""
    parts = []
    while True:
        try:
            header = await reader.readexactly(CHUNK_HEADER.size)
        except asyncio.IncompleteReadError as e:
            if e.partial or parts:
                raise
            return None
        more, size = CHUNK_HEADER.unpack(header)
        parts.append(await reader.readexactly(size))
        if not more:
            return b''.join(parts)


class ReportClient:
    def __init__(self, socketpath, ppid=None):
        self.socketpath = socketpath
        self.ppid = ppid
        self._writer = None

    async def subscribe(self, callback):
        reader, writer = await asyncio.open_unix_connection(self.socketpath)
        self._writer = writer
        try:
            writer.write(frame(pickle.dumps({'name': 'subscribe_client', 'data': {}})))
            await writer.drain()
            reply = await read_message(reader)
            if reply is None:
                return
            answer = pickle.loads(reply)
            if answer is not None:
                raise SubscriptionRefused('subscribe_client answered %r' % (answer,))
            while True:
                message = await read_message(reader)
                if message is None:
                    return
                result = callback(pickle.loads(message))
                if inspect.isawaitable(result):
                    await result
        finally:
            self.close()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
