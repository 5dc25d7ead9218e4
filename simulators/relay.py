"""A TCP relay in front of a simulator's server that holds each chunk from the server back by a
delay (the ``delay_s`` fault of a server whose library has no hook for it), and a free port.
"""

from __future__ import annotations

import asyncio
import socket


def free_port(host: str) -> int:
    """A port free on ``host`` now (for a server and its relay, which need it known up front)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class DelayRelay:
    """A TCP relay that holds each chunk from the server back by ``delay_s``."""

    def __init__(self, server: asyncio.Server, tasks: set[asyncio.Task[None]]):
        self._server = server
        self._tasks = tasks

    @classmethod
    async def start(
        cls, host: str, public_port: int, inner_port: int, delay_s: float, *, name: str = "sim:relay"
    ) -> DelayRelay:
        """Listen on ``host:public_port`` and relay each connection to ``inner_port``; tasks
        are named ``name``."""
        tasks: set[asyncio.Task[None]] = set()

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
            try:
                while data := await reader.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(host, inner_port)
            except OSError:
                writer.close()
                return
            for t in (
                asyncio.create_task(pump(reader, up_writer, 0.0), name=name),
                asyncio.create_task(pump(up_reader, writer, delay_s), name=name),
            ):
                tasks.add(t)
                t.add_done_callback(tasks.discard)

        server = await asyncio.start_server(handle, host, public_port, reuse_address=True)
        return cls(server, tasks)

    async def close(self) -> None:
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
