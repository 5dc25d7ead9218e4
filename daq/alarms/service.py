"""The alarms' service: gives the engine (a stage of the pipeline) the journal, adds its alarms
to the status board, and reports its figures among the services' status."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daq.logs import get_logger

if TYPE_CHECKING:
    from daq.alarms.engine import AlarmEngine
    from daq.context import ServiceContext


log = get_logger("daq.alarms")


def left_open(path: Path) -> list[dict[str, Any]]:
    """The alarms the journal holds that are not in normal (read before any reading flows)."""
    from daq.alarms.store import fold, open_rows
    from daq.journal.journal import connect

    with contextlib.suppress(sqlite3.Error):
        conn = connect(path, read_only=True)
        try:
            return [a for a in fold(open_rows(conn)) if a["state"] != "normal"]
        finally:
            conn.close()
    return []


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
    if engine.points:
        restored = engine.restore(left_open(ctx.journal.path))
        if restored:
            log.info("alarms restored from the journal", alarms=restored)
    ctx.status.add_alarm_source(engine.status_alarms)
    return AlarmService(engine)
