"""The alarms' service: gives the engine (a stage of the pipeline) the journal, adds its alarms
to the status board, and reports its figures among the services' status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daq.alarms.engine import AlarmEngine
    from daq.context import ServiceContext


class AlarmService:
    """Life cycle only; the engine holds the states (:mod:`daq.alarms.engine`)."""

    name = "alarms"
    phase = 0

    def __init__(self, engine: AlarmEngine) -> None:
        self.engine = engine

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return self.engine.status()


def service(ctx: ServiceContext) -> AlarmService:
    """Built by :func:`daq.services.build_services` before any reading flows."""
    engine = ctx.alarms
    engine.attach(ctx.journal)
    ctx.status.add_alarm_source(engine.status_alarms)
    return AlarmService(engine)
