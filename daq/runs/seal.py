"""What belongs to a run, and its seal.

A run's records are, per chained table:

- ``run_events``, ``readings``, ``audit`` and (when the TLC tables exist) ``traces`` and
  ``analyses``: the rows stamped with the run's id;
- ``events`` (instrument connects, disconnects, parse errors): every row whose time lies
  between the run's start and end;
- ``configs``: the config snapshot(s) whose hash is the run's config hash;
- ``audit`` also takes the entries whose subject is one of the run's traces (a re-integration
  made after the run carries no run id).

The seal is SHA-256 over the run id and, table by table in :data:`SEAL_TABLES` order and by
id, each record's *chain hash*, for the records with ``id <= seal_through[table]`` (the last
id of each table when the run was closed). Because each chain hash covers its record's content
and every record before it, the seal covers the run's readings, traces, events and metadata;
records added later (a re-integration, an annotation after the fact) stay verifiable through
their own chain hashes but do not change the seal.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from daq.journal import chain
from daq.journal.schema import CHAINED

SEAL_VERSION = "hotcell-daq run seal v1"

#: Tables a run draws records from, in seal order (the TLC ones only when they exist).
BASE_TABLES = ("run_events", "configs", "readings", "events", "audit")
OPTIONAL_TABLES = ("traces", "analyses")


def run_tables() -> tuple[str, ...]:
    """The tables of a run, given the tables this build of the journal has."""
    return BASE_TABLES + tuple(t for t in OPTIONAL_TABLES if t in CHAINED)


SEAL_TABLES = run_tables()


def selector(table: str, run: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The SQL condition (over alias ``t``) and its arguments selecting ``run``'s rows of ``table``."""
    if table == "events":
        end = run.get("ended_ns")
        if end is None:
            return "t.ts_ns >= ?", (run["started_ns"],)
        return "t.ts_ns >= ? AND t.ts_ns <= ?", (run["started_ns"], end)
    if table == "configs":
        return "t.sha256 = ?", (run.get("config_sha256") or "",)
    if table == "audit" and "traces" in CHAINED:
        # A re-integration made after the run (no run id) names the run's trace as its subject.
        return (
            "(t.run_id = ? OR t.subject IN (SELECT trace_id FROM traces WHERE run_id = ?))",
            (run["run_id"], run["run_id"]),
        )
    return "t.run_id = ?", (run["run_id"],)


def compute_seal(
    run_id: str, hashes: Mapping[str, Iterable[tuple[int, bytes]]], through: Mapping[str, int]
) -> str:
    """The seal over ``hashes`` (per table, ``(id, chain hash)`` in id order) up to ``through``."""
    h = hashlib.sha256()
    h.update(f"{SEAL_VERSION}\n{run_id}\n".encode())
    for table in SEAL_TABLES:
        limit = through.get(table, 0)
        for rid, digest in hashes.get(table, ()):
            if rid <= limit:
                h.update(f"{table} {rid} {digest.hex()}\n".encode())
    return h.hexdigest()


def current_through(conn: sqlite3.Connection) -> dict[str, int]:
    """The last committed id of each run table: what a seal taken now covers."""
    out = {}
    for table in SEAL_TABLES:
        row = conn.execute(f"SELECT MAX(id) FROM {table}").fetchone()
        out[table] = int(row[0] or 0)
    return out


def seal_from_journal(conn: sqlite3.Connection, run: Mapping[str, Any], through: Mapping[str, int]) -> str:
    """Compute ``run``'s seal from the journal behind ``conn``."""
    hashes: dict[str, list[tuple[int, bytes]]] = {}
    for table in SEAL_TABLES:
        where, args = selector(table, run)
        hashes[table] = [
            (int(rid), bytes(digest))
            for rid, digest in conn.execute(
                f"SELECT t.id, t.hash FROM {table} t WHERE {where} AND t.id <= ? ORDER BY t.id",
                (*args, through.get(table, 0)),
            )
        ]
    return compute_seal(str(run["run_id"]), hashes, through)


def row_hash(table: str, values: tuple[Any, ...], previous: bytes, version: int) -> bytes:
    """The chain hash of a row of ``table`` given its columns (``CHAINED`` order), the previous
    hash and the journal's payload version."""
    return chain.link(previous, chain.payload_for(table, version)(values))
