"""One group commit, on the journal's thread: canonicalise, hash and insert a batch.

:func:`commit` takes the batch the :class:`~daq.journal.journal.Journal` collected and the
chain tails of the last commit, and returns the new tails, the readings as journaled and the
records it refused. It never stops on one record: a record that cannot be put in canonical
form, encoded or stored is refused (:class:`Rejected`) and a ``rejected_record`` event
(:func:`rejected_event`) is journaled in its place while the rest of the batch commits. An
error of the database as a whole (:func:`database_wide`) propagates: the journal keeps the
batch and retries it.

The usual case is one ``executemany`` per table (:func:`_insert_fast`); only after a row failed
is the batch stored row by row (:func:`_insert_slow`), the chain going on without the refused
row.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from daq import canonical
from daq.journal import chain, codec
from daq.journal.schema import CHAINED
from daq.model import EventKind, InstrumentEvent, Reading

#: Longest text of a refused record kept in its ``rejected_record`` event (the rest is counted).
REJECTED_TEXT_MAX = 65_536

#: JSON of an object already in canonical form (the same encoding as a reading's attrs).
_dumps = codec.attrs_json

_INSERT: dict[str, str] = {
    "readings": "INSERT INTO readings (id, instrument, channel, seq, acq_ns, mono_ns, device_ns, "
    "value, unit, quality, reason, raw, attrs, run_id, hash) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "events": "INSERT INTO events (id, instrument, kind, ts_ns, mono_ns, detail, raw, hash) "
    "VALUES (?,?,?,?,?,?,?,?)",
    "audit": "INSERT INTO audit (id, ts_ns, mono_ns, actor, action, subject, detail, run_id, hash) "
    "VALUES (?,?,?,?,?,?,?,?,?)",
}


class Rejected:
    """A record refused by the writer: what it was and why (becomes a ``rejected_record`` event)."""

    __slots__ = ("error", "record", "table")

    def __init__(self, table: str, record: Any, error: BaseException) -> None:
        self.table = table
        self.record = record
        self.error = error


def database_wide(exc: BaseException) -> bool:
    """An error of the database as a whole (full or failing disk, lock, corruption), not of
    one row: the batch is kept and retried."""
    return (
        isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError)
        or type(exc) is sqlite3.DatabaseError
    )


def unrecoverable(exc: BaseException) -> bool:
    """The writer cannot go on: its connection is closed or its thread pool shut down."""
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
        return True
    return isinstance(exc, RuntimeError) and "shutdown" in str(exc)


def rejected_event(rej: Rejected, now_ns: int, now_mono: int) -> InstrumentEvent:
    """The ``rejected_record`` event standing for a refused record: built from text that
    always encodes (escaped reprs), the raw frame kept as it came."""
    rec = rej.record
    instrument = getattr(rec, "instrument", None)
    raw = getattr(rec, "raw", None)
    shown = canonical.safe_repr(rec)
    detail: dict[str, Any] = {
        "table": rej.table,
        "error_type": type(rej.error).__name__,
        "error": canonical.safe_str(rej.error),
        "record": shown[:REJECTED_TEXT_MAX],
    }
    if len(shown) > REJECTED_TEXT_MAX:
        detail["record_chars"] = len(shown)
    seq = getattr(rec, "seq", None)
    if isinstance(seq, int) and seq:
        detail["seq"] = seq
    return InstrumentEvent(
        instrument=instrument if isinstance(instrument, str) else "journal",
        kind=EventKind.REJECTED_RECORD,
        ts_ns=now_ns,
        mono_ns=now_mono,
        detail=detail,
        raw=bytes(raw) if isinstance(raw, bytes | bytearray | memoryview) else None,
    )


def commit(
    conn: sqlite3.Connection | None,
    tails: dict[str, tuple[int, bytes]],
    version: int,
    now: tuple[int, int],
    readings: list[Reading],
    events: list[InstrumentEvent],
    audits: list[canonical.AuditEntry],
    records: list[tuple[str, tuple[Any, ...]]],
) -> tuple[dict[str, tuple[int, bytes]], list[Reading], list[Rejected]]:
    """Canonicalise, hash and insert one batch in one transaction (on the journal thread).

    ``tails`` are each chained table's last committed row (id, hash) and are not changed.
    ``now`` is the (wall, monotonic) time that canonicalisation substitutes for an impossible
    timestamp. Returns the tails after the batch, the readings as journaled and the records
    refused (each stored as a ``rejected_record`` event instead). A database-wide error
    propagates (the caller keeps the batch and retries it).
    """
    if conn is None:
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
    now_ns, now_mono = now
    refused: list[Rejected] = []
    # One prepared row per record, ids assigned in order (see _Prepared).
    prepared: list[_Prepared] = []
    next_id = {table: tail[0] for table, tail in tails.items()}

    def prepare(table: str, items: Iterable[Any], build: Callable[..., tuple[tuple[Any, ...], Any]]) -> None:
        payload = chain.payload_for(table, version)
        rid = next_id[table]
        add = prepared.append
        for record in items:
            try:
                row, canon = build(rid + 1, record, now_ns, now_mono)
                data = payload(row)
            except Exception as exc:
                refused.append(Rejected(table, record, exc))
                continue
            rid += 1
            add((table, row, data, canon, record))
        next_id[table] = rid

    prepare("readings", readings, _reading_row)
    prepare("events", events, _event_row)
    prepare("audit", audits, _audit_row)
    for table, values in records:
        prepare(table, (values,), _generic_row)

    new_tails = dict(tails)
    conn.execute("BEGIN")
    try:
        try:
            stored = _insert_fast(conn, prepared, new_tails)
        except Exception as exc:
            if database_wide(exc) or unrecoverable(exc):
                raise
            # One row failed: roll back and store row by row, refusing the failing ones.
            conn.execute("ROLLBACK")
            conn.execute("BEGIN")
            new_tails = dict(tails)
            stored = _insert_slow(conn, prepared, new_tails, refused, version)
        # Each refused record's stand-in goes into the events chain after the batch.
        for rej in refused:
            try:
                row, _ = _event_row(new_tails["events"][0] + 1, rejected_event(rej, now_ns, now_mono),
                                    now_ns, now_mono)  # fmt: skip
                _insert_one(conn, "events", row, new_tails, version)
            except Exception as exc:
                if database_wide(exc) or unrecoverable(exc):
                    raise
                minimal = InstrumentEvent(
                    "journal", EventKind.REJECTED_RECORD, now_ns, now_mono,
                    {"table": rej.table, "error_type": type(rej.error).__name__},
                )  # fmt: skip
                row, _ = _event_row(new_tails["events"][0] + 1, minimal, now_ns, now_mono)
                _insert_one(conn, "events", row, new_tails, version)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return new_tails, [item[3] for item in stored if item[0] == "readings"], refused


# -- rows (on the journal thread) ---------------------------------------------------------

#: (table, row without its hash, the row's payload, the canonical reading or None, the record as given)
_Prepared = tuple[str, tuple[Any, ...], bytes, Any, Any]


def _insert_sql(table: str) -> str:
    sql = _INSERT.get(table)
    if sql is None:
        cols = CHAINED[table]
        sql = _INSERT[table] = (
            f"INSERT INTO {table} ({', '.join(cols)}, hash) VALUES ({', '.join('?' * (len(cols) + 1))})"
        )
    return sql


def _reading_row(rid: int, r: Reading, now_ns: int, now_mono: int) -> tuple[tuple[Any, ...], Reading]:
    c = canonical.reading(r, now_ns=now_ns, now_mono_ns=now_mono)  # a checked reading as it is
    return codec.row(rid, c), c


def _event_row(rid: int, e: InstrumentEvent, now_ns: int, now_mono: int) -> tuple[tuple[Any, ...], None]:
    c = canonical.event(e, now_ns=now_ns, now_mono_ns=now_mono)
    return (rid, c.instrument, c.kind, c.ts_ns, c.mono_ns, _dumps(c.detail), c.raw), None


def _audit_row(rid: int, a: canonical.AuditEntry, now_ns: int, now_mono: int) -> tuple[tuple[Any, ...], None]:
    c = canonical.audit(a, now_ns=now_ns, now_mono_ns=now_mono)
    return (rid, c.ts_ns, c.mono_ns, c.actor, c.action, c.subject, _dumps(c.detail), c.run_id), None


def _generic_row(
    rid: int, values: tuple[Any, ...], now_ns: int, now_mono: int
) -> tuple[tuple[Any, ...], None]:
    return (rid, *map(canonical.column, values[1:])), None


def _insert_one(
    conn: sqlite3.Connection,
    table: str,
    row: tuple[Any, ...],
    tails: dict[str, tuple[int, bytes]],
    version: int,
) -> None:
    """Insert ``row`` as the next row of ``table`` (renumbered and re-hashed if needed)."""
    rid, h = tails[table]
    if row[0] != rid + 1:
        row = (rid + 1, *row[1:])
    h = chain.link(h, chain.payload_for(table, version)(row))
    conn.execute(_insert_sql(table), (*row, h))
    tails[table] = (rid + 1, h)


def _insert_fast(
    conn: sqlite3.Connection, prepared: list[_Prepared], tails: dict[str, tuple[int, bytes]]
) -> list[_Prepared]:
    """The whole batch, one ``executemany`` per table (the usual case)."""
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for table, row, payload, _, _ in prepared:
        h = chain.link(tails[table][1], payload)
        by_table.setdefault(table, []).append((*row, h))
        tails[table] = (row[0], h)
    for table, rows in by_table.items():
        conn.executemany(_insert_sql(table), rows)
    return prepared


def _insert_slow(
    conn: sqlite3.Connection,
    prepared: list[_Prepared],
    tails: dict[str, tuple[int, bytes]],
    refused: list[Rejected],
    version: int,
) -> list[_Prepared]:
    """Row by row after a row failed: a failing row is refused, the chain goes on without it."""
    stored = []
    for item in prepared:
        table, row, _, _, record = item
        saved = tails[table]
        try:
            _insert_one(conn, table, row, tails, version)
        except Exception as exc:
            if database_wide(exc) or unrecoverable(exc):
                raise
            tails[table] = saved
            refused.append(Rejected(table, record, exc))
            continue
        stored.append(item)
    return stored
