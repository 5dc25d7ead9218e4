"""The daemon: journal first, then one supervisor per instrument, then the services.

Start order: open (and recover) the journal; audit the start and the config; start the
phase-0 services (those readings depend on, such as runs); start the supervisors; start the
phase-1 services (forwarders, the local API) and phase-2 ones (readiness notification).
Stop order (SIGTERM, SIGINT, or ``duration_s``): stop the services in reverse, cancel the
supervisors, journal their stop, commit everything pending, close the journal.

A *service* is anything with ``name``, ``phase``, ``async start()`` and ``async stop()``
(and optionally ``status() -> dict``). :mod:`daq.services` lists the factories; each gets
the daemon and returns a service, or ``None`` when its feature is not configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from daq import __version__
from daq.clock import Clock, SystemClock
from daq.config.load import Config
from daq.equilibrium import EquilibriumGate
from daq.errors import DaqError, WriteRefused
from daq.journal.journal import Journal
from daq.logs import get_logger
from daq.model import EventKind, InstrumentEvent
from daq.pipeline import Pipeline, reading_pipeline
from daq.runs.attribution import RunAttribution
from daq.runs.clock import ClockFlag
from daq.supervisor import Supervisor
from drivers import REGISTRY

log = get_logger("daq.daemon")


class Service(Protocol):
    """A part of the daemon with a life cycle (forwarder, API, run manager, notifier...)."""

    name: str
    #: 0: started before the supervisors; 1: after them; 2: last (readiness).
    phase: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


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
        #: Every reading of every supervisor passes this, in order, before it is journaled.
        self.pipeline: Pipeline = reading_pipeline(
            clock=self.clock,
            runs=self.run_attribution,
            equilibrium=self.equilibrium,
            clock_flag=self.clock_flag,
        )
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def request_stop(self) -> None:
        self.stop_event.set()

    def _build_supervisors(self, journal: Journal) -> list[Supervisor]:
        instruments = [i for i in self.config.instruments if i.enabled]
        polled = [i for i in instruments if not REGISTRY[i.kind].streaming]
        supervisors = []
        for inst in instruments:
            driver = REGISTRY[inst.kind](inst, self.clock)
            # Spread polled instruments across their period instead of waking all at once.
            offset = 0.0
            if inst in polled:
                offset = inst.period_s * polled.index(inst) / max(1, len(polled))
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
        """Run until :meth:`request_stop`, a signal, or ``duration_s`` elapses."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        cfg = self.config
        journal = await Journal.open(cfg.daemon.data_dir, clock=self.clock, settings=cfg.journal)
        self.journal = journal
        journal.audit(
            "daemon_start",
            detail={"version": __version__, "pid": _pid(), "instruments": len(cfg.instruments)},
        )
        journal.audit("config_loaded", subject=cfg.path, detail={"sha256": cfg.sha256, "path": cfg.path})
        from daq.services import build_services

        services = sorted(build_services(self), key=lambda svc: svc.phase)
        self.supervisors = self._build_supervisors(journal)
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
            self._tasks.append(asyncio.create_task(sup.run(), name=f"supervisor:{sup.name}"))
        for svc in services:
            if svc.phase > 0:
                await self._start_service(svc)
        log.info(
            "daemon started",
            journal=str(journal.path),
            instruments=[s.name for s in self.supervisors],
        )
        self.ready.set()
        try:
            if on_ready is not None:
                await on_ready(self)
            if duration_s is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), duration_s)
            else:
                await self.stop_event.wait()
        finally:
            await self._shutdown()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    def supervisor(self, name: str) -> Supervisor:
        for sup in self.supervisors:
            if sup.name == name:
                return sup
        raise DaqError(f"no instrument named {name!r}")

    async def instrument_write(
        self, instrument: str, command: str, value: str | None = None, *, actor: str, reason: str
    ) -> str:
        """Send a state-changing command to an instrument.

        Refused unless the instrument has ``allow_writes = true``. Every attempt, refused,
        failed or done, goes to the audit trail with who, what and why.
        """
        sup = self.supervisor(instrument)
        journal = self.journal
        assert journal is not None
        detail: dict[str, Any] = {"command": command, "value": value, "reason": reason}
        if not sup.config.allow_writes:
            journal.audit("instrument_write_refused", actor=actor, subject=instrument, detail=detail)
            await journal.flush()
            raise WriteRefused(f"{instrument}: writes are disabled (allow_writes = false)")
        try:
            async with sup.io_lock:
                answer = await sup.driver.write(command, value)
        except DaqError as exc:
            journal.audit(
                "instrument_write_failed",
                actor=actor,
                subject=instrument,
                detail={**detail, "error": str(exc)},
            )
            await journal.flush()
            raise
        journal.audit(
            "instrument_write", actor=actor, subject=instrument, detail={**detail, "answer": answer}
        )
        await journal.flush()
        return answer

    async def _start_service(self, svc: Service) -> None:
        await svc.start()
        self.services[svc.name] = svc

    async def _shutdown(self) -> None:
        for svc in reversed(list(self.services.values())):
            try:
                await svc.stop()
            except Exception as exc:  # one service failing to stop must not block the rest
                log.error("service failed to stop", service=svc.name, error=repr(exc))
        for task in self._tasks:
            task.cancel()
        pending = set(self._tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=2.0)
            for task in pending:  # a cancellation a library swallowed is delivered again
                task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for sup, result in zip(self.supervisors, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("supervisor failed", instrument=sup.name, error=repr(result))
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
        journal.audit("daemon_stop", detail={"readings_committed": journal.readings_committed})
        await journal.close()
        log.info("daemon stopped", journal=str(journal.path))

    def status(self) -> dict[str, Any]:
        """A snapshot for status displays (instruments, the journal, and each service)."""
        j = self.journal
        services: dict[str, Any] = {}
        for name, svc in self.services.items():
            fn = getattr(svc, "status", None)
            if callable(fn):
                services[name] = fn()
        return {
            "services": services,
            "instruments": {
                s.name: {
                    "kind": s.config.kind,
                    "state": s.state.value,
                    "readings": s.readings,
                    "reconnects": s.reconnects,
                    "parse_errors": s.parse_errors,
                    "last_error": s.last_error,
                    # What the driver found lasting (starved channels, refused addresses or nodes).
                    "problems": s.driver.problems(),
                }
                for s in self.supervisors
            },
            "journal": None
            if j is None
            else {
                "path": str(j.path),
                "pending": j.pending,
                "readings_committed": j.readings_committed,
                "overflowed": j.overflowed,
                "error": j.error,
            },
        }


def _pid() -> int:
    import os

    return os.getpid()
