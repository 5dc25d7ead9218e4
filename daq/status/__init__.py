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

from daq.status.board import STALLED_COMMIT_S, ActiveRun, StatusBoard, extract_sinks
from daq.status.channels import channel_display, channel_status, instrument_status, stale_after_s
from daq.status.rules import ALARM_RULES, Alarm, AlarmRule, compute_alarms

__all__ = [
    "ALARM_RULES",
    "STALLED_COMMIT_S",
    "ActiveRun",
    "Alarm",
    "AlarmRule",
    "StatusBoard",
    "channel_display",
    "channel_status",
    "compute_alarms",
    "extract_sinks",
    "instrument_status",
    "stale_after_s",
]
