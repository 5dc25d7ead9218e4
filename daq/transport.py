"""The byte-level seam under every serial driver.

A :class:`Link` is a duplex byte stream to one instrument: a serial device
(``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, a PTY), a serial server reached as
``socket://host:port`` (raw TCP, as pyserial spells it) or ``rfc2217://host:port``.
Links never retry, sleep or store: that is the supervisor's job.

Drivers open links through a :class:`LinkFactory` (:func:`open_link` by default), so a test
can hand them one end of a :func:`null_modem`: two links connected in memory, the same
stream code as a socket without one. :func:`join` connects any two asyncio protocols the
same way (an OPC UA client's and server's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from daq.errors import ConnectError, ProtocolError, ReadTimeout

#: Upper bound of one frame; a longer run of bytes without a terminator is garbage.
MAX_FRAME = 4096


#: A timeout that fires this much later than due was held up by a stalled process.
STALL_TOLERANCE_S = 0.5


def overdue(loop: asyncio.AbstractEventLoop, started: float, timeout_s: float) -> bool:
    """Whether a ``timeout_s`` timer started at loop time ``started`` fired late enough that
    the process (not the peer) must have stood still: compares loop-time progress."""
    return loop.time() - started - timeout_s > STALL_TOLERANCE_S


class Link:
    """A duplex byte stream built on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str):
        self._reader = reader
        self._writer = writer
        self.url = url

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise ConnectError(f"write to {self.url} failed: {exc}") from exc

    async def read_until(self, terminator: bytes, timeout_s: float | None) -> bytes:
        """Return the next frame including ``terminator``.

        ``timeout_s`` ``None`` waits without a timer (a streaming driver, whose silence the
        supervisor times); cancelling the wait loses nothing, the bytes stay buffered.
        Raises :class:`ReadTimeout` when no full frame arrives in time, :class:`ConnectError`
        when the link closes, and :class:`ProtocolError` (with the bytes) when more than
        :data:`MAX_FRAME` bytes arrive without a terminator, after discarding them.
        """
        loop = asyncio.get_running_loop()
        try:
            for attempt in (1, 2):
                started = loop.time()
                try:
                    async with asyncio.timeout(timeout_s):
                        return await self._reader.readuntil(terminator)
                except TimeoutError as exc:
                    # A timer that fired long after it was due means the process stood still
                    # (SIGSTOP, a paused host), not that the device went silent: what it sent
                    # meanwhile waits in the socket. One fresh window, starting now, reads it
                    # instead of dropping the link (and those frames) as a device fault.
                    assert timeout_s is not None
                    if attempt == 1 and overdue(loop, started, timeout_s):
                        continue
                    raise ReadTimeout(f"no frame from {self.url} within {timeout_s:g} s") from exc
            raise AssertionError("unreachable")
        except asyncio.IncompleteReadError as exc:
            raise ConnectError(f"{self.url} closed the connection") from exc
        except asyncio.LimitOverrunError as exc:
            junk = await self._reader.read(exc.consumed)
            raise ProtocolError(
                f"more than {MAX_FRAME} bytes without a terminator", raw=junk[:MAX_FRAME]
            ) from exc
        except OSError as exc:
            raise ConnectError(f"read from {self.url} failed: {exc}") from exc

    async def read_exactly(self, n: int, timeout_s: float) -> bytes:
        """The next ``n`` bytes; :class:`ReadTimeout` or :class:`ConnectError` as above."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._reader.readexactly(n)
        except TimeoutError as exc:
            raise ReadTimeout(f"no {n} bytes from {self.url} within {timeout_s:g} s") from exc
        except asyncio.IncompleteReadError as exc:
            raise ConnectError(f"{self.url} closed the connection after {exc.partial!r}") from exc

    def discard_input(self) -> bytes:
        """Drop whatever is buffered (a late reply to an earlier request) and return it."""
        buffer: Any = getattr(self._reader, "_buffer", None)
        if not buffer:
            return b""
        data = bytes(buffer)
        buffer.clear()
        return data

    async def close(self) -> None:
        """Close the link; idempotent, never raises."""
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()


async def open_link(
    url: str,
    *,
    baudrate: int = 9600,
    bytesize: int = 8,
    parity: str = "N",
    stopbits: float = 1,
    rtscts: bool = False,
    xonxoff: bool = False,
) -> Link:
    """Open ``url`` and return a :class:`Link`; raises :class:`ConnectError` on failure.

    Line settings apply to real serial ports and RFC 2217 servers; a raw ``socket://``
    server carries bytes only, its line settings live on the server.
    """
    scheme = urlsplit(url).scheme
    try:
        if scheme in ("socket", "tcp"):
            parts = urlsplit(url)
            if parts.hostname is None or parts.port is None:
                raise ConnectError(f"{url}: expected socket://host:port")
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=MAX_FRAME)
            return Link(reader, writer, url)
        import serial_asyncio_fast

        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=url,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            rtscts=rtscts,
            xonxoff=xonxoff,
            limit=MAX_FRAME,
        )
        return Link(reader, writer, url)
    except ConnectError:
        raise
    except Exception as exc:  # pyserial raises SerialException, ValueError or OSError
        raise ConnectError(f"cannot open {url}: {exc}") from exc


#: Opens a link: called as ``factory(url, **line_settings)``, the signature of :func:`open_link`.
LinkFactory = Callable[..., Awaitable[Link]]


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory connection between two asyncio protocols (:func:`join`).

    What is written here is handed to the peer's ``data_received`` on the next loop turn, in
    order; closing an end is end-of-file at the other (``eof_received``, then a close unless
    the protocol keeps the connection half open), as after a TCP FIN."""

    def __init__(self, protocol: asyncio.Protocol, name: str) -> None:
        super().__init__()
        self._protocol = protocol
        self._name = name
        self.peer: MemoryTransport | None = None
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            # As a socket transport does: dropped; a stream's drain() reports the lost connection.
            return
        peer = self.peer
        if peer is not None and data:
            asyncio.get_running_loop().call_soon(peer._receive, bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _receive(self, data: bytes) -> None:
        if not self._closing:
            self._protocol.data_received(data)

    def _peer_closed(self) -> None:
        if self._closing:
            return
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        loop.call_soon(self._protocol.connection_lost, None)
        peer = self.peer
        if peer is not None:
            loop.call_soon(peer._peer_closed)

    def abort(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return not self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self._name, "sockname": self._name}.get(name, default)


def join(
    a: asyncio.Protocol, b: asyncio.Protocol, name: str = "memory"
) -> tuple[MemoryTransport, MemoryTransport]:
    """Connect two protocols in memory and tell each (``connection_made``); returns their
    transports. Both sides' own code runs unchanged: only the socket is replaced. Must be
    called inside a running loop."""
    ta, tb = MemoryTransport(a, name), MemoryTransport(b, name)
    ta.peer, tb.peer = tb, ta
    a.connection_made(ta)
    b.connection_made(tb)
    return ta, tb


def null_modem(url: str = "memory://null-modem") -> tuple[Link, Link]:
    """Two :class:`Link` s connected in memory: bytes written to one are read from the other.

    For tests (an instrument's expected conversation on one end, the driver on the other);
    closing one end is end-of-file at the other. Must be called inside a running loop."""
    loop = asyncio.get_running_loop()
    readers = [asyncio.StreamReader(limit=MAX_FRAME, loop=loop) for _ in range(2)]
    protocols = [asyncio.StreamReaderProtocol(r, loop=loop) for r in readers]
    transports = join(protocols[0], protocols[1], url)
    links = [
        Link(reader, asyncio.StreamWriter(transport, protocol, reader, loop), url)
        for reader, protocol, transport in zip(readers, protocols, transports, strict=True)
    ]
    return links[0], links[1]
