"""The outbox reader: a sink's view of the journal, read by id after the sink's cursor.

Contract: :class:`OutboxReader` knows the sink's cursor (``sink_cursors``; it registers the sink
there at :meth:`~OutboxReader.open`, so retention keeps what the sink has not acknowledged),
reads committed readings after an id in batches of at most ``batch_size``, in id order, through
a read-only connection on one thread of its own (SQLite and the formatting never run on the
event loop), and turns them into a :class:`Batch`: lines (:class:`LineFormatter`), the body to
send, the ids, and the readings line protocol cannot carry. It moves the cursor only when told
(:meth:`~OutboxReader.advance`, which stores it without holding up the next batch); reading
the same ids again gives the same lines (the formatter's collision state is replayed from the
rows before the cursor, see :meth:`~OutboxReader.reseed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from daq.forward.lineprotocol import ROW_SELECT, LineFormatter
from daq.journal.codec import LINE_ACQ_NS, LINE_ID, LineRow
from daq.journal.journal import Journal, connect

#: Rows before the cursor replayed at start so the ``dup`` tags come out as they did before.
SEED_WINDOW = 10_000

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(slots=True)
class Batch:
    """Lines ready to send, the ids they carry, and rows that could not be formatted."""

    first_id: int
    last_id: int
    lines: list[str] = field(default_factory=list)
    #: The request body for all of ``lines`` (gzip-compressed when the sink says so).
    body: bytes = b""
    ids: list[int] = field(default_factory=list)
    unformattable: list[tuple[int, str]] = field(default_factory=list)
    oldest_acq_ns: int = 0


class OutboxReader:
    """Reads one sink's pending readings from the journal and keeps its cursor.

    ``encode`` makes a request body of lines (the writer's :meth:`~daq.forward.writer.InfluxWriter.encode`);
    it runs on the reader's thread, so a batch is ready to send when :meth:`fetch` returns.
    """

    def __init__(
        self,
        journal: Journal,
        sink_name: str,
        formatter: LineFormatter,
        *,
        batch_size: int,
        encode: Callable[[Sequence[str]], bytes],
    ):
        self.journal = journal
        self.sink_name = sink_name
        self.formatter = formatter
        formatter.kind_of = self._measurement_kind
        self.batch_size = batch_size
        self.encode = encode
        #: The id of the last reading the sink acknowledged (or that was quarantined).
        self.cursor = 0
        #: The cursor as the journal holds it (see :meth:`advance`).
        self._stored = 0
        self._cursor_write: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def pending(self) -> int:
        """Committed readings not yet acknowledged by the sink."""
        return max(0, self.journal.last_reading_id - self.cursor)

    # -- life cycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Read the cursor, register the sink in the outbox, open the read-only view."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"forward-{self.sink_name}")
        self.cursor = await self.journal.get_cursor(self.sink_name)
        # Register the sink in the outbox before its first write: retention never prunes
        # readings past the lowest cursor, and a sink that has sent nothing yet holds at 0.
        await self.journal.set_cursor(self.sink_name, self.cursor)
        self._stored = self.cursor
        await self.run(self._open_sync)

    @property
    def is_open(self) -> bool:
        return self._executor is not None

    async def close(self) -> None:
        """Close the view of the journal (a cursor write still in flight is cancelled: call
        :meth:`flush_cursor` first)."""
        if self._cursor_write is not None:
            self._cursor_write.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._cursor_write
            self._cursor_write = None
        if self._executor is None:
            return
        if self._conn is not None:
            await self.run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the reader's thread (the forwarder writes its status file there too,
        so a sink has one thread)."""
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _open_sync(self) -> None:
        self._conn = connect(self.journal.path, read_only=True)
        self._reseed_sync()

    # -- the cursor ------------------------------------------------------------------------

    async def advance(self, last_id: int) -> None:
        """The sink has every reading through ``last_id``: move the cursor, and store it.

        The next batch does not wait for the store: the journal's thread may be busy with a
        large commit, and delivery would stall behind it. One write is in flight at a time
        and stores the latest cursor, so the stored cursor trails the acknowledged one by at
        most what was acknowledged meanwhile (after a crash those points are sent again and
        overwrite themselves). A failed write is raised by the next call (which tries again
        at the call after); :meth:`flush_cursor` stores the cursor and waits."""
        self.cursor = last_id
        task = self._cursor_write
        if task is not None:
            if not task.done():
                return  # the write in flight goes on to store this cursor
            self._cursor_write = None
            task.result()
        name = f"forward-cursor:{self.sink_name}"
        self._cursor_write = asyncio.create_task(self._write_cursor(), name=name)

    async def _write_cursor(self) -> None:
        while self._stored != self.cursor:
            target = self.cursor
            await self.journal.set_cursor(self.sink_name, target)
            self._stored = target

    async def flush_cursor(self) -> None:
        """Store the cursor now (after the write in flight, whose failure is raised)."""
        task, self._cursor_write = self._cursor_write, None
        if task is not None:
            await task
        await self._write_cursor()

    async def reseed(self) -> None:
        """Rebuild the formatter's collision state for the rows after the cursor (after a
        batch read was dropped, so that reading it again gives the same lines)."""
        await self.run(self._reseed_sync)

    def _reseed_sync(self) -> None:
        assert self._conn is not None
        f = self.formatter
        self.formatter = LineFormatter(
            site=f.site,
            cell=f.cell,
            kinds=f.kinds,
            default_kind=f.default_kind,
            resolution_ns=f.resolution_ns,
        )
        seed = self._conn.execute(
            f"{ROW_SELECT} WHERE id > ? AND id <= ? ORDER BY id",
            (max(0, self.cursor - SEED_WINDOW), self.cursor),
        ).fetchall()
        self.formatter.observe_all(seed)

    async def oldest_pending(self) -> int | None:
        """Acquisition time (ns) of the first reading after the cursor, if any."""
        return await self.run(self._oldest_pending_sync, self.cursor)

    def _oldest_pending_sync(self, cursor: int) -> int | None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT acq_ns FROM readings WHERE id > ? ORDER BY id LIMIT 1", (cursor,)
        ).fetchone()
        return None if row is None else int(row[0])

    # -- batches ---------------------------------------------------------------------------

    async def fetch(self, after_id: int) -> Batch | None:
        """The next batch after ``after_id`` (``None`` if nothing is committed after it)."""
        return await self.run(self._fetch_sync, after_id)

    def _fetch_sync(self, after_id: int) -> Batch | None:
        assert self._conn is not None
        rows: list[LineRow] = self._conn.execute(
            f"{ROW_SELECT} WHERE id > ? ORDER BY id LIMIT ?", (after_id, self.batch_size)
        ).fetchall()
        if not rows:
            return None
        lines, refused = self.formatter.format_many(rows)
        if refused:
            skipped = {rid for rid, _ in refused}
            ids = [row[LINE_ID] for row in rows if row[LINE_ID] not in skipped]
        else:
            ids = [row[LINE_ID] for row in rows]
        return Batch(
            first_id=rows[0][LINE_ID],
            last_id=rows[-1][LINE_ID],
            lines=lines,
            body=self.encode(lines) if lines else b"",
            ids=ids,
            unformattable=[(rid, str(exc)) for rid, exc in refused],
            oldest_acq_ns=rows[0][LINE_ACQ_NS],
        )

    def _measurement_kind(self, instrument: str) -> str | None:
        """The kind of an instrument no longer in the config, from its last start event (the
        formatter asks once per instrument)."""
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT detail FROM events WHERE instrument = ? AND kind = 'started' ORDER BY id DESC LIMIT 1",
            (instrument,),
        ).fetchone()
        if row is not None and row[0]:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                kind = json.loads(row[0]).get("kind")
                return str(kind) if kind else None
        return None
