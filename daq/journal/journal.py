"""The journal: the record of origin.

SQLite in WAL mode with ``synchronous=FULL``. Producers call :meth:`Journal.append` (never
blocks, never raises); a writer task commits whatever arrived within ``commit_window_s`` in
one transaction on a dedicated thread, so an fsync never stalls the event loop. A reading is
*accepted* when the group commit that holds it returns: :meth:`Journal.flush` waits for that.

If the pending buffer exceeds ``max_pending`` (the disk stalls, or is full), further
readings are dropped *and counted*, and an explicit ``overflow`` event is journaled with the
count and time span as soon as a commit succeeds again: never a silent gap.

Every record is put in canonical form (:mod:`daq.canonical`) by the writer just before it is
hashed, so what SQLite gives back re-hashes to the same chain. One batch is committed by
:func:`daq.journal.batch.commit`, which never stops on one record: a record that still cannot
be encoded or stored is taken out of its batch and a ``rejected_record`` event, holding an
always-encodable account of it and of the error, is journaled in its place; the rest of the
batch commits. An unexpected exception in the
writer is logged (once per cause), counted in :attr:`Journal.writer_errors` and retried;
only an unrecoverable one (the database connection or the writer thread gone) ends the
writer, loudly: logged, :attr:`Journal.fatal` set, every waiter failed and the
:meth:`Journal.on_fatal` callbacks called. Commit hooks and the live feed (:attr:`Journal.feed`,
:mod:`daq.journal.feed`) get each committed batch after the commit, each isolated: one that
raises is logged once per cause and counted in :attr:`Journal.hook_errors`.

This module is longer than most (about 700 lines) because :class:`Journal` is one state
machine: the pending buffer, its overflow accounting, the writer loop's retry and failure
states and the waiters of :meth:`Journal.flush` all read and change the same fields; what
does not touch them (the batch commit, the schema, the chain, anchors, reading back) lives
in the package's other modules.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daq import canonical
from daq.clock import Clock
from daq.errors import JournalError
from daq.journal import batch, chain, codec
from daq.journal.anchors import Anchors, anchor_at_close
from daq.journal.feed import Fanout, Feed, RecordBatch
from daq.journal.schema import CHAINED, migrate
from daq.journal.settings import JournalSection
from daq.logs import get_logger
from daq.model import EventKind, InstrumentEvent, Reading
from daq.supervision import fault_point

log = get_logger("daq.journal")

JOURNAL_FILE = "journal.sqlite3"
#: Seconds :meth:`Journal.close` waits for the writer's last commit by default.
CLOSE_TIMEOUT_S = 10.0


def dumps(obj: Mapping[str, Any] | None) -> str | None:
    """Canonical JSON for ``attrs`` and ``detail`` columns (sorted keys, no spaces), the object
    first put in canonical form (:func:`daq.canonical.json_object`, changes noted in it)."""
    if not obj:
        return None
    notes = canonical.Notes()
    return _dumps(canonical.with_notes(canonical.json_object(obj, notes), notes))


#: JSON of an object already in canonical form (the same encoding as a reading's attrs).
_dumps = codec.attrs_json


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


class _Overflow:
    __slots__ = ("count", "first_ns", "last_ns")

    def __init__(self, ts: int) -> None:
        self.count = 0
        self.first_ns = ts
        self.last_ns = ts


def _cause(exc: BaseException) -> tuple[str, str]:
    """Where ``exc`` was raised (type and innermost frame): one log line per distinct cause."""
    tb = exc.__traceback__
    where = ""
    while tb is not None:
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return type(exc).__name__, where


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
        #: The hash payload encoding of this journal (read when it is opened: see daq.journal.chain).
        self._chain_version = chain.PAYLOAD_VERSION
        #: Each instrument's last reading sequence number (given by the group commit).
        self._seqs: dict[str, int] = {}
        self._readings: list[Reading] = []
        self._events: list[InstrumentEvent] = []
        self._audits: list[canonical.AuditEntry] = []
        self._records: list[tuple[str, tuple[Any, ...]]] = []
        self._next_id: dict[str, int] = {}
        self._overflow: dict[str, _Overflow] = {}
        self._wake = asyncio.Event()
        self._appended = 0
        self._committed = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        #: Committed readings for live consumers (daq.journal.feed): subscribe there.
        self.feed = Feed()
        #: Committed rows of tables written with record(), by table, for live consumers.
        self._record_feeds: dict[str, Fanout[RecordBatch]] = {}
        self._commit_hooks: list[Callable[[list[Reading]], None]] = []
        #: Each chain's head written down now and then (daq.journal.anchors).
        self.anchors = Anchors(self)
        self._commit_hooks.append(self.anchors.on_commit)
        self._fatal_hooks: list[Callable[[BaseException], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None  # kept after close, for writer_running
        self._closing = False
        self._logged_causes: set[tuple[str, ...]] = set()
        self.error: str | None = None
        self._failed_since_ns = 0
        self._failed_attempts = 0
        self.commits = 0
        self.readings_committed = 0
        #: Journal id of the first reading of the last committed batch (the commit hooks'
        #: readings have ids from it on, in order: stored readings take consecutive ids).
        self.last_batch_first_id = 0
        self.last_commit_s = 0.0
        self.last_commit_wall_ns = 0
        self.overflowed = 0
        #: Records refused by the writer (each journaled as a ``rejected_record`` event).
        self.rejected = 0
        #: Exceptions raised by commit hooks and the live feed (isolated; the writer goes on).
        self.hook_errors = 0
        #: Unexpected exceptions in the writer loop (logged once per cause, retried).
        self.writer_errors = 0
        #: Set when the writer ended on an unrecoverable error (the daemon must stop).
        self.fatal: BaseException | None = None

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
        journal._task = journal._writer_task = asyncio.create_task(journal._writer(), name="journal-writer")
        return journal

    @property
    def writer_task(self) -> asyncio.Task[None]:
        """The writer task, for the daemon's task tree to watch (see daq.supervision)."""
        assert self._writer_task is not None, "the journal is not open"
        return self._writer_task

    @property
    def closing(self) -> bool:
        """True once :meth:`close` was called: the writer ending then is expected."""
        return self._closing

    def _open_sync(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        migrate(conn)
        self._chain_version = chain.payload_version(conn)
        for table in CHAINED:
            row = conn.execute(f"SELECT id, hash FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
            self._tail[table] = (row[0], row[1]) if row else (0, chain.GENESIS)
            self._next_id[table] = self._tail[table][0]
        for instrument, seq in conn.execute("SELECT instrument, MAX(seq) FROM readings GROUP BY instrument"):
            self._seqs[instrument] = seq
        if "prunes" in CHAINED:
            # Sequence numbers continue past readings that retention pruned (daq.runs.retention).
            for (detail,) in conn.execute("SELECT detail FROM prunes WHERE table_name = 'readings'"):
                for instrument, seq in (json.loads(detail or "{}").get("last_seq") or {}).items():
                    self._seqs[instrument] = max(self._seqs.get(instrument, 0), int(seq))
        self._conn = conn

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Commit everything pending, stop the writer and close the database.

        Waits at most ``timeout_s`` for the last commit; past that (a disk that does not
        answer) the writer is cancelled, the records still pending are logged with their
        count, and :class:`JournalError` is raised. A commit failure at close raises too.
        """
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            self._abandon()
            log.error(
                "journal close timed out; records left uncommitted",
                timeout_s=timeout_s, uncommitted=self.uncommitted, path=str(self.path),
            )  # fmt: skip
            raise JournalError(
                f"journal close timed out after {timeout_s:g} s with {self.uncommitted} records uncommitted"
            ) from None
        except asyncio.CancelledError:
            if not task.cancelled():  # close() itself was cancelled: stop the writer too
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                self._abandon()
                raise
        except BaseException:
            self._abandon()
            raise
        if self.fatal is None:
            # Everything is committed: anchor the heads the journal ends with (daq.journal.anchors).
            await asyncio.get_running_loop().run_in_executor(self._executor, self._anchor_at_close_sync)
            await self._close_connection()
        else:
            self._executor.shutdown(wait=False)
        self._fail_waiters(JournalError("journal closed before commit"))
        self.feed.close()
        for fanout in self._record_feeds.values():
            fanout.close()

    def _anchor_at_close_sync(self) -> None:
        if self._conn is None:
            return
        try:
            anchor_at_close(self._conn, self.anchors, self.clock.time_ns())
        except sqlite3.Error as exc:
            log.warning("journal: no anchor at close", error=str(exc), path=str(self.path))

    def _abandon(self) -> None:
        """Leave without waiting for the journal thread (it may be stuck in a commit)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._fail_waiters(JournalError("journal closed before commit"))

    async def _close_connection(self) -> None:
        loop = asyncio.get_running_loop()
        if self._conn is not None:
            await loop.run_in_executor(self._executor, self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    def _fail_waiters(self, exc: JournalError) -> None:
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()

    # -- producers (never block, never raise) -----------------------------------------

    def append(self, reading: Reading) -> bool:
        """Queue ``reading`` for the next group commit; False when the full buffer dropped it
        (counted, and journaled as an overflow).

        The group commit gives the reading its journal id and the next sequence number of its
        instrument, in the order readings were appended; the reading itself is stored as it
        is (the same object, with the ``run_id`` the reading pipeline gave it)."""
        if len(self._readings) >= self.settings.max_pending:
            self._drop(reading.instrument, reading.acq_ns)
            return False
        self._readings.append(reading)
        self._appended += 1
        self._wake.set()
        return True

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
        """Queue an audit-trail entry, stamped now (the trail is written in true time), with
        ``detail`` as it is now (a copy: the caller may go on changing its dict)."""
        self._audits.append(
            canonical.AuditEntry(
                self.clock.time_ns(),
                self.clock.monotonic_ns(),
                actor,
                action,
                subject,
                _snapshot(detail),
                run_id if run_id is not None else self.run_id,
            )
        )
        self._appended += 1
        self._wake.set()

    def record(self, table: str, values: Mapping[str, Any]) -> int:
        """Queue a row for a chained table other than readings/events/audit (traces, runs, ...)
        and return the id it will have (unless the writer refuses an earlier row of that table,
        which then shifts it). ``values`` must name every column but ``id``; see
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

    async def flush(self, timeout_s: float | None = None) -> None:
        """Return once everything appended so far is committed.

        Raises :class:`JournalError` if the journal closes or its writer has failed first, or
        when ``timeout_s`` (if given) passes; by default it waits as long as commits keep
        failing (a full disk), since a record is accepted only once it is committed.
        """
        if self.fatal is not None:
            raise JournalError(f"the journal writer has stopped: {self.fatal!r}")
        target = self._appended
        if self._committed >= target:
            return
        if not self.writer_running:
            raise JournalError(f"the journal is closed with {self.uncommitted} records uncommitted")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        self._wake.set()
        if timeout_s is None:
            await fut
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(fut)
        except TimeoutError:
            raise JournalError(
                f"journal flush timed out after {timeout_s:g} s ({self.uncommitted} records uncommitted)"
            ) from None

    @property
    def pending(self) -> int:
        return len(self._readings) + len(self._events) + len(self._audits) + len(self._records)

    @property
    def uncommitted(self) -> int:
        """Rows appended but not yet committed: :attr:`pending` plus the batch in flight."""
        return self._appended - self._committed

    @property
    def writer_running(self) -> bool:
        """False once the writer has ended (closed, or failed: see :attr:`fatal`)."""
        return self._writer_task is not None and not self._writer_task.done()

    def health(self) -> dict[str, Any]:
        """The writer's counters for status pages and ``/healthz``."""
        return {
            "writer": "failed" if self.fatal is not None else "running" if self.writer_running else "stopped",
            "fatal": None if self.fatal is None else repr(self.fatal),
            "rejected": self.rejected,
            "hook_errors": self.hook_errors,
            "writer_errors": self.writer_errors,
        }

    # -- consumers ---------------------------------------------------------------------

    def on_commit(self, hook: Callable[[list[Reading]], None]) -> None:
        """Call ``hook(readings)`` on the event loop after each successful commit with the
        readings as journaled (canonical). A hook that raises is logged and counted; the
        writer and the other hooks go on. Hooks are the daemon's own bookkeeping, run inside
        the writer's cycle (anchors, metrics counters, a forwarder's wake-up): they must
        return at once. A consumer of the readings themselves, at its own pace, subscribes
        to :attr:`feed` instead (bounded, with gaps by journal id)."""
        self._commit_hooks.append(hook)

    def record_feed(self, table: str) -> Fanout[RecordBatch]:
        """The live feed of ``table``'s committed rows (a table written with :meth:`record`):
        after each commit that stored rows of it, a :class:`~daq.journal.feed.RecordBatch` of
        those rows with their ids, under the same rules as :attr:`feed`."""
        if table not in CHAINED or table in batch.OWN_TABLES:
            raise JournalError(f"record_feed({table}): not a table written with record()")
        return self._record_feeds.setdefault(table, Fanout())

    def _publish_records(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        """After a commit: each subscribed table's stored rows, with their ids (consecutive:
        a refused row gives its id to the next)."""
        for table, fanout in self._record_feeds.items():
            stored = rows.get(table)
            if stored and fanout.subscriptions:
                self._isolated("live feed", fanout.offer, RecordBatch(table, stored[0][0], stored))

    def on_fatal(self, hook: Callable[[BaseException], None]) -> None:
        """Call ``hook(exc)`` if the writer ends on an unrecoverable error."""
        self._fatal_hooks.append(hook)

    def _isolated(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.hook_errors += 1
            cause = (what, _safe_name(fn), *_cause(exc))
            if cause not in self._logged_causes:
                self._logged_causes.add(cause)
                log.error(
                    "journal consumer failed; isolated (logged once per cause)",
                    consumer=what, hook=_safe_name(fn), error=canonical.safe_repr(exc), exc_info=exc,
                )  # fmt: skip

    def _notify(self, readings: list[Reading], seqs: list[int]) -> None:
        self._isolated("live feed", self.feed.publish, self.last_batch_first_id, readings, seqs)
        for hook in list(self._commit_hooks):
            self._isolated("commit hook", hook, readings)

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
        """Commit batches until closed. Never ends on one record or one unexpected error."""
        while True:
            # Test seam (daq.supervision): a failure outside the writer's own error handling.
            fault_point("journal-writer")
            try:
                if await self._cycle():
                    return
            except asyncio.CancelledError:
                raise
            except JournalError:
                raise  # a commit failure at close: close() reports it
            except Exception as exc:
                if batch.unrecoverable(exc):
                    self._die(exc)
                    return
                self.writer_errors += 1
                if self.error is None:
                    self._failed_since_ns = self.clock.time_ns()
                    self._failed_attempts = 0
                self._failed_attempts += 1
                self.error = canonical.safe_repr(exc)
                cause = ("writer", *_cause(exc))
                if cause not in self._logged_causes:
                    self._logged_causes.add(cause)
                    log.error("journal writer error; retrying", error=self.error, exc_info=exc)
                await asyncio.sleep(self.settings.retry_after_error_s)
                self._wake.set()

    def _die(self, exc: BaseException) -> None:
        self.fatal = exc
        self.error = canonical.safe_repr(exc)
        log.critical(
            "journal writer stopped: unrecoverable",
            error=self.error,
            uncommitted=self.uncommitted,
            exc_info=exc,
        )
        self._fail_waiters(JournalError(f"the journal writer has stopped: {self.error}"))
        for hook in list(self._fatal_hooks):
            try:
                hook(exc)
            except Exception as hook_exc:
                log.error("journal on_fatal hook failed", error=canonical.safe_repr(hook_exc))

    async def _cycle(self) -> bool:
        """Commit one batch; True when the journal is closing and nothing is left."""
        loop = asyncio.get_running_loop()
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
                now = (self.clock.time_ns(), self.clock.monotonic_ns())
                done = await loop.run_in_executor(
                    self._executor, batch.commit, self._conn, self._tail, self._seqs,
                    self._chain_version, now, readings, events, audits, records,
                )  # fmt: skip
                self._tail, self._seqs = done.tails, done.seqs
            except Exception as exc:
                # Keep the batch (in order, ahead of newer data) and retry: the disk may be
                # full or busy. Overflow accounting bounds memory meanwhile.
                self._readings[:0] = readings
                self._events[:0] = events
                self._audits[:0] = audits
                self._records[:0] = records
                if not isinstance(exc, sqlite3.Error) or batch.unrecoverable(exc):
                    raise
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
                return False
            if done.refused:
                self._account_refused(done.refused)
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
            self.readings_committed += len(done.readings)
            # Stored readings take consecutive ids (a refused one gives its id to the next).
            self.last_batch_first_id = self.last_reading_id - len(done.readings) + 1
            self._committed += n
            if done.readings:
                self._notify(done.readings, done.reading_seqs)
            if done.rows and self._record_feeds:
                self._publish_records(done.rows)
        else:
            self._committed = self._appended
        while self._waiters and self._waiters[0][0] <= self._committed:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        return self._closing and not self.pending

    def _account_refused(self, refused: list[batch.Rejected]) -> None:
        """After a commit that refused records (event loop): count, log once per cause, and
        give back the ids of generic records that were never used."""
        for rej in refused:
            self.rejected += 1
            if rej.table in self._next_id and rej.table not in batch.OWN_TABLES:
                self._next_id[rej.table] -= 1
            cause = ("rejected", rej.table, type(rej.error).__name__)
            if cause not in self._logged_causes:
                self._logged_causes.add(cause)
                log.error(
                    "journal refused a record; kept as a rejected_record event (logged once per cause)",
                    table=rej.table, error=canonical.safe_repr(rej.error),
                )  # fmt: skip

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

    def committed_heads(self) -> dict[str, tuple[int, bytes]]:
        """Each chained table's last committed row: ``{table: (id, chain hash)}``."""
        return dict(self._tail)

    @property
    def last_reading_id(self) -> int:
        """Id of the last *committed* reading."""
        return self._tail.get("readings", (0, b""))[0]


def _snapshot(detail: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A deep copy of an audit detail (a shallow one if it holds something that cannot be
    copied; canonicalisation then deals with it in the writer)."""
    if not detail:
        return detail
    try:
        return copy.deepcopy(detail)
    except Exception:
        return dict(detail)


def _safe_name(fn: Any) -> str:
    return canonical.text(getattr(fn, "__qualname__", None) or canonical.safe_repr(fn))
