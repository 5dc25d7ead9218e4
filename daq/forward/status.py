"""A sink's status: the figures a running forwarder keeps, the file it refreshes, and the
figures ``daq status --data-dir`` assembles from the journal and that file (no forwarder needed).

Contract: :class:`SinkStatus` holds one sink's figures and state (sending, retrying, alarm) and
records their changes: an alarm is audited once (``sink_alarm``) and its end once
(``sink_alarm_cleared``), an outage is logged once when it starts and once when it ends, a
quarantined point is audited (``sink_quarantine``). It decides nothing about delivery: the
forwarder reports what happened. :func:`write_status_file` and :func:`sink_status_from_journal`
are the file's two ends.

Kept apart from the forwarder so that reading a sink's status imports neither aiohttp nor the
delivery loop.
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daq.clock import Clock
from daq.logs import get_logger

if TYPE_CHECKING:
    from daq.journal.journal import Journal

log = get_logger("daq.forward")

#: Directory (under the data directory) of the sinks' status files.
STATUS_DIR = "sinks"
#: The span (seconds) over which ``points_per_s`` is averaged.
RATE_WINDOW_S = 10.0


class SinkStatus:
    """One sink's figures and state, and the audit entries and log lines of their changes."""

    def __init__(self, sink: str, journal: Journal, clock: Clock, *, retry_every_s: float):
        self.sink = sink
        self.journal = journal
        self.clock = clock
        #: Said in the alarm's log line: how often a refused write is tried again.
        self.retry_every_s = retry_every_s
        self.state = "stopped"
        self.points_written = 0
        self.retries = 0
        self.quarantined = 0
        self.last_error: str | None = None
        self.last_error_ns: int | None = None
        self.alarm: str | None = None
        self.in_outage = False
        #: Acquisition time of the first pending reading (refreshed by the forwarder).
        self.oldest_pending_ns: int | None = None
        self._rate: collections.deque[tuple[float, int]] = collections.deque()

    def sending(self) -> None:
        """A request leaves (the state says so unless an outage or an alarm is on)."""
        if self.alarm is None and not self.in_outage:
            self.state = "sending"

    def note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_ns = self.clock.time_ns()

    def outage(self, message: str) -> None:
        """The sink did not answer, or answered "later": the backlog waits in the journal."""
        self.note_error(message)
        if self.alarm is None:
            self.state = "retrying"
        if not self.in_outage:
            self.in_outage = True
            log.warning("sink unreachable; backlog waits in the journal", sink=self.sink, error=message)

    def raise_alarm(self, status: int, message: str) -> None:
        """The sink refuses writes until a person acts: one audit entry and one log line."""
        self.note_error(f"HTTP {status}: {message}")
        self.state = "alarm"
        if self.alarm is None:
            self.alarm = f"HTTP {status}: {message}"
            self.journal.audit("sink_alarm", subject=self.sink, detail={"status": status, "error": message})
            log.error(
                "sink alarm: writes refused; retrying at the backoff cap",
                sink=self.sink,
                status=status,
                error=message,
                retry_every_s=self.retry_every_s,
            )

    def reachable(self, pending: int) -> None:
        """The server accepted a write: an outage or an alarm is over."""
        if self.in_outage:
            self.in_outage = False
            log.info("sink reachable again", sink=self.sink, pending=pending)
        if self.alarm is not None:
            self.journal.audit("sink_alarm_cleared", subject=self.sink, detail={"alarm": self.alarm})
            log.info("sink alarm cleared", sink=self.sink)
            self.alarm = None
        self.state = "sending"

    def acknowledged(self, n: int) -> None:
        """``n`` points were stored by the server."""
        self.points_written += n
        self._rate.append((time.monotonic(), n))

    def quarantine(self, reading_id: int, detail: dict[str, Any]) -> None:
        """Audit a point that is never to be sent (the reading itself stays in the journal)."""
        self.quarantined += 1
        self.journal.audit("sink_quarantine", subject=self.sink, detail={"reading_id": reading_id, **detail})
        log.warning("point quarantined", sink=self.sink, reading_id=reading_id, error=detail["error"])

    def points_per_s(self) -> float:
        now = time.monotonic()
        while self._rate and now - self._rate[0][0] > RATE_WINDOW_S:
            self._rate.popleft()
        if not self._rate:
            return 0.0
        span = max(1.0, now - self._rate[0][0])
        return sum(n for _, n in self._rate) / span

    def figures(self, *, cursor: int, pending: int, requests: int) -> dict[str, Any]:
        """The figures ``daq status`` shows and the status file holds."""
        oldest = self.oldest_pending_ns if pending else None
        now_ns = self.clock.time_ns()
        return {
            "state": self.state,
            "forwarded_through_id": cursor,
            "pending": pending,
            "oldest_pending_age_s": None if oldest is None else max(0.0, (now_ns - oldest) / 1e9),
            "points_written": self.points_written,
            "points_per_s": round(self.points_per_s(), 1),
            "requests": requests,
            "retries": self.retries,
            "quarantined": self.quarantined,
            "last_error": self.last_error,
            "last_error_ns": self.last_error_ns,
            "alarm": self.alarm,
            "updated_ns": now_ns,
        }


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
