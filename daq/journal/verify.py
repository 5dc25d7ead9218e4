"""Re-check a journal: SQLite integrity, the append-only guards, and every hash chain.

Used by ``daq verify --data-dir``. The first record that does not chain is named by table
and id; a missing guard trigger, or one whose SQL is not the canonical guard, counts as
tampering too, and so does a chain that no longer reaches the head an anchor recorded (rows
deleted from its end, see :mod:`daq.journal.anchors`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from daq.errors import JournalError
from daq.journal import anchors, chain
from daq.journal.journal import JOURNAL_FILE, connect
from daq.journal.schema import CHAINED, guards


@dataclasses.dataclass
class VerifyReport:
    path: str
    ok: bool
    rows: dict[str, int]
    problem: str | None = None
    table: str | None = None
    row_id: int | None = None

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _prune_checkpoint(conn: sqlite3.Connection, table: str) -> tuple[int, bytes] | None:
    """The latest prune checkpoint of ``table`` (see :mod:`daq.runs.retention`), if any."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='prunes'").fetchone() is None:
        return None
    row = conn.execute(
        "SELECT through_id, through_hash FROM prunes WHERE table_name=? ORDER BY id DESC LIMIT 1", (table,)
    ).fetchone()
    return None if row is None else (int(row[0]), bytes.fromhex(row[1]))


def _column_problem(columns: tuple[str, ...], row: tuple[object, ...]) -> str:
    """Which REAL column holds text, if that is what is wrong."""
    if "value" in columns:
        value = row[columns.index("value")]
        if value is not None and not isinstance(value, int | float):
            return f"column value holds {type(value).__name__} {str(value)[:40]!r}; "
    return ""


def _normal_sql(sql: str) -> str:
    """Trigger SQL as SQLite keeps it, whitespace collapsed (``IF NOT EXISTS`` is not kept)."""
    return " ".join(sql.replace("IF NOT EXISTS ", "").split())


def _check_guards(conn: sqlite3.Connection) -> str | None:
    """A problem with the append-only guard triggers: one missing, or one whose SQL is not the
    canonical guard (replaced by a trigger of the same name that does nothing)."""
    found = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type='trigger'").fetchall())
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing: list[str] = []
    altered: list[str] = []
    for table in CHAINED:
        if table not in tables:
            continue  # a journal from before the migration that creates it
        for name, canonical in zip((f"{table}_no_update", f"{table}_no_delete"), guards(table), strict=True):
            if name not in found:
                missing.append(name)
            elif _normal_sql(str(found[name] or "")) != _normal_sql(canonical):
                altered.append(name)
    if missing:
        return f"append-only guard trigger(s) removed: {', '.join(missing)}"
    if altered:
        return f"append-only guard trigger(s) replaced (not the canonical SQL): {', '.join(altered)}"
    return None


def verify_journal(data_dir: Path) -> VerifyReport:
    """Verify the journal in ``data_dir``; never modifies it."""
    path = Path(data_dir) / JOURNAL_FILE
    if not path.exists():
        raise JournalError(f"no journal at {path}")
    conn = connect(path, read_only=True)
    rows: dict[str, int] = {}
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            return VerifyReport(str(path), False, rows, f"SQLite integrity check: {result}")
        version = chain.payload_version(conn)
        for table, columns in CHAINED.items():
            cols = ", ".join(columns)
            payload = chain.payload_for(table, version)
            previous = chain.GENESIS
            expected_id = 1
            count = 0
            checkpoint = _prune_checkpoint(conn, table)
            if checkpoint is not None:
                # Rows up to the checkpoint were pruned (an audited, chained prune record):
                # the rest must chain on from the hash of the last pruned row.
                expected_id, previous = checkpoint[0] + 1, checkpoint[1]
            for row in conn.execute(f"SELECT {cols}, hash FROM {table} ORDER BY id"):
                rid = row[0]
                if rid != expected_id:
                    return VerifyReport(
                        str(path), False, rows,
                        f"{table}: record id {expected_id} is missing (next is {rid})",
                        table, expected_id,
                    )  # fmt: skip
                try:
                    encoded = payload(row[:-1])
                except (ValueError, TypeError, OverflowError) as exc:
                    # A column holding what the writer never stores (text in a REAL column):
                    # the row was written by something else.
                    why = f"{_column_problem(columns, row)}{exc}"
                    return VerifyReport(
                        str(path), False, rows,
                        f"{table} record {rid} holds a value of the wrong type ({why}): altered",
                        table, rid,
                    )  # fmt: skip
                digest = chain.link(previous, encoded)
                if digest != row[-1]:
                    return VerifyReport(
                        str(path), False, rows,
                        f"{table} record {rid} does not match its hash chain (altered or replaced)",
                        table, rid,
                    )  # fmt: skip
                previous = digest
                expected_id += 1
                count += 1
            rows[table] = count
        # Chains first (they name the record); a removed or rewritten guard is tampering even
        # if no row changed.
        problem = _check_guards(conn)
        if problem is not None:
            return VerifyReport(str(path), False, rows, problem)
        if anchors.TABLE in CHAINED and anchors.TABLE in rows:
            pruned = {t: c[0] for t in CHAINED if (c := _prune_checkpoint(conn, t)) is not None}
            found = anchors.check(conn, pruned)
            if found is not None:
                return VerifyReport(str(path), False, rows, found[0], found[1], found[2])
    except sqlite3.DatabaseError as exc:
        return VerifyReport(str(path), False, rows, f"database error: {exc}")
    finally:
        conn.close()
    return VerifyReport(str(path), True, rows)
