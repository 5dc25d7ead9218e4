"""The daemon's TLC service: starts scans, turns finished or aborted ones into records.

Scans start in two ways: periodically, for scanners with ``scan_every_s`` (unattended use, the
demo), or on demand::

    trace_id = await daemon.services["tlc"].start_scan("tlc-1", batch="LU-0421", operator="jd",
                                                       method="lu-psma-itlc", actor="jd")
    outcome = await daemon.services["tlc"].wait(trace_id)

While the scan runs the driver journals every line as readings. When it ends (``end``) or is
aborted (``Error:`` line, lost link, silent scanner, daemon stopping) the service writes one
``traces`` record (complete or not) and, when a method applies, one ``analyses`` record: an
aborted scan is recorded incomplete and its analysis is never a pass. Each scan start is
audited (it is a command written to an instrument) and journaled as an event with its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from daq.errors import ConfigError, DaqError
from daq.journal.journal import Journal
from daq.logs import get_logger
from daq.model import InstrumentEvent
from daq.supervision import fault_point, spawn
from daq.supervisor import State, Supervisor
from daq.tlc.analysis import analyse
from daq.tlc.methods import TlcMethod, TlcSection
from daq.tlc.records import (
    SCAN_ABORTED,
    SCAN_FINISHED,
    SCAN_STARTED,
    analysis_id_for,
    analysis_values,
    trace_values,
    unrecorded_scans,
)
from drivers.rtlc_scanner import RtlcScannerDriver, Scan

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.context import ServiceContext
    from daq.runs.attribution import RunAttribution
    from daq.supervision import TaskTree

log = get_logger("daq.tlc")


class TlcService:
    """Owns the scans of every ``rtlc-scanner`` instrument of the daemon."""

    name = "tlc"
    phase = 1

    def __init__(
        self,
        methods: TlcSection,
        *,
        clock: Clock,
        journal: Journal,
        tasks: TaskTree,
        supervisors: Sequence[Supervisor],
        attribution: RunAttribution,
    ):
        self.methods = methods
        self.clock = clock
        self.journal = journal
        self.tasks = tasks
        self.supervisors = supervisors
        #: The pipeline's runs stage: a scan's readings are pinned to its run.
        self.attribution = attribution
        self.scanners: dict[str, Supervisor] = {}
        self._periodic: list[asyncio.Task[None]] = []
        self._watchers: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.scans_started = 0
        self.scans_aborted = 0

    async def start(self) -> None:
        self.scanners = {s.name: s for s in self.supervisors if isinstance(s.driver, RtlcScannerDriver)}
        await self.recover()
        for sup in self.scanners.values():
            if self._driver(sup).config.scan_every_s is not None:
                self._periodic.append(
                    spawn(self.tasks, f"tlc:{sup.name}", "tlc", functools.partial(self._every, sup))
                )

    async def stop(self) -> None:
        for task in self._periodic:
            task.cancel()
        await asyncio.gather(*self._periodic, return_exceptions=True)
        self._periodic.clear()
        for sup in self.scanners.values():
            self._driver(sup).abort_scan("daemon stopping before the scan ended")
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)

    def _driver(self, sup: Supervisor) -> RtlcScannerDriver:
        driver = sup.driver
        assert isinstance(driver, RtlcScannerDriver)
        return driver

    def method(self, name: str) -> TlcMethod:
        try:
            return self.methods.get(name)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None

    # -- scans -----------------------------------------------------------------------------

    async def start_scan(
        self,
        instrument: str,
        *,
        batch: str | None = None,
        operator: str | None = None,
        range_mm: int | None = None,
        time_min: int | None = None,
        method: str | None = None,
        actor: str = "daemon",
        run_id: str | None = None,
    ) -> str:
        """Start a scan on ``instrument`` and return its trace id; the scan runs on.

        Unset parameters come from the instrument's config (``method`` too). Raises
        :class:`DaqError` when the instrument is no scanner, is not connected or is busy, and
        for parameters the protocol cannot carry or an unknown method.
        """
        sup = self.scanners.get(instrument)
        if sup is None:
            raise DaqError(
                f"tlc: no radio-TLC scanner named {instrument!r} (known: {', '.join(self.scanners)})"
            )
        driver = self._driver(sup)
        method_name = method if method is not None else driver.config.method
        tlc_method = self.method(method_name) if method_name is not None else None
        if sup.state is not State.CONNECTED or not driver.connected:
            raise DaqError(f"tlc: {instrument} is not connected ({sup.state.value})")
        # Readings of this scan get ids above this one: where recovery looks for them.
        after_reading_id = self.journal.last_reading_id
        # A scan belongs to one run: the one asked for, or the one open when it starts. Its
        # readings are attributed to that run (the pipeline's runs stage) until it is recorded.
        attribution = self.attribution
        if run_id is None:
            run_id = attribution.run_id
        if run_id is not None:
            attribution.pin(instrument, run_id)
        try:
            scan = await driver.start_scan(
                batch=batch, operator=operator, range_mm=range_mm, time_min=time_min, run_id=run_id
            )
        except BaseException as exc:
            attribution.unpin(instrument)
            if isinstance(exc, ValueError):
                raise DaqError(f"tlc: {instrument}: {exc}") from None
            raise
        self.scans_started += 1
        detail = {
            "scan_id": scan.scan_id,
            "start_line": scan.start_line.decode("ascii").strip(),
            "method": tlc_method.name if tlc_method else None,
            "method_version": tlc_method.version if tlc_method else None,
        }
        journal = self.journal
        journal.audit("tlc_scan_start", actor=actor, subject=instrument, detail=detail, run_id=run_id)
        journal.event(
            InstrumentEvent(
                instrument,
                SCAN_STARTED,
                scan.started_ns,
                self.clock.monotonic_ns(),
                {**detail, "actor": actor, "after_reading_id": after_reading_id},
            )
        )
        self._watchers[scan.scan_id] = asyncio.create_task(
            self._watch(sup, scan, tlc_method, actor), name=f"tlc-scan:{scan.scan_id}"
        )
        return scan.scan_id

    async def wait(self, trace_id: str) -> dict[str, Any]:
        """Wait until the scan ``trace_id`` is recorded; returns its outcome
        (``trace_id``, ``complete``, ``reason``, ``analysis_id``, ``rcp_percent``, ``passed``)."""
        if trace_id in self.outcomes:
            return self.outcomes[trace_id]
        task = self._watchers.get(trace_id)
        if task is None:
            raise DaqError(f"tlc: no scan {trace_id!r} started by this daemon")
        return await asyncio.shield(task)

    async def scan(self, instrument: str, **kwargs: Any) -> dict[str, Any]:
        """Start a scan and wait for its outcome."""
        return await self.wait(await self.start_scan(instrument, **kwargs))

    async def _watch(
        self, sup: Supervisor, scan: Scan, method: TlcMethod | None, actor: str
    ) -> dict[str, Any]:
        driver = self._driver(sup)
        cfg = driver.config
        # A backstop only: the supervisor aborts a silent scan after home_s / line_margin_s.
        backstop = cfg.home_s + scan.expected_points * (scan.dwell_s + cfg.line_margin_s) + 60.0
        try:
            async with asyncio.timeout(backstop):
                await scan.done.wait()
        except TimeoutError:
            scan.finish(self.clock.time_ns(), complete=False, reason=f"no 'end' within {backstop:g} s")
        try:
            return await self._record(scan, method, actor)
        finally:
            self._watchers.pop(scan.scan_id, None)
            if scan.run_id is not None:
                self.attribution.unpin(scan.instrument)

    async def _record(self, scan: Scan, method: TlcMethod | None, actor: str) -> dict[str, Any]:
        journal = self.journal
        # The scan's run (see start_scan), else the run open now, like the scan's readings.
        run_id = scan.run_id if scan.run_id is not None else journal.run_id
        params: dict[str, Any] = {
            "batch": scan.batch,
            "operator": scan.operator,
            "range_mm": scan.range_mm,
            "time_min": scan.time_min,
            "dwell_s": scan.dwell_s,
            "expected_points": scan.expected_points,
            "start_line": scan.start_line.decode("ascii").strip(),
            "actor": actor,
            "bad_lines": scan.bad_lines,
            "product": method.product if method else None,
            "method": method.name if method else None,
            "method_version": method.version if method else None,
        }
        if not scan.complete:
            params["abort_reason"] = scan.abort_reason
            self.scans_aborted += 1
        journal.record("traces", trace_values(scan, run_id=run_id, params=params))
        outcome: dict[str, Any] = {
            "trace_id": scan.scan_id,
            "instrument": scan.instrument,
            "complete": scan.complete,
            "reason": scan.abort_reason,
            "points": len(scan.counts),
            "analysis_id": None,
            "rcp_percent": None,
            "passed": None,
        }
        if method is not None:
            results = analyse(
                scan.positions_mm, scan.counts, method, complete=scan.complete, range_mm=scan.range_mm
            )
            analysis_id = analysis_id_for(scan.scan_id, 1)
            journal.record(
                "analyses",
                analysis_values(
                    analysis_id=analysis_id,
                    trace_id=scan.scan_id,
                    run_id=run_id,
                    ts_ns=self.clock.time_ns(),
                    method=method,
                    results=results,
                    actor=actor,
                    reason="scan ended" if scan.complete else f"scan aborted: {scan.abort_reason}",
                    supersedes=None,
                ),
            )
            outcome.update(
                analysis_id=analysis_id, rcp_percent=results["rcp_percent"], passed=results["passed"]
            )
        kind = SCAN_FINISHED if scan.complete else SCAN_ABORTED
        journal.event(
            InstrumentEvent(
                scan.instrument,
                kind,
                scan.ended_ns or self.clock.time_ns(),
                self.clock.monotonic_ns(),
                {k: v for k, v in outcome.items() if k != "instrument"},
            )
        )
        if not scan.complete:
            log.warning(
                "tlc scan aborted", instrument=scan.instrument, scan=scan.scan_id, reason=scan.abort_reason
            )
        with contextlib.suppress(DaqError):
            await journal.flush()
        self.outcomes[scan.scan_id] = outcome
        while len(self.outcomes) > 100:  # a long-running daemon keeps the recent ones
            self.outcomes.pop(next(iter(self.outcomes)))
        return outcome

    async def recover(self) -> list[str]:
        """Record the traces of scans a previous daemon started but never recorded (it was
        killed mid-scan): rebuilt from the journaled readings, incomplete unless their ``end``
        was journaled too. Returns the trace ids recorded."""
        journal = self.journal
        await journal.flush()
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, unrecorded_scans, journal.data_dir)
        for item in found:
            scan: Scan = item["scan"]
            method = None
            if item["method"] is not None:
                with contextlib.suppress(ConfigError):
                    method = self.method(item["method"])
            journal.audit(
                "tlc_trace_recovered",
                subject=scan.scan_id,
                detail={"instrument": scan.instrument, "points": len(scan.counts), "complete": scan.complete},
                run_id=scan.run_id,
            )
            await self._record(scan, method, item["actor"])
        if found:
            log.warning(
                "tlc traces recovered from journaled readings", traces=[i["scan"].scan_id for i in found]
            )
        return [i["scan"].scan_id for i in found]

    async def _every(self, sup: Supervisor) -> None:
        """Start a scan every ``scan_every_s`` (start to start) while the scanner is connected."""
        driver = self._driver(sup)
        every = driver.config.scan_every_s
        assert every is not None
        failing = False
        while True:
            fault_point(f"tlc:{sup.name}")
            if sup.state is not State.CONNECTED or not driver.connected:
                await self.clock.sleep(0.2)
                continue
            began = self.clock.monotonic_ns()
            try:
                trace_id = await self.start_scan(sup.name, actor="schedule")
            except DaqError as exc:
                if not failing:
                    log.warning("tlc scheduled scan not started", instrument=sup.name, error=str(exc))
                failing = True
                await self.clock.sleep(min(every, 5.0))
                continue
            failing = False
            await self.wait(trace_id)
            elapsed = (self.clock.monotonic_ns() - began) / 1e9
            await self.clock.sleep(max(0.0, every - elapsed))

    def status(self) -> dict[str, Any]:
        scanners = {}
        for name, sup in self.scanners.items():
            scan = self._driver(sup).scan
            scanners[name] = {
                "state": sup.state.value,
                "scanning": scan is not None and not scan.done.is_set(),
                "scan_id": scan.scan_id if scan else None,
                "progress_percent": scan.progress_percent if scan else None,
            }
        last = list(self.outcomes.values())[-1] if self.outcomes else None
        return {
            "scanners": scanners,
            "scans_started": self.scans_started,
            "scans_aborted": self.scans_aborted,
            "last": last,
        }


def service(ctx: ServiceContext) -> TlcService | None:
    """Built by :func:`daq.services.build_services`: a service when a scanner is configured."""
    cfg = ctx.config
    if not any(i.kind == "rtlc-scanner" and i.enabled for i in cfg.instruments):
        return None
    methods: TlcSection = cfg.model.tlc
    return TlcService(
        methods,
        clock=ctx.clock,
        journal=ctx.journal,
        tasks=ctx.tasks,
        supervisors=ctx.supervisors,
        attribution=ctx.run_attribution,
    )


__all__ = ["TlcService", "service"]
