"""The plumbing every peer shares: a TCP or PTY endpoint, request splitting, unsolicited sends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty


class Peer:
    """One emulated instrument. Subclasses split requests (:meth:`split`) and answer them
    (:meth:`answer`); :meth:`push` sends bytes unasked (an instrument that talks by itself)."""

    def __init__(self) -> None:
        #: Every request received, exactly as it arrived (terminator included).
        self.requests: list[bytes] = []
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._close: list[object] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._pty_fds: list[int] = []

    # -- what a subclass defines ---------------------------------------------------------

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        """Complete requests at the front of ``buffer`` and the incomplete rest."""
        raise NotImplementedError

    async def answer(self, request: bytes) -> bytes | None:
        """The reply to one request (``None``: stay silent)."""
        raise NotImplementedError

    # -- serving -------------------------------------------------------------------------

    async def serve(self, listen: str = "tcp") -> str:
        """Listen on a free port of 127.0.0.1 (``tcp``) or a PTY (``pty``); returns the
        driver's ``port``."""
        if listen == "pty":
            return await self._serve_pty()
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"socket://127.0.0.1:{port}"

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The session is a task of its own, so close() can cancel it without the server's
        # connection callback seeing a cancelled handler.
        task = asyncio.create_task(self._session(reader, writer), name="peer-tcp")
        self._tasks.add(task)
        try:
            await asyncio.wait([task])
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve_pty(self) -> str:
        controller, device = os.openpty()
        tty.setraw(device)
        path = os.ttyname(device)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        rtransport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(controller, "rb", buffering=0)
        )
        wtransport, wprotocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(os.dup(controller), "wb", buffering=0)
        )
        writer = asyncio.StreamWriter(wtransport, wprotocol, None, loop)
        # Keeping the device end open lets the driver close and reopen the port.
        self._pty_fds.append(device)
        self._close.extend([rtransport, wtransport])
        task = asyncio.create_task(self._session(reader, writer), name="peer-pty")
        self._tasks.add(task)
        return path

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._connected.set()
        buffer = b""
        while True:
            chunk = await reader.read(512)
            if not chunk:
                return
            buffer += chunk
            requests, buffer = self.split(buffer)
            for request in requests:
                self.requests.append(request)
                reply = await self.answer(request)
                if reply:
                    writer.write(reply)
                    await writer.drain()

    async def push(self, data: bytes) -> None:
        """Send ``data`` unasked once a driver is connected."""
        await asyncio.wait_for(self._connected.wait(), 5.0)
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self._close:
            with contextlib.suppress(Exception):
                transport.close()  # type: ignore[attr-defined]
        for fd in self._pty_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._server is not None:
            await self._server.wait_closed()
