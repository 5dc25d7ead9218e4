"""Runs as the journal holds them, and a run's records, read through a read-only connection.

A run is the ``run_events`` rows sharing its id: ``start`` (the metadata), then ``t0`` and
``annotation`` rows, then ``stop`` (the end, the seal and what it covers). :class:`RunData`
is one run with all its records; exports write it, reports draw it, and verification rebuilds
it from the exported files, so all three work from the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from daq.errors import DaqError
from daq.journal import chain
from daq.journal.schema import CHAINED
from daq.runs.seal import SEAL_TABLES, selector

#: Tables of records about a sealed run, outside its seal (they sign it): exported with it.
SIGNED_TABLES = tuple(t for t in ("signatures",) if t in CHAINED)
#: Not sealed either: the alarm journal's rows stamped with the run (the report lists them).
ALARM_TABLES = tuple(t for t in ("alarm_events",) if t in CHAINED)


class UnknownRun(DaqError):
    """No run with that id in the journal."""


def _detail(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def runs_from_events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold ``run_events`` rows (id order) into one dict per run, oldest first."""
    runs: dict[str, dict[str, Any]] = {}
    for row in rows:
        detail = row["detail"] if isinstance(row["detail"], dict) else _detail(row["detail"])
        rid = row["run_id"]
        if row["kind"] == "start":
            runs[rid] = {
                "run_id": rid,
                **{k: detail.get(k) for k in ("batch", "product", "nuclide", "operator", "method")},
                "config_sha256": detail.get("config_sha256"),
                "instruments": detail.get("instruments", {}),
                "clock": detail.get("clock"),
                "started_ns": row["ts_ns"],
                "started_by": row["actor"],
                "start_reason": row["reason"],
                "ended_ns": None,
                "ended_by": None,
                "stop_reason": None,
                "seal": None,
                "seal_through": None,
                "t0": [],
                "annotations": [],
            }
            continue
        run = runs.get(rid)
        if run is None:
            continue
        if row["kind"] == "stop":
            run.update(
                ended_ns=row["ts_ns"],
                ended_by=row["actor"],
                stop_reason=row["reason"],
                seal=detail.get("seal"),
                seal_through=detail.get("seal_through"),
            )
        elif row["kind"] == "t0":
            run["t0"].append(
                {"ts_ns": detail.get("t0_ns", row["ts_ns"]), "instrument": row["instrument"],
                 "actor": row["actor"], "reason": row["reason"]}
            )  # fmt: skip
        elif row["kind"] == "annotation":
            run["annotations"].append(
                {"ts_ns": row["ts_ns"], "instrument": row["instrument"], "actor": row["actor"],
                 "reason": row["reason"], "text": detail.get("text")}
            )  # fmt: skip
    return list(runs.values())


def _run_event_rows(conn: sqlite3.Connection, run_id: str | None = None) -> list[dict[str, Any]]:
    cols = CHAINED["run_events"]
    sql = f"SELECT {', '.join(cols)} FROM run_events"
    args: tuple[Any, ...] = ()
    if run_id is not None:
        sql += " WHERE run_id = ?"
        args = (run_id,)
    return [dict(zip(cols, r, strict=True)) for r in conn.execute(sql + " ORDER BY id", args)]


def list_runs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return runs_from_events(_run_event_rows(conn))


def get_run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    runs = runs_from_events(_run_event_rows(conn, run_id))
    if not runs:
        raise UnknownRun(f"no run {run_id!r} in the journal")
    return runs[0]


def column_types(conn: sqlite3.Connection, table: str) -> list[str]:
    """Declared SQLite types of ``table``'s chained columns (``INTEGER``, ``REAL``, ``TEXT``, ``BLOB``)."""
    declared = {name: (typ or "").upper() for _, name, typ, *_ in conn.execute(f"PRAGMA table_info({table})")}
    return [declared.get(c, "TEXT") for c in CHAINED[table]]


def _prune_hash(conn: sqlite3.Connection, table: str, rid: int) -> bytes | None:
    row = conn.execute(
        "SELECT through_hash FROM prunes WHERE table_name=? AND through_id=? ORDER BY id DESC LIMIT 1",
        (table, rid),
    ).fetchone()
    return bytes.fromhex(row[0]) if row else None


@dataclasses.dataclass
class TableRows:
    """A table's rows of one run: columns in ``CHAINED`` order plus ``prev_hash`` and ``hash``."""

    name: str
    columns: tuple[str, ...]
    types: list[str]
    rows: list[dict[str, Any]]


@dataclasses.dataclass
class RunData:
    """One run and its records; ``seal_through`` is what its seal covers."""

    run: dict[str, Any]
    tables: dict[str, TableRows]
    #: The hash payload version of the journal the records come from (daq.journal.chain).
    chain_version: int

    def rows(self, table: str) -> list[dict[str, Any]]:
        t = self.tables.get(table)
        return t.rows if t is not None else []


def load_run(conn: sqlite3.Connection, run_id: str) -> RunData:
    """Read ``run_id`` and every record of it, each with its previous chain hash (the tables of
    its seal, then its signatures when the journal has them)."""
    run = get_run(conn, run_id)
    tables: dict[str, TableRows] = {}
    for table in SEAL_TABLES + SIGNED_TABLES + ALARM_TABLES:
        q = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
        optional = table in SIGNED_TABLES or table in ALARM_TABLES
        if optional and conn.execute(q, (table,)).fetchone() is None:
            continue  # a journal written before the table existed, opened read-only
        cols = CHAINED[table]
        where, args = selector(table, run)
        sel = ", ".join(f"t.{c}" for c in cols)
        rows: list[dict[str, Any]] = []
        for rec in conn.execute(
            f"SELECT {sel}, t.hash, p.hash FROM {table} t LEFT JOIN {table} p ON p.id = t.id - 1 "
            f"WHERE {where} ORDER BY t.id",
            args,
        ):
            values = dict(zip(cols, rec[: len(cols)], strict=True))
            prev = rec[-1]
            if prev is None:
                rid = values["id"]
                prev = chain.GENESIS if rid == 1 else _prune_hash(conn, table, rid - 1)
                if prev is None:
                    raise DaqError(f"{table} record {rid - 1} is missing from the journal")
            values["hash"] = bytes(rec[-2])
            values["prev_hash"] = bytes(prev)
            rows.append(values)
        tables[table] = TableRows(table, cols, column_types(conn, table), rows)
    return RunData(run, tables, chain.payload_version(conn))
