"""The daemon's status, assembled once for every display: ``/api/status``, ``/healthz``,
``/metrics``, ``daq status`` (which asks the API) and the systemd status line.

:class:`StatusBoard` reads the parts the composition root hands it (the journal, the
supervisors, the services' own ``status()`` dicts, the task tree, the stall watch, the run
control) and never changes them. :func:`compute_alarms` derives what needs a person's
attention from a status dict; it runs every rule of :data:`ALARM_RULES` in turn, so another
source of alarms (an alarm engine, say) is one more rule there or one more callable given to
:meth:`StatusBoard.add_alarm_source`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from daq import __version__, timefmt
from daq.model import Quality
from daq.supervisor import State, Supervisor

if TYPE_CHECKING:
    from daq.configfile.model import Config
    from daq.journal.journal import Journal
    from daq.supervision import StallWatch, TaskTree

#: A journal with records pending and no commit for this long is reported unhealthy.
STALLED_COMMIT_S = 10.0

Alarm = dict[str, Any]
#: One source of derived alarms: the assembled status in, the alarms it finds out.
AlarmRule = Callable[[Mapping[str, Any]], list[Alarm]]


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


# -- derived alarms -------------------------------------------------------------------------------


def _is_alarm_channel(channel: str) -> bool:
    return channel.startswith("alarm") or channel.endswith("_alarm")


def _alarm(severity: str, subject: str, message: str) -> Alarm:
    return {"severity": severity, "subject": subject, "message": message}


def journal_error_alarms(status: Mapping[str, Any]) -> list[Alarm]:
    """Commits failing: an alarm (listed first: nothing is being recorded)."""
    journal = status.get("journal") or {}
    return [_alarm("alarm", "journal", f"commits fail: {journal['error']}")] if journal.get("error") else []


def journal_warnings(status: Mapping[str, Any]) -> list[Alarm]:
    """Overflows, refused records, errors of commit hooks: warnings."""
    journal = status.get("journal") or {}
    out = []
    if journal.get("overflowed"):
        out.append(
            _alarm(
                "warning",
                "journal",
                f"{journal['overflowed']} records dropped on overflow (recorded as events)",
            )
        )
    if journal.get("rejected"):
        out.append(
            _alarm(
                "warning",
                "journal",
                f"{journal['rejected']} records refused (each kept as a rejected_record event)",
            )
        )
    if journal.get("hook_errors"):
        out.append(
            _alarm(
                "warning",
                "journal",
                f"{journal['hook_errors']} errors in commit hooks or subscribers (isolated)",
            )
        )
    return out


def instrument_alarms(status: Mapping[str, Any]) -> list[Alarm]:
    """Instruments not connected; lasting problems a driver reports (channels starved of poll
    time, addresses or nodes the server refuses); channels whose last reading is BAD; alarm
    channels (``alarm_*``, ``*_alarm``) reading non-zero."""
    out = []
    for name, inst in sorted(status["instruments"].items()):
        if inst["state"] != "connected":
            why = f": {inst['last_error']}" if inst.get("last_error") else ""
            out.append(_alarm("alarm", name, f"not connected ({inst['state']}){why}"))
        for kind, per_channel in sorted((inst.get("problems") or {}).items()):
            listed = ", ".join(f"{ch} ({detail})" for ch, detail in sorted(per_channel.items()))
            out.append(_alarm("warning", name, f"{kind}: {listed}"))
        for ch, v in sorted(inst.get("channels", {}).items()):
            if v["quality"] == "BAD" and inst["state"] == "connected":
                out.append(_alarm("warning", f"{name}/{ch}", f"BAD ({v['reason']})"))
            elif _is_alarm_channel(ch) and v["quality"] != "BAD" and v["value"]:
                out.append(_alarm("alarm", f"{name}/{ch}", "alarm active"))
    return out


def task_alarms(status: Mapping[str, Any]) -> list[Alarm]:
    """Long-lived tasks waiting to restart or failed (alarms), restarted ones (warnings)."""
    out = []
    for component, t in sorted((status.get("tasks") or {}).items()):
        if t["state"] in ("restarting", "failed"):
            what = "waiting to restart" if t["state"] == "restarting" else "failed; the daemon stops"
            out.append(_alarm("alarm", f"task {component}", f"{what}: {t['last_error']}"))
        elif t["failures"]:
            out.append(
                _alarm(
                    "warning",
                    f"task {component}",
                    f"failed {t['failures']} time(s), restarted; last: {t['last_error']}",
                )
            )
    return out


def sink_alarms(status: Mapping[str, Any]) -> list[Alarm]:
    """A sink's own alarm (an alarm) or its last error (a warning)."""
    out = []
    for sink, s in sorted((status.get("sinks") or {}).items()):
        if s.get("alarm"):
            out.append(_alarm("alarm", f"sink {sink}", str(s["alarm"])))
        elif s.get("last_error"):
            out.append(_alarm("warning", f"sink {sink}", str(s["last_error"])))
    return out


#: The rules :func:`compute_alarms` runs, in this order (the result is then sorted by severity,
#: stably, so within a severity this order is kept). Add a source of alarms here.
ALARM_RULES: list[AlarmRule] = [
    journal_error_alarms,
    instrument_alarms,
    journal_warnings,
    task_alarms,
    sink_alarms,
]


def compute_alarms(status: Mapping[str, Any], extra: Sequence[AlarmRule] = ()) -> list[Alarm]:
    """What needs a person's attention now, worst first (see :data:`ALARM_RULES`)."""
    out: list[Alarm] = []
    for rule in (*ALARM_RULES, *extra):
        out.extend(rule(status))
    # An alarm of the alarm engine (it has an id: journaled, acknowledgeable) stands for the
    # derived one about the same channel (an alarm channel). An instrument's state ("not
    # connected (backoff): why") stays beside its lost-link alarm ("inst/*"): the one says what
    # the link does now, the other is the alarm record to acknowledge.
    engine = {a["subject"] for a in out if a.get("id")}
    out = [a for a in out if a.get("id") or a["subject"] not in engine]
    order = {"alarm": 0, "warning": 1}
    out.sort(key=lambda a: order.get(a["severity"], 2))
    return out


# -- the board ----------------------------------------------------------------------------------


def instrument_status(sup: Supervisor) -> dict[str, Any]:
    """One supervisor's counters and state (what every display shows of an instrument)."""
    return {
        "kind": sup.config.kind,
        "state": sup.state.value,
        "readings": sup.readings,
        "reconnects": sup.reconnects,
        "parse_errors": sup.parse_errors,
        "last_error": sup.last_error,
        # What the driver found lasting (starved channels, refused addresses or nodes).
        "problems": sup.driver.problems(),
    }


#: Digits after the decimal point by unit, for channels whose config gives no ``decimals``.
UNIT_DECIMALS = {
    "degC": 1, "K": 1, "kPa": 1, "Pa": 1, "hPa": 1, "bar": 3, "mbar": 1, "mL/min": 1, "L/min": 2,
    "mL": 2, "uL": 0, "%": 1, "MBq": 1, "GBq": 2, "kBq": 0, "mCi": 2, "uCi": 1, "Ci": 3,
    "uSv/h": 2, "mSv/h": 3, "s": 0, "min": 1, "h": 2, "": 0, "counts": 0, "cps": 0, "cpm": 0,
}  # fmt: skip
#: For units not in :data:`UNIT_DECIMALS` (``Bq`` is shown scaled to kBq/MBq/GBq with these).
DEFAULT_DECIMALS = 2
#: Channels named like these with no unit are on/off flags (valves, alarms, doors, sequences)
#: when the map does not say (OPC UA nodes carry no type in the map).
FLAG_WORDS = ("valve", "alarm", "door", "running", "open", "closed", "enabled", "interlock", "flag")


def channel_display(cfg: Any) -> dict[str, dict[str, Any]]:
    """How the live page shows each channel the config declares: ``decimals`` (configured, else
    none, meaning the unit's default), ``kind`` (``flag`` for on/off values, ``state`` for a
    number with state names, ``number``), ``states`` (number to name), ``steps`` (discrete
    values, drawn as steps: states, flags, unscaled integer registers) and, for values reported
    only on change, ``stale_after_s = None`` (never stale by age alone)."""
    out: dict[str, dict[str, Any]] = {}
    for ch in getattr(cfg, "all_channels", None) or []:  # Modbus register map
        kind = "flag" if ch.data_type in ("bool", "bit") else "state" if ch.enum else "number"
        out[ch.name] = {"decimals": ch.decimals, "kind": kind, "states": dict(ch.enum or {})}
        # An unscaled integer register (a counter, a step number) changes in steps.
        if ch.data_type.startswith(("int", "uint")) and ch.scale == 1 and ch.offset == 0:
            out[ch.name]["steps"] = True
    subscribed = getattr(cfg, "mode", None) == "subscribe"
    for node in getattr(cfg, "nodes", None) or []:  # OPC UA node map
        states = {f"{v:g}": text for text, v in node.states.items()}
        kind = "state" if states else "number"
        out[node.channel] = {"decimals": node.decimals, "kind": kind, "states": states}
        if subscribed and not node.poll:
            # Reported on change only: an unchanged value is current while the subscription
            # lives (its watchdog, stale_after_s, drops the connection when the server is silent).
            out[node.channel]["stale_after_s"] = None
    for ch, digits in (getattr(cfg, "decimals", None) or {}).items():
        out.setdefault(ch, {"decimals": None, "kind": "number", "states": {}})["decimals"] = digits
    return out


def _display_of(
    channel: str, unit: str, declared: dict[str, Any] | None, stale_s: float | None
) -> dict[str, Any]:
    d = dict(declared or {"decimals": None, "kind": "number", "states": {}})
    d.setdefault("stale_after_s", stale_s)
    d["steps"] = d.get("steps", False) or d["kind"] != "number"
    if d["decimals"] is None:
        d["decimals"] = UNIT_DECIMALS.get(unit, DEFAULT_DECIMALS)
    if d["kind"] == "number" and not unit and any(w in channel.lower() for w in FLAG_WORDS):
        d["kind"] = "flag"
    return d


def stale_after_s(cfg: Any) -> float | None:
    """How old a channel's last value may be before the page greys it out: the instrument's
    ``stale_after_s`` when it has one, else three poll periods (at least 5 s). ``None`` for a
    radio-TLC scanner: its values are the result of the last scan, not a live measurement."""
    if getattr(cfg, "kind", None) == "rtlc-scanner":
        return None
    given = getattr(cfg, "stale_after_s", None)
    if isinstance(given, int | float):
        return float(given)
    return max(5.0, 3 * float(getattr(cfg, "period_s", 1.0)))


def channel_status(sup: Supervisor, now_ns: int) -> dict[str, Any]:
    """The last value of each channel of one supervisor, its age, and the instrument's details."""
    channels: dict[str, dict[str, Any]] = {}
    ages: list[float] = []
    declared = channel_display(sup.config)
    stale_s = stale_after_s(sup.config)
    for ch, r in sorted(sup.last_values.items()):
        age = round(max(0.0, (now_ns - r.acq_ns) / 1e9), 3)
        ages.append(age)
        text = (r.attrs or {}).get("text")
        channels[ch] = {
            "value": r.value,
            "unit": r.unit,
            "quality": Quality(r.quality).name,
            "reason": r.reason,
            "acq_ns": r.acq_ns,
            "age_s": age,
            # A state's name (a step number's), when the driver knows it.
            "text": text if isinstance(text, str) else None,
            **_display_of(ch, r.unit, declared.get(ch), stale_s),
        }
    return {
        "stale_after_s": stale_s,
        "description": sup.config.description,
        "connects": sup.connects,
        "timeouts": sup.timeouts,
        "last_value_age_s": min(ages) if ages else None,
        "channels": channels,
        "device": sup.device_info.as_dict() if sup.device_info else None,
    }


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
        config: Config,
        time_ns: Callable[[], int],
        journal: Journal,
        supervisors: Sequence[Supervisor],
        services: Mapping[str, object],
        tasks: TaskTree,
        stall_watch: StallWatch,
        ready: asyncio.Event,
        runs: ActiveRun | None = None,
    ) -> None:
        self.config = config
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
                "process_instrument": cfg.model.runs.trigger_instrument or None,
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
