"""A TCP proxy whose link can be cut on command: an engine API outage while the engine itself keeps
running (the worker reaches Flink's REST API only through it).

    proxy = await TcpProxy("127.0.0.1", 8081).start()   # proxy.url: point the Deployment Target here
    await proxy.cut("refuse")   # nothing listens: connect() fails at once (ECONNREFUSED)
    await proxy.cut("hang")     # connections are accepted and never answered: callers time out
    await proxy.restore()
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["up", "refuse", "hang"]


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode: Mode = "up"
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        await self._listen()
        return self

    async def _listen(self) -> None:
        # The same port every time: the Deployment Target's restUrl names it.
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self, mode: Literal["refuse", "hang"]) -> None:
        """Start (or change) an outage. Open connections break at once, as in a network partition;
        without that, a client's kept-alive connection would carry on through the outage."""
        self.mode = mode
        self._abort_all()
        if mode == "refuse" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode == "hang" and self._server is None:
            await self._listen()

    async def restore(self) -> None:
        self.mode = "up"
        self._abort_all()  # hung connections: their callers have given up on them anyway
        if self._server is None:
            await self._listen()

    async def stop(self) -> None:
        self._abort_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _abort_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ends = {writer}
        self._open.add(writer)
        try:
            if self.mode == "hang":
                await _drain(reader)  # read and drop everything, answer nothing
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            ends.add(up_writer)
            self._open.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for end in ends:
                self._open.discard(end)
                end.transport.abort()


async def _drain(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.transport.abort()
