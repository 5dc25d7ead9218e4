"""The run trigger: a run opens when the configured channel rises through its threshold and
closes when it falls (``[runs] trigger_instrument``, ``trigger_channel``, ``trigger_threshold``).

:class:`EdgeTrigger` only finds the edges, from GOOD readings of that channel as the driver
made them (the ``runs`` stage calls it ahead of every stage that adds a quality flag); the run
manager opens and closes the run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from daq.model import GOOD, Reading
from daq.runs.settings import RunsSection


@dataclasses.dataclass(frozen=True)
class Edge:
    """A rising (``rising``) or falling edge, with what the run records about it."""

    rising: bool
    actor: str
    reason: str
    #: The batch name of a run a rising edge opens (the prefix and the reading's UTC time).
    batch: str


class EdgeTrigger:
    """Edges of the trigger channel (see the module docstring)."""

    def __init__(self, settings: RunsSection) -> None:
        self.settings = settings
        self.actor = f"trigger:{settings.trigger_instrument}/{settings.trigger_channel}"
        self._high: bool | None = None

    def edge(self, reading: Reading) -> Edge | None:
        """The edge this reading makes, or ``None`` (another channel, not GOOD, no change)."""
        s = self.settings
        if reading.instrument != s.trigger_instrument or reading.channel != s.trigger_channel:
            return None
        if reading.quality is not GOOD or reading.value is None:
            return None
        high = reading.value >= s.trigger_threshold
        was, self._high = self._high, high
        if high == was:
            return None
        stamp = dt.datetime.fromtimestamp(reading.acq_ns / 1e9, tz=dt.UTC)
        verb = "rose" if high else "fell"
        return Edge(
            rising=high,
            actor=self.actor,
            reason=f"{s.trigger_channel} {verb} to {reading.value:g}",
            batch=f"{s.batch_prefix}-{stamp:%Y%m%dT%H%M%SZ}",
        )
