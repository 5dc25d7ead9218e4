"""The daemon: journal first, then one supervisor per instrument, then the services.

Start order: open (and recover) the journal; audit the start and the config; start the
phase-0 services (those readings depend on, such as runs); start the supervisors; start the
phase-1 services (forwarders, the local API) and phase-2 ones (readiness notification).
Stop order (SIGTERM, SIGINT, or ``duration_s``): stop the services in reverse, cancel the
supervisors, journal their stop, commit everything pending, close the journal; each step
bounded by what is left of ``daemon.shutdown_timeout_s`` (:mod:`daq.shutdown`). Writes to
instruments go through :mod:`daq.writes` (audited, refused unless enabled).

A *service* (:class:`daq.context.Service`) is anything with ``name``, ``phase``, ``async
start()`` and ``async stop()`` (and optionally ``status() -> dict``). The daemon builds what
every service may need (the journal, the supervisors, the pipeline's stages, the status board)
into a :class:`daq.context.ServiceContext`; :func:`daq.services.build_services`, the
composition root, builds the services from it. No service is given the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from daq import __version__
from daq.alarms.engine import AlarmEngine
from daq.clock import Clock, SystemClock
from daq.configfile.model import Config
from daq.context import Service, ServiceContext
from daq.equilibrium import EquilibriumGate
from daq.errors import DaqError
from daq.journal.journal import Journal
from daq.logs import get_logger
from daq.model import EventKind, InstrumentEvent
from daq.pipeline import Pipeline, reading_pipeline
from daq.runs.attribution import RunAttribution
from daq.runs.clock import ClockFlag
from daq.services import build_services
from daq.shutdown import STEP_CAP_S, HardExit, ShutdownSteps
from daq.status import StatusBoard
from daq.supervision import (
    EXIT_TASK_FAILED,
    StallWatch,
    TaskRecord,
    TaskTree,
    arm_from_env,
    hang_point,
)
from daq.supervisor import Supervisor
from daq.writes import audited_write
from drivers import REGISTRY
from drivers.base import Capability

log = get_logger("daq.daemon")


class Daemon:
    """Runs one configuration until stopped. ``on_ready`` is awaited once acquisition runs."""

    def __init__(self, config: Config, *, clock: Clock | None = None, seed: int | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.rng = random.Random(seed)
        self.journal: Journal | None = None
        self.supervisors: list[Supervisor] = []
        self.services: dict[str, Service] = {}
        # The stages of the reading pipeline, owned here and driven by the services: the run
        # manager opens and closes runs through ``run_attribution``, records t0 with
        # ``equilibrium.set_t0(...)``; the clock monitor keeps ``clock_flag`` informed.
        self.run_attribution = RunAttribution()
        self.equilibrium = EquilibriumGate(config.model.physics.ac225_equilibrium_wait_s)
        self.clock_flag = ClockFlag(config.model.clock.flag_unsynchronised)
        # Configured limits; given the journal by its service (daq.services) once it is open.
        self.alarms = AlarmEngine(config.model.alarms, clock=self.clock)
        #: Every reading of every supervisor passes this, in order, before it is journaled.
        self.pipeline: Pipeline = reading_pipeline(
            clock=self.clock,
            runs=self.run_attribution,
            equilibrium=self.equilibrium,
            clock_flag=self.clock_flag,
            alarms=self.alarms,
        )
        #: The one place status is assembled (built once the journal is open).
        self.status_board: StatusBoard | None = None
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Every long-lived task runs under this tree (policies in :mod:`daq.supervision`).
        self.tasks = TaskTree(
            on_fault=self._journal_fault,
            on_fatal=self._fatal,
            time_ns=self.clock.time_ns,
            rng=random.Random(self.rng.random()),
        )
        #: Notices the whole process standing still and journals it (a ``stall`` event).
        self.stall_watch = StallWatch(self._journal_stall)
        #: The process's exit status: non-zero once a task without a safe restart failed.
        self.exit_code = 0
        #: Shutdown steps that failed or ran out of time (logged, and audited at daemon_stop).
        self.unfinished: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[Any] | None = None
        self._aborting = False
        #: The last-resort exit, armed by a signal or a fatal task (``daq run`` only).
        self._hard_exit: HardExit | None = None

    def request_stop(self) -> None:
        self.stop_event.set()

    def _journal_fault(self, rec: TaskRecord, exc: BaseException) -> None:
        journal = self.journal
        if journal is None:
            return
        instrument = rec.component.partition(":")[2] if rec.family == "supervisor" else "daemon"
        journal.event(
            InstrumentEvent(
                instrument, EventKind.TASK_FAILED, self.clock.time_ns(), self.clock.monotonic_ns(),
                {
                    "component": rec.component,
                    "exception": type(exc).__name__,
                    "message": str(exc)[:500],
                    "policy": rec.policy.value,
                    "failures": rec.failures,
                },
            )
        )  # fmt: skip

    def _journal_stall(self, from_ns: int, until_ns: int, stalled_s: float) -> None:
        log.warning("process stood still", stalled_s=round(stalled_s, 3))
        if self.journal is not None:
            self.journal.event(
                InstrumentEvent(
                    "daemon", EventKind.STALL, self.clock.time_ns(), self.clock.monotonic_ns(),
                    {"stalled_s": round(stalled_s, 3), "from_ns": from_ns, "until_ns": until_ns},
                )
            )  # fmt: skip

    def _fatal(self, rec: TaskRecord) -> None:
        self.exit_code = EXIT_TASK_FAILED
        self._arm_hard_exit()
        if not self.ready.is_set() and self._runner is not None and not self._aborting:
            # Starting: a start step may be waiting on the failed task; stop it there.
            self._aborting = True
            self._runner.cancel()
        self.request_stop()

    def _build_supervisors(self, journal: Journal) -> list[Supervisor]:
        instruments = [i for i in self.config.instruments if i.enabled]
        drivers = [REGISTRY[inst.kind](inst, self.clock) for inst in instruments]
        # Each instance declares how it acquires (a `line` instrument with a poll_command is polled).
        polled = [d for d in drivers if d.capability is Capability.POLLED]
        supervisors = []
        for driver in drivers:
            inst = driver.config
            # Spread polled instruments across their period instead of waking all at once.
            offset = 0.0
            if driver in polled:
                offset = inst.period_s * polled.index(driver) / max(1, len(polled))
            supervisors.append(
                Supervisor(
                    driver,
                    journal,
                    self.clock,
                    offset_s=offset,
                    rng=random.Random(self.rng.random()),
                    pipeline=self.pipeline,
                )
            )
        return supervisors

    async def run(
        self,
        *,
        duration_s: float | None = None,
        on_ready: Callable[[Daemon], Awaitable[None]] | None = None,
        install_signals: bool = False,
    ) -> None:
        """Run until :meth:`request_stop`, a signal, or ``duration_s`` elapses.

        With ``install_signals`` (the ``daq run`` process), SIGTERM and SIGINT stop the daemon
        and arm a last-resort hard exit after ``daemon.shutdown_timeout_s``: whatever hangs,
        the process ends within the bound.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._runner = asyncio.current_task()
        previous: dict[signal.Signals, Any] = {}
        if install_signals:
            self._hard_exit = HardExit(self.config.daemon.shutdown_timeout_s, self._exit_report)
            for sig in (signal.SIGTERM, signal.SIGINT):
                # A Python-level handler (not loop.add_signal_handler): it runs even while a
                # callback holds the event loop, so the hard-exit timer is always armed.
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            await self._start()
            if on_ready is not None:
                await on_ready(self)
            if duration_s is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), duration_s)
            else:
                await self.stop_event.wait()
        except asyncio.CancelledError:
            # A task without a safe restart failed while the daemon was starting (a start
            # step waiting on a dead journal writer would wait forever): stop now.
            if not self._aborting or self._runner is None:
                raise
            self._runner.uncancel()
        finally:
            try:
                await self._shutdown()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                if self._hard_exit is not None:
                    self._hard_exit.cancel()

    async def _start(self) -> None:
        cfg = self.config
        arm_from_env()
        journal = await Journal.open(cfg.daemon.data_dir, clock=self.clock, settings=cfg.journal)
        self.journal = journal
        self.tasks.watch(
            "journal-writer", "journal-writer", journal.writer_task, expected_end=lambda: journal.closing
        )
        # The writer retries what it can; when it stops for good it logs why and says so here.
        journal.on_fatal(lambda exc: self.tasks.report_failure("journal-writer", exc, logged=True))
        journal.audit(
            "daemon_start",
            detail={"version": __version__, "pid": _pid(), "instruments": len(cfg.instruments)},
        )
        journal.audit("config_loaded", subject=cfg.path, detail={"sha256": cfg.sha256, "path": cfg.path})
        self._tasks.append(self.tasks.spawn("stall-watch", "stall-watch", self.stall_watch.run))
        self.supervisors = self._build_supervisors(journal)
        self.status_board = StatusBoard(
            config=cfg,
            process_instrument=cfg.model.runs.trigger_instrument,
            time_ns=self.clock.time_ns,
            journal=journal,
            supervisors=self.supervisors,
            services=self.services,
            tasks=self.tasks,
            stall_watch=self.stall_watch,
            ready=self.ready,
        )
        ctx = ServiceContext(
            config=cfg,
            clock=self.clock,
            rng=self.rng,
            journal=journal,
            tasks=self.tasks,
            supervisors=tuple(self.supervisors),
            run_attribution=self.run_attribution,
            equilibrium=self.equilibrium,
            clock_flag=self.clock_flag,
            alarms=self.alarms,
            status=self.status_board,
        )
        services = sorted(build_services(ctx), key=lambda svc: svc.phase)
        for svc in services:
            if svc.phase == 0:
                await self._start_service(svc)
        for sup in self.supervisors:
            journal.event(
                InstrumentEvent(
                    sup.name, EventKind.STARTED, self.clock.time_ns(), self.clock.monotonic_ns(),
                    {"kind": sup.config.kind},
                )
            )  # fmt: skip
            self._tasks.append(self.tasks.spawn(f"supervisor:{sup.name}", "supervisor", sup.run))
        for svc in services:
            if svc.phase > 0:
                await self._start_service(svc)
        log.info(
            "daemon started",
            journal=str(journal.path),
            instruments=[s.name for s in self.supervisors],
        )
        self.ready.set()

    # -- stopping ------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._arm_hard_exit()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request_stop)

    def _arm_hard_exit(self) -> None:
        if self._hard_exit is not None:
            self._hard_exit.arm()

    def _exit_report(self) -> dict[str, Any]:
        journal = self.journal
        return {
            "uncommitted": journal.uncommitted if journal is not None else None,
            "unfinished": self.unfinished,
        }

    def supervisor(self, name: str) -> Supervisor:
        for sup in self.supervisors:
            if sup.name == name:
                return sup
        raise DaqError(f"no instrument named {name!r}")

    async def instrument_write(
        self, instrument: str, command: str, value: str | None = None, *, actor: str, reason: str
    ) -> str:
        """Send a state-changing command to an instrument, audited
        (:func:`daq.writes.audited_write`: refused unless ``allow_writes = true``)."""
        journal = self.journal
        assert journal is not None
        return await audited_write(
            self.supervisor(instrument), journal, command, value, actor=actor, reason=reason
        )

    async def _start_service(self, svc: Service) -> None:
        await svc.start()
        self.services[svc.name] = svc

    async def _shutdown(self) -> None:
        """Stop in order, within ``daemon.shutdown_timeout_s``: the services (but forwarders),
        the supervisors, their stop events, a commit of everything pending, then the
        forwarders' final drain, the ``daemon_stop`` audit (with whatever could not be done
        in time) and the journal's close. Each step is bounded by what is left of the time."""
        steps = ShutdownSteps(self.config.daemon.shutdown_timeout_s, self.unfinished)
        left = steps.left
        hang_point("shutdown")
        drainers = [svc for svc in self.services.values() if getattr(svc, "drains_on_stop", False)]
        for svc in reversed(list(self.services.values())):
            if svc not in drainers:
                await steps.step(f"stop {svc.name}", svc.stop(), left(STEP_CAP_S))
        for task in self._tasks:
            task.cancel()
        pending = set(self._tasks)
        while pending and left() > 0:
            _, pending = await asyncio.wait(pending, timeout=left(1.0))
            for task in pending:  # a cancellation a library swallowed is delivered again
                task.cancel()
        if pending:
            names = sorted(t.get_name() for t in pending)
            log.error("supervisors did not stop in time", tasks=names)
            self.unfinished["supervisors_not_stopped"] = len(names)
        self._tasks.clear()
        journal = self.journal
        if journal is None:
            return
        for sup in self.supervisors:
            journal.event(
                InstrumentEvent(
                    sup.name, EventKind.STOPPED, self.clock.time_ns(), self.clock.monotonic_ns(),
                    {"readings": sup.readings},
                )
            )  # fmt: skip
        if not journal.writer_task.done():
            # The last readings and the stop events are committed before the final drain.
            await steps.step("commit the last readings", journal.flush(), left(STEP_CAP_S))
        for svc in drainers:
            # The drain gets what is left, less a second for the forwarder to end between
            # requests; the step's own bound is the backstop.
            drain_s = max(0.0, left() - 1.0)
            await steps.step(f"stop {svc.name}", svc.stop(drain_s=drain_s), left())  # type: ignore[call-arg]
        detail: dict[str, Any] = {"readings_committed": journal.readings_committed}
        if self.unfinished:
            detail["unfinished"] = dict(self.unfinished)
            log.error("shutdown incomplete", unfinished=self.unfinished)
        if self.exit_code:
            detail["exit_code"] = self.exit_code
        journal.audit("daemon_stop", detail=detail)
        close_s = steps.close_s()
        closed = await steps.step(
            "close the journal", journal.close(timeout_s=max(0.1, close_s - 0.1)), close_s
        )
        if not closed:
            log.error("journal not closed cleanly", uncommitted=journal.uncommitted)
        log.info("daemon stopped", journal=str(journal.path), exit_code=self.exit_code)

    def status(self) -> dict[str, Any]:
        """A snapshot for status displays (instruments, the journal, and each service)."""
        if self.status_board is None:
            return {"services": {}, "tasks": self.tasks.status(), "stalls": self.stall_watch.status(),
                    "instruments": {}, "journal": None}  # fmt: skip
        return self.status_board.snapshot()


def _pid() -> int:
    return os.getpid()
