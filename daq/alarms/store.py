"""The alarm journal read without the daemon: ``alarm_events`` rows folded into one record per
alarm (``daq alarms list --data-dir``, the run report), and each row as the transition the live
alarm stream sends (:func:`transition_of`), live or read back from the journal.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from daq.alarms.points import ACKED, ACTIVE, NORMAL
from daq.journal.schema import CHAINED

TABLE = "alarm_events"
#: What a row's ``detail`` holds: the alarm as it stands after the row's transition.
DETAIL_KEYS = ("value", "setpoint", "unit", "message", "raised_ns", "acked_ns", "acked_by", "cleared_ns")


def transition_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The live alarm stream's transition (:func:`daq.alarms.points.transition`) of one
    ``alarm_events`` row (its columns by name), with the row's id as ``event_id``.

    The row alone is enough: its ``detail`` holds the alarm as it stood after the transition.
    A row written before ``detail`` held the times (``raised_ns``, ``acked_ns``, ``acked_by``,
    ``cleared_ns``) gives those of its own transition and ``None`` for the others.
    """
    detail = row["detail"]
    d: dict[str, Any] = detail if isinstance(detail, dict) else json.loads(detail) if detail else {}
    kind, ts_ns, state = row["kind"], row["ts_ns"], row["state"]
    own = {"raised": "raised_ns", "acknowledged": "acked_ns", "cleared": "cleared_ns"}.get(kind)

    def when(key: str) -> Any:
        return d.get(key, ts_ns if key == own else None)

    return {
        "type": "alarm", "kind": kind, "ts_ns": ts_ns, "actor": row["actor"],
        "id": row["alarm_id"], "instrument": row["instrument"], "channel": row["channel"],
        "condition": row["condition"], "severity": row["severity"], "state": state,
        "active": state in ACTIVE, "acknowledged": state in (ACKED, NORMAL),
        "value": d.get("value"), "unit": d.get("unit") or "", "setpoint": d.get("setpoint"),
        "message": d.get("message") or "", "raised_ns": when("raised_ns"), "acked_ns": when("acked_ns"),
        "acked_by": d.get("acked_by", row["actor"] if kind == "acknowledged" else None),
        "comment": row["comment"], "cleared_ns": when("cleared_ns"), "run_id": row["run_id"],
        "event_id": row["id"],
    }  # fmt: skip


def rows_between(
    conn: sqlite3.Connection, after_id: int, last_id: int, *, limit: int
) -> list[dict[str, Any]]:
    """The ``alarm_events`` rows with ``after_id < id <= last_id`` in id order, at most
    ``limit``: how a live client fills a gap or resumes after the last id it saw."""
    cols = CHAINED[TABLE]
    cur = conn.execute(
        f"SELECT {', '.join(cols)} FROM {TABLE} WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
        (after_id, last_id, limit),
    )
    return [dict(zip(cols, r, strict=True)) for r in cur]


def alarm_rows(
    conn: sqlite3.Connection, *, since_ns: int | None = None, until_ns: int | None = None
) -> list[dict[str, Any]]:
    """Rows of the alarm journal in order, optionally those of alarms with any row in
    [``since_ns``, ``until_ns``]; none from a journal older than the table."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone()
    if found is None:
        return []
    cols = CHAINED[TABLE]
    sql = f"SELECT {', '.join(cols)} FROM {TABLE}"
    args: list[Any] = []
    if since_ns is not None or until_ns is not None:
        sql += (
            f" WHERE alarm_id IN (SELECT alarm_id FROM {TABLE} WHERE ts_ns >= ? AND ts_ns <= ?)"
            " OR alarm_id IN (SELECT r.alarm_id FROM alarm_events r WHERE r.kind = 'raised' AND r.ts_ns < ?"
            " AND NOT EXISTS (SELECT 1 FROM alarm_events c WHERE c.alarm_id = r.alarm_id"
            " AND c.state = 'normal' AND c.ts_ns < ?))"
        )
        lo = since_ns if since_ns is not None else 0
        hi = until_ns if until_ns is not None else 2**63 - 1
        args = [lo, hi, lo, lo]
    rows = []
    for r in conn.execute(sql + " ORDER BY id", args):
        row = dict(zip(cols, r, strict=True))
        row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
        rows.append(row)
    return rows


def open_rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The rows of the alarms whose last row leaves them not in normal."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone()
    if found is None:
        return []
    cols = CHAINED[TABLE]
    sql = (
        f"SELECT {', '.join(cols)} FROM {TABLE} WHERE alarm_id IN (SELECT alarm_id FROM {TABLE} e"
        f" WHERE e.id = (SELECT MAX(id) FROM {TABLE} l WHERE l.alarm_id = e.alarm_id)"
        " AND e.state != 'normal')"
        " ORDER BY id"
    )
    return [dict(zip(cols, r, strict=True)) for r in conn.execute(sql)]


def fold(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per alarm id (its latest state and who acknowledged it), newest raised first;
    the same keys as ``GET /api/alarms`` gives for one alarm."""
    alarms: dict[str, dict[str, Any]] = {}
    for row in rows:
        a = alarms.setdefault(
            row["alarm_id"],
            {
                "id": row["alarm_id"], "instrument": row["instrument"], "channel": row["channel"],
                "condition": row["condition"], "severity": row["severity"], "raised_ns": None,
                "acked_ns": None, "acked_by": None, "comment": None, "cleared_ns": None,
                "run_id": row["run_id"], "value": None, "unit": "", "setpoint": None, "message": "",
            },
        )  # fmt: skip
        detail = row["detail"]
        if isinstance(detail, str):
            detail = json.loads(detail) if detail else {}
        detail = detail or {}
        a["state"] = row["state"]
        a["message"] = detail.get("message", a["message"])
        a["unit"] = detail.get("unit", a["unit"])
        if "setpoint" in detail:
            a["setpoint"] = detail["setpoint"]
        if row["kind"] == "raised":
            a["raised_ns"] = row["ts_ns"]
            a["value"] = detail.get("value")
        elif row["kind"] == "acknowledged":
            a["acked_ns"], a["acked_by"], a["comment"] = row["ts_ns"], row["actor"], row["comment"]
        elif row["kind"] == "cleared":
            a["cleared_ns"] = row["ts_ns"]
    out = list(alarms.values())
    for a in out:
        a["active"] = a["state"] in ("unacknowledged active", "acknowledged active")
        a["acknowledged"] = a["state"] in ("acknowledged active", "normal")
    out.sort(key=lambda a: a["raised_ns"] or 0, reverse=True)
    return out


def alarms(
    conn: sqlite3.Connection, *, since_ns: int | None = None, until_ns: int | None = None
) -> list[dict[str, Any]]:
    """:func:`fold` of :func:`alarm_rows`."""
    return fold(alarm_rows(conn, since_ns=since_ns, until_ns=until_ns))
