"""Alarms derived from the assembled status: each rule of :data:`ALARM_RULES` takes the status
dict and returns what needs a person's attention (commits failing, journal warnings, instruments
not connected, BAD channels, failing tasks, sink errors); :func:`compute_alarms` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from daq.model import is_alarm_channel

Alarm = dict[str, Any]
#: One source of derived alarms: the assembled status in, the alarms it finds out.
AlarmRule = Callable[[Mapping[str, Any]], list[Alarm]]


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
            elif is_alarm_channel(ch) and v["quality"] != "BAD" and v["value"]:
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
