"""The status board: the daemon's status assembled from the parts it is given (see
:mod:`daq.status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from daq import __version__, timefmt
from daq.status.channels import channel_status, instrument_status
from daq.status.rules import AlarmRule, compute_alarms
from daq.supervisor import State, Supervisor

if TYPE_CHECKING:
    from daq.config.loaded import LoadedConfig
    from daq.journal.journal import Journal
    from daq.supervision import StallWatch, TaskTree

#: A journal with records pending and no commit for this long is reported unhealthy.
STALLED_COMMIT_S = 10.0


class ActiveRun(Protocol):
    """What the status needs of the run control: the open run, if any."""

    def active(self) -> dict[str, Any] | None: ...


def extract_sinks(services: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-sink figures from the services' status dicts.

    A service reports sinks either as ``{"sinks": {name: {...}}}`` (each with ``backlog`` or
    ``pending``) or, one sink per service, as a dict with ``backlog``. ``backlog`` and
    ``last_error`` are normalised; every other key is kept.
    """
    found: dict[str, dict[str, Any]] = {}

    def view(s: dict[str, Any]) -> dict[str, Any]:
        backlog = s.get("backlog", s.get("pending"))
        return {**s, "backlog": backlog, "last_error": s.get("last_error", s.get("error"))}

    for name, st in services.items():
        if not isinstance(st, dict):
            continue
        if isinstance(st.get("sinks"), dict):
            for sink, s in st["sinks"].items():
                if isinstance(s, dict):
                    found[str(sink)] = view(s)
        elif "backlog" in st:
            found[str(st.get("sink", name))] = view(st)
    return found


def journal_status(journal: Journal) -> dict[str, Any]:
    return {
        "path": str(journal.path),
        "pending": journal.pending,
        "readings_committed": journal.readings_committed,
        "overflowed": journal.overflowed,
        "error": journal.error,
        # Records refused (kept as rejected_record events), hook and writer errors.
        **journal.health(),
    }


def _utc_offset_s(name: str, now_ns: int) -> int:
    offset = timefmt.local(now_ns, timefmt.zone(name)).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


class StatusBoard:
    """Assembles the daemon's status from the parts it is given (see the module docstring).

    ``services`` is the live mapping of started services (name to service); a service with a
    ``status()`` method contributes its dict. ``runs`` answers the active run, when there is
    run control. ``ready`` is set once acquisition runs.
    """

    def __init__(
        self,
        *,
        config: LoadedConfig,
        time_ns: Callable[[], int],
        journal: Journal,
        supervisors: Sequence[Supervisor],
        services: Mapping[str, object],
        tasks: TaskTree,
        stall_watch: StallWatch,
        ready: asyncio.Event,
        runs: ActiveRun | None = None,
        process_instrument: str | None = None,
    ) -> None:
        self.config = config
        #: The instrument whose step, flags and activities head the live page (the run trigger's).
        self.process_instrument = process_instrument
        self.time_ns = time_ns
        self.journal = journal
        self.supervisors = supervisors
        self.services = services
        self.tasks = tasks
        self.stall_watch = stall_watch
        self.ready = ready
        self.runs = runs
        self.started_ns = time_ns()
        self._alarm_sources: list[AlarmRule] = []

    def add_alarm_source(self, rule: AlarmRule) -> None:
        """Another source of alarms for :meth:`live` (run after :data:`ALARM_RULES`)."""
        self._alarm_sources.append(rule)

    def service_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, svc in list(self.services.items()):
            fn = getattr(svc, "status", None)
            if callable(fn):
                out[name] = fn()
        return out

    def snapshot(self) -> dict[str, Any]:
        """Instruments, the journal, each service, the tasks and stalls."""
        return {
            "services": self.service_status(),
            "tasks": self.tasks.status(),
            "stalls": self.stall_watch.status(),
            "instruments": {s.name: instrument_status(s) for s in self.supervisors},
            "journal": journal_status(self.journal),
        }

    def instruments(self, now_ns: int) -> dict[str, dict[str, Any]]:
        """Each instrument's state and counters with the last value of each channel and its
        age (what ``/api/status`` and ``/metrics`` show of the supervisors)."""
        return {s.name: {**instrument_status(s), **channel_status(s, now_ns)} for s in self.supervisors}

    def active_run(self) -> Any:
        if self.runs is None:
            return None
        try:
            return self.runs.active()
        except Exception as exc:  # the page must render whatever the run manager does
            return {"error": repr(exc)}

    def live(self) -> dict[str, Any]:
        """:meth:`snapshot` with the last value of each channel, the journal's size, sinks, the
        active run and the alarms (``/api/status``, ``daq status``)."""
        now = self.time_ns()
        base = self.snapshot()
        instruments = self.instruments(now)
        journal = base["journal"]
        j = self.journal
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{j.path}{suffix}").st_size
        journal.update(
            size_bytes=size,
            commits=j.commits,
            last_commit_s=round(j.last_commit_s, 6),
            last_commit_age_s=round((now - j.last_commit_wall_ns) / 1e9, 3)
            if j.last_commit_wall_ns
            else None,
        )
        cfg = self.config
        out: dict[str, Any] = {
            "daemon": {
                "version": __version__,
                "pid": os.getpid(),
                "site": cfg.daemon.site,
                "cell": cfg.daemon.cell,
                "config": cfg.path,
                "config_sha256": cfg.sha256,
                "uptime_s": round((now - self.started_ns) / 1e9, 3),
                # The site's zone (daemon.timezone, empty: the system's) and its offset now: the
                # page shows every time in it, never in the browser's zone.
                "timezone": cfg.daemon.timezone,
                "zone": timefmt.zone_label(timefmt.zone(cfg.daemon.timezone), now),
                "utc_offset_s": _utc_offset_s(cfg.daemon.timezone, now),
                # The instrument whose step, flags and activities head the live page.
                "process_instrument": self.process_instrument or None,
            },
            "now_ns": now,
            "instruments": instruments,
            "journal": journal,
            "sinks": extract_sinks(base["services"]),
            "run": self.active_run(),
            "services": base["services"],
            "tasks": base["tasks"],
        }
        out["alarms"] = compute_alarms(out, self._alarm_sources)
        return out

    def sinks(self) -> dict[str, dict[str, Any]]:
        return extract_sinks(self.service_status())

    def health(self) -> tuple[bool, list[str]]:
        """Whether the daemon is healthy (``/healthz``), and the reasons it is not."""
        problems = []
        j = self.journal
        if j.error is not None:
            problems.append(f"journal commits fail: {j.error}")
        if j.pending and j.last_commit_wall_ns:
            age = (self.time_ns() - j.last_commit_wall_ns) / 1e9
            if age > STALLED_COMMIT_S:
                problems.append(f"journal has {j.pending} records pending and no commit for {age:.0f} s")
        if not self.ready.is_set():
            problems.append("daemon is starting")
        problems.extend(self.tasks.problems())
        return not problems, problems

    def task_failures(self) -> dict[str, int]:
        return {c: t["failures"] for c, t in self.tasks.status().items() if t["failures"]}

    def connected(self) -> tuple[int, int]:
        """Instruments connected, and configured (the systemd status line)."""
        return sum(1 for s in self.supervisors if s.state is State.CONNECTED), len(self.supervisors)
