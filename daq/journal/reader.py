"""Read-only queries over a journal, for status, tail replay, exports and forwarders.

Opens the database read-only, so it can run beside a live daemon (WAL allows it).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from daq.errors import JournalError
from daq.journal.codec import READING_COLUMNS
from daq.journal.journal import JOURNAL_FILE, connect
from daq.journal.schema import CHAINED
from daq.model import Quality

__all__ = ["READING_COLUMNS", "JournalReader"]


class JournalReader:
    """A read-only view of the journal in ``data_dir``."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / JOURNAL_FILE
        if not self.path.exists():
            raise JournalError(f"no journal at {self.path}")
        self.conn: sqlite3.Connection = connect(self.path, read_only=True)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def instrument_summary(self) -> dict[str, dict[str, Any]]:
        """Per instrument: rows, last acquisition time, last sequence number, counts by quality."""
        out: dict[str, dict[str, Any]] = {}
        for instrument, quality, n, last_ns, last_seq in self.conn.execute(
            "SELECT instrument, quality, COUNT(*), MAX(acq_ns), MAX(seq) FROM readings "
            "GROUP BY instrument, quality"
        ):
            entry = out.setdefault(
                instrument,
                {
                    "rows": 0,
                    "last_acq_ns": 0,
                    "last_seq": 0,
                    "quality": {q.name: 0 for q in Quality},
                },
            )
            entry["rows"] += n
            entry["last_acq_ns"] = max(entry["last_acq_ns"], last_ns)
            entry["last_seq"] = max(entry["last_seq"], last_seq)
            entry["quality"][Quality(quality).name] += n
        for instrument, kind, n in self.conn.execute(
            "SELECT instrument, kind, COUNT(*) FROM events GROUP BY instrument, kind"
        ):
            entry = out.setdefault(
                instrument,
                {
                    "rows": 0,
                    "last_acq_ns": 0,
                    "last_seq": 0,
                    "quality": {q.name: 0 for q in Quality},
                },
            )
            entry.setdefault("events", {})[kind] = n
        return out

    def max_reading_id(self) -> int:
        row = self.conn.execute("SELECT MAX(id) FROM readings").fetchone()
        return int(row[0] or 0)

    def sink_cursors(self) -> dict[str, dict[str, int]]:
        return {
            sink: {"last_id": last_id, "updated_ns": updated}
            for sink, last_id, updated in self.conn.execute(
                "SELECT sink, last_id, updated_ns FROM sink_cursors"
            )
        }

    def readings(
        self, *, after_id: int = 0, since_ns: int | None = None, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """Readings in commit order, as dicts (``attrs`` decoded)."""
        sql = f"SELECT {', '.join(READING_COLUMNS)} FROM readings WHERE id > ?"
        args: list[Any] = [after_id]
        if since_ns is not None:
            sql += " AND acq_ns >= ?"
            args.append(since_ns)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        rows = []
        for row in self.conn.execute(sql, args):
            d = dict(zip(READING_COLUMNS, row, strict=True))
            d["attrs"] = json.loads(d["attrs"]) if d["attrs"] else None
            rows.append(d)
        return rows

    def events(self, *, after_id: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        cols = ("id", "instrument", "kind", "ts_ns", "mono_ns", "detail", "raw")
        rows = []
        for row in self.conn.execute(
            f"SELECT {', '.join(cols)} FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ):
            d = dict(zip(cols, row, strict=True))
            d["detail"] = json.loads(d["detail"]) if d["detail"] else None
            rows.append(d)
        return rows

    def table(self, table: str, *, where: str = "", args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of a chained table as dicts (``hash`` excluded), in id order.

        ``where`` is an SQL condition over the table's columns with ``?`` placeholders.
        """
        cols = CHAINED[table]
        sql = f"SELECT {', '.join(cols)} FROM {table}"
        if where:
            sql += f" WHERE {where}"
        return [dict(zip(cols, row, strict=True)) for row in self.conn.execute(sql + " ORDER BY id", args)]

    def audit(self, *, since_ns: int | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        cols = ("id", "ts_ns", "mono_ns", "actor", "action", "subject", "detail", "run_id")
        sql = f"SELECT {', '.join(cols)} FROM audit WHERE 1=1"
        args: list[Any] = []
        if since_ns is not None:
            sql += " AND ts_ns >= ?"
            args.append(since_ns)
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        rows = []
        for row in self.conn.execute(sql + " ORDER BY id", args):
            d = dict(zip(cols, row, strict=True))
            d["detail"] = json.loads(d["detail"]) if d["detail"] else None
            rows.append(d)
        return rows
