"""A run read back from the journal and checked: every record against its chain hash, and the
seal against the one recorded when the run was closed. Exports, reports and signatures all
start from it (:func:`journal_run`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from daq.errors import DaqError
from daq.journal import chain
from daq.journal.journal import JOURNAL_FILE, connect
from daq.runs.seal import current_through, seal_from_journal
from daq.runs.store import RunData, get_run, load_run


class ExportError(DaqError):
    """An export could not be written (or the journal disagrees with the run's seal)."""


def open_journal(data_dir: Path) -> sqlite3.Connection:
    path = Path(data_dir) / JOURNAL_FILE
    if not path.exists():
        raise DaqError(f"no journal at {path}")
    return connect(path, read_only=True)


def check_seal(conn: sqlite3.Connection, run: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """The run's seal and what it covers: the recorded one (re-checked against the journal)
    for a closed run, one taken now for an open run."""
    if run.get("seal"):
        through = {k: int(v) for k, v in (run.get("seal_through") or {}).items()}
        now = seal_from_journal(conn, run, through)
        if now != run["seal"]:
            raise ExportError(
                f"run {run['run_id']}: the journal no longer matches the run's seal "
                f"(sealed {run['seal']}, now {now}); run `daq verify --data-dir` on the journal"
            )
        return str(run["seal"]), through
    through = current_through(conn)
    return seal_from_journal(conn, run, through), through


def check_records(data: RunData) -> None:
    """Re-hash every record of ``data``; raise naming the first that its chain hash does not cover."""
    for t in data.tables.values():
        payload = chain.payload_for(t.name, data.chain_version)
        for row in t.rows:
            if chain.link(row["prev_hash"], payload(tuple(row[c] for c in t.columns))) != row["hash"]:
                raise ExportError(
                    f"{t.name} record {row['id']} of run {data.run['run_id']} does not match its chain hash "
                    "(altered in the journal); run `daq verify --data-dir` on the journal"
                )


def journal_run(conn: sqlite3.Connection, run_id: str) -> tuple[RunData, str, dict[str, int]]:
    """``run_id``'s records, seal and seal coverage, read in one snapshot and checked: every
    record against its chain hash, and the seal against the one recorded at closing."""
    conn.execute("BEGIN")
    try:
        run = get_run(conn, run_id)
        seal, through = check_seal(conn, run)
        data = load_run(conn, run_id)
    finally:
        conn.execute("COMMIT")
    check_records(data)
    return data, seal, through
