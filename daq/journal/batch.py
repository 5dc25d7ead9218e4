"""One group commit, on the journal's thread: canonicalise, number, hash and insert a batch.

:func:`commit` takes the batch the :class:`~daq.journal.journal.Journal` collected, the chain
tails and the readings' sequence numbers of the last commit, and returns what it stored
(:class:`Committed`): the new tails and sequence numbers, the readings as journaled with
theirs, and the records it refused. A reading's journal id and sequence number are given
here, where it is accepted, and never written back into the reading (they travel beside it).

It never stops on one record: a record that cannot be put in canonical form, encoded or
stored is refused (:class:`Rejected`) and a ``rejected_record`` event (:func:`rejected_event`)
is journaled in its place while the rest of the batch commits. An error of the database as a
whole (:func:`database_wide`) propagates: the journal keeps the batch and retries it.

The usual case is each table's rows, numbered and hashed beforehand, inserted many to a statement
(:func:`_insert_rows`); only
after a row failed is the batch stored row by row (:func:`_insert_slow`), the chain going on
without the refused row.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

from daq import canonical
from daq.journal import chain, codec
from daq.journal.schema import CHAINED
from daq.model import EventKind, InstrumentEvent, Reading

#: Longest text of a refused record kept in its ``rejected_record`` event (the rest is counted).
REJECTED_TEXT_MAX = 65_536

#: JSON of an object already in canonical form (the same encoding as a reading's attrs).
_dumps = codec.attrs_json

# Python's sqlite3 binds exact int, float, str and bytearray parameters directly, but sends
# None and bytes through its adaptation protocol, where the failed lookup of ``__adapt__`` on
# its protocol type formats an AttributeError message for every parameter (CPython 3.11). A
# reading's row binds five or six such values (its NULL columns and its hash): about 3 µs a
# reading of the writer's time, measured here. An adapter registered for the exact type is
# found by one dictionary lookup instead. Both return the value itself, so what SQLite stores
# is unchanged (``bytes(b) is b`` for exact bytes; ``{}.get`` of any key is None); the
# registration is process-wide, and harmless to every other connection for the same reason.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
sqlite3.register_adapter(bytes, bytes)

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
    """A record refused by the writer: what it was and why (becomes a ``rejected_record`` event).
    ``seq`` is the sequence number a refused reading had been given (it keeps it: the gap in
    its instrument's sequence is explained by the event), ``None`` for other records."""

    __slots__ = ("error", "record", "seq", "table")

    def __init__(self, table: str, record: Any, error: BaseException, seq: int | None = None) -> None:
        self.table = table
        self.record = record
        self.error = error
        self.seq = seq


class Committed(NamedTuple):
    """What one group commit stored."""

    #: Each chained table's last row (id, hash) after the commit.
    tails: dict[str, tuple[int, bytes]]
    #: Each instrument's last reading sequence number after the commit.
    seqs: dict[str, int]
    #: The readings as journaled (canonical), in id order (consecutive ids).
    readings: list[Reading]
    #: Their sequence numbers (``reading_seqs[i]`` is that of ``readings[i]``).
    reading_seqs: list[int]
    #: The records refused, each journaled as a ``rejected_record`` event instead.
    refused: list[Rejected]
    #: The rows stored in each table written with ``Journal.record`` (its columns as stored,
    #: the id first, without the hash), in id order.
    rows: dict[str, list[tuple[Any, ...]]]


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
    if rej.seq is not None:
        detail["seq"] = rej.seq
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
    seqs: dict[str, int],
    version: int,
    now: tuple[int, int],
    readings: list[Reading],
    events: list[InstrumentEvent],
    audits: list[canonical.AuditEntry],
    records: list[tuple[str, tuple[Any, ...]]],
) -> Committed:
    """Canonicalise, number, hash and insert one batch in one transaction (on the journal thread).

    ``tails`` are each chained table's last committed row (id, hash), ``seqs`` each
    instrument's last reading sequence number; neither is changed (the new ones are returned).
    Each reading takes the next sequence number of its instrument, in the order given. ``now``
    is the (wall, monotonic) time that canonicalisation substitutes for an impossible
    timestamp. A database-wide error propagates (the caller keeps the batch and retries it,
    and the retry numbers it the same way).
    """
    if conn is None:
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
    now_ns, now_mono = now
    refused: list[Rejected] = []
    seqs = dict(seqs)
    heads = dict(tails)
    prepared: dict[str, _Prepared] = {}
    if readings:
        prepared["readings"] = _prepare_readings(readings, heads, seqs, version, now, refused)

    def prepare(table: str, items: Iterable[Any], build: Callable[..., tuple[Any, ...]]) -> None:
        p = prepared.get(table)
        if p is None:
            p = prepared[table] = _Prepared()
        payload = chain.payload_for(table, version)
        rid, h = heads[table]
        for record in items:
            try:
                row = build(rid + 1, record, now_ns, now_mono)
                data = payload(row)
            except Exception as exc:
                refused.append(Rejected(table, record, exc))
                continue
            rid += 1
            h = chain.link(h, data)
            p.rows.append((*row, h))
            p.records.append(record)
        heads[table] = (rid, h)

    prepare("events", events, _event_row)
    prepare("audit", audits, _audit_row)
    for table, values in records:
        prepare(table, (values,), _generic_row)

    conn.execute("BEGIN")
    try:
        try:
            for table, p in prepared.items():
                if p.rows:
                    _insert_rows(conn, table, p.rows)
            new_tails = heads
        except Exception as exc:
            if database_wide(exc) or unrecoverable(exc):
                raise
            # One row failed: roll back and store row by row, refusing the failing ones.
            conn.execute("ROLLBACK")
            conn.execute("BEGIN")
            new_tails = dict(tails)
            _insert_slow(conn, prepared, new_tails, refused, version)
        # Each refused record's stand-in goes into the events chain after the batch.
        for rej in refused:
            try:
                row = _event_row(new_tails["events"][0] + 1, rejected_event(rej, now_ns, now_mono),
                                 now_ns, now_mono)  # fmt: skip
                _insert_one(conn, "events", row, new_tails, version)
            except Exception as exc:
                if database_wide(exc) or unrecoverable(exc):
                    raise
                minimal = InstrumentEvent(
                    "journal", EventKind.REJECTED_RECORD, now_ns, now_mono,
                    {"table": rej.table, "error_type": type(rej.error).__name__},
                )  # fmt: skip
                row = _event_row(new_tails["events"][0] + 1, minimal, now_ns, now_mono)
                _insert_one(conn, "events", row, new_tails, version)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    rows = {t: [row[:-1] for row in p.rows] for t, p in prepared.items() if t not in OWN_TABLES and p.rows}
    stored = prepared.get("readings")
    if stored is None:
        return Committed(new_tails, seqs, [], [], refused, rows)
    return Committed(new_tails, seqs, stored.records, [row[3] for row in stored.rows], refused, rows)


# -- rows (on the journal thread) ---------------------------------------------------------


#: The tables with their own records (not written with ``Journal.record``).
OWN_TABLES = ("readings", "events", "audit")


class _Prepared:
    """One table's rows of a batch, numbered and hashed in order from the table's tail:
    ``rows[i]`` (its hash last) stands for ``records[i]`` (for the readings table, the
    reading in canonical form)."""

    __slots__ = ("records", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.records: list[Any] = []


def _prepare_readings(
    readings: list[Reading],
    heads: dict[str, tuple[int, bytes]],
    seqs: dict[str, int],
    version: int,
    now: tuple[int, int],
    refused: list[Rejected],
) -> _Prepared:
    """The readings' rows: each reading in canonical form, numbered (journal id, and the next
    sequence number of its instrument) and hashed; ``heads`` and ``seqs`` are advanced.

    Written apart from the other tables' loop because it is the writer's hot path (every value
    of every instrument) and because a reading also takes a sequence number. A refused reading
    keeps the one it took (its ``rejected_record`` event names it), so the gap it leaves in its
    instrument's sequence is accounted for; one refused before it could be put in canonical
    form takes the next number of its instrument's name in canonical text."""
    p = _Prepared()
    rows, kept = p.rows, p.records
    payload, link, to_row, canonical_form, is_canonical = (
        chain.payload_for("readings", version, canonical_rows=True),
        chain.link,
        codec.row,
        canonical.reading,
        canonical.is_canonical_reading,
    )
    now_ns, now_mono = now
    rid, h = heads["readings"]
    for r in readings:
        seq = None
        try:
            # canonical.reading's answer, without its calls for the usual reading (checked by
            # the pipeline, or canonical as made): nothing after the writer asks again.
            if r.canonical_checked or is_canonical(r):
                c = r
            else:
                c = canonical_form(r, now_ns=now_ns, now_mono_ns=now_mono)
            seq = seqs[c.instrument] = seqs.get(c.instrument, 0) + 1
            row = to_row(rid + 1, seq, c)
            data = payload(row)
        except Exception as exc:
            instrument = getattr(r, "instrument", None)
            if seq is None and isinstance(instrument, str):  # refused before it was numbered
                name = canonical.text(instrument)
                seq = seqs[name] = seqs.get(name, 0) + 1
            refused.append(Rejected("readings", r, exc, seq))
            continue
        rid += 1
        h = link(h, data)
        rows.append((*row, h))
        kept.append(c)
    heads["readings"] = (rid, h)
    return p


def _insert_sql(table: str) -> str:
    sql = _INSERT.get(table)
    if sql is None:
        cols = CHAINED[table]
        sql = _INSERT[table] = (
            f"INSERT INTO {table} ({', '.join(cols)}, hash) VALUES ({', '.join('?' * (len(cols) + 1))})"
        )
    return sql


#: Rows per INSERT statement of a group commit. One statement of many rows costs SQLite less per
#: row than stepping a one-row statement once per row (``executemany``): about 0.7 µs less of
#: the 5 µs a readings row costs, measured on this table. 50 rows of the widest table bind 750
#: parameters, under the 999 the oldest SQLite builds allow.
ROWS_PER_STATEMENT = 50
_INSERT_MANY: dict[str, str] = {}


def _insert_rows(conn: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (each with its hash last) into ``table``, :data:`ROWS_PER_STATEMENT` to
    a statement; the remainder one statement step each."""
    n = len(rows)
    whole = n - n % ROWS_PER_STATEMENT
    if whole:
        sql = _INSERT_MANY.get(table)
        if sql is None:
            one = _insert_sql(table)
            values = one[one.index(" VALUES ") + len(" VALUES ") :]
            sql = _INSERT_MANY[table] = one + (", " + values) * (ROWS_PER_STATEMENT - 1)
        flat = itertools.chain.from_iterable
        for i in range(0, whole, ROWS_PER_STATEMENT):
            conn.execute(sql, tuple(flat(rows[i : i + ROWS_PER_STATEMENT])))
    if whole < n:
        conn.executemany(_insert_sql(table), rows[whole:])


def _event_row(rid: int, e: InstrumentEvent, now_ns: int, now_mono: int) -> tuple[Any, ...]:
    c = canonical.event(e, now_ns=now_ns, now_mono_ns=now_mono)
    return (rid, c.instrument, c.kind, c.ts_ns, c.mono_ns, _dumps(c.detail), c.raw)


def _audit_row(rid: int, a: canonical.AuditEntry, now_ns: int, now_mono: int) -> tuple[Any, ...]:
    c = canonical.audit(a, now_ns=now_ns, now_mono_ns=now_mono)
    return (rid, c.ts_ns, c.mono_ns, c.actor, c.action, c.subject, _dumps(c.detail), c.run_id)


def _generic_row(rid: int, values: tuple[Any, ...], now_ns: int, now_mono: int) -> tuple[Any, ...]:
    return (rid, *map(canonical.column, values[1:]))


def _insert_one(
    conn: sqlite3.Connection,
    table: str,
    row: tuple[Any, ...],
    tails: dict[str, tuple[int, bytes]],
    version: int,
) -> tuple[Any, ...]:
    """Insert ``row`` as the next row of ``table`` (renumbered and re-hashed if needed); the
    row as stored (its hash last)."""
    rid, h = tails[table]
    if row[0] != rid + 1:
        row = (rid + 1, *row[1:])
    h = chain.link(h, chain.payload_for(table, version)(row))
    full = (*row, h)
    conn.execute(_insert_sql(table), full)
    tails[table] = (rid + 1, h)
    return full


def _insert_slow(
    conn: sqlite3.Connection,
    prepared: dict[str, _Prepared],
    tails: dict[str, tuple[int, bytes]],
    refused: list[Rejected],
    version: int,
) -> None:
    """Row by row after a row failed: a failing row is refused, the chain goes on without it
    (the following rows are renumbered and re-hashed). ``prepared`` keeps only what was stored."""
    for table, p in prepared.items():
        rows, records = p.rows, p.records
        p.rows, p.records = [], []
        for full, record in zip(rows, records, strict=True):
            saved = tails[table]
            try:
                stored = _insert_one(conn, table, full[:-1], tails, version)
            except Exception as exc:
                if database_wide(exc) or unrecoverable(exc):
                    raise
                tails[table] = saved
                refused.append(Rejected(table, record, exc, full[3] if table == "readings" else None))
                continue
            p.rows.append(stored)
            p.records.append(record)
