"""The daemon: journal first, then one supervisor per instrument.

Start order: open (and recover) the journal, audit the start and the config, start the
supervisors. Stop order (SIGTERM, SIGINT, or ``duration_s``): cancel the supervisors,
journal their stop, commit everything pending, close the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from daq import __version__
from daq.clock import Clock, SystemClock
from daq.config.load import Config
from daq.journal.journal import Journal
from daq.logs import get_logger
from daq.model import EventKind, InstrumentEvent
from daq.supervisor import Supervisor
from drivers import REGISTRY

log = get_logger("daq.daemon")


class Daemon:
    """Runs one configuration until stopped. ``on_ready`` is awaited once acquisition runs."""

    def __init__(self, config: Config, *, clock: Clock | None = None, seed: int | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.rng = random.Random(seed)
        self.journal: Journal | None = None
        self.supervisors: list[Supervisor] = []
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
        self.supervisors = self._build_supervisors(journal)
        for sup in self.supervisors:
            journal.event(
                InstrumentEvent(
                    sup.name, EventKind.STARTED, self.clock.time_ns(), self.clock.monotonic_ns(),
                    {"kind": sup.config.kind},
                )
            )  # fmt: skip
            self._tasks.append(asyncio.create_task(sup.run(), name=f"supervisor:{sup.name}"))
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

    async def _shutdown(self) -> None:
        for task in self._tasks:
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
        """A snapshot for status displays (instruments and the journal)."""
        j = self.journal
        return {
            "instruments": {
                s.name: {
                    "kind": s.config.kind,
                    "state": s.state.value,
                    "readings": s.readings,
                    "reconnects": s.reconnects,
                    "parse_errors": s.parse_errors,
                    "last_error": s.last_error,
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
