"""What no single Modbus reading shows: channels starved of poll time, addresses the server
refuses, units failing. Each is logged once when it starts and once when it ends, and listed
in status (:meth:`Health.problems`) meanwhile."""

from __future__ import annotations

from typing import Any

import structlog

from drivers.modbus.errors import EXCEPTION_NAMES, UnitFailed
from drivers.modbus.plan import PlannedRead, UnitPlan

log = structlog.get_logger("drivers.modbus")


class Health:
    """The lasting conditions of one instrument's polls."""

    def __init__(self, instrument: str, timeout_s: float):
        self.instrument = instrument
        self.timeout_s = timeout_s
        #: channel -> why the server refuses its address (exception 2, isolated by splitting).
        self.refused: dict[str, str] = {}
        #: channel -> polls in a row in which its read was not sent (the poll's time was spent).
        self.starved: dict[str, int] = {}

    def starve(self, unit: UnitPlan, reads: list[PlannedRead]) -> None:
        """Count polls in which these reads were not sent; log when a channel starts starving."""
        newly = []
        for read in reads:
            for channel in read.channels:
                count = self.starved.get(channel, 0)
                self.starved[channel] = count + 1
                if count == 0:
                    newly.append(channel)
        if newly:
            log.warning(
                "modbus channels starved: the poll's time was spent before their reads",
                instrument=self.instrument,
                unit_id=unit.unit_id,
                channels=newly,
                timeout_s=self.timeout_s,
            )

    def fed(
        self, read: PlannedRead, back: list[str], again: list[str], *, keep_refused: bool = False
    ) -> None:
        """The read was answered: its channels are no longer starved (nor refused); those
        that were go to ``back`` and ``again``, logged once at the end of the poll."""
        back.extend(c for c in read.channels if self.starved.pop(c, 0))
        if not keep_refused:
            again.extend(c for c in read.channels if self.refused.pop(c, None) is not None)

    def refuse(self, unit: UnitPlan, read: PlannedRead, failure: UnitFailed) -> None:
        """Remember a channel whose own address the server refuses; log it once."""
        channel = read.channels[0]
        if channel in self.refused:
            return
        self.refused[channel] = (
            f"unit {unit.unit_id} {read.table} {read.address} x{read.count}: "
            f"exception {failure.code} ({EXCEPTION_NAMES.get(failure.code or 0, 'unknown exception')})"
        )
        log.warning(
            "modbus address refused; the rest of its block is read without it",
            instrument=self.instrument,
            unit_id=unit.unit_id,
            channel=channel,
            table=read.table,
            address=read.address,
            exception_code=failure.code,
        )

    def unit_state(self, unit: UnitPlan, down: bool, failure: UnitFailed | None) -> None:
        unit.error = failure.message if down and failure is not None else None
        if down == unit.down:
            return
        unit.down = down
        if down and failure is not None:
            log.warning(
                "modbus unit failing", instrument=self.instrument, unit_id=unit.unit_id, error=failure.message
            )
        else:
            log.info("modbus unit answering again", instrument=self.instrument, unit_id=unit.unit_id)

    def problems(self, plan: list[UnitPlan]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if self.starved:
            out["starved"] = dict(self.starved)
        if self.refused:
            out["refused_addresses"] = dict(self.refused)
        failing = {str(u.unit_id): u.error or "failing" for u in plan if u.down}
        if failing:
            out["units_failing"] = failing
        return out
