"""Alarm points: one limit of one channel with the ISA-18.2 state of its alarm (see
:mod:`daq.alarms.engine`), the conditions (configured ``HH``/``H``/``L``/``LL``, built-in ``ON``
and ``COMM``), an alarm's JSON view and the transition the live alarm stream sends.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from daq.alarms.settings import ChannelLimits
from daq.errors import DaqError
from daq.model import Reason

NORMAL = "normal"
UNACK = "unacknowledged active"
ACKED = "acknowledged active"
RTN_UNACK = "returned to normal unacknowledged"
STATES = (NORMAL, UNACK, ACKED, RTN_UNACK)
ACTIVE = (UNACK, ACKED)

#: Conditions, their config key and whether the value must be above (True) or below the setpoint.
CONDITIONS: dict[str, tuple[str, bool]] = {
    "HH": ("high_high", True),
    "H": ("high", True),
    "L": ("low", False),
    "LL": ("low_low", False),
}


#: The built-in rules' conditions and the gap reasons that raise ``COMM``.
ON, COMM = "ON", "COMM"
COMM_CHANNEL = "*"
COMM_REASONS = frozenset({Reason.DISCONNECTED, Reason.CONNECT_FAILED, Reason.TIMEOUT})


def builtin_limits(instrument: str, channel: str, message: str) -> ChannelLimits:
    # Built without validation: ``*`` is not a channel name a config may use, which is the point.
    return ChannelLimits.model_construct(
        instrument=instrument, channel=channel, high_high=None, high=0.0, low=None, low_low=None,
        deadband=0.0, on_delay_s=0.0, off_delay_s=0.0, severity="high", severity_extreme="critical",
        message=message,
    )  # fmt: skip


class AlarmError(DaqError):
    """An alarm operation refused (no such alarm, nothing to acknowledge)."""


@dataclasses.dataclass
class AlarmPoint:
    """One limit of one channel and the state of its alarm."""

    instrument: str
    channel: str
    condition: str
    setpoint: float
    above: bool
    limits: ChannelLimits
    state: str = NORMAL
    alarm_id: str | None = None
    #: mono_ns since when the condition has held (not active) or has been gone (active).
    pending_ns: int | None = None
    value: float | None = None
    unit: str = ""
    raised_ns: int | None = None
    acked_ns: int | None = None
    acked_by: str | None = None
    comment: str | None = None
    cleared_ns: int | None = None
    run_id: str | None = None

    @property
    def severity(self) -> str:
        return self.limits.severity_extreme if self.condition in ("HH", "LL") else self.limits.severity

    def view(self) -> dict[str, Any]:
        """The JSON shape of one alarm (docs/local-api.md)."""
        return {
            "id": self.alarm_id,
            "instrument": self.instrument,
            "channel": self.channel,
            "condition": self.condition,
            "severity": self.severity,
            "state": self.state,
            "active": self.state in ACTIVE,
            "acknowledged": self.state in (ACKED, NORMAL),
            "value": self.value,
            "unit": self.unit,
            "setpoint": self.setpoint,
            "message": self.limits.message or default_message(self),
            "raised_ns": self.raised_ns,
            "acked_ns": self.acked_ns,
            "acked_by": self.acked_by,
            "comment": self.comment,
            "cleared_ns": self.cleared_ns,
            "run_id": self.run_id,
        }


def default_message(p: AlarmPoint) -> str:
    if p.condition == ON:
        return f"{p.instrument}/{p.channel} alarm active"
    if p.condition == COMM:
        return f"{p.instrument} not communicating"
    word = {"HH": "high-high", "H": "high", "L": "low", "LL": "low-low"}[p.condition]
    where = "above" if p.above else "below"
    return f"{p.instrument}/{p.channel} {word} ({where} {p.setpoint:g} {p.unit})".replace(" )", ")")


def transition(p: AlarmPoint, *, kind: str, ts_ns: int, actor: str, comment: str | None) -> dict[str, Any]:
    """One transition in the live alarm stream's shape (``"type": "alarm"``): the alarm's
    view, what happened (``kind``: raised, acknowledged, cleared; ``active`` for an alarm
    already there when a client connects), when and by whom. The stream's snapshot is made of
    these; its transitions are read from their ``alarm_events`` rows
    (:func:`daq.alarms.store.transition_of`: the same keys and the row's ``event_id``)."""
    return {"type": "alarm", "kind": kind, "ts_ns": ts_ns, "actor": actor, **p.view(), "comment": comment}


def alarm_id_for(p: AlarmPoint, ts_ns: int, mono_ns: int) -> str:
    seed = f"{p.instrument}/{p.channel}/{p.condition}/{ts_ns}/{mono_ns}".encode()
    return hashlib.sha256(seed).hexdigest()[:12]
