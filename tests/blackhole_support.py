"""The tests' one TCP proxy: it forwards, fails over like a load balancer, and can
black-hole its traffic — what a laptop's link sees when the Wi-Fi goes, the route changes
or the machine sleeps (no FIN, no RST: nothing at all).

``Proxy(upstreams)`` listens on 127.0.0.1 and forwards each connection to the first
upstream, in order, that accepts a connection (a refused connect moves on to the next, as
a balancer whose health check saw the first one die would; none: the connection is
closed). ``black_hole()`` stops forwarding in both directions while every socket stays
open (bytes wait in the kernel's buffers, as unacknowledged packets wait for TCP to send
them again); connections accepted meanwhile are not forwarded either. ``restore()``
forwards again, everything that waited first. An end that closes is passed on as a
half-close (FIN), and the connection ends once both directions have.

``BlackHoleProxy(host, port)`` is one in front of one upstream (tests/system/test_laptop.py,
scripts/laptop.py); ``cluster_support.Balancer(ports)`` one in front of relay processes
(tests/system/test_cluster.py, scripts/chaos_cluster.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence


class Proxy:
    def __init__(self, upstreams: Sequence[tuple[str, int]]) -> None:
        self.upstreams = list(upstreams)
        self.port = 0
        #: Connections accepted so far, and forwarded so far per upstream port.
        self.accepted = 0
        self.forwarded: dict[int, int] = {port: 0 for _, port in self.upstreams}
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def holed(self) -> bool:
        return not self._open.is_set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def black_hole(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    async def close(self) -> None:
        """Stop listening and drop every connection (aborted: an RST)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for host, port in self.upstreams:
            try:
                found = await asyncio.open_connection(host, port)
            except OSError:
                continue
            self.forwarded[port] += 1
            return found
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._open.wait()  # a dial during the hole hangs, as a dropped SYN does
            upstream = await self._dial()
            if upstream is None:
                return
            up_reader, up_writer = upstream
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pump(reader, up_writer),
                                     self._pump(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        except asyncio.CancelledError:
            pass  # closed: asyncio's stream callback must not see a cancelled handler
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._open.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._open.wait()  # read just as the hole opened: it waits too
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()


class BlackHoleProxy(Proxy):
    """A ``Proxy`` in front of one upstream."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__([(upstream_host, upstream_port)])
