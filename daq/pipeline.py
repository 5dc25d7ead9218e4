"""The reading pipeline: every stage a reading passes between its driver and the journal, in order.

A :class:`~daq.model.Reading` is frozen. Each stage takes one reading and returns one: the same
object when it has nothing to change, a new one (``dataclasses.replace``) otherwise. No stage
changes a reading another part of the daemon still holds, and no stage reaches back into
another's result. The supervisor passes each reading its driver made through the pipeline and
hands the result to the journal, which gives it its sequence number.

The stages and their order are declared once, in :func:`reading_pipeline`; the composition root
(:class:`daq.daemon.Daemon`) builds it with the parts that own each stage:

1. ``canonicalise``: values the journal can store and hash bit for bit (:mod:`daq.canonical`).
2. ``runs``: the run trigger sees the driver's own value and quality, before any flag the
   daemon adds, opens or closes the run, and every reading is attributed to its run. This is
   the only place a reading's ``run_id`` is set (:class:`daq.runs.attribution.RunAttribution`).
3. ``equilibrium``: the Ac-225 equilibrium gate (:mod:`daq.equilibrium`). It comes after
   ``runs`` because a t0 recorded for a run applies to the readings attributed to that run.
4. ``clock``: the daemon's quality flag for an unsynchronised clock
   (:class:`daq.runs.clock.ClockFlag`); after the stages that change readings, so it never
   hides a value from them.
5. ``alarms``: configured limits (:class:`daq.alarms.engine.AlarmEngine`). Last: it sees the
   reading as it will be journaled, with its run; it never changes a reading and never raises.

Adding a stage is one line in :func:`reading_pipeline`, at its place; a test or a diagnostic
can also :meth:`Pipeline.insert` one at a named position (``pipeline.names`` shows the order).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterable

from daq import canonical
from daq.clock import Clock
from daq.model import Reading

#: A stage: takes a reading, returns the reading to pass on (the same one, or a new one).
Stage = Callable[[Reading], Reading]


def canonicalise(clock: Clock) -> Stage:
    """The head of the pipeline: the reading in the form the journal stores and hashes bit for
    bit (:func:`daq.canonical.reading`), before any stage looks at it.

    So every stage sees what will be journaled: a NaN or infinite value is already BAD
    (``non_finite_value``) when the run trigger sees it, a timestamp out of range is already
    "no timestamp". The journal writer applies the same rules again before hashing (they leave
    a canonical reading as it is), for records that do not come through this pipeline.
    """

    def stage(reading: Reading) -> Reading:
        # The usual cases, without a clock read: marked already, or canonical as made.
        if reading.canonical_checked or canonical.checked(reading):
            return reading
        return canonical.reading(reading, now_ns=clock.time_ns(), now_mono_ns=clock.monotonic_ns())

    return stage


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One named stage of a pipeline."""

    name: str
    stage: Stage


class Pipeline:
    """An ordered list of named stages; calling it passes a reading through all of them."""

    def __init__(self, steps: Iterable[tuple[str, Stage]]):
        self._steps: list[Step] = []
        # The stages alone, in order, as what __call__ calls for every reading (_callable).
        self._stages: tuple[Stage, ...] = ()
        for name, stage in steps:
            self.insert(name, stage)

    @property
    def names(self) -> tuple[str, ...]:
        """The stages' names, in the order a reading passes them."""
        return tuple(s.name for s in self._steps)

    def insert(self, name: str, stage: Stage, *, before: str | None = None, after: str | None = None) -> None:
        """Add ``stage`` as ``name``: before or after a named stage, or (neither given) last."""
        if name in self.names:
            raise ValueError(f"the pipeline already has a stage named {name!r}")
        if before is not None and after is not None:
            raise ValueError("give before or after, not both")
        if before is None and after is None:
            self._steps.append(Step(name, stage))
            self._stages = tuple(_callable(s.stage) for s in self._steps)
            return
        anchor = before if before is not None else after
        assert anchor is not None
        if anchor not in self.names:
            raise ValueError(f"no stage named {anchor!r}; stages: {', '.join(self.names)}")
        index = self.names.index(anchor) + (0 if before is not None else 1)
        self._steps.insert(index, Step(name, stage))
        self._stages = tuple(_callable(s.stage) for s in self._steps)

    def __call__(self, reading: Reading) -> Reading:
        for stage in self._stages:
            reading = stage(reading)
        return reading

    def __repr__(self) -> str:
        return f"Pipeline({' -> '.join(self.names)})"


def _callable(stage: Stage) -> Stage:
    """``stage`` as the cheapest thing to call: a stage object's ``__call__`` bound once.

    Calling an instance goes through its type's call slot and a method lookup on every call:
    about 250 ns, against 100 ns for the bound method (measured here), for every stage of every
    reading."""
    call = next((vars(c)["__call__"] for c in type(stage).__mro__ if "__call__" in vars(c)), None)
    if isinstance(call, types.FunctionType):
        return types.MethodType(call, stage)
    return stage


def reading_pipeline(
    *, clock: Clock, runs: Stage, equilibrium: Stage, clock_flag: Stage, alarms: Stage | None = None
) -> Pipeline:
    """The daemon's reading pipeline: its stages, in order (see the module docstring for why)."""
    return Pipeline(
        [
            ("canonicalise", canonicalise(clock)),
            ("runs", runs),
            ("equilibrium", equilibrium),
            ("clock", clock_flag),
            ("alarms", alarms if alarms is not None else _unchanged),
        ]
    )


def _unchanged(reading: Reading) -> Reading:
    return reading
