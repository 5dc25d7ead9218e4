"""Writing to the journal without the daemon (``daq prune``, ``daq sinks``): the caller holds
``daemon.lock`` and an open write transaction on ``conn``; rows chain on from the table's tail
in the database. Rows are put in canonical form (:mod:`daq.canonical`) like the daemon's."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from daq import canonical
from daq.journal import chain, codec


def tail(conn: sqlite3.Connection, table: str) -> tuple[int, bytes]:
    """The id and chain hash of ``table``'s last row (``(0, GENESIS)`` when it is empty)."""
    row = conn.execute(f"SELECT id, hash FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
    return (int(row[0]), bytes(row[1])) if row else (0, chain.GENESIS)


def append_audit(
    conn: sqlite3.Connection,
    action: str,
    *,
    subject: str | None,
    actor: str,
    ts_ns: int,
    detail: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> int:
    """Append one chained audit entry inside the caller's transaction; returns its id."""
    aid, ah = tail(conn, "audit")
    mono = time.monotonic_ns()
    entry = canonical.AuditEntry(ts_ns, mono, actor, action, subject, detail, run_id)
    c = canonical.audit(entry, now_ns=time.time_ns(), now_mono_ns=mono)
    row = (aid + 1, c.ts_ns, c.mono_ns, c.actor, c.action, c.subject, codec.attrs_json(c.detail), c.run_id)
    conn.execute(
        "INSERT INTO audit (id, ts_ns, mono_ns, actor, action, subject, detail, run_id, hash) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        (*row, chain.link(ah, chain.payload_for("audit", chain.payload_version(conn))(row))),
    )
    return aid + 1
