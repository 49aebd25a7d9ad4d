"""ReportClient(socketpath).subscribe(callback), as documented by pyATS: an async method that calls the
async `callback` with one event dict per reporter message until the server closes the connection.

This stand-in speaks the wire format of test/helpers/reporter_standin.py (pickles with an 8-byte big-endian
size prefix) and unpickles with CPython's real pickle, so a bridge test is real end to end.
"""

import asyncio
import inspect
import pickle
import struct

HEADER = struct.Struct('>Q')


class ReportClient:
    def __init__(self, socketpath, ppid=None):
        self.socketpath = socketpath
        self.ppid = ppid
        self._writer = None

    async def subscribe(self, callback):
        reader, writer = await asyncio.open_unix_connection(self.socketpath)
        self._writer = writer
        try:
            request = pickle.dumps({'action': 'subscribe'}, protocol=2)
            writer.write(HEADER.pack(len(request)) + request)
            await writer.drain()
            while True:
                try:
                    header = await reader.readexactly(HEADER.size)
                except asyncio.IncompleteReadError:
                    return
                (size,) = HEADER.unpack(header)
                payload = await reader.readexactly(size)
                result = callback(pickle.loads(payload))
                if inspect.isawaitable(result):
                    await result
        finally:
            self.close()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
