"""A TCP relay that delays every byte by half a round-trip time in each direction.

This kernel has no ``netem``, so the benchmarks (bench/network.py) put this relay between the
sites and central to give them real latency. Each direction of each connection has a queue of
timestamped chunks: a reader takes what arrives and stamps it with the time it may leave, a
writer sends each chunk when its time comes. Reading never waits for writing, so the stream keeps
its order and its throughput (many chunks can be in flight at once); only their arrival is
later, by ``rtt / 2`` each way. The relay runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import threading
import time

from tests.processes import free_port

CHUNK = 65536
IN_FLIGHT = 1024
"""Chunks queued per direction at most (64 MiB): the relay's window, like a socket buffer."""


class DelayRelay:
    """Listens on 127.0.0.1 (a free port) and forwards to ``target_host:target_port``, holding
    every chunk ``rtt_ms / 2`` in each direction. ``rtt_ms`` may be changed between uses; it
    applies to the chunks that arrive afterwards."""

    def __init__(self, target_host: str, target_port: int, *, rtt_ms: float = 0.0) -> None:
        self.port = free_port()
        self.rtt_ms = rtt_ms
        self._target = (target_host, target_port)
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", self.port), self._loop
        ).result(timeout=5)
        self.connections = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(
                self._direction(reader, upstream_writer, writer),
                self._direction(upstream_reader, writer, upstream_writer),
            )
        finally:
            for each in (writer, upstream_writer):
                self._writers.discard(each)
                each.transport.abort()

    async def _direction(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        source_writer: asyncio.StreamWriter,
    ) -> None:
        """Relay one direction: a reader stamping chunks, a writer sending each when due. A
        reset on either side resets both (``source_writer`` is the source's own socket)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(IN_FLIGHT)
        broken = False
        holding = False
        """The writer holds a chunk it took from the queue and has not yet passed on."""

        async def read() -> None:
            nonlocal broken
            try:
                while data := await source.read(CHUNK):
                    if not self.rtt_ms and not holding and queue.empty():
                        # No delay and nothing before it: straight on, as a wire would (not
                        # through the writer, a hop of the relay's own that is no latency).
                        sink.write(data)
                        await sink.drain()
                        continue
                    await queue.put((time.monotonic() + self.rtt_ms / 2000, data))
            except (ConnectionError, OSError):
                broken = True
            await queue.put((time.monotonic() + self.rtt_ms / 2000, b""))  # the end, delayed too

        async def write() -> None:
            nonlocal holding
            while True:
                due, data = await queue.get()
                holding = True
                while (wait := due - time.monotonic()) > 0:  # never early, whatever the clock
                    await asyncio.sleep(wait)
                if not data:
                    break
                sink.write(data)
                await sink.drain()
                holding = False
            if broken:
                raise ConnectionResetError
            if sink.can_write_eof():
                sink.write_eof()  # a half-close passes on: the other direction may go on

        reading = asyncio.ensure_future(read())
        try:
            await write()
        except (ConnectionError, OSError):
            sink.transport.abort()
            source_writer.transport.abort()
        finally:
            reading.cancel()

    def cut(self) -> None:
        """Drop every open connection (both ends see the TCP connection reset)."""

        async def drop() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(timeout=5)

    def close(self) -> None:
        self.cut()
        self._server.close()
        asyncio.run_coroutine_threadsafe(self._server.wait_closed(), self._loop).result(timeout=5)

        async def finish() -> None:  # the connections' tasks end before their loop does
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(finish(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
