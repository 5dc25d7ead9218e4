"""One live client of the local API: what the readings' stream (:mod:`daq.api.stream`) and
the alarm transitions' stream (:mod:`daq.api.alarms`) share.

Each client holds a subscription to one of the journal's live feeds (:mod:`daq.journal.feed`:
the readings, or the committed rows of ``alarm_events``), bounded by ``client_queue``.
Publishing never waits; encoding and writing happen in the client's own request handler.
:class:`LiveClients` keeps the clients of one stream connected now (for status, metrics and
shutdown); :class:`LiveSession` runs one of them: bounded writes, the journal read on the
client's own read-only connection for a replay or a gap, and the loop that follows the
subscription. A client that falls ``client_queue`` behind gets a ``gap`` line naming the
journal ids it missed, then those read from the journal, then the live ones again: nothing is
skipped or sent twice. A client whose socket accepts nothing for ``client_write_timeout_s`` is
disconnected (and counted). Its kernel send buffer is kept small, so a stalled client holds
little memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from aiohttp import web

from daq.journal.feed import Fanout, Gap, Published, Subscription
from daq.journal.journal import connect
from daq.logs import get_logger

log = get_logger("daq.api")

#: Kernel send buffer of a stream socket: what a stalled client can pin in the kernel.
STREAM_SNDBUF = 64 * 1024
#: Records read from the journal and written per step of a replay or a gap.
REPLAY_CHUNK = 500

_T = TypeVar("_T")
_B = TypeVar("_B", bound=Published)


class LiveClients(Generic[_B]):
    """The clients of one live stream connected now (each a subscription of one of the
    journal's feeds: the readings', or the alarm transitions'), for status, metrics and
    shutdown."""

    def __init__(self, feed: Fanout[_B]):
        self.feed = feed
        self.clients: dict[Subscription[_B], asyncio.Transport | None] = {}
        self.connected_total = 0
        #: Clients disconnected because their socket accepted nothing for too long.
        self.dropped_total = 0
        #: Gaps sent (a client fell behind the feed and was given the readings from the journal).
        self.gaps_total = 0
        self.closed = False

    def connect(
        self, max_pending: int, peer: str, transport: asyncio.Transport | None, what: str = "stream"
    ) -> Subscription[_B]:
        sub = self.feed.subscribe(max_pending, f"api {what} {peer}")
        if self.closed:
            sub.close()
        self.clients[sub] = transport
        self.connected_total += 1
        return sub

    def disconnect(self, sub: Subscription[_B]) -> None:
        sub.close()
        self.clients.pop(sub, None)

    def drop(self, sub: Subscription[_B], reason: str) -> None:
        """Disconnect a client whose socket does not drain; its handler returns."""
        transport = self.clients.pop(sub, None)
        sub.close()
        self.dropped_total += 1
        log.warning("live client dropped", client=sub.name, reason=reason)
        if transport is not None:
            transport.abort()

    def close_all(self) -> None:
        """Called on shutdown: every handler returns promptly."""
        self.closed = True
        for sub in tuple(self.clients):
            sub.close()
        self.clients.clear()


class LiveSession(Generic[_B]):
    """One client of a live stream, for its request handler: its subscription, the response it
    writes to (each write bounded by the write timeout), a read-only journal connection opened
    the first time a replay or a gap needs one, and :meth:`follow`, the loop every live stream
    runs.

    Use it as ``async with``: a client whose socket accepted nothing for the write timeout is
    dropped (and counted), one that went away ends quietly, and in every case the subscription
    is given back and the connection closed, here rather than on a worker thread, so a handler
    cancelled at shutdown leaves nothing open (closing a read-only connection does not wait on
    the disk)."""

    def __init__(
        self,
        clients: LiveClients[_B],
        sub: Subscription[_B],
        resp: web.StreamResponse,
        journal_path: Path,
        write_timeout_s: float,
    ):
        self.clients = clients
        self.sub = sub
        self.resp = resp
        self.journal_path = journal_path
        self.write_timeout_s = write_timeout_s
        self._conn: sqlite3.Connection | None = None

    async def in_thread(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    async def write(self, data: bytes) -> None:
        async with asyncio.timeout(self.write_timeout_s):
            await self.resp.write(data)

    async def journal(self) -> sqlite3.Connection:
        """The client's read-only connection to the journal (opened on first use)."""
        if self._conn is None:
            path = self.journal_path
            self._conn = await self.in_thread(lambda: connect(path, read_only=True))
        return self._conn

    async def follow(
        self,
        sent_id: int,
        *,
        heartbeat_s: float,
        heartbeat: bytes,
        gap: Callable[[Gap], bytes],
        from_journal: Callable[[int, int], Awaitable[object]],
        send: Callable[[_B, int], Awaitable[None]],
    ) -> None:
        """Send what the subscription receives until it is closed. ``sent_id`` is the last
        journal id the client was given (or was not meant to get): a batch goes out as
        ``send(batch, sent_id)`` (which skips the ids up to ``sent_id``), a :class:`Gap` as
        its ``gap`` line followed by ``from_journal(after_id, last_id)``, and ``heartbeat``
        after ``heartbeat_s`` with nothing to send."""
        sub = self.sub
        while not sub.closed:
            if not await sub.wait(heartbeat_s):
                await self.write(heartbeat)
                continue
            for item in sub.take():
                if isinstance(item, Gap):
                    self.clients.gaps_total += 1
                    await self.write(gap(item))
                    await from_journal(max(item.after_id, sent_id), item.last_id)
                    sent_id = max(sent_id, item.last_id)
                elif item.last_id > sent_id:
                    await send(item, sent_id)
                    sent_id = item.last_id

    async def __aenter__(self) -> LiveSession[_B]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        try:
            if isinstance(exc, TimeoutError):
                self.clients.drop(self.sub, f"socket accepted nothing for {self.write_timeout_s:g} s")
                return True
            # The client left, or was dropped (which aborted the socket under a pending write).
            return isinstance(exc, ConnectionError)
        finally:
            self.clients.disconnect(self.sub)
            if self._conn is not None:
                self._conn.close()


def notice_line(text: str, sse: bool, **fields: Any) -> bytes:
    """A ``notice`` object (an SSE ``notice`` event when ``sse``)."""
    body = json.dumps({"type": "notice", "message": text, **fields}, separators=(",", ":")).encode()
    return b"event: notice\ndata: " + body + b"\n\n" if sse else body + b"\n"


def gap_line(gap: Gap, sse: bool, what: str = "readings") -> bytes:
    """The ``gap`` object telling a client that the ``what`` of ``gap`` follow from the journal."""
    body = json.dumps(
        {
            "type": "gap",
            "after_id": gap.after_id,
            "last_id": gap.last_id,
            "missed": gap.missed,
            "message": f"this client fell behind the live feed: the {what} after after_id up to "
            "last_id follow from the journal",
        },
        separators=(",", ":"),
    ).encode()
    return b"event: gap\ndata: " + body + b"\n\n" if sse else body + b"\n"


def small_send_buffer(request: web.Request) -> None:
    """Keep the kernel send buffer of a stream's socket small (:data:`STREAM_SNDBUF`), so a
    stalled client pins little memory, and send each write at once."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
