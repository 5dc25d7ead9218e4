"""Read helpers over the ``traces`` and ``analyses`` tables (read-only; see migration 2).

A trace may carry several analyses: the first written when the scan ended, then one per
re-integration, each naming the one it ``supersedes``. The *current* analysis of a trace is
the last one written; earlier ones stay, unchanged, as the history.
"""

from __future__ import annotations

import json
from typing import Any

from daq.errors import DaqError
from daq.journal.reader import JournalReader


def _trace(row: dict[str, Any], *, with_data: bool = True) -> dict[str, Any]:
    out = dict(row)
    out["params"] = json.loads(row["params"]) if row["params"] else {}
    out["complete"] = bool(row["complete"])
    if with_data:
        out["positions_mm"] = json.loads(row["positions_mm"])
        out["counts"] = json.loads(row["counts"])
    return out


def _analysis(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["results"] = json.loads(row["results"])
    return out


def traces(reader: JournalReader, *, run_id: str | None = None) -> list[dict[str, Any]]:
    """All traces (params decoded), oldest first; optionally those of one run."""
    if run_id is None:
        rows = reader.table("traces")
    else:
        rows = reader.table("traces", where="run_id = ?", args=(run_id,))
    return [_trace(r) for r in rows]


def find_trace(reader: JournalReader, scan: str) -> dict[str, Any]:
    """The trace named ``scan``: its trace id, a unique prefix of it, or ``last``."""
    if scan == "last":
        row = reader.conn.execute("SELECT MAX(id) FROM traces").fetchone()
        if row[0] is None:
            raise DaqError("the journal holds no TLC trace yet")
        return _trace(reader.table("traces", where="id = ?", args=(row[0],))[0])
    exact = reader.table("traces", where="trace_id = ?", args=(scan,))
    if exact:
        return _trace(exact[-1])
    like = scan.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = reader.table("traces", where="trace_id LIKE ? ESCAPE '\\'", args=(like,))
    ids = sorted({r["trace_id"] for r in rows})
    if not ids:
        raise DaqError(f"no TLC trace {scan!r} in the journal ('daq tlc list' shows them)")
    if len(ids) > 1:
        raise DaqError(f"{scan!r} matches {len(ids)} traces: {', '.join(ids[:5])}")
    return _trace(rows[-1])


def analyses(reader: JournalReader, trace_id: str) -> list[dict[str, Any]]:
    """Every analysis of ``trace_id``, oldest first (results decoded)."""
    return [_analysis(r) for r in reader.table("analyses", where="trace_id = ?", args=(trace_id,))]


def current_analysis(reader: JournalReader, trace_id: str) -> dict[str, Any] | None:
    found = analyses(reader, trace_id)
    return found[-1] if found else None


def latest_analyses(reader: JournalReader) -> dict[str, dict[str, Any]]:
    """The current analysis of every trace that has one, by trace id."""
    out: dict[str, dict[str, Any]] = {}
    for row in reader.table("analyses"):
        out[row["trace_id"]] = _analysis(row)
    return out


def reintegrations(reader: JournalReader, trace_id: str) -> list[dict[str, Any]]:
    """The audit entries of the re-integrations of ``trace_id``."""
    return [a for a in reader.audit() if a["action"] == "tlc_reintegrate" and a["subject"] == trace_id]
