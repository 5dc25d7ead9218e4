"""The live readings' stream, ``GET /api/stream``: each HTTP client reads its own subscription
to the journal's live feed of readings (the client's session, its bounds and the gap rule are
:mod:`daq.api.live`'s), and the journal queries of ``/api/readings`` and of a replay.

Formats: NDJSON (one JSON object per line, ``"type"`` = ``reading``, ``gap``, ``heartbeat``
or ``notice``) and server-sent events (``event: readings`` with a JSON array and ``id:`` the
last journal id, so a browser's ``EventSource`` reconnects with ``Last-Event-ID`` and resumes
by id; ``event: gap``; ``: ping`` comments as heartbeats). A client dropped for a socket that
accepted nothing reconnects with ``since_id``, the id of the last reading it got.

``since_id`` (or ``Last-Event-ID``) replays what was committed after that journal id, ``since``
what was acquired since then. The subscription is taken *before* the journal is read, so
nothing committed in between is missed; live readings the replay covered are skipped by id.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from daq.api.filters import ReadingFilter
from daq.api.live import REPLAY_CHUNK, LiveClients, LiveSession, gap_line, notice_line, small_send_buffer
from daq.journal import codec
from daq.journal.feed import FeedBatch, read_range
from daq.journal.journal import JOURNAL_FILE, connect
from daq.logs import get_logger

log = get_logger("daq.api")

#: ``acq_ns`` is only nearly monotonic in id order (instruments stamp on arrival, commits
#: group them): look this far before ``since`` when bisecting, then filter exactly.
_BISECT_MARGIN_NS = 10_000_000_000

_T = TypeVar("_T")


@dataclasses.dataclass(slots=True)
class JournalAnswer:
    """Readings read from the journal for a client."""

    records: list[codec.ReadingRecord]
    #: Whether matching readings were left out (by the scan limit or ``limit``).
    truncated: bool
    #: The last journal id the answer covers: a client continues with ``since_id`` = this.
    last_id: int


def query_journal(
    data_dir: Path,
    *,
    flt: ReadingFilter,
    scan_limit: int,
    since_ns: int = 0,
    since_id: int | None = None,
    limit: int | None = None,
) -> JournalAnswer:
    """Readings matching ``flt``, in commit (id) order, read through their own read-only
    connection (on a worker thread beside the live writer, which WAL allows).

    With ``since_id``: the readings committed after that journal id, oldest first, at most
    ``limit`` of them and at most ``scan_limit`` rows looked at; ``last_id`` is where the next
    page starts. A client pages or resumes this way (acquisition times are not monotonic in
    commit order; ids are). Otherwise: readings with ``acq_ns >= since_ns`` among the last
    ``scan_limit`` of the journal, the newest ``limit`` of them; ``last_id`` is the journal's
    last id when it was read.
    """
    conn = connect(Path(data_dir) / JOURNAL_FILE, read_only=True)
    try:
        if since_id is not None:
            return _page_after(conn, since_id, flt, scan_limit, limit)
        return _since_time(conn, since_ns, flt, scan_limit, limit)
    finally:
        conn.close()


def _page_after(
    conn: sqlite3.Connection, since_id: int, flt: ReadingFilter, scan_limit: int, limit: int | None
) -> JournalAnswer:
    out: list[codec.ReadingRecord] = []
    last_id = since_id
    scanned = 0
    while scanned < scan_limit:
        page = read_range(conn, last_id, limit=min(REPLAY_CHUNK, scan_limit - scanned))
        for rec in page:
            scanned += 1
            if flt.match_reading(rec.reading):
                out.append(rec)
            last_id = rec.id
            if limit is not None and len(out) >= limit:
                more = conn.execute("SELECT 1 FROM readings WHERE id > ? LIMIT 1", (last_id,)).fetchone()
                return JournalAnswer(out, more is not None, last_id)
        if len(page) < REPLAY_CHUNK:
            return JournalAnswer(out, False, last_id)
    more = conn.execute("SELECT 1 FROM readings WHERE id > ? LIMIT 1", (last_id,)).fetchone()
    return JournalAnswer(out, more is not None, last_id)


def _since_time(
    conn: sqlite3.Connection, since_ns: int, flt: ReadingFilter, scan_limit: int, limit: int | None
) -> JournalAnswer:
    lo_id, hi_id = conn.execute("SELECT MIN(id), MAX(id) FROM readings").fetchone()
    if hi_id is None:
        return JournalAnswer([], False, 0)

    def acq_at(rid: int) -> int:
        # Ids may have holes (pruned history): take the first row at or after rid.
        row = conn.execute("SELECT acq_ns FROM readings WHERE id >= ? ORDER BY id LIMIT 1", (rid,)).fetchone()
        return int(row[0])

    # First id whose reading is not older than since (minus the margin), by bisection on id.
    start = bisect.bisect_left(range(lo_id, hi_id + 1), since_ns - _BISECT_MARGIN_NS, key=acq_at) + lo_id
    truncated = False
    if hi_id - start + 1 > scan_limit:
        start = hi_id - scan_limit + 1
        truncated = True
    cols = ", ".join(codec.READING_COLUMNS)
    out: list[codec.ReadingRecord] = []
    for values in conn.execute(
        f"SELECT {cols} FROM readings WHERE id >= ? AND id <= ? AND acq_ns >= ? ORDER BY id",
        (start, hi_id, since_ns),
    ):
        rec = codec.record(values)
        if flt.match_reading(rec.reading):
            out.append(rec)
    if limit is not None and len(out) > limit:
        out, truncated = out[-limit:], True
    return JournalAnswer(out, truncated, hi_id)


def records_json(records: list[codec.ReadingRecord]) -> list[bytes]:
    """Each record as the stream's JSON object (:func:`codec.json_bytes`)."""
    return [codec.json_bytes(rec) for rec in records]


def _frame(lines: list[bytes], sse: bool, last_id: int) -> bytes:
    if sse:
        return b"event: readings\nid: %d\ndata: [" % last_id + b",".join(lines) + b"]\n\n"
    return b"\n".join(lines) + b"\n"


async def serve_stream(
    request: web.Request,
    *,
    clients: LiveClients[FeedBatch],
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
    sub = clients.connect(max_pending, str(request.remote), request.transport)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    live = LiveSession(clients, sub, resp, Path(data_dir) / JOURNAL_FILE, write_timeout_s)
    write, in_thread = live.write, live.in_thread

    async def from_journal(after_id: int, last_id: int) -> int:
        """Send the readings ``after_id < id <= last_id`` from the journal, a chunk at a time;
        returns how many passed the filter."""
        db = await live.journal()
        sent = 0
        while after_id < last_id:
            page = await in_thread(
                functools.partial(read_range, db, after_id, last_id=last_id, limit=REPLAY_CHUNK)
            )
            if not page:
                break
            lines = records_json([rec for rec in page if flt.match_reading(rec.reading)])
            if lines:
                await write(_frame(lines, sse, page[-1].id))
                sent += len(lines)
            after_id = page[-1].id
        return sent

    async def send(batch: FeedBatch, sent_id: int) -> None:
        await _send_batch(batch, sent_id, flt, sse, write)

    async with live:
        small_send_buffer(request)
        await resp.prepare(request)
        if sse:
            await write(b"retry: 2000\n\n")
        #: The last journal id this client has been given (or was not meant to get).
        sent_id = 0
        if since_id is not None:
            hi_id = await in_thread(lambda: _last_id(data_dir))
            start = since_id
            if hi_id - since_id > replay_limit:
                start = hi_id - replay_limit
                await write(notice_line(f"replay limited to the last {replay_limit} readings", sse))
            elif since_id > hi_id:
                # No client can have seen an id this journal has not committed (readings are
                # published after their commit): the id is another journal's. Go on live from
                # here rather than wait, silently, for this journal to reach it.
                await write(
                    notice_line(
                        f"since_id {since_id} is past this journal's last id {hi_id}", sse, last_id=hi_id
                    )
                )
            replayed = await from_journal(start, hi_id)
            await write(notice_line("live", sse, replayed=replayed, now_ns=now_ns))
            sent_id = hi_id
        elif since_ns is not None:
            answer = await in_thread(
                lambda: query_journal(data_dir, flt=flt, scan_limit=replay_limit, since_ns=since_ns)
            )
            if answer.truncated:
                await write(notice_line(f"replay limited to the last {replay_limit} readings", sse))
            for i in range(0, len(answer.records), REPLAY_CHUNK):
                chunk = answer.records[i : i + REPLAY_CHUNK]
                await write(_frame(records_json(chunk), sse, chunk[-1].id))
            await write(notice_line("live", sse, replayed=len(answer.records), now_ns=now_ns))
            sent_id = answer.last_id
        await live.follow(
            sent_id,
            heartbeat_s=heartbeat_s,
            heartbeat=b": ping\n\n" if sse else b'{"type":"heartbeat"}\n',
            gap=lambda g: gap_line(g, sse),
            from_journal=from_journal,
            send=send,
        )
    return resp


async def _send_batch(
    batch: FeedBatch, sent_id: int, flt: ReadingFilter, sse: bool, write: Callable[[bytes], Awaitable[None]]
) -> None:
    """Write the readings of ``batch`` after ``sent_id`` that pass ``flt`` (encoded once per batch)."""
    everything, first = flt.everything, batch.first_id
    lines = [
        batch.json_line(i)
        for i, r in enumerate(batch.readings)
        if first + i > sent_id and (everything or flt.match_reading(r))
    ]
    if lines:
        await write(_frame(lines, sse, batch.last_id))


def _last_id(data_dir: Path) -> int:
    conn = connect(Path(data_dir) / JOURNAL_FILE, read_only=True)
    try:
        (hi,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()
        return int(hi)
    finally:
        conn.close()
