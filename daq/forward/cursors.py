"""A sink's cursor maintained by hand: ``rewind`` and ``forget``, both audited.

* **rewind** moves a sink's cursor back to just before the first reading acquired at or after a
  time, so the forwarder sends everything from there again. This refills a store that lost
  points it had acknowledged (a crash of the database server, a restored backup). Sending a
  point again is harmless: every attempt carries the same line, so a point still stored is
  overwritten by itself (see :mod:`daq.forward.forwarder`). A cursor only ever moves back here;
  readings already pruned from the journal cannot be sent again (the result says from which
  id on the journal still holds them).
* **forget** deletes the cursor of a sink that was removed from the configuration. Retention
  never prunes readings a sink has not acknowledged, so a removed sink's cursor would
  otherwise hold every reading after it in the journal forever.

The daemon must be stopped (its ``daemon.lock`` free): a running forwarder keeps its cursor in
memory and would write it back. Each change and its chained audit entry (``sink_rewind``,
``sink_forget``; subject = the sink) are committed in one transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daq.errors import DaqError
from daq.journal.journal import JOURNAL_FILE, connect
from daq.journal.lock import take_lock
from daq.journal.offline import append_audit


@dataclasses.dataclass
class CursorChange:
    """What a rewind or forget did (or, with ``dry_run``, would do)."""

    sink: str
    action: str
    from_id: int
    to_id: int | None
    #: Readings the sink will be sent again (rewind) or no longer holds back (forget).
    readings: int
    #: The first reading id the journal still holds (older ones were pruned), if any.
    first_kept_id: int | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _cursor(conn: sqlite3.Connection, sink: str) -> int:
    row = conn.execute("SELECT last_id FROM sink_cursors WHERE sink = ?", (sink,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT sink FROM sink_cursors ORDER BY sink")]
        names = ", ".join(known) or "none"
        raise DaqError(f"no sink {sink!r} in this journal (sinks with a cursor: {names})")
    return int(row[0])


@contextlib.contextmanager
def _transaction(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """The journal of a stopped daemon (its lock held), in one ``BEGIN IMMEDIATE`` transaction:
    the caller commits or rolls back; an exception rolls back what is still open."""
    path = Path(data_dir) / JOURNAL_FILE
    if not path.exists():
        raise DaqError(f"no journal at {path}")
    lock = take_lock(Path(data_dir))
    try:
        conn = connect(path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
    finally:
        lock.close()


def rewind(
    data_dir: Path,
    sink: str,
    *,
    to_ns: int,
    actor: str,
    reason: str | None = None,
    now_ns: int | None = None,
    dry_run: bool = False,
) -> CursorChange:
    """Move ``sink``'s cursor back so that every reading acquired at or after ``to_ns`` (UTC
    ns) is sent again; see the module docstring."""
    with _transaction(data_dir) as conn:
        current = _cursor(conn, sink)
        head = conn.execute("SELECT id, acq_ns FROM readings ORDER BY id LIMIT 1").fetchone()
        first: int | None = None if head is None else int(head[0])
        first_ns = 0 if head is None else int(head[1])
        row = conn.execute("SELECT MIN(id) FROM readings WHERE acq_ns >= ?", (to_ns,)).fetchone()
        # Readings come in commit order, acquisition times nearly so: from the first
        # reading acquired at or after the time on, everything is sent again.
        target = current if row[0] is None else min(current, int(row[0]) - 1)
        change = CursorChange(sink, "rewind", current, target, current - target, first)
        if target == current:
            change.note = "no reading acquired at or after that time was sent: nothing to rewind"
        elif first is not None and 1 < first == target + 1 and first_ns > to_ns:
            change.note = f"readings before id {first} were pruned and cannot be sent again"
        if dry_run or target == current:
            conn.execute("ROLLBACK")
            return change
        now = time.time_ns() if now_ns is None else now_ns
        conn.execute(
            "UPDATE sink_cursors SET last_id = ?, updated_ns = ? WHERE sink = ?", (target, now, sink)
        )
        append_audit(
            conn,
            "sink_rewind",
            subject=sink,
            actor=actor,
            ts_ns=now,
            detail={
                "from_id": current,
                "to_id": target,
                "to_ns": to_ns,
                "readings": change.readings,
                "reason": reason,
            },
        )
        conn.execute("COMMIT")
    return change


def forget(
    data_dir: Path,
    sink: str,
    *,
    actor: str,
    reason: str | None = None,
    configured: set[str] | None = None,
    now_ns: int | None = None,
    dry_run: bool = False,
) -> CursorChange:
    """Delete the cursor of ``sink`` (no longer configured; ``configured``, when given, names
    the sinks of the configuration, and forgetting one of them is refused)."""
    if configured is not None and sink in configured:
        raise DaqError(
            f"sink {sink!r} is still in the configuration: remove it there first "
            "(its forwarder would start again from the beginning of the journal)"
        )
    with _transaction(data_dir) as conn:
        current = _cursor(conn, sink)
        last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0]
        change = CursorChange(sink, "forget", current, None, max(0, int(last) - current))
        if dry_run:
            conn.execute("ROLLBACK")
            return change
        now = time.time_ns() if now_ns is None else now_ns
        conn.execute("DELETE FROM sink_cursors WHERE sink = ?", (sink,))
        append_audit(
            conn,
            "sink_forget",
            subject=sink,
            actor=actor,
            ts_ns=now,
            detail={"last_id": current, "unsent": change.readings, "reason": reason},
        )
        conn.execute("COMMIT")
    return change
