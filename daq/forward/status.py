"""A sink's status as others read it: the file a running forwarder refreshes, and the figures
``daq status --data-dir`` assembles from the journal and that file (no forwarder needed).

Kept apart from the forwarder so that reading a sink's status imports neither aiohttp nor the
delivery loop.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

#: Directory (under the data directory) of the sinks' status files.
STATUS_DIR = "sinks"


def status_file(data_dir: Path, sink: str) -> Path:
    """Where a running forwarder leaves its figures for ``daq status --data-dir``."""
    return Path(data_dir) / STATUS_DIR / f"{sink}.json"


def write_status_file(path: Path, status: dict[str, Any]) -> None:
    """Replace ``path`` with ``status`` atomically (a reader sees the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(status, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def sink_status_from_journal(
    conn: sqlite3.Connection, data_dir: Path, sink: str, cursor: int, max_id: int, now_ns: int
) -> dict[str, Any]:
    """A sink's figures as ``daq status --data-dir`` shows them: backlog and the age of the
    oldest pending reading from the journal; rate, last error and alarm from the file the
    running forwarder refreshes (with its ``updated_ns``), when there is one."""
    row = conn.execute("SELECT acq_ns FROM readings WHERE id > ? ORDER BY id LIMIT 1", (cursor,)).fetchone()
    out: dict[str, Any] = {
        "forwarded_through_id": cursor,
        "backlog": max(0, max_id - cursor),
        "pending": max(0, max_id - cursor),
        "oldest_pending_age_s": None if row is None else max(0.0, (now_ns - int(row[0])) / 1e9),
        "points_per_s": None,
        "last_error": None,
    }
    try:
        live = json.loads(status_file(data_dir, sink).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return out
    for k in (
        "points_per_s",
        "points_written",
        "last_error",
        "last_error_ns",
        "alarm",
        "quarantined",
        "state",
    ):
        out[k] = live.get(k)
    out["status_updated_ns"] = live.get("updated_ns")
    return out
