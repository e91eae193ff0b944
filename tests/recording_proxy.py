"""A TCP proxy on loopback that records every byte passing in either direction: the capture
the confidentiality tests search for known plaintext (seed 004 TST-SEC#08), without needing
tshark or root."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator


class RecordingProxy:
    """Listens on 127.0.0.1:`port` (any free port), forwards to `target`; `captured()` is all
    traffic seen so far, both directions concatenated per connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def captured(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    def _record(self, data: bytes) -> None:
        with self._lock:
            self._chunks.append(data)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self._record(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(self._pipe(c_reader, s_writer), self._pipe(s_reader, c_writer))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            sock: socket.socket = self._server.sockets[0]
            self.port = sock.getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def start(self) -> RecordingProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@contextlib.contextmanager
def recording_proxy(target: tuple[str, int]) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(target).start()
    try:
        yield proxy
    finally:
        proxy.stop()
