"""The alarm engine: a stage of the reading pipeline that evaluates configured limits and keeps
each alarm's ISA-18.2 state.

States of an alarm point (one limit of one channel): ``normal``; ``unacknowledged active``
(raised, nobody has acknowledged it); ``acknowledged active``; ``returned to normal
unacknowledged`` (the value came back before anyone acknowledged). Raising, acknowledging and
clearing are each one row of the chained ``alarm_events`` table (``daq verify`` covers it); an
acknowledgement is also an audit entry with the user and the comment.

Timing uses the readings' monotonic time (``mono_ns``), so on- and off-delays follow the
injected clock and are immune to wall-clock steps. A limit is evaluated on GOOD and UNCERTAIN
readings with a value; a BAD reading (a gap) holds the alarm's state and resets any pending
delay.

Beside the configured limits, two built-in rules make alarms of the same kind (journaled,
acknowledged, cleared): a channel named ``alarm_*`` or ``*_alarm`` reading non-zero (condition
``ON``, unless a limit is configured for it), and an instrument that stops communicating
(condition ``COMM`` on channel ``*``: raised by the gap record of a disconnection, a failed
connection or a timeout, cleared by the instrument's next reading that is not BAD).

The stage never changes a reading and never raises into acquisition: an error while
evaluating is logged and counted (``errors`` in :meth:`AlarmEngine.status`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog

from daq.alarms.points import (
    ACKED,
    ACTIVE,
    COMM,
    COMM_CHANNEL,
    COMM_REASONS,
    CONDITIONS,
    NORMAL,
    ON,
    RTN_UNACK,
    UNACK,
    AlarmError,
    AlarmPoint,
    alarm_id_for,
    builtin_limits,
    transition,
)
from daq.alarms.settings import SEVERITIES, AlarmsSection
from daq.alarms.store import DETAIL_KEYS, TABLE
from daq.journal.journal import dumps
from daq.model import BAD, Reading, is_alarm_channel

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.journal.journal import Journal

log = structlog.get_logger(__name__)


class AlarmEngine:
    """The ``alarms`` stage of the reading pipeline and the alarms' states.

    Built with the config before the journal is open; :meth:`attach` gives it the journal
    (the composition root does, before any reading flows). Transitions before that are kept
    in the states but not journaled.
    """

    def __init__(self, settings: AlarmsSection, *, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.journal: Journal | None = None
        self.points: dict[tuple[str, str], list[AlarmPoint]] = {}
        #: Channels seen that have no alarm point (no limits, not an alarm channel).
        self._without_points: set[tuple[str, str]] = set()
        #: The built-in ``COMM`` alarm point of each instrument that has lost its link once.
        self.comm: dict[str, AlarmPoint] = {}
        for lim in settings.limits:
            pts = []
            for cond, (key, above) in CONDITIONS.items():
                sp = getattr(lim, key)
                if sp is not None:
                    pts.append(AlarmPoint(lim.instrument, lim.channel, cond, float(sp), above, lim))
            self.points[(lim.instrument, lim.channel)] = pts
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=settings.recent)
        self.errors = 0

    def _groups(self) -> list[list[AlarmPoint]]:
        """Every alarm point: the configured limits', the ``ON`` points, the ``COMM`` points."""
        return [*self.points.values(), list(self.comm.values())]

    def attach(self, journal: Journal) -> None:
        self.journal = journal

    def restore(self, alarms: Iterable[dict[str, Any]]) -> int:
        """Take back the alarms the journal left not in normal (folded by
        :func:`daq.alarms.store.fold`) when the daemon stopped, so an alarm active at a restart
        is still that alarm: acknowledged with its id, cleared by the readings that follow.
        Alarms of limits no longer configured stay as the journal has them. Returns how many."""
        restored = 0
        for a in alarms:
            if a.get("state") in (None, NORMAL):
                continue
            if a["condition"] == COMM:
                self._comm_point(a["instrument"])
            elif a["condition"] == ON and (a["instrument"], a["channel"]) not in self.points:
                self.points[(a["instrument"], a["channel"])] = [self._on_point(a["instrument"], a["channel"])]
            candidates = self.points.get((a["instrument"], a["channel"]), [])
            if a["condition"] == COMM:
                candidates = [self.comm[a["instrument"]]]
            for p in candidates:
                if p.condition == a["condition"] and p.state == NORMAL:
                    p.state, p.alarm_id, p.run_id = a["state"], a["id"], a["run_id"]
                    p.raised_ns, p.acked_ns, p.acked_by = a["raised_ns"], a["acked_ns"], a["acked_by"]
                    p.comment, p.cleared_ns, p.value = a["comment"], a["cleared_ns"], a["value"]
                    p.unit = a.get("unit") or ""
                    restored += 1
        return restored

    # -- the pipeline stage ------------------------------------------------------------------

    def __call__(self, reading: Reading) -> Reading:
        key = (reading.instrument, reading.channel)
        try:
            points = self.points.get(key)
            if points is None and key not in self._without_points:
                if is_alarm_channel(reading.channel):
                    points = self.points[key] = [self._on_point(*key)]
                else:
                    # Most channels have no alarm: remember that rather than ask per reading.
                    self._without_points.add(key)
            if points:
                self._evaluate(points, reading)
            if reading.quality is BAD or self.comm:
                self._communication(reading)
        except Exception as exc:  # never into acquisition: the reading goes on regardless
            self.errors += 1
            log.error("alarm evaluation failed", instrument=reading.instrument, channel=reading.channel,
                      error=repr(exc))  # fmt: skip
        return reading

    def _on_point(self, instrument: str, channel: str) -> AlarmPoint:
        limits = builtin_limits(instrument, channel, "")
        return AlarmPoint(instrument, channel, ON, 0.0, True, limits)

    def _comm_point(self, instrument: str) -> AlarmPoint:
        p = self.comm.get(instrument)
        if p is None:
            p = self.comm[instrument] = AlarmPoint(
                instrument, COMM_CHANNEL, COMM, 0.0, True, builtin_limits(instrument, COMM_CHANNEL, "")
            )
        return p

    def _communication(self, r: Reading) -> None:
        """The built-in ``COMM`` rule: raised by the gap of a lost link, cleared by data again."""
        if r.quality is BAD:
            if r.reason in COMM_REASONS:
                p = self._comm_point(r.instrument)
                if p.state not in ACTIVE:
                    p.value, p.unit = None, ""
                    self._raise(p, r)
            return
        lost = self.comm.get(r.instrument)
        if lost is not None and lost.state in ACTIVE:
            self._clear(lost, r)

    def _evaluate(self, points: Iterable[AlarmPoint], r: Reading) -> None:
        value = r.value
        usable = value is not None and r.quality is not BAD
        for p in points:
            if not usable:
                p.pending_ns = None
                continue
            assert value is not None
            p.value = float(value)
            p.unit = r.unit
            db = p.limits.deadband
            active = p.state in ACTIVE
            if p.above:
                beyond = value > (p.setpoint - db if active else p.setpoint)
            else:
                beyond = value < (p.setpoint + db if active else p.setpoint)
            if active == beyond:
                # Nothing pending: the condition agrees with the state.
                p.pending_ns = None
                continue
            if p.pending_ns is None:
                p.pending_ns = r.mono_ns
            delay = p.limits.off_delay_s if active else p.limits.on_delay_s
            if r.mono_ns - p.pending_ns < delay * 1e9:
                continue
            p.pending_ns = None
            if active:
                self._clear(p, r)
            else:
                self._raise(p, r)

    # -- transitions -------------------------------------------------------------------------

    def _raise(self, p: AlarmPoint, r: Reading) -> None:
        if p.state == RTN_UNACK:
            self._finish(p)
        now = self.clock.time_ns()
        p.alarm_id = alarm_id_for(p, now, r.mono_ns)
        p.state = UNACK
        p.raised_ns = now
        p.acked_ns = p.acked_by = p.comment = p.cleared_ns = None
        p.run_id = r.run_id
        self._journal("raised", p, now, actor="daemon", comment=None)
        log.warning("alarm raised", alarm=p.alarm_id, instrument=p.instrument, channel=p.channel,
                    condition=p.condition, severity=p.severity, value=p.value)  # fmt: skip

    def _clear(self, p: AlarmPoint, r: Reading) -> None:
        p.cleared_ns = now = self.clock.time_ns()
        p.state = NORMAL if p.state == ACKED else RTN_UNACK
        self._journal("cleared", p, now, actor="daemon", comment=None)
        log.info("alarm cleared", alarm=p.alarm_id, instrument=p.instrument, channel=p.channel, state=p.state)
        if p.state == NORMAL:
            self._finish(p)

    def _finish(self, p: AlarmPoint) -> None:
        self.recent.appendleft(p.view())

    def acknowledge(self, alarm_id: str, *, actor: str, comment: str) -> dict[str, Any]:
        """Acknowledge the alarm ``alarm_id`` (an active one, or one returned to normal and not
        yet acknowledged): journaled and audited with ``actor`` and ``comment``."""
        if not actor.strip():
            raise AlarmError("name who acknowledges the alarm")
        if not comment.strip():
            raise AlarmError("an acknowledgement needs a comment")
        p = self.find(alarm_id)
        if p is None:
            raise AlarmError(f"no alarm {alarm_id!r} waits for acknowledgement")
        p.acked_ns = now = self.clock.time_ns()
        p.acked_by = actor
        p.comment = comment
        p.state = ACKED if p.state == UNACK else NORMAL
        self._journal("acknowledged", p, now, actor=actor, comment=comment)
        if self.journal is not None:
            self.journal.audit(
                "alarm_acknowledged",
                actor=actor,
                subject=p.alarm_id,
                detail={"comment": comment, "instrument": p.instrument, "channel": p.channel,
                        "condition": p.condition, "severity": p.severity, "state": p.state},
            )  # fmt: skip
        view = p.view()
        if p.state == NORMAL:
            self._finish(p)
        return view

    def find(self, alarm_id: str) -> AlarmPoint | None:
        """The point whose current alarm is ``alarm_id`` and waits for acknowledgement."""
        for pts in self._groups():
            for p in pts:
                if p.alarm_id == alarm_id and p.state in (UNACK, RTN_UNACK):
                    return p
        return None

    def _journal(self, kind: str, p: AlarmPoint, now_ns: int, *, actor: str, comment: str | None) -> None:
        """One ``alarm_events`` row: the transition ``kind`` at ``now_ns`` and, in ``detail``,
        the alarm as it stands after it (:func:`daq.alarms.store.transition_of` reads the live
        stream's transition back from the row alone)."""
        view = p.view()
        detail = {k: view[k] for k in DETAIL_KEYS}
        row = {
            "alarm_id": p.alarm_id, "kind": kind, "ts_ns": now_ns, "mono_ns": self.clock.monotonic_ns(),
            "instrument": p.instrument, "channel": p.channel, "condition": p.condition,
            "severity": p.severity, "state": p.state, "actor": actor, "comment": comment,
            "run_id": p.run_id,
            "detail": dumps(detail),
        }  # fmt: skip
        if self.journal is not None:
            self.journal.record(TABLE, row)

    # -- views -------------------------------------------------------------------------------

    def active(self) -> list[dict[str, Any]]:
        """Alarms not in ``normal`` (active, or returned and unacknowledged), worst first."""
        out = [p.view() for pts in self._groups() for p in pts if p.state != NORMAL]
        out.sort(key=lambda a: (SEVERITIES.index(a["severity"]), a["raised_ns"] or 0))
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        """The alarms not in normal, each as a transition of kind ``active`` (a stream's start)."""
        out = []
        for pts in self._groups():
            for p in pts:
                if p.state != NORMAL:
                    ts = p.raised_ns or 0
                    out.append(transition(p, kind="active", ts_ns=ts, actor="daemon", comment=p.comment))
        out.sort(key=lambda t: t["ts_ns"])
        return out

    def listing(self) -> dict[str, Any]:
        """``GET /api/alarms``: the alarms not in normal and the recently finished ones."""
        return {"active": self.active(), "recent": list(self.recent)}

    def counts(self) -> dict[str, int]:
        """Active alarms (``unacknowledged active`` or ``acknowledged active``) by severity."""
        out = dict.fromkeys(SEVERITIES, 0)
        for pts in self._groups():
            for p in pts:
                if p.state in ACTIVE:
                    out[p.severity] += 1
        return out

    def unacknowledged(self) -> int:
        return sum(1 for pts in self._groups() for p in pts if p.state == UNACK)

    def status(self) -> dict[str, Any]:
        return {
            "configured": sum(len(p) for p in self.points.values()),
            "active": self.counts(),
            "unacknowledged": self.unacknowledged(),
            "errors": self.errors,
        }

    def status_alarms(self, status: Any) -> list[dict[str, Any]]:
        """An alarm source for :class:`daq.status.StatusBoard`: each alarm not in normal.

        Each entry carries when it was raised, its value and who acknowledged it, so a page that
        draws the banner from one status answer shows it complete even before ``/api/alarms``
        has been read again.
        """
        out = []
        for a in self.active():
            out.append(
                {
                    "severity": "alarm" if a["severity"] in ("critical", "high") else "warning",
                    "subject": f"{a['instrument']}/{a['channel']}",
                    "message": f"{a['message']} [{a['state']}]",
                    "id": a["id"],
                    "state": a["state"],
                    "priority": a["severity"],
                    "raised_ns": a["raised_ns"],
                    "value": a["value"],
                    "unit": a["unit"],
                    "acknowledged": a["acknowledged"],
                    "acked_by": a["acked_by"],
                }
            )
        return out
