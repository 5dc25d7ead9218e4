"""Re-check a journal: SQLite integrity, the append-only guards, and every hash chain.

Used by ``daq verify --data-dir``. The first record that does not chain is named by table
and id; a missing guard trigger counts as tampering too.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from daq.errors import JournalError
from daq.journal import chain
from daq.journal.journal import JOURNAL_FILE, connect
from daq.journal.schema import CHAINED, GUARD_TRIGGERS


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
        for table, columns in CHAINED.items():
            cols = ", ".join(columns)
            payload = chain.payload_for(table)
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
                digest = chain.link(previous, payload(row[:-1]))
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
        # Chains first (they name the record); a removed guard is tampering even if no row changed.
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        missing = [t for t in GUARD_TRIGGERS if t not in triggers]
        if missing:
            return VerifyReport(
                str(path),
                False,
                rows,
                f"append-only guard trigger(s) removed: {', '.join(missing)}",
            )
    except sqlite3.DatabaseError as exc:
        return VerifyReport(str(path), False, rows, f"database error: {exc}")
    finally:
        conn.close()
    return VerifyReport(str(path), True, rows)
