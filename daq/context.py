"""What the composition root (:mod:`daq.services`) hands the daemon's services.

A service never receives the daemon. Its factory gets a :class:`ServiceContext` (the parts
every service may need: the config, the clock, the open journal, the task tree, the
supervisors as a read-only sequence, the pipeline's stages the services drive, and the status
board) and passes on to the service only what it uses. A service that needs another service
is given that one's narrow interface by the composition root: the API gets :class:`RunControl`
(the run operations, nothing of the run manager's life cycle), the run manager gets the clock
monitor's sync state as a callable.

This module is a leaf of the core: it imports types only, and no feature imports the daemon.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from daq.alarms.engine import AlarmEngine
    from daq.clock import Clock
    from daq.configfile.model import Config
    from daq.equilibrium import EquilibriumGate
    from daq.journal.journal import Journal
    from daq.runs.attribution import RunAttribution
    from daq.runs.clock import ClockFlag
    from daq.status import StatusBoard
    from daq.supervision import TaskTree
    from daq.supervisor import Supervisor


class Service(Protocol):
    """A part of the daemon with a life cycle (forwarder, API, run manager, notifier...).

    ``start()`` and ``stop()`` are the life cycle only and take no arguments (a forwarder's
    ``stop`` may take the time left for its final drain); the daemon calls them, nothing else.
    """

    name: str
    #: 0: started before the supervisors; 1: after them; 2: last (readiness).
    phase: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class RunControl(Protocol):
    """The run operations (the API's ``/api/runs`` routes, ``daq runs``): distinct from any
    service's life cycle, so no request can reach ``start``/``stop`` of a service."""

    def active(self) -> dict[str, Any] | None: ...

    def list_runs(self) -> list[dict[str, Any]]: ...

    def get(self, run_id: str) -> dict[str, Any] | None: ...

    async def open_run(
        self,
        *,
        batch: str,
        product: str,
        nuclide: str,
        operator: str,
        actor: str,
        method: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]: ...

    async def close_run(self, *, actor: str, reason: str | None = None) -> dict[str, Any]: ...

    async def annotate(
        self, *, text: str, actor: str, reason: str, instrument: str | None = None
    ) -> dict[str, Any]: ...

    async def mark_t0(
        self, *, actor: str, reason: str, instrument: str | None = None, ts_ns: int | None = None
    ) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class ServiceContext:
    """The parts the composition root gives every service factory (see the module docstring)."""

    config: Config
    clock: Clock
    #: Seeds each part's own generator (jitter), so a seeded daemon is reproducible.
    rng: random.Random
    #: Open (and recovered) before any service is built.
    journal: Journal
    #: Every long-lived task of a service runs under this tree (:mod:`daq.supervision`).
    tasks: TaskTree
    #: One per enabled instrument, built (not yet running) before the services.
    supervisors: Sequence[Supervisor]
    #: The pipeline stages services drive: runs open and close through ``run_attribution``,
    #: t0 goes to ``equilibrium``, the clock monitor keeps ``clock_flag`` informed.
    run_attribution: RunAttribution
    equilibrium: EquilibriumGate
    clock_flag: ClockFlag
    #: The alarm stage: its service gives it the journal and serves its states.
    alarms: AlarmEngine
    #: Where status is assembled (:mod:`daq.status`).
    status: StatusBoard


class AlarmControl(Protocol):
    """What the API and the displays use of the alarm engine (:mod:`daq.alarms.engine`): the
    alarms' views and the acknowledgement, nothing of the pipeline stage."""

    def listing(self) -> dict[str, Any]: ...

    def counts(self) -> dict[str, int]: ...

    def unacknowledged(self) -> int: ...

    def acknowledge(self, alarm_id: str, *, actor: str, comment: str) -> dict[str, Any]: ...

    def snapshot(self) -> list[dict[str, Any]]: ...
