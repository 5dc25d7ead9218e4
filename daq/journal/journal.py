"""The journal: the record of origin.

SQLite in WAL mode with ``synchronous=FULL``. Producers call :meth:`Journal.append` (never
blocks, never raises); a writer task commits whatever arrived within ``commit_window_s`` in
one transaction on a dedicated thread, so an fsync never stalls the event loop. A reading is
*accepted* when the group commit that holds it returns: :meth:`Journal.flush` waits for that.

If the pending buffer exceeds ``max_pending`` (the disk stalls, or is full), further
readings are dropped *and counted*, and an explicit ``overflow`` event is journaled with the
count and time span as soon as a commit succeeds again: never a silent gap.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daq.clock import Clock
from daq.config.load import JournalSection
from daq.errors import JournalError
from daq.journal import chain
from daq.journal.schema import CHAINED, migrate
from daq.logs import get_logger
from daq.model import EventKind, InstrumentEvent, Reading

log = get_logger("daq.journal")

JOURNAL_FILE = "journal.sqlite3"

_INSERT = {
    "readings": "INSERT INTO readings (id, instrument, channel, seq, acq_ns, mono_ns, device_ns, "
    "value, unit, quality, reason, raw, attrs, run_id, hash) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "events": "INSERT INTO events (id, instrument, kind, ts_ns, mono_ns, detail, raw, hash) "
    "VALUES (?,?,?,?,?,?,?,?)",
    "audit": "INSERT INTO audit (id, ts_ns, mono_ns, actor, action, subject, detail, run_id, hash) "
    "VALUES (?,?,?,?,?,?,?,?,?)",
}


def dumps(obj: Mapping[str, Any] | None) -> str | None:
    """Canonical JSON for ``attrs`` and ``detail`` columns (sorted keys, no spaces)."""
    if not obj:
        return None
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    if read_only:
        # A damaged or foreign file opens without complaint; the first query is what fails.
        # Ask once here so that every reader names the file instead of failing mid-way.
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise JournalError(f"{path}: not a readable journal ({exc})") from None
    return conn


class Subscription:
    """A bounded feed of committed readings for a live consumer.

    A consumer that falls behind loses *its copy* of whole batches (counted in ``dropped``);
    the journal and every other consumer are unaffected.
    """

    def __init__(self, journal: Journal, maxsize: int):
        self._journal = journal
        self.queue: asyncio.Queue[list[Reading]] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, batch: list[Reading]) -> None:
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.dropped += len(batch)

    async def get(self) -> list[Reading]:
        return await self.queue.get()

    def close(self) -> None:
        self._journal.unsubscribe(self)


class _Overflow:
    __slots__ = ("count", "first_ns", "last_ns")

    def __init__(self, ts: int) -> None:
        self.count = 0
        self.first_ns = ts
        self.last_ns = ts


class Journal:
    """The durable, append-only, hash-chained local journal. Use :meth:`open`."""

    def __init__(self, data_dir: Path, *, clock: Clock, settings: JournalSection | None = None):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / JOURNAL_FILE
        self.clock = clock
        self.settings = settings or JournalSection()
        self.run_id: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._conn: sqlite3.Connection | None = None
        self._tail: dict[str, tuple[int, bytes]] = {}
        self._seq: dict[str, int] = {}
        self._readings: list[Reading] = []
        self._events: list[InstrumentEvent] = []
        self._audits: list[tuple[Any, ...]] = []
        self._records: list[tuple[str, tuple[Any, ...]]] = []
        self._next_id: dict[str, int] = {}
        self._overflow: dict[str, _Overflow] = {}
        self._wake = asyncio.Event()
        self._appended = 0
        self._committed = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._subscribers: list[Subscription] = []
        self._commit_hooks: list[Callable[[list[Reading]], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.error: str | None = None
        self._failed_since_ns = 0
        self._failed_attempts = 0
        self.commits = 0
        self.readings_committed = 0
        self.last_commit_s = 0.0
        self.last_commit_wall_ns = 0
        self.overflowed = 0

    # -- life cycle -------------------------------------------------------------------

    @classmethod
    async def open(cls, data_dir: Path, *, clock: Clock, settings: JournalSection | None = None) -> Journal:
        """Open (creating or migrating) the journal and start its writer task."""
        journal = cls(data_dir, clock=clock, settings=settings)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(journal._executor, journal._open_sync)
        except (sqlite3.Error, OSError) as exc:
            journal._executor.shutdown(wait=False)
            raise JournalError(f"cannot open journal {journal.path}: {exc}") from exc
        journal._task = asyncio.create_task(journal._writer(), name="journal-writer")
        return journal

    def _open_sync(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        migrate(conn)
        for table in CHAINED:
            row = conn.execute(f"SELECT id, hash FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
            self._tail[table] = (row[0], row[1]) if row else (0, chain.GENESIS)
            self._next_id[table] = self._tail[table][0]
        for instrument, seq in conn.execute("SELECT instrument, MAX(seq) FROM readings GROUP BY instrument"):
            self._seq[instrument] = seq
        if "prunes" in CHAINED:
            # Sequence numbers continue past readings that retention pruned (daq.runs.retention).
            for (detail,) in conn.execute("SELECT detail FROM prunes WHERE table_name = 'readings'"):
                for instrument, seq in (json.loads(detail or "{}").get("last_seq") or {}).items():
                    self._seq[instrument] = max(self._seq.get(instrument, 0), int(seq))
        self._conn = conn

    async def close(self) -> None:
        """Commit everything pending, stop the writer and close the database."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        with contextlib.suppress(asyncio.CancelledError):
            await task
        loop = asyncio.get_running_loop()
        if self._conn is not None:
            await loop.run_in_executor(self._executor, self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(JournalError("journal closed before commit"))
        self._waiters.clear()

    # -- producers (never block, never raise) -----------------------------------------

    def append(self, reading: Reading) -> None:
        """Queue ``reading`` for the next group commit, assigning its sequence number."""
        if len(self._readings) >= self.settings.max_pending:
            self._drop(reading.instrument, reading.acq_ns)
            return
        seq = self._seq.get(reading.instrument, 0) + 1
        self._seq[reading.instrument] = seq
        reading.seq = seq
        if reading.run_id is None:
            reading.run_id = self.run_id
        self._readings.append(reading)
        self._appended += 1
        self._wake.set()

    def _drop(self, instrument: str, ts_ns: int) -> None:
        """Count a row the full buffer cannot take; the next commit journals the overflow."""
        ov = self._overflow.get(instrument)
        if ov is None:
            ov = self._overflow[instrument] = _Overflow(ts_ns)
        ov.count += 1
        ov.last_ns = ts_ns
        self.overflowed += 1

    def append_many(self, readings: list[Reading]) -> None:
        for r in readings:
            self.append(r)

    def event(self, event: InstrumentEvent) -> None:
        """Queue an instrument event (connected, disconnected, parse error, ...)."""
        if len(self._events) >= self.settings.max_pending:
            self._drop(event.instrument, event.ts_ns)
            return
        self._events.append(event)
        self._appended += 1
        self._wake.set()

    def audit(
        self,
        action: str,
        *,
        actor: str = "daemon",
        subject: str | None = None,
        detail: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        """Queue an audit-trail entry, stamped now (the trail is written in true time)."""
        self._audits.append(
            (
                self.clock.time_ns(),
                self.clock.monotonic_ns(),
                actor,
                action,
                subject,
                dumps(detail),
                run_id if run_id is not None else self.run_id,
            )
        )
        self._appended += 1
        self._wake.set()

    def record(self, table: str, values: Mapping[str, Any]) -> int:
        """Queue a row for a chained table other than readings/events/audit (traces, runs, ...)
        and return the id it will have. ``values`` must name every column but ``id``; see
        :mod:`daq.journal.schema` for how to declare a table."""
        columns = CHAINED[table]
        missing = set(columns[1:]) - set(values)
        extra = set(values) - set(columns[1:])
        if missing or extra:
            raise JournalError(f"record({table}): missing {sorted(missing)}, unexpected {sorted(extra)}")
        rid = self._next_id[table] + 1
        self._next_id[table] = rid
        self._records.append((table, (rid, *(values[c] for c in columns[1:]))))
        self._appended += 1
        self._wake.set()
        return rid

    async def flush(self) -> None:
        """Return once everything appended so far is committed (raises if the journal closes)."""
        target = self._appended
        if self._committed >= target:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        self._wake.set()
        await fut

    def next_seq(self, instrument: str) -> int:
        """The last sequence number assigned to ``instrument`` (0 before the first)."""
        return self._seq.get(instrument, 0)

    @property
    def pending(self) -> int:
        return len(self._readings) + len(self._events) + len(self._audits) + len(self._records)

    @property
    def uncommitted(self) -> int:
        """Rows appended but not yet committed: :attr:`pending` plus the batch in flight."""
        return self._appended - self._committed

    # -- consumers ---------------------------------------------------------------------

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)

    def on_commit(self, hook: Callable[[list[Reading]], None]) -> None:
        """Call ``hook(readings)`` on the event loop after each successful commit."""
        self._commit_hooks.append(hook)

    # -- the writer ----------------------------------------------------------------------

    def _overflow_events(self) -> list[InstrumentEvent]:
        events = []
        for instrument, ov in self._overflow.items():
            events.append(
                InstrumentEvent(
                    instrument=instrument,
                    kind=EventKind.OVERFLOW,
                    ts_ns=self.clock.time_ns(),
                    mono_ns=self.clock.monotonic_ns(),
                    detail={
                        "dropped": ov.count,
                        "first_acq_ns": ov.first_ns,
                        "last_acq_ns": ov.last_ns,
                        "reason": "journal pending buffer full",
                    },
                )
            )
        self._overflow.clear()
        self._appended += len(events)
        return events

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self._closing and len(self._readings) < self.settings.max_batch:
                await asyncio.sleep(self.settings.commit_window_s)
            self._wake.clear()
            readings, self._readings = self._readings, []
            events, self._events = self._events, []
            audits, self._audits = self._audits, []
            records, self._records = self._records, []
            if self._overflow:
                events.extend(self._overflow_events())
            n = len(readings) + len(events) + len(audits) + len(records)
            if n:
                started = time.perf_counter()
                try:
                    await loop.run_in_executor(
                        self._executor, self._commit, readings, events, audits, records
                    )
                except sqlite3.Error as exc:
                    # Keep the batch (in order, ahead of newer data) and retry: the disk may be
                    # full or busy. Overflow accounting bounds memory meanwhile.
                    self._readings[:0] = readings
                    self._events[:0] = events
                    self._audits[:0] = audits
                    self._records[:0] = records
                    if self.error is None:
                        log.error("journal commit failed; retrying", error=str(exc), path=str(self.path))
                        self._failed_since_ns = self.clock.time_ns()
                        self._failed_attempts = 0
                    self._failed_attempts += 1
                    self.error = str(exc)
                    if self._closing:
                        raise JournalError(f"journal commit failed at close: {exc}") from exc
                    await asyncio.sleep(self.settings.retry_after_error_s)
                    self._wake.set()
                    continue
                if self.error is not None:
                    log.warning(
                        "journal commits again", path=str(self.path), failed_attempts=self._failed_attempts
                    )
                    # The alarm goes into the audit trail as soon as the journal can hold it.
                    self.audit(
                        "journal_write_failed",
                        detail={
                            "error": self.error,
                            "since_ns": self._failed_since_ns,
                            "until_ns": self.clock.time_ns(),
                            "attempts": self._failed_attempts,
                            "overflowed_total": self.overflowed,
                        },
                    )
                    self.error = None
                self.last_commit_s = time.perf_counter() - started
                self.last_commit_wall_ns = self.clock.time_ns()
                self.commits += 1
                self.readings_committed += len(readings)
                self._committed += n
                if readings:
                    for sub in self._subscribers:
                        sub.offer(readings)
                    for hook in self._commit_hooks:
                        hook(readings)
            else:
                self._committed = self._appended
            while self._waiters and self._waiters[0][0] <= self._committed:
                _, fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
            if self._closing and not self.pending:
                return

    def _commit(
        self,
        readings: list[Reading],
        events: list[InstrumentEvent],
        audits: list[tuple[Any, ...]],
        records: list[tuple[str, tuple[Any, ...]]],
    ) -> None:
        """Hash and insert one batch in one transaction (runs on the journal thread)."""
        conn = self._conn
        assert conn is not None
        link = chain.link
        tails = dict(self._tail)
        rows_r: list[tuple[Any, ...]] = []
        if readings:
            rid, h = tails["readings"]
            payload = chain.reading_payload
            for r in readings:
                rid += 1
                value = None if r.value is None else float(r.value)
                attrs = dumps(r.attrs)
                row = (
                    rid, r.instrument, r.channel, r.seq, r.acq_ns, r.mono_ns, r.device_ns, value,
                    r.unit, int(r.quality), r.reason, r.raw, attrs, r.run_id,
                )  # fmt: skip
                h = link(h, payload(row))
                rows_r.append((*row, h))
            tails["readings"] = (rid, h)
        rows_e: list[tuple[Any, ...]] = []
        if events:
            rid, h = tails["events"]
            for e in events:
                rid += 1
                erow = (rid, e.instrument, e.kind, e.ts_ns, e.mono_ns, dumps(e.detail), e.raw)
                h = link(h, chain.event_payload(erow))
                rows_e.append((*erow, h))
            tails["events"] = (rid, h)
        rows_a: list[tuple[Any, ...]] = []
        if audits:
            rid, h = tails["audit"]
            for a in audits:
                rid += 1
                row = (rid, *a)
                h = link(h, chain.audit_payload(row))
                rows_a.append((*row, h))
            tails["audit"] = (rid, h)
        generic: dict[str, list[tuple[Any, ...]]] = {}
        for table, row in records:
            _, h = tails[table]
            h = link(h, chain.generic_payload(row))
            generic.setdefault(table, []).append((*row, h))
            tails[table] = (row[0], h)
        conn.execute("BEGIN")
        try:
            for table, rows in generic.items():
                cols = CHAINED[table]
                marks = ", ".join("?" * (len(cols) + 1))
                conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}, hash) VALUES ({marks})", rows)
            if rows_r:
                conn.executemany(_INSERT["readings"], rows_r)
            if rows_e:
                conn.executemany(_INSERT["events"], rows_e)
            if rows_a:
                conn.executemany(_INSERT["audit"], rows_a)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._tail = tails

    # -- sink cursors (the outbox) ---------------------------------------------------------

    async def get_cursor(self, sink: str) -> int:
        def q() -> int:
            assert self._conn is not None
            row = self._conn.execute("SELECT last_id FROM sink_cursors WHERE sink=?", (sink,)).fetchone()
            return int(row[0]) if row else 0

        return await asyncio.get_running_loop().run_in_executor(self._executor, q)

    async def set_cursor(self, sink: str, last_id: int) -> None:
        """Advance ``sink``'s cursor (after the sink acknowledged everything up to ``last_id``)."""
        now = self.clock.time_ns()

        def q() -> None:
            assert self._conn is not None
            self._conn.execute(
                "INSERT INTO sink_cursors (sink, last_id, updated_ns) VALUES (?,?,?) "
                "ON CONFLICT(sink) DO UPDATE SET last_id=excluded.last_id, "
                "updated_ns=excluded.updated_ns",
                (sink, last_id, now),
            )

        await asyncio.get_running_loop().run_in_executor(self._executor, q)

    @property
    def last_reading_id(self) -> int:
        """Id of the last *committed* reading."""
        return self._tail.get("readings", (0, b""))[0]
