"""Retention: prune old journal data, only once it is exported and the export verified.

The journal is append-only (guard triggers reject DELETE), so pruning is a deliberate,
audited transaction, and it must leave the journal verifiable:

1. The daemon must not be running (``daemon.lock`` is free): the writer keeps each chain's
   tail in memory.
2. Each run whose readings would go must have ended more than ``retention_days`` ago, be
   sealed, and come with an export that passes :func:`~daq.runs.export.verify_export`
   against this journal (so the export's seal is the journal's).
3. Only a *prefix* of ``readings`` and ``events`` goes: rows up to the first row that must
   stay (newer than the cutoff, in a run without a verified export, or not yet acknowledged
   by every sink: the journal is the forwarders' outbox). The last row of each
   table stays, so the chain tails stay in the database; the checkpoint records each
   instrument's last pruned sequence number, from which the journal continues on restart.
4. In one transaction: drop the ``*_no_delete`` guard, delete the prefix, re-create the guard,
   and append a chained ``prunes`` checkpoint (table, last pruned id, its chain hash) and a
   ``prune`` audit entry. ``daq verify`` then checks the remaining rows from the checkpoint's
   hash on, and still fails on any other deletion, change or missing guard. If anything fails,
   the transaction rolls back and the guard is back.

Runs, their metadata, the audit trail, configs, traces and analyses are never pruned.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import Any

from daq import canonical
from daq.errors import DaqError
from daq.journal import chain
from daq.journal.journal import JOURNAL_FILE, connect, dumps
from daq.journal.lock import take_lock
from daq.journal.offline import append_audit, tail
from daq.journal.schema import CHAINED, guards
from daq.runs import store
from daq.runs.export import verify_export

PRUNED_TABLES = ("readings", "events")
DAY_NS = 86_400 * 1_000_000_000


class PruneRefused(DaqError):
    """Pruning was refused (a daemon runs, an export is missing or does not verify)."""


@dataclasses.dataclass
class PrunePlan:
    cutoff_ns: int
    runs: list[str]
    through: dict[str, int]
    rows: dict[str, int]
    blocked_by: list[str]
    #: Sinks whose cursor lies before the cutoff: readings they have not acknowledged stay.
    held_by_sinks: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan(conn: sqlite3.Connection, *, cutoff_ns: int, verified: set[str]) -> PrunePlan:
    """What a prune at ``cutoff_ns`` may delete, given the runs with ``verified`` exports."""
    runs = store.list_runs(conn)
    prunable = {
        r["run_id"] for r in runs if r["ended_ns"] is not None and r["ended_ns"] < cutoff_ns and r["seal"]
    }
    prunable &= verified
    keep = [r for r in runs if r["run_id"] not in prunable]
    blocked = sorted(r["run_id"] for r in keep if r["started_ns"] < cutoff_ns)
    through: dict[str, int] = {}
    rows: dict[str, int] = {}
    marks = ",".join("?" * len(prunable))
    in_runs = f"run_id IN ({marks})" if prunable else "0"
    first_keep = conn.execute(
        f"SELECT MIN(id) FROM readings WHERE NOT (acq_ns < ? AND (run_id IS NULL OR {in_runs}))",
        (cutoff_ns, *sorted(prunable)),
    ).fetchone()[0]
    last_reading = tail(conn, "readings")[0]
    through["readings"] = max(0, min((first_keep or last_reading) - 1, last_reading - 1))
    # The journal is the outbox: nothing a sink has not acknowledged is pruned.
    held_by: list[str] = []
    for sink, cursor in conn.execute("SELECT sink, last_id FROM sink_cursors ORDER BY sink"):
        if cursor < through["readings"]:
            through["readings"] = int(cursor)
            held_by.append(sink)
    # Events carry no run id: keep those from the start of the oldest run that stays.
    event_cut = min([cutoff_ns, *(r["started_ns"] for r in keep)])
    first_event = conn.execute("SELECT MIN(id) FROM events WHERE ts_ns >= ?", (event_cut,)).fetchone()[0]
    last_event = tail(conn, "events")[0]
    through["events"] = max(0, min((first_event or last_event) - 1, last_event - 1))
    for table in PRUNED_TABLES:
        row = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE id <= ?", (through[table],)).fetchone()
        rows[table] = int(row[0])
    return PrunePlan(cutoff_ns, sorted(prunable), through, rows, blocked, held_by)


def prune(
    data_dir: Path,
    *,
    exports: list[Path],
    retention_days: float,
    actor: str,
    now_ns: int | None = None,
    dry_run: bool = False,
) -> PrunePlan:
    """Prune the journal in ``data_dir``; see the module docstring. Returns what was (or would be) pruned."""
    data_dir = Path(data_dir)
    path = data_dir / JOURNAL_FILE
    if not path.exists():
        raise DaqError(f"no journal at {path}")
    lock = take_lock(data_dir)
    try:
        verified: dict[str, dict[str, Any]] = {}
        for outdir in exports:
            result = verify_export(outdir, data_dir=data_dir)
            if not result.ok:
                raise PruneRefused(f"export {outdir} does not verify: {result.file}: {result.problem}")
            verified[str(result.run_id)] = {"export": str(outdir), "seal": result.seal}
        now = time.time_ns() if now_ns is None else now_ns
        cutoff = now - int(retention_days * DAY_NS)
        conn = connect(path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                p = plan(conn, cutoff_ns=cutoff, verified=set(verified))
                if dry_run or not any(p.rows.values()):
                    conn.execute("ROLLBACK")
                    return p
                _apply(conn, p, actor=actor, now_ns=now, retention_days=retention_days, exports=verified)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        return p
    finally:
        lock.close()


def _apply(
    conn: sqlite3.Connection,
    p: PrunePlan,
    *,
    actor: str,
    now_ns: int,
    retention_days: float,
    exports: dict[str, dict[str, Any]],
) -> None:
    pid, ph = tail(conn, "prunes")
    cols = CHAINED["prunes"]
    for table in PRUNED_TABLES:
        if not p.rows[table]:
            continue
        through = p.through[table]
        digest = conn.execute(f"SELECT hash FROM {table} WHERE id = ?", (through,)).fetchone()[0]
        info: dict[str, Any] = {"cutoff_ns": p.cutoff_ns, "runs": p.runs}
        if table == "readings":
            # The journal continues each instrument's sequence numbers from here on restart.
            info["last_seq"] = dict(
                conn.execute(
                    "SELECT instrument, MAX(seq) FROM readings WHERE id <= ? GROUP BY instrument", (through,)
                )
            )
        conn.execute(f"DROP TRIGGER {table}_no_delete")
        conn.execute(f"DELETE FROM {table} WHERE id <= ?", (through,))
        conn.execute(guards(table)[1])
        pid += 1
        detail = dumps(info)
        row = (
            pid,
            *map(
                canonical.column, (now_ns, actor, table, through, bytes(digest).hex(), p.rows[table], detail)
            ),
        )
        ph = chain.link(ph, chain.payload_for("prunes", chain.payload_version(conn))(row))
        conn.execute(
            f"INSERT INTO prunes ({', '.join(cols)}, hash) VALUES ({', '.join('?' * (len(cols) + 1))})",
            (*row, ph),
        )
    append_audit(
        conn,
        "prune",
        subject="journal",
        actor=actor,
        ts_ns=now_ns,
        detail={"cutoff_ns": p.cutoff_ns, "retention_days": retention_days, "through": p.through,
                "rows": p.rows, "runs": p.runs, "exports": exports},
    )  # fmt: skip


__all__ = ["PrunePlan", "PruneRefused", "plan", "prune"]
