"""Run attribution: the ``runs`` stage of the reading pipeline (:mod:`daq.pipeline`).

Which run a reading belongs to is decided here and nowhere else: drivers never set ``run_id``
(whatever a reading arrives with is replaced). A reading belongs to the run open when it
passes this stage, unless its instrument is *pinned* to a run (a radio-TLC scan started for a
given run keeps its readings in that run).

Before attributing, the stage shows the reading to the run trigger (set by the run manager
while it runs). The stage sits ahead of every stage that adds a quality flag, so the trigger
sees the instrument's own value and quality: a flag the daemon adds (an unsynchronised clock,
the Ac-225 gate) never hides an edge. The trigger may open or close the run; the reading that
opened a run belongs to it, the reading that closed one does not.
"""

from __future__ import annotations

from collections.abc import Callable

from daq.model import Reading


class RunAttribution:
    """The ``runs`` stage. ``run_id`` is the open run (the run manager sets it)."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        #: Called with every reading before it is attributed (the run manager's trigger).
        self.trigger: Callable[[Reading], None] | None = None
        self._pinned: dict[str, str] = {}

    def pin(self, instrument: str, run_id: str) -> None:
        """Attribute ``instrument``'s readings to ``run_id`` until :meth:`unpin`."""
        self._pinned[instrument] = run_id

    def unpin(self, instrument: str) -> None:
        self._pinned.pop(instrument, None)

    def run_for(self, instrument: str) -> str | None:
        """The run a reading of ``instrument`` passing now is attributed to."""
        return self._pinned.get(instrument, self.run_id)

    def __call__(self, reading: Reading) -> Reading:
        if self.trigger is not None:
            self.trigger(reading)
        run_id = self.run_for(reading.instrument)
        if reading.run_id == run_id:
            return reading
        return reading.with_run_id(run_id)
