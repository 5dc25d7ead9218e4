"""The live stream: committed readings to many clients, none of which can slow acquisition.

The journal calls :meth:`StreamHub.publish` after every group commit (a hook on the event
loop). Publishing only appends the batch to each client's queue, O(clients), and never
waits: encoding and writing happen in each client's own request handler. Every client has a
bounded queue (``client_queue`` readings); a client that falls that far behind, or whose
socket accepts nothing for ``client_write_timeout_s``, is disconnected and counted. Its
kernel send buffer is kept small too, so a stalled client holds little memory. A client that
was dropped can reconnect with ``since_ns`` and get what it missed from the journal.

Formats: NDJSON (one JSON object per line, ``"type"`` = ``reading``, ``heartbeat`` or
``notice``) and server-sent events (``event: readings`` with a JSON array; ``: ping``
comments as heartbeats).

``since`` replays the journal first. The client is registered *before* the journal is
read, so nothing committed in between is missed; readings the replay already sent are
skipped by their per-instrument sequence number.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import json
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from daq.api.filters import ReadingFilter
from daq.journal import codec
from daq.journal.codec import READING_COLUMNS
from daq.journal.journal import JOURNAL_FILE, connect
from daq.logs import get_logger
from daq.model import Reading

log = get_logger("daq.api")

#: Kernel send buffer of a stream socket: what a stalled client can pin in the kernel.
STREAM_SNDBUF = 64 * 1024
#: Replay rows per write.
REPLAY_CHUNK = 500
#: ``acq_ns`` is only nearly monotonic in id order (instruments stamp on arrival, commits
#: group them): look this far before ``since`` when bisecting, then filter exactly.
_BISECT_MARGIN_NS = 10_000_000_000


def reading_json(r: Reading, rid: int | None = None) -> bytes:
    """One reading as the stream's JSON object, with its journal id (:func:`codec.json_object`)."""
    return codec.json_bytes(r, rid)


def row_json(row: Mapping[str, Any]) -> bytes:
    """A journal row (see :data:`codec.READING_COLUMNS`) in the same shape as :func:`reading_json`."""
    rec = codec.record(row)
    return codec.json_bytes(rec.reading, rec.id)


def query_journal(
    data_dir: Path, *, since_ns: int, flt: ReadingFilter, scan_limit: int, since_id: int | None = None
) -> tuple[list[Mapping[str, Any]], bool]:
    """Readings with ``acq_ns >= since_ns`` matching ``flt``, in commit order; with ``since_id``,
    the readings committed after the one with that journal id instead (``since_ns`` is then
    ignored): what a client that saw ids up to ``since_id`` has not seen, whatever their
    acquisition times.

    Reads through its own read-only connection (runs on a worker thread beside the live
    writer, which WAL allows). At most the last ``scan_limit`` readings of the journal are
    looked at; the flag says whether older matching rows were left out.
    """
    conn = connect(Path(data_dir) / JOURNAL_FILE, read_only=True)
    try:
        lo_id, hi_id = conn.execute("SELECT MIN(id), MAX(id) FROM readings").fetchone()
        if hi_id is None:
            return [], False

        def acq_at(rid: int) -> int:
            # Ids may have holes (pruned history): take the first row at or after rid.
            row = conn.execute(
                "SELECT acq_ns FROM readings WHERE id >= ? ORDER BY id LIMIT 1", (rid,)
            ).fetchone()
            return int(row[0])

        if since_id is not None:
            start, since_ns = max(lo_id, since_id + 1), -(2**63)
        else:
            # First id whose reading is not older than since (minus the margin), by bisection on id.
            target = since_ns - _BISECT_MARGIN_NS
            start = bisect.bisect_left(range(lo_id, hi_id + 1), target, key=acq_at) + lo_id
        truncated = False
        if hi_id - start + 1 > scan_limit:
            start = hi_id - scan_limit + 1
            truncated = True
        cols = ", ".join(READING_COLUMNS)
        out: list[Mapping[str, Any]] = []
        for values in conn.execute(
            f"SELECT {cols} FROM readings WHERE id >= ? AND acq_ns >= ? ORDER BY id", (start, since_ns)
        ):
            row = dict(zip(READING_COLUMNS, values, strict=True))
            if flt.match_row(row):
                out.append(row)
        return out, truncated
    finally:
        conn.close()


class SharedBatch:
    """One committed batch, encoded at most once whatever the number of clients."""

    __slots__ = ("_encoded", "first_id", "readings")

    def __init__(self, readings: list[Reading], first_id: int | None = None):
        self.readings = readings
        #: Journal id of ``readings[0]`` (the others follow in order), if known.
        self.first_id = first_id
        self._encoded: list[bytes | None] = [None] * len(readings)

    def line(self, i: int) -> bytes:
        data = self._encoded[i]
        if data is None:
            rid = None if self.first_id is None else self.first_id + i
            data = self._encoded[i] = reading_json(self.readings[i], rid)
        return data


class StreamClient:
    """One connected client: its filter, its bounded queue, and why it was dropped."""

    def __init__(self, hub: StreamHub, flt: ReadingFilter, max_pending: int, peer: str):
        self.hub = hub
        self.filter = flt
        self.max_pending = max_pending
        self.peer = peer
        self.batches: collections.deque[SharedBatch] = collections.deque()
        self.pending = 0
        self.wake = asyncio.Event()
        self.closed = False
        self.drop_reason: str | None = None
        self.transport: asyncio.Transport | None = None
        #: After a replay: per instrument, the last sequence number already sent.
        self.sent_seq: dict[str, int] = {}
        #: After a replay by id: the last journal id already sent.
        self.sent_id = 0
        self.sent = 0

    def offer(self, batch: SharedBatch) -> None:
        """Queue ``batch``; never blocks. A full queue drops the client, not the data."""
        if self.closed:
            return
        n = len(batch.readings)
        if self.pending + n > self.max_pending:
            self.hub.drop(self, f"fell more than {self.max_pending} readings behind")
            return
        self.batches.append(batch)
        self.pending += n
        self.wake.set()

    async def next_lines(self, timeout: float) -> list[bytes] | None:
        """The encoded readings queued since the last call that pass the filter, or ``None``
        after ``timeout`` seconds without any (time for a heartbeat)."""
        if not self.batches and not self.closed:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
        if not self.batches:
            return None
        batches, self.batches = self.batches, collections.deque()
        self.pending = 0
        flt, everything, sent_seq, sent_id = self.filter, self.filter.everything, self.sent_seq, self.sent_id
        lines: list[bytes] = []
        for batch in batches:
            first_id = batch.first_id
            for i, r in enumerate(batch.readings):
                if not everything and not flt.match_reading(r):
                    continue
                if sent_id and first_id is not None and first_id + i <= sent_id:
                    continue
                if sent_seq and r.seq <= sent_seq.get(r.instrument, 0):
                    continue
                lines.append(batch.line(i))
        return lines


class StreamHub:
    """All connected stream clients; :meth:`publish` is the journal's commit hook."""

    def __init__(self, first_id: Callable[[], int] | None = None) -> None:
        #: Gives the journal id of the first reading of the batch being published.
        self._first_id = first_id
        self.clients: set[StreamClient] = set()
        self.connected_total = 0
        self.dropped_total = 0
        self.closed = False

    def publish(self, readings: list[Reading]) -> None:
        if not self.clients or self.closed:
            return
        batch = SharedBatch(readings, None if self._first_id is None else self._first_id())
        for client in tuple(self.clients):
            client.offer(batch)

    def register(self, flt: ReadingFilter, max_pending: int, peer: str) -> StreamClient:
        client = StreamClient(self, flt, max_pending, peer)
        self.clients.add(client)
        self.connected_total += 1
        return client

    def unregister(self, client: StreamClient) -> None:
        client.closed = True
        self.clients.discard(client)

    def drop(self, client: StreamClient, reason: str) -> None:
        """Disconnect a client that cannot keep up; its handler notices and returns."""
        if client.closed:
            return
        client.closed = True
        client.drop_reason = reason
        client.batches.clear()
        client.pending = 0
        self.clients.discard(client)
        self.dropped_total += 1
        log.warning("live client dropped", peer=client.peer, reason=reason)
        client.wake.set()
        if client.transport is not None:
            # Aborting wakes a handler blocked in a write with a connection error.
            client.transport.abort()

    def close_all(self) -> None:
        """Called on shutdown: every handler returns promptly."""
        self.closed = True
        for client in tuple(self.clients):
            client.closed = True
            client.wake.set()
        self.clients.clear()


def _frame(lines: list[bytes], sse: bool) -> bytes:
    if sse:
        return b"event: readings\ndata: [" + b",".join(lines) + b"]\n\n"
    return b"\n".join(lines) + b"\n"


def _notice(text: str, sse: bool, **fields: Any) -> bytes:
    body = json.dumps({"type": "notice", "message": text, **fields}, separators=(",", ":")).encode()
    return b"event: notice\ndata: " + body + b"\n\n" if sse else body + b"\n"


async def serve_stream(
    request: web.Request,
    *,
    hub: StreamHub,
    data_dir: Path,
    flt: ReadingFilter,
    since_ns: int | None,
    sse: bool,
    max_pending: int,
    write_timeout_s: float,
    heartbeat_s: float,
    replay_limit: int,
    now_ns: int,
    since_id: int | None = None,
) -> web.StreamResponse:
    """Stream readings to one client until it goes away, is dropped, or the server stops.
    ``since_id`` (a journal id) replays what was committed after it and resumes exactly
    there (no duplicate, no gap); ``since_ns`` replays by acquisition time."""
    peer = str(request.remote)
    client = hub.register(flt, max_pending, peer)
    client.transport = request.transport
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await resp.prepare(request)

        async def write(data: bytes) -> None:
            async with asyncio.timeout(write_timeout_s):
                await resp.write(data)

        if sse:
            await write(b"retry: 2000\n\n")
        if since_ns is not None or since_id is not None:
            if since_id is not None:
                client.sent_id = since_id
            rows, truncated = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: query_journal(
                    data_dir, since_ns=since_ns or 0, flt=flt, scan_limit=replay_limit, since_id=since_id
                ),
            )
            if truncated:
                await write(
                    _notice(f"replay limited to the last {replay_limit} readings of the journal", sse)
                )
            for i in range(0, len(rows), REPLAY_CHUNK):
                chunk = rows[i : i + REPLAY_CHUNK]
                await write(_frame([row_json(r) for r in chunk], sse))
                sent_seq = client.sent_seq
                for r in chunk:
                    if since_id is not None:
                        client.sent_id = max(client.sent_id, r["id"])
                    else:
                        sent_seq[r["instrument"]] = max(sent_seq.get(r["instrument"], 0), r["seq"])
                client.sent += len(chunk)
            await write(_notice("live", sse, replayed=len(rows), now_ns=now_ns))
        while not client.closed:
            lines = await client.next_lines(heartbeat_s)
            if lines is None:
                if not client.closed:
                    await write(b": ping\n\n" if sse else b'{"type":"heartbeat"}\n')
                continue
            if lines:
                await write(_frame(lines, sse))
                client.sent += len(lines)
    except TimeoutError:
        hub.drop(client, f"socket accepted nothing for {write_timeout_s:g} s")
    except ConnectionError:
        pass  # the client left, or was dropped (which aborted the socket under a pending write)
    finally:
        hub.unregister(client)
    return resp
